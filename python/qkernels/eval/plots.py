"""Plots of what quantization did to a model: accuracy, errors, distributions, code ranges, trade-offs.

Each plot function takes plain data (floats, sequences, dicts, numpy arrays or torch tensors), checks
it, and returns a :class:`matplotlib.figure.Figure` on the Agg canvas; :func:`save` writes it as a PNG.
Nothing touches pyplot's global state, and the same inputs give byte-identical PNG files.
matplotlib is imported on first use (``pip install 'qkernels[plot]'``), so ``import qkernels`` does not
need it.

A format has the same colour in every plot (:data:`FORMAT_COLORS`, :func:`format_color`). Long layer
names are shortened in the middle; plots that could hold hundreds of layers or classes show the worst
``max_layers`` with a note, or switch to a heatmap.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._plot_support import (
    _arrays,
    _count,
    _mapping,
    _number,
    _paired,
    _records,
    _short_labels,
    _sqnr_db,
    _texts,
    _values,
    shorten,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "FALLBACK_COLORS",
    "FORMAT_COLORS",
    "MAX_SCATTER_POINTS",
    "RANGE_FIELDS",
    "TRADEOFF_FIELDS",
    "accuracy_bars",
    "accuracy_loss_hist",
    "class_accuracy",
    "error_cdf",
    "error_hist",
    "format_color",
    "layer_distributions",
    "output_scatter",
    "pareto_front",
    "range_utilisation",
    "save",
    "shorten",
    "snr_by_magnitude",
    "tradeoff",
]

DPI = 110
MAX_SCATTER_POINTS = 20_000
INSTALL_HINT = "qkernels.eval.plots needs matplotlib: pip install 'qkernels[plot]'"

# One colour per format in every plot. Names are compared lower-case with '-' and ' ' read as '_'.
FORMAT_COLORS: dict[str, str] = {
    "fp32": "#404040",
    "int8": "#1f77b4",
    "int8_w8a16": "#17becf",
    "int4": "#ff7f0e",
    "int4_gptq": "#ffbb78",  # GPTQ: the light shade of int4's colour
    "int3": "#d62728",
    "nf4": "#2ca02c",
    "vq": "#9467bd",
}
_ALIASES = {"int8_w8a8": "int8", "float": "fp32", "float32": "fp32"}
# For other names; none of them is close to a colour above.
FALLBACK_COLORS = ("#8c564b", "#e377c2", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")
_FLOAT_GREY = "#b0b0b0"


# ---- matplotlib, colours -------------------------------------------------------------------------


def _matplotlib() -> tuple[Any, Any]:
    """``(Figure, FigureCanvasAgg)``, imported on first use; ImportError with the install hint."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return Figure, FigureCanvasAgg


def _figure(width: float, height: float) -> Figure:
    """A Figure on its own Agg canvas: no pyplot, so no global state."""
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _key(name: str) -> str:
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return _ALIASES.get(key, key)


