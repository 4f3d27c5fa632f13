"""qkernels.eval.compare, write_report and `qkernels report`: numbers against qkernels.eval.metrics and
layerwise computed directly, the JSON/Markdown/HTML files, bad inputs, the command end to end."""

from __future__ import annotations

import base64
import copy
import io
import json
import math
import re
import subprocess
import sys

import pytest
import qkernels as qk
import torch
from qkernels.eval import metrics as M
from qkernels.eval.compare import compare, compare_formats
from qkernels.eval.layerwise import allocate, layerwise
from qkernels.eval.models import load_workload
from qkernels.eval.report import SCHEMA_VERSION, format_summary, write_report
from qkernels.eval.report_cli import main as report_main
from torch import nn

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMG_RE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
STAMP = "2000-01-01T00:00:00+00:00"
CLASSES = 10


def _mlp(hidden: int = 64) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, CLASSES)
    ).eval()


def _outputs(model: nn.Module, batches: list[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(b) for b in batches]).float()


@pytest.fixture(scope="module")
def case():
    """A seeded MLP, three batches, labels that the float model gets right three times in four, a
    quantized copy per format of qk.FORMAT_CONFIGS plus a per-layer mix chosen by allocate()."""
    gen = torch.Generator().manual_seed(1234)
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        model = _mlp()
    batches = [torch.randn(40, 64, generator=gen) for _ in range(3)]
    labels = _outputs(model, batches).argmax(1)
    flip = torch.rand(len(labels), generator=gen) < 0.25
    labels[flip] = torch.randint(0, CLASSES, (int(flip.sum()),), generator=gen)
    # Apart from the evaluated batches: the GPTQ formats calibrate on these.
    calibration = [torch.randn(40, 64, generator=gen) for _ in range(2)]
    quantized = {
        name: qk.quantize_(copy.deepcopy(model), cfg, progress=False, calibration=calibration)
        for name, cfg in qk.FORMAT_CONFIGS.items()
    }
    candidates = [qk.FORMAT_CONFIGS["int8"], qk.FORMAT_CONFIGS["int4"], None]
    allocation = allocate(model, candidates, 12.0, inputs=batches)
    quantized["mixed"] = qk.quantize_(copy.deepcopy(model), allocation.mapping, progress=False)
    results = compare_formats(model, quantized, batches, labels=labels, latency_repeats=2, progress=False)
    return model, batches, labels, quantized, allocation, results


@pytest.fixture(scope="module")
def report(case, tmp_path_factory):
    pytest.importorskip("matplotlib", reason="the report's plots need pip install 'qkernels[plot]'")
    *_, allocation, results = case
    out = tmp_path_factory.mktemp("report")
    return write_report(results, out, allocation=allocation, generated_at=STAMP), results


# ---- numbers ------------------------------------------------------------------------------------


def test_every_format_of_the_registry_is_compared(case):
    *_, results = case
    assert [r.name for r in results] == [*qk.FORMAT_CONFIGS, "mixed"]


