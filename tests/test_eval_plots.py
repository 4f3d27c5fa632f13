"""qkernels.eval.plots: axes, artists and labels of each plot, PNG bytes, many layers, bad inputs."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib", reason="the plots need pip install 'qkernels[plot]'")

from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.patches import StepPatch
from qkernels.eval import plots
from qkernels.eval._plot_support import _short_labels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FORMATS = ["fp32", "int8", "int8_w8a16", "int4", "int3", "nf4", "vq"]


def _rtn(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Round-to-nearest on a per-tensor absmax grid: a quantizer whose error has the usual shape."""
    step = x.abs().max() / (2 ** (bits - 1) - 1)
    return torch.round(x / step) * step


def _outputs(n: int = 5000) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ref = torch.randn(n)
    return ref, {"int8": _rtn(ref, 8), "int4": _rtn(ref, 4), "int3": _rtn(ref, 3)}


def _stairs(ax) -> list[StepPatch]:
    return [p for p in ax.patches if isinstance(p, StepPatch)]


def _data_axes(fig: Figure) -> list:
    """The figure's axes without colorbars (matplotlib tags a colorbar's axes with ``_colorbar``)."""
    return [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]


def _assert_labelled(fig: Figure) -> None:
    title = fig._suptitle.get_text() if fig._suptitle is not None else ""
    for ax in _data_axes(fig):
        # A panel that shares its y axis with a labelled one may leave the label to it.
        ylabels = [a.get_ylabel().strip() for a in ax.get_shared_y_axes().get_siblings(ax)]
        assert ax.get_xlabel().strip() and any(ylabels)
        assert title.strip() or ax.get_title().strip()


def _legend_texts(fig: Figure) -> list[str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    return [t.get_text() for lg in legends for t in lg.get_texts()]


# One builder per plot, each on small but realistic data; the same call always builds the same figure.
BUILDERS = {
    "accuracy_bars": lambda: plots.accuracy_bars({"fp32": 91.3, "int8": 91.1, "int4": 89.8, "nf4": 90.2}),
    "accuracy_loss_hist": lambda: plots.accuracy_loss_hist(
        {"int8": np.linspace(-1, 1, 50), "int4": np.linspace(-2, 6, 50)}, over="class"
    ),
    "error_hist": lambda: plots.error_hist({k: q - r for r, qs in [_outputs()] for k, q in qs.items()}),
    "output_scatter": lambda: plots.output_scatter(*_outputs()),
    "error_cdf": lambda: plots.error_cdf({k: q - r for r, qs in [_outputs()] for k, q in qs.items()}),
    "class_accuracy": lambda: plots.class_accuracy(
        {"fp32": np.linspace(90, 99, 5), "int4": np.linspace(85, 98, 5)}, class_names=list("abcde")
    ),
    "snr_by_magnitude": lambda: plots.snr_by_magnitude(*_outputs()),
    "layer_distributions": lambda: plots.layer_distributions(
        {f"encoder.layer.{i}.fc": (w := torch.randn(2000), _rtn(w, 4)) for i in range(3)}, format="int4"
    ),
    "range_utilisation": lambda: plots.range_utilisation(
        [(f"layers.{i}.proj", 0.1 * (i + 1), 0.002 * i, 0.01) for i in range(8)]
    ),
    "tradeoff": lambda: plots.tradeoff(
        [("fp32", 32, 10.0, 91.3), ("int8", 8, 4.0, 91.1), ("int4", 4.5, 3.0, 89.8), ("int3", 3.5, 3.5, 86.0)]
    ),
}


# ---- every plot -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_plot_is_a_labelled_figure(name):
    fig = BUILDERS[name]()
    assert isinstance(fig, Figure)
    _assert_labelled(fig)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_png_is_valid_and_byte_identical_for_equal_inputs(name, tmp_path):
    torch.manual_seed(0)
    first = plots.save(BUILDERS[name](), tmp_path / "a.png")
    torch.manual_seed(0)
    second = plots.save(BUILDERS[name](), tmp_path / "sub" / "b.png")
    data = first.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000  # a blank 110-dpi canvas of these sizes compresses to ~3 KB
    assert data == second.read_bytes()


@pytest.mark.slow  # a fresh interpreter imports torch: a few seconds
def test_fresh_process_gives_the_same_bytes_without_importing_matplotlib_early(tmp_path):
    # A fresh interpreter has a fresh font cache and hash seed: neither may change the bytes. It also
    # shows that importing qkernels and the plots module leaves matplotlib unimported.
    script = (
        "import sys, qkernels, qkernels.eval.plots as plots; print('matplotlib' in sys.modules); "
        "plots.save(plots.accuracy_bars({'fp32': 91.3, 'int4': 89.8, 'my_fmt': 85.0}), sys.argv[1])"
    )
    fresh = tmp_path / "fresh.png"
    run = subprocess.run(
        [sys.executable, "-c", script, str(fresh)], check=True, capture_output=True, text=True
    )
    assert run.stdout.strip() == "False"
    here = plots.save(
        plots.accuracy_bars({"fp32": 91.3, "int4": 89.8, "my_fmt": 85.0}), tmp_path / "here.png"
    )
    assert fresh.read_bytes() == here.read_bytes()


def test_save_rejects_non_png_and_non_figure(tmp_path):
    with pytest.raises(ValueError, match=r"path: expected a file name ending in \.png, got '.*x\.jpg'"):
        plots.save(BUILDERS["accuracy_bars"](), tmp_path / "x.jpg")
    with pytest.raises(TypeError, match="fig: expected a matplotlib Figure, got dict"):
        plots.save({}, tmp_path / "x.png")


def test_missing_matplotlib_names_the_extra(monkeypatch):
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)  # None in sys.modules makes the import fail
    with pytest.raises(ImportError, match=r"pip install 'qkernels\[plot\]'"):
        plots.accuracy_bars({"fp32": 1.0})