def format_color(name: str) -> str:
    """The colour of format ``name``: fixed for the known formats, else picked from
    :data:`FALLBACK_COLORS` by a hash of the name (the same in every run and every plot)."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a format name (str), got {type(name).__name__}")
    key = _key(name)
    if key in FORMAT_COLORS:
        return FORMAT_COLORS[key]
    return FALLBACK_COLORS[zlib.crc32(key.encode()) % len(FALLBACK_COLORS)]


def _colors(names: Iterable[str]) -> dict[str, str]:
    """:func:`format_color` of each name, except that two unknown names of one plot whose hashes
    collide get different colours (taken in sorted order, so the same set of names always gets the
    same colours)."""
    names = list(names)
    out = {n: FORMAT_COLORS[_key(n)] for n in names if _key(n) in FORMAT_COLORS}
    taken: set[str] = set()
    for n in sorted(set(names) - set(out)):
        start = zlib.crc32(_key(n).encode()) % len(FALLBACK_COLORS)
        slots = [FALLBACK_COLORS[(start + i) % len(FALLBACK_COLORS)] for i in range(len(FALLBACK_COLORS))]
        out[n] = next((c for c in slots if c not in taken), slots[0])
        taken.add(out[n])
    return out


def _title(ax: Any, title: str | None, default: str) -> None:
    ax.set_title(default if title is None else title)


def _db(v: float) -> str:
    return "∞ dB (exact)" if math.isinf(v) else f"{v:.1f} dB"


# ---- 1. accuracy per format -----------------------------------------------------------------------


def accuracy_bars(
    accuracy: Mapping[str, float],
    *,
    metric: str = "accuracy",
    unit: str = "%",
    baseline: str | None = "fp32",
    title: str | None = None,
) -> Figure:
    """One bar per format (in the dict's order) with its value; when ``baseline`` is a key, a dashed
    line at its value and each other bar's difference to it (in percentage points for ``unit='%'``)."""
    _texts(metric=metric, unit=unit, baseline=baseline, title=title)
    acc = {k: _number(v, f"accuracy[{k!r}]") for k, v in _mapping(accuracy, "accuracy").items()}
    names = list(acc)
    colors = _colors(names)
    fig = _figure(max(5.0, 0.75 * len(names) + 2.5), 4.2)
    ax = fig.add_subplot()
    bars = ax.bar(range(len(names)), list(acc.values()), color=[colors[n] for n in names], edgecolor="black")
    rotate = len(names) > 6
    ax.set_xticks(
        range(len(names)),
        _short_labels(names, 20),
        rotation=30 if rotate else 0,
        ha="right" if rotate else "center",
    )
    base = acc.get(baseline) if baseline is not None else None
    delta_unit = "pp" if unit == "%" else unit
    labels = [
        f"{v:.4g}" if base is None or n == baseline else f"{v:.4g}\n{v - base:+.3g} {delta_unit}".rstrip()
        for n, v in acc.items()
    ]
    # Inside the bars: above them the labels would collide with the baseline line.
    box = {"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}
    ax.bar_label(bars, labels, label_type="center", fontsize=8, bbox=box)
    if base is not None:
        ax.axhline(base, color=colors[baseline], linestyle="--", linewidth=1, label=f"{baseline}: {base:.4g}")
        fig.legend(loc="outside right upper", fontsize=8)
    ax.set_xlabel("format")
    ax.set_ylabel(f"{metric} ({unit})" if unit else metric)
    _title(ax, title, f"{metric[:1].upper()}{metric[1:]} by format")
    return fig


# ---- 2. accuracy loss over samples or classes ----------------------------------------------------


def accuracy_loss_hist(
    losses: Mapping[str, Any], *, over: str = "sample", bins: int = 30, title: str | None = None
) -> Figure:
    """Histogram of the accuracy loss (float minus quantized, in percentage points) over samples or
    classes, one outline per format on common bins; positive means quantization lost accuracy."""
    _texts(title=title)
    if over not in ("sample", "class"):
        raise ValueError(f"over: expected 'sample' or 'class', got {over!r}")
    data = _arrays(losses, "losses")
    bins = _count(bins, "bins")
    edges = np.histogram_bin_edges(np.concatenate(list(data.values())), bins=bins)
    colors = _colors(data)
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    for name, v in data.items():
        counts, _ = np.histogram(v, bins=edges)
        ax.stairs(counts, edges, color=colors[name], linewidth=1.8, label=f"{name} (mean {v.mean():+.3g} pp)")
    ax.axvline(0, color="black", linewidth=0.8, linestyle=":")
    plural = "samples" if over == "sample" else "classes"
    ax.set_xlabel("accuracy loss, float − quantized (percentage points)")
    ax.set_ylabel(f"number of {plural}")
    ax.legend(fontsize=8)
    _title(ax, title, f"Accuracy loss per {over}")
    return fig


# ---- 3. quantization error distribution ----------------------------------------------------------


def error_hist(
    errors: Mapping[str, Any],
    *,
    bins: int = 81,
    log_y: bool = True,
    density: bool = True,
    what: str = "output",
    title: str | None = None,
) -> Figure:
    """Distribution of the error (quantized minus float) of each format on common bins symmetric
    about 0; ``log_y`` shows the tails, ``density`` makes formats with different counts comparable."""
    _texts(what=what, title=title)
    data = _arrays(errors, "errors")
    bins = _count(bins, "bins")
    lim = max(float(np.abs(v).max()) for v in data.values()) or 1.0  # all exact: any range shows it
    edges = np.linspace(-lim, lim, bins + 1)
    colors = _colors(data)
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    for name, v in data.items():
        counts, _ = np.histogram(v, bins=edges, density=density)
        rms = math.sqrt(float(np.mean(v**2)))
        ax.stairs(counts, edges, color=colors[name], linewidth=1.5, label=f"{name} (RMS {rms:.3g})")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(f"error, quantized − float (units of the {what})")
    ax.set_ylabel(("density (1 / unit)" if density else "count") + (", log scale" if log_y else ""))
    ax.legend(fontsize=8)
    _title(ax, title, f"Quantization error of the {what}")
    return fig


# ---- 4. quantized against float ------------------------------------------------------------------


def _subsample(n: int, k: int) -> np.ndarray:
    """At most ``k`` of ``n`` indices, sorted, the same on every run (a fixed seed)."""
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=k, replace=False))