def test_classification_numbers_equal_metrics_computed_directly(case):
    model, batches, labels, quantized, _, results = case
    f = _outputs(model, batches)
    for r in results:
        q = _outputs(quantized[r.name], batches)
        # The same tensors reach the same functions, so the numbers are equal, not merely close.
        for which, logits, got in (("float", f, r.float_metrics), ("quant", q, r.quant_metrics)):
            scores = M.precision_recall_f1(logits.argmax(1), labels, CLASSES)
            assert got == {
                "top1_accuracy": M.top_k_accuracy(logits, labels, 1),
                "top5_accuracy": M.top_k_accuracy(logits, labels, 5),
                "macro_precision": scores.precision,
                "macro_recall": scores.recall,
                "macro_f1": scores.f1,
                "ece": M.expected_calibration_error(torch.softmax(logits.double(), 1), labels),
            }, which
        assert r.output_error == {
            "sqnr_db": M.sqnr_db(f, q),
            "psnr_db": M.psnr_db(f, q),
            "cosine": M.cosine_similarity(f, q),
            "mse": M.mse(f, q),
            "mae": M.mae(f, q),
            "max_abs_error": M.max_abs_error(f, q),
            "relative_error": M.relative_frobenius_error(f, q),
        }
        assert r.agreement == {
            "kl_divergence": M.kl_divergence(f, q),
            "top1_agreement": M.topk_agreement(f, q, 1),
            "top5_agreement": M.topk_agreement(f, q, 5),
            "mean_row_cosine": M.cosine_similarity_rows(f, q).mean().item(),
        }
        assert r.deltas["top1_loss_pp"] == M.accuracy_loss_pp(f.argmax(1), q.argmax(1), labels)
        assert r.score.float_value == 100 * r.float_metrics["top1_accuracy"]
        assert r.score.quant_value == 100 * r.quant_metrics["top1_accuracy"]
        loss = M.per_class_accuracy_loss_pp(f.argmax(1), q.argmax(1), labels, CLASSES)
        assert torch.equal(r.per_class.loss_pp.isnan(), loss.isnan())
        assert torch.equal(r.per_class.loss_pp.nan_to_num(), loss.nan_to_num())
        confusion = M.confusion_matrix(q.argmax(1), labels, CLASSES)
        assert torch.equal(r.per_class.quant_confusion, confusion)
        support = torch.bincount(labels, minlength=CLASSES)
        assert torch.equal(r.per_class.support, support)
        assert torch.allclose(
            r.per_class.quant_accuracy,
            confusion.diagonal().double() / support,
            rtol=0,
            atol=0,
            equal_nan=True,
        )
        assert torch.equal(r.row_cosine, M.cosine_similarity_rows(f, q))
        assert (r.quant_stats.model_bytes, r.quant_stats.bits_per_weight) == (
            M.model_bytes(quantized[r.name]),
            M.bits_per_weight(quantized[r.name]),
        )
        assert (r.float_stats.model_bytes, r.float_stats.bits_per_weight) == (
            M.model_bytes(model),
            M.bits_per_weight(model),
        )
        assert r.quant_stats.latency.repeats == 2 and r.quant_stats.latency.median_s > 0


def test_layer_reports_equal_layerwise(case):
    model, batches, _, quantized, allocation, results = case
    for r in results:
        assert r.layers_isolated == layerwise(model, quantized[r.name], batches, "isolated")
        assert r.layers_propagated == layerwise(model, quantized[r.name], batches, "propagated")
    mixed = results[-1]
    assert [x.name for x in mixed.layers_isolated] == [n for n, c in allocation.mapping.items() if c]
    assert set(mixed.weight_samples) == {x.name for x in mixed.layers_isolated}


def test_a_format_name_quantizes_a_copy_like_quantize_(case):
    model, batches, labels, quantized, _, results = case
    before = copy.deepcopy(model.state_dict())
    by_name = compare(model, "int4", batches, labels=labels, latency_repeats=0, layers=False)
    int4 = next(r for r in results if r.name == "int4")
    assert by_name.name == "int4" and by_name.output_error == int4.output_error
    assert by_name.quant_stats.latency is None and by_name.layers_isolated == []
    # A quantized model is named after the registry entry its layers match.
    for name in ("nf4", "mixed"):
        got = compare(model, quantized[name], batches[:1], latency_repeats=0, layers=False)
        assert got.name == name
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_embedding_task_scores_rows_and_groups(case):
    model, batches, _, quantized, _, _ = case
    groups = torch.arange(120) % 4
    r = compare(model, quantized["int4"], batches, "embedding", groups, latency_repeats=0, layers=False)
    f, q = _outputs(model, batches), _outputs(quantized["int4"], batches)
    assert r.score.quant_value == M.embedding_cosine(f, q)
    assert r.agreement["min_cosine"] == M.cosine_similarity_rows(f, q).min().item()
    # Centroid accuracy, computed here with numpy's float64 and compared at its rounding.
    fn = torch.nn.functional.normalize
    centroids = fn(torch.stack([fn(f.double(), dim=1)[groups == g].sum(0) for g in range(4)]), dim=1)
    for which, out in (("float", f), ("quant", q)):
        pred = (fn(out.double(), dim=1) @ centroids.T).argmax(1)
        metrics = r.float_metrics if which == "float" else r.quant_metrics
        assert metrics["centroid_accuracy"] == (pred == groups).double().mean().item()
    assert r.per_class.names == ["0", "1", "2", "3"] and r.losses_over == "class"


