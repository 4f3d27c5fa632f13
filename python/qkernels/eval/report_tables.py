"""The tables of a report, built once from the results and written as Markdown (``report.md``),
as HTML (by :mod:`qkernels.eval.report_html`) and as plain text (the command's summary)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..quantize import FORMAT_CONFIGS
from .compare import ComparisonResult, ModelStats
from .layerwise import Allocation
from .report_plots import FLOAT_NAME, ReportPlot

__all__ = [
    "MAX_CLASSES_SHOWN",
    "Section",
    "Table",
    "allocation_table",
    "choice_name",
    "markdown",
    "sections",
    "summary_table",
    "text_table",
]

# Per-class tables (and confusion matrices in the JSON) beyond this many classes are left out.
MAX_CLASSES_SHOWN = 40


@dataclass(frozen=True)
class Table:
    """Cells as text; the first ``left`` columns are names (left-aligned), the others numbers
    (right-aligned)."""

    header: list[str]
    rows: list[list[str]]
    left: int = 1


# (heading, paragraph, [(sub-heading, table)])
Section = tuple[str, str, list[tuple[str, Table]]]


def choice_name(config: object) -> str:
    """The registry name of a per-layer choice: "fp32" for None, else its ``FORMAT_CONFIGS`` key (or
    its repr)."""
    if config is None:
        return FLOAT_NAME
    return next((k for k, v in FORMAT_CONFIGS.items() if v == config), repr(config))


# ---- tables -------------------------------------------------------------------------------------


def _g(v: float | None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return f"{v:.{digits}g}"


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _ms(s: ModelStats, field: str) -> str:
    return "–" if s.latency is None else f"{1e3 * getattr(s.latency, field):.3g}"


def _metric_cell(key: str, v: float) -> str:
    """Fractions that read as percentages (accuracies, precision, recall, F1) in %; cosines with the
    digits where quantization shows."""
    if not math.isfinite(v):
        return _g(v)
    if key.endswith(("accuracy", "agreement", "precision", "recall", "f1")):
        return f"{100 * v:.2f}%"
    if key.endswith("cosine"):
        return f"{v:.6f}"
    return _g(v)


def summary_table(results: Sequence[ComparisonResult]) -> Table:
    r0 = results[0]
    s = r0.score
    unit = f" ({s.unit})" if s.unit else ""
    header = [
        "format",
        "bits/weight",
        "size",
        "× smaller",
        "latency ms",
        "p90 ms",
        "speed-up",
        f"{s.name}{unit}",
        "Δ vs fp32",
        "output SQNR dB",
        "output cosine",
    ]
    f = r0.float_stats
    rows = [
        [
            FLOAT_NAME,
            f"{f.bits_per_weight:.2f}",
            _size(f.model_bytes),
            "1.00",
            _ms(f, "median_s"),
            _ms(f, "p90_s"),
            "1.00×",
            _g(s.float_value),
            "–",
            "∞",
            "1",
        ]
    ]
    for r in results:
        q = r.quant_stats
        speed = "–"
        if f.latency is not None and q.latency is not None and q.latency.median_s > 0:
            speed = f"{f.latency.median_s / q.latency.median_s:.2f}×"
        rows.append(
            [
                r.name,
                f"{q.bits_per_weight:.2f}",
                _size(q.model_bytes),
                f"{f.model_bytes / q.model_bytes:.2f}",
                _ms(q, "median_s"),
                _ms(q, "p90_s"),
                speed,
                _g(r.score.quant_value),
                f"{r.score.quant_value - s.float_value:+.3g}",
                _g(r.output_error["sqnr_db"]),
                f"{r.output_error['cosine']:.6f}",
            ]
        )
    return Table(header, rows)


def _keyed_table(results: Sequence[ComparisonResult], attr: str, with_float: bool) -> Table | None:
    keys = list(dict.fromkeys(k for r in results for k in getattr(r, attr)))
    if with_float:
        keys = list(dict.fromkeys([*results[0].float_metrics, *keys]))
    if not keys:
        return None
    header = ["metric", *([FLOAT_NAME] if with_float else []), *(r.name for r in results)]
    rows = []
    for k in keys:
        cells = [_metric_cell(k, results[0].float_metrics[k])] if with_float else []
        cells += [_metric_cell(k, getattr(r, attr)[k]) if k in getattr(r, attr) else "–" for r in results]
        rows.append([k, *cells])
    return Table(header, rows)


def _comparison_table(results: Sequence[ComparisonResult]) -> Table:
    keys = list(dict.fromkeys(k for r in results for k in (*r.output_error, *r.agreement)))
    rows = [
        [k, *(_metric_cell(k, {**r.output_error, **r.agreement}.get(k, math.nan)) for r in results)]
        for k in keys
    ]
    return Table(["metric", *(r.name for r in results)], rows)


def _class_table(results: Sequence[ComparisonResult]) -> Table | None:
    pc = results[0].per_class
    if pc is None or pc.support.numel() > MAX_CLASSES_SHOWN:
        return None
    rows = []
    for c in range(pc.support.numel()):
        cells = [_metric_cell("accuracy", pc.float_accuracy[c].item())]
        cells += [_metric_cell("accuracy", r.per_class.quant_accuracy[c].item()) for r in results]
        rows.append([pc.names[c], str(int(pc.support[c])), *cells])
    return Table(["class", "samples", FLOAT_NAME, *(r.name for r in results)], rows)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.3g}%"


def _layer_table(r: ComparisonResult) -> Table | None:
    if not r.layers_isolated:
        return None
    header = [
        "layer",
        "module",
        "weight SQNR dB",
        "SQNR isolated",
        "SQNR propagated",
        "cosine propagated",
        "levels used",
        "range used",
        "clipped",
        "underflowed",
    ]
    rows = []
    for iso, prop in zip(r.layers_isolated, r.layers_propagated, strict=True):
        g = iso.grid
        rows.append(
            [
                iso.name,
                iso.format,
                _g(iso.weight_sqnr_db, 3),
                _g(iso.sqnr_db, 3),
                _g(prop.sqnr_db, 3),
                f"{prop.cosine:.6f}" if math.isfinite(prop.cosine) else "–",
                _pct(g.level_use),
                _pct(g.range_use),
                _pct(g.clipped),
                _pct(g.underflowed),
            ]
        )
    return Table(header, rows, left=2)


def allocation_table(allocation: Allocation) -> Table:
    rows = [
        [
            row.name,
            choice_name(allocation.mapping[row.name]),
            f"{row.weights:,}",
            f"{row.bits_per_weight:.3f}",
            _g(row.cost, 3),
        ]
        for row in allocation.table
    ]
    return Table(["layer", "choice", "weights", "bits/weight", "estimated cost"], rows, left=2)


def sections(results: Sequence[ComparisonResult], allocation: Allocation | None) -> list[Section]:
    """(heading, paragraph, [(sub-heading, table)]) in report order; shared by Markdown and HTML."""
    r0 = results[0]
    unit = "token" if r0.task == "lm" else "sample"
    out = [
        (
            "Summary",
            f"Task {r0.task}: {r0.rows:,} {unit}s in {r0.batches} batch{'es' if r0.batches > 1 else ''}. "
            "Size counts every tensor of the state dict; bits/weight the linear layers' storage (codes, "
            "scales, zeros) per weight. Latency: one call on the first batch.",
            [("", summary_table(results))],
        ),
    ]
    tables = [
        ("Task metrics", _keyed_table(results, "quant_metrics", True)),
        ("Quantized against fp32 outputs", _comparison_table(results)),
        ("Cost of quantization (float minus quantized)", _keyed_table(results, "deltas", False)),
        (f"Per class ({r0.per_class.what})" if r0.per_class else "", _class_table(results)),
    ]
    out.append(("Metrics", "", [(h, t) for h, t in tables if t is not None]))
    layer_tables = [(r.name, t) for r in results if (t := _layer_table(r)) is not None]
    if layer_tables:
        out.append(
            (
                "Layers",
                "Per quantized layer: SQNR of its output alone on the float input (isolated) and "
                "with the error of the layers before it (propagated); how its weights use the "
                "code grid.",
                layer_tables,
            )
        )
    if allocation is not None:
        text = (
            f"Per-layer choice under a budget of {allocation.budget_bits_per_weight:g} bits/weight: "
            f"achieved {allocation.bits_per_weight:.3f} bits/weight, total estimated cost "
            f"{_g(allocation.cost, 3)}."
        )
        out.append(("Allocation", text, [("", allocation_table(allocation))]))
    return out


# ---- Markdown and text --------------------------------------------------------------------------


def _md_table(t: Table) -> str:
    esc = [[c.replace("|", "\\|") for c in row] for row in [t.header, *t.rows]]
    lines = [
        "| " + " | ".join(esc[0]) + " |",
        "|" + "|".join("---" if i < t.left else "---:" for i in range(len(t.header))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in esc[1:]]
    return "\n".join(lines)


def markdown(title: str, sections: Sequence[Section], plots: Sequence[ReportPlot], generated_at: str) -> str:
    parts = [f"# {title}", f"Generated at {generated_at}."]
    for heading, text, tables in sections:
        parts.append(f"## {heading}")
        if text:
            parts.append(text)
        for sub, table in tables:
            if sub:
                parts.append(f"### {sub}")
            parts.append(_md_table(table))
    parts.append("## Plots")
    for p in plots:
        parts.append(f"### {p.number}. {p.title}")
        parts.append(
            f"Not drawn: {p.skipped}." if p.png is None else f"![{p.title}]({p.file})\n\n{p.caption}"
        )
    return "\n\n".join(parts) + "\n"


def text_table(t: Table) -> str:
    """``t`` as aligned plain text (names left, numbers right)."""
    widths = [max(len(row[i]) for row in [t.header, *t.rows]) for i in range(len(t.header))]

    def line(row: list[str]) -> str:
        cells = zip(row, widths, strict=True)
        return "  ".join(c.ljust(w) if i < t.left else c.rjust(w) for i, (c, w) in enumerate(cells))

    return "\n".join([line(t.header), "  ".join("-" * w for w in widths), *(line(r) for r in t.rows)])