def output_scatter(
    reference: Any,
    quantized: Any,
    *,
    max_points: int = MAX_SCATTER_POINTS,
    what: str = "output",
    title: str | None = None,
) -> Figure:
    """Quantized against float values, one panel per format (``quantized`` is one tensor or a dict of
    them) with the line y = x and the SQNR over all values; at most ``max_points`` points per panel,
    the same fixed random subset in each."""
    _texts(what=what, title=title)
    ref, qs = _paired(reference, quantized)
    idx = _subsample(ref.size, _count(max_points, "max_points"))
    colors = _colors(qs)
    ncols = min(len(qs), 3)
    nrows = math.ceil(len(qs) / ncols)
    fig = _figure(3.6 * ncols + 0.4, 3.5 * nrows + 0.5)
    lo = min(float(ref.min()), *(float(q.min()) for q in qs.values()))
    hi = max(float(ref.max()), *(float(q.max()) for q in qs.values()))
    pad = 0.03 * (hi - lo) or 1.0
    first = None
    for i, (name, q) in enumerate(qs.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1, sharex=first, sharey=first)
        first = first or ax
        ax.scatter(ref[idx], q[idx], s=3, alpha=0.35, color=colors[name], linewidths=0, label=name)
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8, linestyle="--", label="y = x")
        note = f"SQNR {_db(_sqnr_db(ref, q))}\n{idx.size:,} of {ref.size:,} values shown"
        ax.text(0.03, 0.97, note, transform=ax.transAxes, va="top", fontsize=8)
        ax.set_xlabel(f"float {what} (units of the {what})")
        ax.set_ylabel(f"{name} {what} (same units)")
        ax.set_title(shorten(name, 30), fontsize=10)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal", adjustable="box")
    fig.suptitle(f"Quantized against float {what}" if title is None else title)
    return fig


# ---- 5. CDF of |error| ---------------------------------------------------------------------------


def error_cdf(errors: Mapping[str, Any], *, what: str = "output", title: str | None = None) -> Figure:
    """Fraction of values whose |error| is at most x, per format, on a log x axis (values with zero
    error count from the start; the legend gives their share)."""
    _texts(what=what, title=title)
    data = _arrays(errors, "errors")
    colors = _colors(data)
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    for name, v in data.items():
        a = np.sort(np.abs(v))
        # Up to 2000 evenly spaced order statistics plus the largest: the curve, not millions of steps.
        pos = np.unique(np.append(np.linspace(0, a.size - 1, min(a.size, 2000)).astype(np.int64), a.size - 1))
        pos = pos[a[pos] > 0]
        zero = float(np.mean(a == 0))
        label = f"{name} (median {np.median(a):.3g}" + (f", {100 * zero:.2g}% exactly 0)" if zero else ")")
        ax.plot(
            a[pos], (pos + 1) / a.size, drawstyle="steps-post", color=colors[name], linewidth=1.6, label=label
        )
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="major", alpha=0.3)
    ax.set_xlabel(f"|quantized − float| (units of the {what}, log scale)")
    ax.set_ylabel("fraction of values with |error| ≤ x")
    ax.legend(fontsize=8, loc="upper left")
    _title(ax, title, f"CDF of the absolute error of the {what}")
    return fig