def test_lm_task_perplexity_and_next_token_accuracy():
    gen = torch.Generator().manual_seed(7)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        lm = nn.Sequential(nn.Embedding(50, 32), nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 50)).eval()
    tokens = [torch.randint(0, 50, (3, 12), generator=gen) for _ in range(2)]
    quant = qk.quantize_(copy.deepcopy(lm), qk.Int8Config(), progress=False)
    r = compare(lm, quant, tokens, "lm", latency_repeats=0)
    ids = torch.cat(tokens)
    for model, got in ((lm, r.float_metrics), (quant, r.quant_metrics)):
        logits = _outputs(model, tokens)
        # Per-batch log-perplexities weighted by token count: float64 rounding, far below 1e-12.
        assert got["perplexity"] == pytest.approx(M.perplexity(logits, ids), rel=1e-12)
        hits = logits[:, :-1].argmax(-1) == ids[:, 1:]
        assert got["next_token_accuracy"] == hits.double().mean().item()
    assert r.rows == 72 and r.losses.numel() == 6 and r.losses_over == "sample"


def test_regression_task_r2():
    gen = torch.Generator().manual_seed(3)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2)).eval()
    x = torch.randn(64, 8, generator=gen)
    y = _outputs(model, [x]) + 0.1 * torch.randn(64, 2, generator=gen)
    quant = qk.quantize_(copy.deepcopy(model), qk.Int8Config(weight_only=True), progress=False)
    r = compare(model, quant, x, "regression", y, latency_repeats=0)
    for m, got in ((model, r.float_metrics), (quant, r.quant_metrics)):
        out, yd = _outputs(m, [x]).double(), y.double()
        r2 = 1 - ((out - yd) ** 2).sum() / ((yd - yd.mean()) ** 2).sum()
        assert got["r2"] == pytest.approx(r2.item(), rel=1e-12)
        assert got["mse"] == M.mse(y, out.float())


# ---- files --------------------------------------------------------------------------------------


def _no_constants(name: str):
    raise ValueError(f"report.json: expected finite numbers, got the literal {name}")


def _lists(v) -> list[list]:
    if isinstance(v, dict):
        return [x for item in v.values() for x in _lists(item)]
    if isinstance(v, list):
        return [v] + [x for item in v for x in _lists(item)]
    return []


def test_json_has_schema_version_every_format_and_summaries(case, report):
    files, results = report
    allocation = case[4]
    data = json.loads(files.json.read_text(), parse_constant=_no_constants)
    assert data["schema_version"] == SCHEMA_VERSION == 1
    assert list(data["formats"]) == [r.name for r in results]
    for r in results:
        fmt = data["formats"][r.name]
        assert fmt["size"]["model_bytes"] == r.quant_stats.model_bytes
        assert fmt["metrics"] == r.quant_metrics
        assert fmt["output_error"]["sqnr_db"] == r.output_error["sqnr_db"]
        assert fmt["row_cosine"]["count"] == r.rows == 120
        assert fmt["output_values"]["float"]["count"] == r.float_values.numel()
        assert len(fmt["layers"]["isolated"]) == len(r.layers_isolated)
        assert fmt["per_class"]["loss_pp"] == [
            "nan" if math.isnan(v) else v for v in r.per_class.loss_pp.tolist()
        ]
    # Tensors are summarised: no list is longer than the 10 classes, though 120 rows were compared.
    assert max(len(x) for x in _lists(data)) <= CLASSES
    names = {None: "fp32", **{v: k for k, v in qk.FORMAT_CONFIGS.items()}}
    assert [row["choice"] for row in data["allocation"]["layers"]] == [
        names[allocation.mapping[row.name]] for row in allocation.table
    ]
    assert [p["skipped"] for p in data["plots"]] == [None] * 10
    assert data["generated_at"] == STAMP


def test_markdown_has_the_tables(report):
    files, results = report
    md = files.markdown.read_text()
    assert "| format | bits/weight | size |" in md
    for name in ["fp32", *(r.name for r in results)]:
        assert re.search(rf"^\| {re.escape(name)} \| \d+\.\d\d \|", md, re.M), name
    for heading in (
        "## Summary",
        "### Task metrics",
        "### Per class (accuracy)",
        "## Layers",
        "## Allocation",
    ):
        assert heading in md
    assert len(re.findall(r"!\[[^\]]*\]\(plots/\d\d_\w+\.png\)", md)) == 10


def test_html_embeds_exactly_ten_png_plots(report):
    files, _ = report
    from PIL import Image

    page = files.html.read_text()
    images = IMG_RE.findall(page)
    assert len(images) == 10 and page.count("<img") == 10
    for data, path in zip(images, files.plots, strict=True):
        png = base64.b64decode(data, validate=True)
        assert png.startswith(PNG_MAGIC) and png == path.read_bytes()
        with Image.open(io.BytesIO(png)) as im:
            im.verify()
    # Self-contained: no stylesheet, script or image from elsewhere.
    assert not re.search(r'(src|href)="(?!data:|#)', page) and "<link" not in page
    assert "<h2>Allocation</h2>" in page and "data-images-loaded" in page