# ---- colours and names ----------------------------------------------------------------------------


def test_a_format_has_the_same_colour_in_every_plot():
    ref, qs = _outputs(500)
    errors = {k: q - ref for k, q in qs.items()}
    bars = plots.accuracy_bars({"int3": 80.0, "int8": 90.0, "int4": 85.0})
    cdf = plots.error_cdf(errors)
    bar_colors = {
        t.get_text(): to_hex(p.get_facecolor())
        for t, p in zip(bars.axes[0].get_xticklabels(), bars.axes[0].patches, strict=True)
    }
    line_colors = {ln.get_label().split(" ")[0]: to_hex(ln.get_color()) for ln in cdf.axes[0].lines}
    assert bar_colors == line_colors == {k: plots.FORMAT_COLORS[k] for k in ("int3", "int8", "int4")}


def test_format_colours_are_distinct_and_names_normalised():
    assert len(set(plots.FORMAT_COLORS.values()) | set(plots.FALLBACK_COLORS)) == len(
        plots.FORMAT_COLORS
    ) + len(plots.FALLBACK_COLORS)
    assert plots.format_color("INT8-W8A16") == plots.FORMAT_COLORS["int8_w8a16"]
    assert plots.format_color("int8-w8a8") == plots.FORMAT_COLORS["int8"]
    assert plots.format_color("gguf_q4_0") in plots.FALLBACK_COLORS
    with pytest.raises(TypeError, match="name: expected a format name"):
        plots.format_color(4)


def test_unknown_formats_in_one_plot_get_different_colours():
    names = [f"custom{i}" for i in range(len(plots.FALLBACK_COLORS))]
    fig = plots.accuracy_bars(dict.fromkeys(names, 50.0))
    colors = [to_hex(p.get_facecolor()) for p in fig.axes[0].patches]
    assert len(set(colors)) == len(names)
    assert set(colors) <= set(plots.FALLBACK_COLORS)


def test_shorten_cuts_in_the_middle():
    name = "bert.encoder.layer.11.attention.output.dense"
    short = plots.shorten(name, 20)
    assert len(short) == 20 and short.count("…") == 1
    head, tail = short.split("…")
    assert name.startswith(head) and name.endswith(tail) and len(head) >= 9 and len(tail) >= 9
    assert plots.shorten("fc1", 20) == "fc1"
    with pytest.raises(ValueError, match="width: expected an int >= 5, got 2"):
        plots.shorten(name, 2)


def test_short_labels_keep_what_tells_200_layers_apart():
    kinds = ["attention.self.query", "attention.self.key", "attention.output.dense", "intermediate.dense"]
    names = [f"bert.encoder.layer.{i // 4}.{kinds[i % 4]}" for i in range(200)]
    labels = _short_labels(names, 30)
    assert len(set(labels)) == 200
    assert all(len(s) <= 30 for s in labels)
    # The layer number survives whole: ".7." is not read as the start of ".17.".
    assert all(f".{i // 4}." in s for i, s in enumerate(labels))