# ---- 6. accuracy per class -----------------------------------------------------------------------


def class_accuracy(
    per_class: Mapping[str, Any],
    *,
    class_names: Sequence[str] | None = None,
    max_grouped: int = 12,
    unit: str = "%",
    title: str | None = None,
) -> Figure:
    """Accuracy of each class per format: grouped bars for up to ``max_grouped`` classes, else a
    heatmap of format x class (the row labels give each format's mean)."""
    _texts(unit=unit, title=title)
    data = _arrays(per_class, "per_class")
    first = next(iter(data))
    n_classes = data[first].size
    for name, v in data.items():
        if v.size != n_classes:
            raise ValueError(
                f"per_class[{name!r}]: expected {n_classes} values (one per class, as per_class[{first!r}]), "
                f"got {v.size}"
            )
    if class_names is None:
        class_names = [str(i) for i in range(n_classes)]
    elif isinstance(class_names, str) or len(class_names) != n_classes:
        raise ValueError(f"class_names: expected {n_classes} names (one per class), got {class_names!r}")
    labels = _short_labels([str(c) for c in class_names], 16)
    max_grouped = _count(max_grouped, "max_grouped")
    names = list(data)
    colors = _colors(names)
    ylabel = f"accuracy ({unit})" if unit else "accuracy"
    if n_classes <= max_grouped:
        fig = _figure(max(6.4, 0.22 * len(names) * n_classes + 2.5), 4.4)
        ax = fig.add_subplot()
        width = 0.8 / len(names)
        x = np.arange(n_classes)
        for i, name in enumerate(names):
            ax.bar(x + (i - (len(names) - 1) / 2) * width, data[name], width, color=colors[name], label=name)
        ax.set_xticks(
            x, labels, rotation=30 if n_classes > 6 else 0, ha="right" if n_classes > 6 else "center"
        )
        vmin = min(float(v.min()) for v in data.values())
        vmax = max(float(v.max()) for v in data.values())
        # Bars from 0 would hide differences of a few points between formats near 100%.
        low = max(0.0, vmin - 0.2 * max(vmax - vmin, 1e-6 * abs(vmax)))
        # Every bar at 0 (every class missed) still needs an axis of some height.
        ax.set_ylim(low, vmax + 0.08 * (vmax - low) if vmax > low else low + 1.0)
        ax.set_xlabel("class")
        ax.set_ylabel(ylabel + (f", axis from {low:.3g}" if low > 0 else ""))
        fig.legend(loc="outside right upper", fontsize=8)
    else:
        fig = _figure(min(16.0, 0.1 * n_classes + 4.5), 0.45 * len(names) + 2.2)
        ax = fig.add_subplot()
        grid = np.stack([data[n] for n in names])
        img = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
        fig.colorbar(img, ax=ax, label=ylabel)
        ax.set_yticks(
            range(len(names)), [f"{n} (mean {data[n].mean():.3g})" for n in _short_labels(names, 20)]
        )
        step = max(1, math.ceil(n_classes / 40))  # at most 40 class labels stay legible
        ticks = list(range(0, n_classes, step))
        ax.set_xticks(ticks, [labels[t] for t in ticks], rotation=90, fontsize=7)
        ax.set_xlabel("class" + (f" (one label every {step} classes)" if step > 1 else ""))
        ax.set_ylabel("format")
    _title(ax, title, "Accuracy per class")
    return fig


# ---- 7. SNR against signal magnitude -------------------------------------------------------------