@pytest.mark.slow
def test_same_results_give_identical_files_but_for_the_time_stamp(case, report, tmp_path):
    files, results = report
    again = write_report(results, tmp_path, allocation=case[4], generated_at="later")
    for x, y in zip(files.plots, again.plots, strict=True):
        assert x.read_bytes() == y.read_bytes(), x.name
    for x, y in ((files.json, again.json), (files.markdown, again.markdown), (files.html, again.html)):
        lines = zip(x.read_text().splitlines(), y.read_text().splitlines(), strict=True)
        diff = [(u, v) for u, v in lines if u != v]
        assert len(diff) == 1 and diff[0][0].replace(STAMP, "later") == diff[0][1], x.name


def test_summary_text_lists_every_format(case):
    *_, results = case
    lines = format_summary(results).splitlines()
    assert [ln.split()[0] for ln in lines[2:]] == ["fp32", *(r.name for r in results)]


# ---- bad inputs ---------------------------------------------------------------------------------


def test_model_without_linear_layers_is_rejected():
    with pytest.raises(ValueError, match=r"float_model: expected at least one nn\.Linear layer, got none"):
        compare(nn.Sequential(nn.ReLU(), nn.Tanh()), "int8", torch.randn(4, 8))


def test_mismatched_models_are_rejected(case):
    model, batches, labels, *_ = case
    other = qk.quantize_(_mlp(hidden=48), qk.Int8Config(), progress=False)
    with pytest.raises(ValueError, match=r"layer '0' \(64 -> 48\) expected an nn.Linear of the same shape"):
        compare(model, other, batches, labels=labels)
    deeper = qk.quantize_(nn.Sequential(*_mlp(), nn.Linear(10, 10)), qk.Int8Config(), progress=False)
    with pytest.raises(
        ValueError, match=r"expected the module names of float_model.*\['5'\] only in quantized"
    ):
        compare(model, deeper, batches, labels=labels)
    with pytest.raises(ValueError, match="expected a separate quantized copy of float_model, got the same"):
        compare(model, model, batches)
    with pytest.raises(ValueError, match="expected at least one quantized layer"):
        compare(model, copy.deepcopy(model), batches)


def test_nan_inputs_are_rejected(case):
    model, batches, *_ = case
    bad = [b.clone() for b in batches]
    bad[1][3, 5] = math.nan
    with pytest.raises(ValueError, match=r"compare: inputs\[1\]: expected finite values, got nan"):
        compare(model, "int8", bad)


def test_empty_data_set_is_rejected(case):
    model, *_ = case
    with pytest.raises(ValueError, match="compare: inputs: expected at least one batch, got an empty list"):
        compare(model, "int8", [])
    with pytest.raises(
        ValueError, match=r"compare: inputs\[0\]: expected a non-empty batch, got shape \(0, 64\)"
    ):
        compare(model, "int8", [torch.empty(0, 64)])


def test_unknown_format_name_is_rejected(case):
    model, batches, *_ = case
    with pytest.raises(
        ValueError, match=r"quantized_model: expected a format name from \[.*'int8'.*\], got 'int5'"
    ):
        compare(model, "int5", batches)
    with pytest.raises(ValueError, match=r"formats: expected format names from .*, got \['int5'\]"):
        compare_formats(model, ["int8", "int5"], batches)


def test_bad_labels_task_and_results_are_rejected(case, tmp_path):
    model, batches, labels, quantized, _, results = case
    with pytest.raises(ValueError, match=r"labels: expected 120 values .* got 119"):
        compare(model, quantized["int8"], batches, labels=labels[:-1], latency_repeats=0)
    with pytest.raises(ValueError, match=r"labels: expected class indices in \[0, 10\), got 10"):
        compare(
            model,
            quantized["int8"],
            batches,
            labels=labels.clamp(min=1) + 9 * (labels == 0),
            latency_repeats=0,
        )
    with pytest.raises(ValueError, match="task: expected one of"):
        compare(model, quantized["int8"], batches, task="ranking")
    with pytest.raises(ValueError, match="results: expected a ComparisonResult or a non-empty list"):
        write_report([], tmp_path)
    other = compare(
        model,
        quantized["int8"],
        batches[:2],
        labels=labels[:80],
        name="other",
        latency_repeats=0,
        layers=False,
    )
    with pytest.raises(ValueError, match=r"results\[1\]: expected a comparison of the same float model"):
        write_report([results[0], other], tmp_path)
    renamed = compare(model, quantized["int8"], batches, labels=labels, name="fp32", latency_repeats=0)
    with pytest.raises(ValueError, match=r"results\[0\].name: expected a unique name other than 'fp32'"):
        write_report([renamed], tmp_path)


