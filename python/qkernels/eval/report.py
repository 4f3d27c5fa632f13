"""``write_report(results, out_dir)``: the comparisons of :func:`qkernels.eval.compare.compare` as
``report.json`` (every number), ``report.md`` (tables), ``report.html`` (self-contained: tables and
every plot inline) and the plots as PNG files in ``plots/``.

The JSON layout (``schema_version`` 1) is described in docs/evaluation.md ("Report"). Non-finite
numbers, which JSON has no literal for, are written as the strings "inf", "-inf" and "nan"; tensors
are summarised (count, mean, std, min, percentiles, max), short per-class vectors kept in full.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .compare import ComparisonResult, ModelStats
from .layerwise import Allocation
from .report_html import render_html
from .report_plots import FLOAT_NAME, ReportPlot, detail_result, draw_plots
from .report_tables import MAX_CLASSES_SHOWN, choice_name, markdown, sections, summary_table, text_table

__all__ = ["SCHEMA_VERSION", "ReportFiles", "format_summary", "report_data", "write_report"]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ReportFiles:
    """Paths of what :func:`write_report` wrote."""

    json: Path
    markdown: Path
    html: Path
    plots: list[Path]


# ---- numbers ------------------------------------------------------------------------------------


def _num(v: Any) -> Any:
    """JSON-safe: non-finite floats as strings, tensors summarised, containers recursed."""
    if isinstance(v, Tensor):
        return _summary(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, dict):
        return {str(k): _num(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_num(x) for x in v]
    return v


def _summary(t: Tensor) -> dict[str, Any]:
    v = t.detach().double().reshape(-1).cpu()
    v = v[~v.isnan()]
    if v.numel() == 0:
        return {"count": 0}
    q = torch.quantile(v, torch.tensor([0.01, 0.5, 0.99], dtype=torch.float64)).tolist()
    return _num(
        {
            "count": v.numel(),
            "mean": v.mean().item(),
            "std": v.std(correction=0).item(),
            "min": v.min().item(),
            "p1": q[0],
            "p50": q[1],
            "p99": q[2],
            "max": v.max().item(),
        }
    )


def _vector(t: Tensor) -> list[Any]:
    return _num([float(x) if t.dtype.is_floating_point else int(x) for x in t.tolist()])


def _stats(s: ModelStats) -> dict[str, Any]:
    lat = s.latency
    latency = (
        None
        if lat is None
        else {
            "median_ms": 1e3 * lat.median_s,
            "p90_ms": 1e3 * lat.p90_s,
            "throughput_per_s": lat.throughput,
            "repeats": lat.repeats,
            "warmup": lat.warmup,
        }
    )
    return _num({"model_bytes": s.model_bytes, "bits_per_weight": s.bits_per_weight, "latency": latency})


def _result_data(r: ComparisonResult) -> dict[str, Any]:
    f, q = r.float_stats, r.quant_stats
    speedup = None
    if f.latency is not None and q.latency is not None and q.latency.median_s > 0:
        speedup = f.latency.median_s / q.latency.median_s
    pc = r.per_class
    per_class = None
    if pc is not None:
        per_class = {
            "what": pc.what,
            "names": pc.names,
            "support": _vector(pc.support),
            "float_accuracy": _vector(pc.float_accuracy),
            "quant_accuracy": _vector(pc.quant_accuracy),
            "loss_pp": _vector(pc.loss_pp),
        }
        if pc.support.numel() <= MAX_CLASSES_SHOWN:
            per_class["float_confusion"] = pc.float_confusion.tolist()
            per_class["quant_confusion"] = pc.quant_confusion.tolist()
    return _num(
        {
            "name": r.name,
            "score": r.score.quant_value,
            "size": _stats(q),
            "compression": f.model_bytes / q.model_bytes,
            "speedup": speedup,
            "metrics": r.quant_metrics,
            "output_error": r.output_error,
            "agreement": r.agreement,
            "deltas": {**r.deltas, "score": r.score.float_value - r.score.quant_value},
            "per_class": per_class,
            "row_cosine": r.row_cosine,
            "losses": {"over": r.losses_over, "what": r.losses_what, "values": r.losses},
            "output_values": {"float": r.float_values, "quantized": r.quant_values},
            "layers": {
                "isolated": [asdict(x) for x in r.layers_isolated],
                "propagated": [asdict(x) for x in r.layers_propagated],
            },
        }
    )


def report_data(
    results: Sequence[ComparisonResult],
    *,
    title: str,
    allocation: Allocation | None = None,
    plots: Sequence[ReportPlot] = (),
    generated_at: str | None = None,
) -> dict[str, Any]:
    """The content of ``report.json`` (see docs/evaluation.md for the layout)."""
    r0 = results[0]
    alloc = None
    if allocation is not None:
        alloc = {
            "budget_bits_per_weight": allocation.budget_bits_per_weight,
            "bits_per_weight": allocation.bits_per_weight,
            "cost": allocation.cost,
            "layers": [
                {**asdict(row), "choice": choice_name(allocation.mapping[row.name])}
                for row in allocation.table
            ],
        }
    return _num(
        {
            "schema_version": SCHEMA_VERSION,
            "title": title,
            "generated_at": generated_at,
            "task": r0.task,
            "rows": r0.rows,
            "batches": r0.batches,
            "score": {"name": r0.score.name, "unit": r0.score.unit, "higher_is_better": True},
            "float": {
                "name": FLOAT_NAME,
                "score": r0.score.float_value,
                "size": _stats(r0.float_stats),
                "metrics": r0.float_metrics,
            },
            "formats": {r.name: _result_data(r) for r in results},
            "allocation": alloc,
            "plots": [
                {"file": p.file, "title": p.title, "caption": p.caption, "skipped": p.skipped} for p in plots
            ],
        }
    )


# ---- entry point --------------------------------------------------------------------------------


def _check_results(results: Any) -> list[ComparisonResult]:
    if isinstance(results, ComparisonResult):
        return [results]
    if isinstance(results, (str, bytes)) or not isinstance(results, Sequence) or not results:
        raise ValueError(
            f"write_report: results: expected a ComparisonResult or a non-empty list of them, got {results!r}"
        )
    out = list(results)
    for i, r in enumerate(out):
        if not isinstance(r, ComparisonResult):
            raise TypeError(
                f"write_report: results[{i}]: expected a ComparisonResult, got {type(r).__name__}"
            )
        if r.name == FLOAT_NAME or r.name in [x.name for x in out[:i]]:
            raise ValueError(
                f"write_report: results[{i}].name: expected a unique name other than {FLOAT_NAME!r} (the "
                f"float model's row), got {r.name!r}"
            )
        same = (r.task, r.rows) == (out[0].task, out[0].rows) and torch.equal(
            r.float_values, out[0].float_values
        )
        if not same:
            raise ValueError(
                f"write_report: results[{i}]: expected a comparison of the same float model on the same "
                f"inputs as results[0] ({out[0].task}, {out[0].rows} rows), got {r.task}, {r.rows} rows"
                + ("" if (r.task, r.rows) != (out[0].task, out[0].rows) else " with other float outputs")
            )
    return out


def format_summary(results: ComparisonResult | Sequence[ComparisonResult]) -> str:
    """The report's summary table (one row per format, fp32 first) as aligned plain text."""
    return text_table(summary_table(_check_results(results)))