def snr_by_magnitude(
    reference: Any, quantized: Any, *, bins: int = 12, what: str = "output", title: str | None = None
) -> Figure:
    """SNR (dB) of the values in each log-spaced bin of |reference|, per format: where quantization
    noise hurts (small values under a coarse step) and where it does not. Bins span the 0.1% quantile
    of the non-zero |values| to their maximum; smaller non-zero values join the first bin, zeros none.
    Bins without values or without error are left out."""
    _texts(what=what, title=title)
    ref, qs = _paired(reference, quantized)
    bins = _count(bins, "bins")
    mag = np.abs(ref)
    nz = mag > 0
    if not nz.any():
        raise ValueError("reference: expected at least one non-zero value, got all zeros")
    lo, hi = float(np.quantile(mag[nz], 0.001)), float(mag.max())
    edges = np.geomspace(lo, hi, bins + 1) if hi > lo else np.array([lo / 2, hi * 2])
    n_bins = edges.size - 1
    which = np.clip(np.searchsorted(edges, mag[nz], side="right") - 1, 0, n_bins - 1)
    signal = np.bincount(which, weights=ref[nz] ** 2, minlength=n_bins)
    centres = np.sqrt(edges[:-1] * edges[1:])
    colors = _colors(qs)
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    for name, q in qs.items():
        noise = np.bincount(which, weights=(q[nz] - ref[nz]) ** 2, minlength=n_bins)
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = np.where((noise > 0) & (signal > 0), 10 * np.log10(signal / noise), np.nan)
        label = f"{name} (overall {_db(_sqnr_db(ref, q))})"
        ax.plot(centres, snr, marker="o", markersize=4, color=colors[name], linewidth=1.5, label=label)
    ax.set_xscale("log")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_xlabel(f"|float {what}| (bin centre, log scale)")
    ax.set_ylabel("SNR in the bin (dB)")
    ax.legend(fontsize=8)
    _title(ax, title, "Quantization noise against signal magnitude")
    return fig


# ---- 8. distributions before and after, per layer -----------------------------------------------


def layer_distributions(
    layers: Mapping[str, Any],
    *,
    format: str | None = None,
    what: str = "weight",
    bins: int = 60,
    max_layers: int = 12,
    log_y: bool = True,
    title: str | None = None,
) -> Figure:
    """One panel per layer: the float values (grey) and the quantized ones (the format's colour)
    overlaid on common bins. ``layers`` maps a layer name to ``(float, quantized)`` of the same size;
    past ``max_layers`` layers, those with the largest relative error ||q - f|| / ||f|| are shown."""
    _texts(format=format, what=what, title=title)
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, pair in _mapping(layers, "layers").items():
        if not (isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2):
            raise ValueError(
                f"layers[{name!r}]: expected a (float, quantized) pair, got {type(pair).__name__}"
            )
        f, q = _values(pair[0], f"layers[{name!r}][0]"), _values(pair[1], f"layers[{name!r}][1]")
        if f.size != q.size:
            raise ValueError(
                f"layers[{name!r}]: expected float and quantized of the same size, got {f.size} and {q.size}"
            )
        pairs[name] = (f, q)
    bins, max_layers = _count(bins, "bins"), _count(max_layers, "max_layers")
    rel = {n: float(np.linalg.norm(q - f) / (np.linalg.norm(f) or 1.0)) for n, (f, q) in pairs.items()}
    shown = list(pairs) if len(pairs) <= max_layers else sorted(pairs, key=lambda n: -rel[n])[:max_layers]
    color = format_color(format) if format is not None else FORMAT_COLORS["int3"]
    qlabel = "quantized" if format is None else format
    ncols = min(len(shown), 4)
    nrows = math.ceil(len(shown) / ncols)
    fig = _figure(3.3 * ncols + 0.3, 2.7 * nrows + 0.8)
    for i, (name, label) in enumerate(zip(shown, _short_labels(shown, 30), strict=True)):
        f, q = pairs[name]
        ax = fig.add_subplot(nrows, ncols, i + 1)
        edges = np.histogram_bin_edges(np.concatenate([f, q]), bins=bins)
        ax.stairs(np.histogram(f, edges)[0], edges, fill=True, color=_FLOAT_GREY, label="float")
        ax.stairs(np.histogram(q, edges)[0], edges, color=color, linewidth=1.2, label=qlabel)
        if log_y:
            ax.set_yscale("log")
        ax.set_title(f"{label}\nrel. error {rel[name]:.2%}", fontsize=8)
        ax.set_xlabel(f"{what} value", fontsize=8)
        ax.set_ylabel("count" + (" (log)" if log_y else ""), fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7)
    heading = f"{what[:1].upper()}{what[1:]} distributions before and after quantization"
    if len(shown) < len(pairs):
        heading += f"\nthe {len(shown)} of {len(pairs)} layers with the largest relative error"
    fig.suptitle(heading if title is None else title, fontsize=11)
    return fig


