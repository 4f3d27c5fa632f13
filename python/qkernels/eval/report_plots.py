"""The ten plots of a report, drawn by :mod:`qkernels.eval.plots` from :class:`ComparisonResult` s.

Each plot becomes a :class:`ReportPlot`: its PNG bytes, or the reason it could not be drawn from
these results (no per-class breakdown without labels, no latency when it was not measured, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import plots
from .compare import ComparisonResult

__all__ = ["FLOAT_NAME", "ReportPlot", "detail_result", "draw_plots"]

FLOAT_NAME = "fp32"
GROUPED_BARS = 40
_WHAT = {"classification": "logits", "embedding": "embedding", "regression": "output", "lm": "logits"}


@dataclass(frozen=True)
class ReportPlot:
    """``slug`` names the file (``plots/<NN>_<slug>.png``); ``png`` is None when the plot was not
    drawn, and ``skipped`` then says why."""

    number: int
    slug: str
    title: str
    caption: str
    png: bytes | None
    skipped: str | None = None

    @property
    def file(self) -> str:
        return f"plots/{self.number:02d}_{self.slug}.png"


def detail_result(results: Sequence[ComparisonResult], name: str | None) -> ComparisonResult:
    """The result whose layers the per-layer plots show: ``name``, or the smallest format (fewest
    bits per weight, the first on ties), where quantization did the most damage."""
    if name is None:
        return min(results, key=lambda r: r.quant_stats.bits_per_weight)
    for r in results:
        if r.name == name:
            return r
    raise ValueError(f"write_report: detail: expected one of {[r.name for r in results]}, got {name!r}")


def _errors(results: Sequence[ComparisonResult]) -> dict[str, Any]:
    return {r.name: r.quant_values - r.float_values for r in results}


def _score_bars(results: Sequence[ComparisonResult], detail: ComparisonResult) -> Any:
    s = results[0].score
    values = {FLOAT_NAME: s.float_value, **{r.name: r.score.quant_value for r in results}}
    return plots.accuracy_bars(values, metric=s.name, unit=s.unit, baseline=FLOAT_NAME)


def _loss_hist(results: Sequence[ComparisonResult], detail: ComparisonResult) -> Any:
    r0 = results[0]
    losses = {r.name: r.losses for r in results}
    return plots.accuracy_loss_hist(losses, over=r0.losses_over, title=_capital(r0.losses_what))


def _class_accuracy(results: Sequence[ComparisonResult], detail: ComparisonResult) -> Any:
    pc = results[0].per_class
    if pc is None:
        raise _Skip("no per-class breakdown: compare() was given no labels, or the task has no classes")
    seen = pc.support > 0
    per_class = {FLOAT_NAME: 100.0 * pc.float_accuracy[seen]}
    per_class.update({r.name: 100.0 * r.per_class.quant_accuracy[seen] for r in results})
    names = [pc.names[i] for i in seen.nonzero().flatten().tolist()]
    title = f"{_capital(pc.what)} per class"
    # Past ~40 bars the grouped chart gets too wide to read on a page: a heatmap instead.
    grouped = max(1, GROUPED_BARS // len(per_class))
    return plots.class_accuracy(per_class, class_names=names, max_grouped=grouped, title=title)


def _layer_distributions(results: Sequence[ComparisonResult], detail: ComparisonResult) -> Any:
    return plots.layer_distributions(dict(detail.weight_samples), format=detail.name, what="weight")


def _range_use(results: Sequence[ComparisonResult], detail: ComparisonResult) -> Any:
    if not detail.layers_isolated:
        raise _Skip("no per-layer reports: compare() ran with layers=False")
    records = [
        {
            "layer": r.name,
            "used_fraction": r.grid.range_use,
            "clipped_fraction": r.grid.clipped,
            "underflow_fraction": r.grid.underflowed,
        }
        for r in detail.layers_isolated
        if r.grid.range_use is not None
    ]
    if not records:
        raise _Skip(f"{detail.name}: no layer has a code width to measure its range against")
    return plots.range_utilisation(records, title=f"Code-range use per layer ({detail.name})")


def _tradeoff(results: Sequence[ComparisonResult], detail: ComparisonResult) -> Any:
    r0 = results[0]
    if r0.float_stats.latency is None or any(r.quant_stats.latency is None for r in results):
        raise _Skip("no latency: compare() ran with latency_repeats=0")
    records = [
        {
            "format": FLOAT_NAME,
            "size": r0.float_stats.bits_per_weight,
            "latency_ms": 1e3 * r0.float_stats.latency.median_s,
            "accuracy": r0.score.float_value,
        }
    ] + [
        {
            "format": r.name,
            "size": r.quant_stats.bits_per_weight,
            "latency_ms": 1e3 * r.quant_stats.latency.median_s,
            "accuracy": r.score.quant_value,
        }
        for r in results
    ]
    return plots.tradeoff(records, metric=r0.score.name, unit=r0.score.unit)


class _Skip(Exception):
    """A plot that these results cannot feed; the message says why."""


Drawer = Callable[[Sequence[ComparisonResult], ComparisonResult], Any]
Spec = tuple[str, str, str, Drawer]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _what(results: Sequence[ComparisonResult]) -> str:
    return _WHAT[results[0].task]


def _error_hist(results: Sequence[ComparisonResult], detail: ComparisonResult) -> Any:
    return plots.error_hist(_errors(results), what=_what(results))


def _scatter(results: Sequence[ComparisonResult], detail: ComparisonResult) -> Any:
    quantized = {r.name: r.quant_values for r in results}
    return plots.output_scatter(results[0].float_values, quantized, what=_what(results))


def _error_cdf(results: Sequence[ComparisonResult], detail: ComparisonResult) -> Any:
    return plots.error_cdf(_errors(results), what=_what(results))


def _snr(results: Sequence[ComparisonResult], detail: ComparisonResult) -> Any:
    quantized = {r.name: r.quant_values for r in results}
    return plots.snr_by_magnitude(results[0].float_values, quantized, what=_what(results))


def _specs(results: Sequence[ComparisonResult], detail: ComparisonResult) -> list[Spec]:
    """(slug, title, caption, drawer) of each plot, in report order."""
    r0, what, d = results[0], _what(results), detail.name
    n = f"{r0.float_values.numel():,} {what} values"
    over = "classes" if r0.losses_over == "class" else "samples"
    return [
        ("score", f"{_capital(r0.score.name)} by format",
         "The task score of each format; the dashed line is fp32.", _score_bars),
        ("loss_hist", _capital(r0.losses_what), f"Distribution of the {r0.losses_what} over {over}.",
         _loss_hist),
        ("error_hist", f"Error of the {what}", f"Quantized minus float, over {n}.", _error_hist),
        ("output_scatter", f"Quantized against float {what}", f"Points drawn from {n}.", _scatter),
        ("error_cdf", f"CDF of the absolute error of the {what}", f"Over {n}.", _error_cdf),
        ("class_accuracy", "Per-class scores", "Classes without samples are left out.", _class_accuracy),
        ("snr_by_magnitude", "SNR against magnitude",
         f"SNR of the {what} values binned by their float magnitude.", _snr),
        ("layer_distributions", f"Weight distributions ({d})",
         f"Float weights (grey) and the {d} weights (dequantized) per layer.", _layer_distributions),
        ("range_use", f"Code-range use per layer ({d})",
         "Share of the code range the weights use, and the shares clipped or rounded to zero "
         "(isolated layer reports).", _range_use),
        ("tradeoff", "Score against size and latency",
         "Bits per weight of the linear layers and the median latency of one batch; the line is the "
         "Pareto front.", _tradeoff),
    ]  # fmt: skip


def draw_plots(
    results: Sequence[ComparisonResult], detail: ComparisonResult, out_dir: Path
) -> list[ReportPlot]:
    """The ten plots in report order, each saved under ``out_dir`` as its ``file`` and returned with
    its PNG bytes (or skipped, with the reason)."""
    out = []
    for i, (slug, title, caption, draw) in enumerate(_specs(results, detail), start=1):
        try:
            fig = draw(results, detail)
        except _Skip as why:
            out.append(ReportPlot(i, slug, title, caption, None, str(why)))
            continue
        plot = ReportPlot(i, slug, title, caption, b"")
        png = plots.save(fig, out_dir / plot.file).read_bytes()
        out.append(ReportPlot(i, slug, title, caption, png))
    return out