# ---- command line -------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "qkernels.cli", "report", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)


def test_cli_rejects_unknown_formats_and_models(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        report_main(["--model", "digits-mlp", "--formats", "int8,int5", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--formats: expected names from int8" in err and "int5" in err
    assert report_main(["--model", "nosuch", "--out", str(tmp_path)]) == 2
    assert "model: expected a built-in name (digits-mlp, minilm)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def tiny_workload(samples: int = 4):
    """A ``module.path:callable`` for the command: (model, inputs, task, labels)."""
    return _mlp(), [torch.zeros(samples, 64)], "classification", torch.zeros(samples, dtype=torch.long)


def bad_workload():
    return _mlp(), [torch.zeros(2, 64)], "ranking"


def test_a_python_path_callable_gives_the_workload():
    work = load_workload(f"{__name__}:tiny_workload", samples=3)
    assert (
        work.task == "classification" and work.inputs[0].shape == (3, 64) and work.labels.tolist() == [0] * 3
    )
    with pytest.raises(ValueError, match=r"expected a task from \(.*\) as the third value, got 'ranking'"):
        load_workload(f"{__name__}:bad_workload")
    with pytest.raises(
        ValueError, match=r"expected an importable module\.path:callable, got 'no_such_module:f'"
    ):
        load_workload("no_such_module:f")


@pytest.mark.slow
def test_cli_digits_mlp_end_to_end(tmp_path):
    pytest.importorskip("sklearn", reason="digits-mlp needs pip install 'qkernels[demo]'")
    pytest.importorskip("matplotlib", reason="the report's plots need pip install 'qkernels[plot]'")
    out = tmp_path / "report"
    r = _cli("--model", "digits-mlp", "--formats", "int8,int4", "--samples", "128", "--latency-repeats", "2",
             "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = {
        ln.split()[0]: ln.split()
        for ln in r.stdout.splitlines()
        if ln.split()[:1] in (["fp32"], ["int8"], ["int4"])
    }
    assert list(rows) == ["fp32", "int8", "int4"]
    assert "quantizing" in r.stderr and "evaluating" in r.stderr  # the tqdm bars
    data = json.loads((out / "report.json").read_text())
    assert list(data["formats"]) == ["int8", "int4"] and data["rows"] == 128
    # A real classifier: measured 97.66 % top-1 on these 128 held-out digits; 90 % leaves room for
    # other torch builds' training arithmetic.
    assert data["float"]["score"] > 90
    assert len(list((out / "plots").glob("*.png"))) == 10
    assert len(IMG_RE.findall((out / "report.html").read_text())) == 10


def calibrated_workload(samples: int = 4):
    """``tiny_workload`` with calibration batches apart from the evaluated ones."""
    gen = torch.Generator().manual_seed(8)
    return (*tiny_workload(samples), [torch.randn(64, 64, generator=gen) for _ in range(2)])


def test_gptq_formats_need_the_workloads_calibration_inputs(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the report's plots need pip install 'qkernels[plot]'")
    work = load_workload(f"{__name__}:calibrated_workload")
    assert len(work.calibration) == 2 and work.calibration[0].shape == (64, 64)
    # Asked for by name without calibration inputs: an error before anything is written.
    args = ["--formats", "int4,int4-gptq", "--latency-repeats", "0"]
    assert report_main(["--model", f"{__name__}:tiny_workload", *args, "--out", str(tmp_path / "a")]) == 2
    assert "int4-gptq calibrate on inputs apart from the evaluated ones" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    out = tmp_path / "b"
    assert report_main(["--model", f"{__name__}:calibrated_workload", *args, "--out", str(out)]) == 0
    assert list(json.loads((out / "report.json").read_text())["formats"]) == ["int4", "int4-gptq"]
    # The default (every format): those that need calibration are left out, with a note.
    out = tmp_path / "c"
    assert (
        report_main(["--model", f"{__name__}:tiny_workload", "--latency-repeats", "0", "--out", str(out)])
        == 0
    )
    assert "left out int4-gptq: " in capsys.readouterr().err
    names = list(json.loads((out / "report.json").read_text())["formats"])
    assert names == [f for f in qk.FORMAT_CONFIGS if not f.endswith("-gptq")]