# ---- 9. code-range use per layer -----------------------------------------------------------------

RANGE_FIELDS = ("layer", "used_fraction", "clipped_fraction", "underflow_fraction")


def range_utilisation(records: Iterable[Any], *, max_layers: int = 30, title: str | None = None) -> Figure:
    """Per layer, the share of the code range its values use (left) and the shares of its values
    clipped at the range's ends or underflowed to zero (right). Records carry :data:`RANGE_FIELDS` (dicts,
    objects or 4-tuples; fractions in [0, 1]). Past ``max_layers`` layers, the worst are shown: most
    values clipped or underflowed, then least range used."""
    _texts(title=title)
    rows = []
    for i, (layer, used, clipped, under) in enumerate(_records(records, RANGE_FIELDS, "records")):
        if not isinstance(layer, str) or not layer:
            raise ValueError(f"records[{i}].layer: expected a non-empty layer name, got {layer!r}")
        rows.append(
            (
                layer,
                _number(used, f"records[{i}].used_fraction", 0.0, 1.0),
                _number(clipped, f"records[{i}].clipped_fraction", 0.0, 1.0),
                _number(under, f"records[{i}].underflow_fraction", 0.0, 1.0),
            )
        )
    seen: set[str] = set()
    for layer, *_ in rows:
        if layer in seen:
            raise ValueError(f"records: expected each layer once, got {layer!r} twice")
        seen.add(layer)
    max_layers = _count(max_layers, "max_layers")
    shown = (
        rows if len(rows) <= max_layers else sorted(rows, key=lambda r: (-(r[2] + r[3]), r[1]))[:max_layers]
    )
    y = np.arange(len(shown))
    fig = _figure(9.5, 0.26 * len(shown) + 1.9)
    grid = fig.add_gridspec(1, 2, width_ratios=[1.3, 1])
    left = fig.add_subplot(grid[0])
    right = fig.add_subplot(grid[1], sharey=left)
    used = np.array([r[1] for r in shown]) * 100
    left.barh(y, used, color=FORMAT_COLORS["int8"], height=0.7)
    left.set_xlim(0, 100)
    left.set_yticks(y, _short_labels([r[0] for r in shown], 36), fontsize=7)
    left.invert_yaxis()
    left.set_xlabel("code range used (%)")
    left.set_ylabel("layer")
    left.set_title("range used", fontsize=10)
    h = 0.38
    for off, col, label, color in (
        (-h / 2, 2, "clipped", "#d62728"),
        (h / 2, 3, "underflowed to zero", "#ff7f0e"),
    ):
        share = np.array([r[col] for r in shown]) * 100
        bars = right.barh(y + off, share, height=h, color=color, label=label)
        right.bar_label(bars, [f"{s:.2g}" if s else "" for s in share], padding=2, fontsize=6)
    right.tick_params(labelleft=False)
    right.margins(x=0.15)
    right.set_xlabel("share of values (%)")
    right.set_title("clipped / underflowed", fontsize=10)
    right.legend(fontsize=8, loc="lower right")
    heading = "Code-range use per layer"
    if len(shown) < len(rows):
        heading += (
            f": the {len(shown)} worst of {len(rows)} layers (most clipped or underflowed, then least used)"
        )
    fig.suptitle(heading if title is None else title, fontsize=11)
    return fig


# ---- 10. accuracy against size and latency -------------------------------------------------------

TRADEOFF_FIELDS = ("format", "size", "latency_ms", "accuracy")