def write_report(
    results: ComparisonResult | Sequence[ComparisonResult],
    out_dir: str | Path,
    *,
    title: str = "Quantization report",
    allocation: Allocation | None = None,
    detail: str | None = None,
    generated_at: str | None = None,
) -> ReportFiles:
    """Writes ``report.json``, ``report.md``, ``report.html`` and ``plots/*.png`` into ``out_dir``
    (created if missing; files of the same names are replaced).

    ``results``: comparisons of one float model on one data set (``compare_formats``, or several
    ``compare`` calls), one per format. ``allocation``: a per-layer choice from
    :func:`~qkernels.eval.layerwise.allocate`, shown as a table. ``detail``: the format whose layers
    the per-layer plots show (default: the one with the fewest bits per weight). ``generated_at``:
    the one time stamp of the report (default: now, UTC); everything else depends only on the
    results, so equal results and ``generated_at`` give byte-identical files.
    """
    results = _check_results(results)
    if not isinstance(out_dir, (str, Path)):
        raise TypeError(f"write_report: out_dir: expected a str or Path, got {type(out_dir).__name__}")
    if not isinstance(title, str) or not title.strip():
        raise ValueError(f"write_report: title: expected a non-empty string, got {title!r}")
    if allocation is not None and not isinstance(allocation, Allocation):
        raise TypeError(
            f"write_report: allocation: expected a qkernels.eval.layerwise.Allocation or None, got "
            f"{type(allocation).__name__}"
        )
    if generated_at is None:
        generated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    elif not isinstance(generated_at, str):
        raise TypeError(
            f"write_report: generated_at: expected a str or None, got {type(generated_at).__name__}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = draw_plots(results, detail_result(results, detail), out)
    data = report_data(results, title=title, allocation=allocation, plots=plots, generated_at=generated_at)
    secs = sections(results, allocation)
    files = ReportFiles(
        out / "report.json",
        out / "report.md",
        out / "report.html",
        [out / p.file for p in plots if p.png is not None],
    )
    files.json.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    files.markdown.write_text(markdown(title, secs, plots, generated_at), encoding="utf-8")
    files.html.write_text(render_html(title, secs, plots, generated_at), encoding="utf-8")
    return files