# ---- 1. accuracy bars ---------------------------------------------------------------------------


def test_accuracy_bars_heights_deltas_and_baseline():
    acc = {"fp32": 91.3, "int8": 91.1, "int4": 89.8}
    fig = plots.accuracy_bars(acc, metric="top-1", unit="%")
    (ax,) = fig.axes
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [b.get_height() for b in bars] == list(acc.values())
    labels = [t.get_text() for t in ax.texts]
    assert any(f"{acc['int4'] - acc['fp32']:+.3g} pp" in t for t in labels)
    (baseline,) = ax.lines
    assert baseline.get_ydata()[0] == acc["fp32"]
    assert ax.get_ylabel() == "top-1 (%)"


def test_accuracy_bars_without_baseline_draws_no_line():
    fig = plots.accuracy_bars({"int8": 91.1, "int4": 89.8})
    assert len(fig.axes[0].lines) == 0 and not fig.legends


# ---- 2. accuracy loss ---------------------------------------------------------------------------


def test_accuracy_loss_hist_counts_every_value_once():
    losses = {"int8": np.linspace(-1, 1, 40), "int4": np.linspace(-2, 6, 25)}
    fig = plots.accuracy_loss_hist(losses, over="sample", bins=10)
    stairs = _stairs(fig.axes[0])
    assert [s.get_data().values.sum() for s in stairs] == [40, 25]
    assert fig.axes[0].get_ylabel() == "number of samples"
    assert len(_legend_texts(fig)) == 2


# ---- 3. error histogram ---------------------------------------------------------------------------


@pytest.mark.parametrize("log_y", [True, False])
def test_error_hist_is_a_density_on_symmetric_bins(log_y):
    ref, qs = _outputs()
    fig = plots.error_hist({k: q - ref for k, q in qs.items()}, bins=41, log_y=log_y)
    (ax,) = fig.axes
    stairs = _stairs(ax)
    assert len(stairs) == 3
    for s in stairs:
        values, edges = s.get_data().values, s.get_data().edges
        assert len(edges) == 42 and edges[0] == -edges[-1]
        assert float(np.sum(values * np.diff(edges))) == pytest.approx(1.0)
    assert ax.get_yscale() == ("log" if log_y else "linear")


# ---- 4. scatter ----------------------------------------------------------------------------------