def pareto_front(cost: Sequence[float], value: Sequence[float]) -> list[int]:
    """Indices of the points that no other point beats (lower or equal cost and higher or equal value,
    one of them strictly), ordered by cost."""
    order = sorted(range(len(cost)), key=lambda i: (cost[i], -value[i]))
    front: list[int] = []
    for i in order:
        last = front[-1] if front else None
        # Equal points beat each other in nothing, so a copy of a front point is on the front too.
        if last is None or value[i] > value[last] or (cost[i], value[i]) == (cost[last], value[last]):
            front.append(i)
    return front


def tradeoff(
    records: Iterable[Any],
    *,
    size_unit: str = "bits/weight",
    metric: str = "accuracy",
    unit: str = "%",
    title: str | None = None,
) -> Figure:
    """Two panels: accuracy against size and against latency, one marker per record (records carry
    :data:`TRADEOFF_FIELDS`: dicts, objects or 4-tuples), the Pareto front of each drawn as a line
    through ringed markers. An axis spanning more than 20x is logarithmic."""
    _texts(size_unit=size_unit, metric=metric, unit=unit, title=title)
    pts = []
    for i, (fmt, size, lat, acc) in enumerate(_records(records, TRADEOFF_FIELDS, "records")):
        if not isinstance(fmt, str) or not fmt:
            raise ValueError(f"records[{i}].format: expected a non-empty format name, got {fmt!r}")
        size = _number(size, f"records[{i}].size", 0.0)
        lat = _number(lat, f"records[{i}].latency_ms", 0.0)
        if size == 0 or lat == 0:
            raise ValueError(f"records[{i}]: expected size and latency_ms > 0, got {size} and {lat}")
        pts.append((fmt, size, lat, _number(acc, f"records[{i}].accuracy")))
    colors = _colors(p[0] for p in pts)
    acc = [p[3] for p in pts]
    fig = _figure(11.0, 4.4)
    size_ax = fig.add_subplot(1, 2, 1)
    axes = [size_ax, fig.add_subplot(1, 2, 2, sharey=size_ax)]
    for ax, col, xlabel in ((axes[0], 1, f"size ({size_unit})"), (axes[1], 2, "latency (ms)")):
        x = [p[col] for p in pts]
        front = pareto_front(x, acc)
        ax.plot(
            [x[i] for i in front],
            [acc[i] for i in front],
            color="black",
            linewidth=1,
            label="Pareto front",
            zorder=2,
        )
        ax.scatter(
            [x[i] for i in front],
            [acc[i] for i in front],
            s=170,
            facecolors="none",
            edgecolors="black",
            zorder=2,
        )
        for fmt in dict.fromkeys(p[0] for p in pts):
            mine = [i for i, p in enumerate(pts) if p[0] == fmt]
            ax.scatter(
                [x[i] for i in mine],
                [acc[i] for i in mine],
                s=60,
                color=colors[fmt],
                edgecolors="black",
                linewidths=0.5,
                label=fmt,
                zorder=3,
            )
        for i, p in enumerate(pts):
            ax.annotate(
                shorten(p[0], 16), (x[i], acc[i]), xytext=(5, 5), textcoords="offset points", fontsize=7
            )
        if max(x) / min(x) > 20:
            ax.set_xscale("log")
            xlabel += ", log scale"
        ax.margins(0.12)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric} ({unit})" if unit else metric)
    axes[0].set_title("against size", fontsize=10)
    axes[1].set_title("against latency", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    fig.suptitle(f"{metric[:1].upper()}{metric[1:]} against size and latency" if title is None else title)
    return fig


# ---- saving --------------------------------------------------------------------------------------


def save(fig: Figure, path: str | Path) -> Path:
    """Writes ``fig`` as a PNG at :data:`DPI`, with no software/version metadata, so equal figures give
    equal bytes; creates missing parent directories. Returns the path."""
    if not isinstance(fig, _matplotlib()[0]):
        raise TypeError(f"fig: expected a matplotlib Figure, got {type(fig).__name__}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path: expected a file name ending in .png, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path
