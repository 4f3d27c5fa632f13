"""The classifier half of ``qkernels demo``: the ``digits-mlp`` of :mod:`qkernels.eval.models` (an MLP
64 → 512 → 512 → 10 trained, seeded and single-threaded, on 75 % of scikit-learn's 8×8 digits)
quantized with each format and scored on the held-out 449 images."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .eval import ComparisonResult, compare_formats
from .eval.models import digits_mlp
from .quantize import FORMAT_CONFIGS

# Top-1 accuracy the quantized classifier may lose, in percentage points (the demo's targets).
TOP1_LOSS_TARGETS_PP = {"int8": 0.5, "int4": 2.0}


@dataclass
class Row:
    """One line of the digits table; accuracies and F1 as fractions, losses in percentage points."""

    format: str
    bits_per_weight: float
    model_mb: float
    latency_ms: float | None  # median of the timed calls on one batch of 128 images
    speedup: float | None
    top1: float
    top1_loss_pp: float
    macro_f1: float
    f1_loss_pp: float
    ece: float
    worst_class_loss_pp: float  # the largest per-class accuracy loss
    class_accuracy: list[float]


@dataclass
class DigitsRun:
    rows: list[Row]
    class_names: list[str]
    support: list[int]
    results: list[ComparisonResult]


def _ms(stats: Any) -> float | None:
    return None if stats.latency is None else 1e3 * stats.latency.median_s


def run(formats: Sequence[str], repeats: int, epochs: int) -> DigitsRun:
    """Trains the classifier for ``epochs`` epochs, quantizes it with each of ``formats`` (names of
    ``FORMAT_CONFIGS``) and compares every copy with it (layer reports included: the model is small)."""
    unknown = [f for f in formats if f not in FORMAT_CONFIGS]
    if unknown or not formats:
        raise ValueError(f"digits: formats: expected names from {list(FORMAT_CONFIGS)}, got {list(formats)}")
    work = digits_mlp(epochs=epochs)
    results = compare_formats(
        work.model,
        list(formats),
        work.inputs,
        "classification",
        work.labels,
        class_names=work.class_names,
        latency_warmup=0,
        latency_repeats=repeats,
        calibration=work.calibration,
        progress=sys.stderr.isatty(),
    )
    r0 = results[0]
    pc, f = r0.per_class, r0.float_stats
    fm = r0.float_metrics
    rows = [
        Row("fp32", f.bits_per_weight, f.model_bytes / 1e6, _ms(f), 1.0 if _ms(f) else None,
            fm["top1_accuracy"], 0.0, fm["macro_f1"], 0.0, fm["ece"], 0.0, pc.float_accuracy.tolist())
    ]  # fmt: skip
    for r in results:
        q, qm = r.quant_stats, r.quant_metrics
        rows.append(
            Row(
                r.name,
                q.bits_per_weight,
                q.model_bytes / 1e6,
                _ms(q),
                _ms(f) / _ms(q) if _ms(f) and _ms(q) else None,
                qm["top1_accuracy"],
                r.deltas["top1_loss_pp"],
                qm["macro_f1"],
                r.deltas["macro_f1_loss_pp"],
                qm["ece"],
                float(r.per_class.loss_pp.nan_to_num(0.0).max()),
                r.per_class.quant_accuracy.tolist(),
            )
        )
    return DigitsRun(rows, list(pc.names), pc.support.tolist(), results)