def test_output_scatter_subsamples_deterministically_with_true_pairs():
    ref = torch.randn(50_000)
    qs = {"int8": _rtn(ref, 8), "int4": _rtn(ref, 4)}
    fig = plots.output_scatter(ref, qs, max_points=3000)
    assert len(fig.axes) == 2
    offsets = []
    for ax, q in zip(fig.axes, qs.values(), strict=True):
        (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
        xy = points.get_offsets()
        assert xy.shape == (3000, 2)
        # Every point is a real (float, quantized) pair: look each x up in the reference.
        where = {float(v): i for i, v in enumerate(ref.double().numpy())}
        idx = [where[float(x)] for x in xy[:, 0]]
        np.testing.assert_array_equal(xy[:, 1], q.double().numpy()[idx])
        (diag,) = [ln for ln in ax.lines if ln.get_label() == "y = x"]
        np.testing.assert_array_equal(diag.get_xdata(), diag.get_ydata())
        offsets.append(xy)
    again = plots.output_scatter(ref, qs, max_points=3000)
    np.testing.assert_array_equal(again.axes[0].collections[0].get_offsets(), offsets[0])


def test_output_scatter_takes_one_tensor_and_caps_at_20k():
    ref = torch.randn(30_000)
    fig = plots.output_scatter(ref, _rtn(ref, 4))
    (ax,) = fig.axes
    assert ax.collections[0].get_offsets().shape == (plots.MAX_SCATTER_POINTS, 2)


# ---- 5. CDF ----------------------------------------------------------------------------------------


def test_error_cdf_lines_rise_to_one_on_a_log_axis():
    ref, qs = _outputs()
    errors = {k: q - ref for k, q in qs.items()}
    fig = plots.error_cdf(errors)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert len(ax.lines) == 3
    for line, e in zip(ax.lines, errors.values(), strict=True):
        x, y = line.get_xdata(), line.get_ydata()
        assert np.all(np.diff(y) > 0) and np.all(np.diff(x) >= 0) and np.all(x > 0)
        assert y[-1] == 1.0 and x[-1] == pytest.approx(float(e.abs().max()))
        # Median check against numpy: the curve crosses 1/2 at the median |error|.
        assert np.interp(0.5, y, x) == pytest.approx(float(np.median(e.abs().numpy())), rel=0.05)


def test_error_cdf_reports_exact_values():
    fig = plots.error_cdf({"int8": np.r_[np.zeros(3), np.ones(1)]})
    (line,) = fig.axes[0].lines
    assert list(line.get_ydata()) == [1.0]  # only the one non-zero error is drawn, at F = 1
    assert "75% exactly 0" in line.get_label()


# ---- 6. classes ----------------------------------------------------------------------------------


def test_class_accuracy_grouped_bars_up_to_12_classes():
    per_class = {f: np.linspace(80, 99, 12) - i for i, f in enumerate(["fp32", "int8", "int4"])}
    fig = plots.class_accuracy(per_class)
    (ax,) = fig.axes
    containers = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [len(c) for c in containers] == [12, 12, 12]
    for c, v in zip(containers, per_class.values(), strict=True):
        assert [b.get_height() for b in c] == list(v)
    assert len(_legend_texts(fig)) == 3


def test_class_accuracy_heatmap_for_many_classes():
    per_class = {f: np.linspace(60, 99, 200) for f in FORMATS}
    fig = plots.class_accuracy(per_class, class_names=[f"class_{i}" for i in range(200)])
    (ax,) = _data_axes(fig)
    assert len(fig.axes) == 2  # the heatmap and its colorbar
    (img,) = ax.images
    np.testing.assert_array_equal(img.get_array(), np.stack(list(per_class.values())))
    assert len(ax.patches) == 0 and len(ax.get_xticks()) <= 40
    _assert_labelled(fig)


# ---- 7. SNR against magnitude -----------------------------------------------------------------------


def test_snr_by_magnitude_is_flat_for_relative_noise_and_rises_for_additive_noise():
    ref = torch.randn(20_000, dtype=torch.float64)
    relative = ref * 1.01  # error 1% of each value: 40 dB in every bin
    additive = ref + 0.01 * torch.randn(20_000, dtype=torch.float64)
    fig = plots.snr_by_magnitude(ref, {"rel": relative, "add": additive}, bins=8)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    rel_line, add_line = ax.lines
    assert len(rel_line.get_xdata()) == 8
    np.testing.assert_allclose(rel_line.get_ydata(), 40.0, atol=1e-6)
    y = add_line.get_ydata()
    assert np.all(np.diff(y[np.isfinite(y)]) > 0)
    log_centres = np.log(rel_line.get_xdata())
    np.testing.assert_allclose(np.diff(log_centres), np.diff(log_centres)[0])  # log-spaced bins


def test_snr_by_magnitude_rejects_an_all_zero_reference():
    with pytest.raises(ValueError, match="reference: expected at least one non-zero value, got all zeros"):
        plots.snr_by_magnitude(torch.zeros(10), torch.ones(10))


# ---- 8. per-layer distributions ----------------------------------------------------------------------


def test_layer_distributions_one_panel_per_layer():
    layers = {f"fc{i}": (w := torch.randn(1000), _rtn(w, 4)) for i in range(5)}
    fig = plots.layer_distributions(layers, format="int4", bins=30)
    assert len(fig.axes) == 5
    for ax in fig.axes:
        float_hist, quant_hist = _stairs(ax)
        assert float_hist.get_data().values.sum() == quant_hist.get_data().values.sum() == 1000
        assert to_hex(quant_hist.get_edgecolor()) == plots.FORMAT_COLORS["int4"]


def test_layer_distributions_200_layers_show_the_worst_12():
    # Layer i is off by (i + 1) permille of each value: the last 12 have the largest relative error.
    layers = {f"blocks.{i}.mlp": (w := torch.randn(256), w * (1 + 1e-3 * (i + 1))) for i in range(200)}
    fig = plots.layer_distributions(layers)
    assert len(fig.axes) == 12
    shown = {ax.get_title().split("\n")[0] for ax in fig.axes}
    assert shown == {f"blocks.{i}.mlp" for i in range(188, 200)}
    assert "12 of 200 layers" in fig._suptitle.get_text()


# ---- 9. code-range use --------------------------------------------------------------------------------


def test_range_utilisation_bars_per_layer():
    records = [
        {"layer": f"l{i}", "used_fraction": 0.1 * i, "clipped_fraction": 0.01, "underflow_fraction": 0.0}
        for i in range(1, 9)
    ]
    fig = plots.range_utilisation(records)
    left, right = fig.axes
    assert [p.get_width() for p in left.patches] == pytest.approx([10.0 * i for i in range(1, 9)])
    assert len(right.patches) == 16  # clipped and underflowed for each layer
    assert [t.get_text() for t in left.get_yticklabels()] == [f"l{i}" for i in range(1, 9)]
    assert len(_legend_texts(fig)) == 2


def test_range_utilisation_200_layers_show_30_worst():
    # 29 layers clip and are the worst, whatever their range use; the 30th is the one of the others
    # (none clips or underflows) that uses least of its range.
    records = [
        (f"model.layers.{i}.self_attn.q_proj", 0.5, 0.02 if i % 7 == 0 else 0.0, 0.0) for i in range(200)
    ]
    worst = {r[0] for r in records if r[2] > 0}
    assert len(worst) == 29  # i % 7 == 0 for i < 200
    records[1] = (records[1][0], 0.01, 0.0, 0.0)
    fig = plots.range_utilisation(records)
    left, right = fig.axes
    assert len(left.patches) == 30 and len(right.patches) == 60
    shown = {t.get_text() for t in left.get_yticklabels()}
    assert shown == worst | {records[1][0]}  # names fit in 36 characters, so labels are names
    assert "30 worst of 200 layers" in fig._suptitle.get_text()


# ---- 10. trade-offs -----------------------------------------------------------------------------------


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(50):
        cost = list(rng.integers(1, 6, 12).astype(float))  # small integers: many ties
        value = list(rng.integers(1, 6, 12).astype(float))
        beaten = {
            i
            for i in range(12)
            for j in range(12)
            if cost[j] <= cost[i] and value[j] >= value[i] and (cost[j], value[j]) != (cost[i], value[i])
        }
        assert set(plots.pareto_front(cost, value)) == set(range(12)) - beaten


def test_tradeoff_two_panels_with_the_pareto_front():
    records = [
        {"format": "fp32", "size": 32, "latency_ms": 10.0, "accuracy": 91.3},
        {"format": "int8", "size": 8, "latency_ms": 4.0, "accuracy": 91.1},
        {"format": "int4", "size": 4.5, "latency_ms": 3.0, "accuracy": 89.8},
        {"format": "int3", "size": 3.5, "latency_ms": 3.5, "accuracy": 86.0},
        {"format": "my_fmt", "size": 16, "latency_ms": 12.0, "accuracy": 85.0},
    ]
    fig = plots.tradeoff(records, size_unit="MB")
    size_ax, lat_ax = fig.axes
    (size_front,) = [ln for ln in size_ax.lines if ln.get_label() == "Pareto front"]
    (lat_front,) = [ln for ln in lat_ax.lines if ln.get_label() == "Pareto front"]
    # Against size every format is on the front; against latency int3 (slower than int4, worse) is not.
    assert list(size_front.get_xdata()) == [3.5, 4.5, 8, 32]
    assert list(lat_front.get_xdata()) == [3.0, 4.0, 10.0]
    assert size_ax.get_xlabel() == "size (MB)" and lat_ax.get_xlabel() == "latency (ms)"
    texts = _legend_texts(fig)
    assert "Pareto front" in texts and {"fp32", "int8", "int4", "int3", "my_fmt"} <= set(texts)
    (mine,) = [c for c in size_ax.collections if c.get_label() == "my_fmt"]
    assert to_hex(mine.get_facecolor()[0]) == plots.format_color("my_fmt")


# ---- bad inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: plots.accuracy_bars({}),
            ValueError,
            r"accuracy: expected at least one entry, got an empty dict",
        ),
        (
            lambda: plots.accuracy_bars([1, 2]),
            TypeError,
            r"accuracy: expected a dict of name -> data, got list",
        ),
        (
            lambda: plots.accuracy_bars({"int4": float("nan")}),
            ValueError,
            r"accuracy\['int4'\]: expected a finite number, got nan",
        ),
        (
            lambda: plots.accuracy_bars({"int4": "90"}),
            TypeError,
            r"accuracy\['int4'\]: expected a number, got str",
        ),
        (lambda: plots.accuracy_bars({"int4": 9}, unit=3), TypeError, r"unit: expected a string, got int"),
        (
            lambda: plots.error_hist({"int4": torch.tensor([0.1, float("nan"), 0.2])}),
            ValueError,
            r"errors\['int4'\]: expected finite values, got nan at flat index 1 \(1 of 3 values not finite\)",
        ),
        (
            lambda: plots.error_cdf({"int4": []}),
            ValueError,
            r"errors\['int4'\]: expected at least one value, got none",
        ),
        (lambda: plots.error_hist({"int4": [1.0]}, bins=0), ValueError, r"bins: expected an int >= 1, got 0"),
        (
            lambda: plots.accuracy_loss_hist({"int4": [1.0]}, over="token"),
            ValueError,
            r"over: expected 'sample' or 'class', got 'token'",
        ),
        (
            lambda: plots.output_scatter(torch.randn(10), {"int4": torch.randn(9)}),
            ValueError,
            r"quantized\['int4'\]: expected 10 values \(as many as reference\), got 9",
        ),
        (
            lambda: plots.snr_by_magnitude(torch.randn(10), torch.randn(11)),
            ValueError,
            r"quantized\['quantized'\]: expected 10 values \(as many as reference\), got 11",
        ),
        (
            lambda: plots.class_accuracy({"fp32": [90, 80, 70], "int4": [90, 80]}),
            ValueError,
            r"per_class\['int4'\]: expected 3 values \(one per class, as per_class\['fp32'\]\), got 2",
        ),
        (
            lambda: plots.class_accuracy({"fp32": [90, 80]}, class_names=["a"]),
            ValueError,
            r"class_names: expected 2 names \(one per class\), got \['a'\]",
        ),
        (
            lambda: plots.layer_distributions({"fc": (torch.randn(5), torch.randn(4))}),
            ValueError,
            r"layers\['fc'\]: expected float and quantized of the same size, got 5 and 4",
        ),
        (
            lambda: plots.layer_distributions({"fc": torch.randn(5)}),
            ValueError,
            r"layers\['fc'\]: expected a \(float, quantized\) pair, got Tensor",
        ),
        (lambda: plots.range_utilisation([]), ValueError, r"records: expected at least one record, got none"),
        (
            lambda: plots.range_utilisation([("fc", 1.2, 0.0, 0.0)]),
            ValueError,
            r"records\[0\]\.used_fraction: expected a finite number in \[0, 1\], got 1\.2",
        ),
        (
            lambda: plots.range_utilisation([("fc", 0.5, 0.0, 0.0), ("fc", 0.5, 0.0, 0.0)]),
            ValueError,
            r"records: expected each layer once, got 'fc' twice",
        ),
        (
            lambda: plots.range_utilisation([("fc", 0.5, 0.0)]),
            ValueError,
            r"records\[0\]: expected a dict with keys \['layer', 'used_fraction', 'clipped_fraction', "
            r"'underflow_fraction'\] or a 4-tuple, got \('fc', 0\.5, 0\.0\)",
        ),
        (
            lambda: plots.tradeoff([{"format": "int4", "size": 4, "accuracy": 90.0}]),
            ValueError,
            r"records\[0\]: expected keys \['format', 'size', 'latency_ms', 'accuracy'\], "
            r"got \['format', 'size', 'accuracy'\] \(missing \['latency_ms'\]\)",
        ),
        (
            lambda: plots.tradeoff([("int4", 4, math.inf, 90.0)]),
            ValueError,
            r"records\[0\]\.latency_ms: expected a finite number in \[0, inf\], got inf",
        ),
        (
            lambda: plots.tradeoff([("int4", 0, 1.0, 90.0)]),
            ValueError,
            r"records\[0\]: expected size and latency_ms > 0, got 0\.0 and 1\.0",
        ),
    ],
)
def test_bad_inputs_are_rejected_with_the_argument_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_records_may_be_objects_with_the_fields():
    class Row:
        def __init__(self, fmt, size, latency_ms, accuracy):
            self.format, self.size, self.latency_ms, self.accuracy = fmt, size, latency_ms, accuracy

    fig = plots.tradeoff([Row("int8", 8, 4.0, 91.0), Row("int4", 4, 3.0, 90.0)])
    assert len(fig.axes) == 2


def test_saved_files_land_where_asked(tmp_path):
    out = plots.save(BUILDERS["accuracy_bars"](), str(tmp_path / "deep" / "dir" / "t.png"))
    assert out == Path(tmp_path / "deep" / "dir" / "t.png") and out.is_file()
