"""quantize_: swaps nn.Linear in place, validates every layer before changing any."""

from __future__ import annotations

import pytest
import qkernels as qk
import torch
from torch import nn


def _model():
    return nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(), nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 8)), nn.LayerNorm(8)
    )


def test_swaps_every_linear_and_keeps_outputs_close():
    model = _model()
    x = torch.randn(4, 16)
    before = model(x)
    assert qk.quantize_(model, qk.Int8Config()) is model
    kinds = [type(m).__name__ for m in model.modules()]
    assert "Linear" not in kinds and kinds.count("Int8Linear") == 3
    after = model(x)
    cos = torch.nn.functional.cosine_similarity(before, after, dim=-1)
    assert bool((cos > 0.99).all()), cos


def test_filter_fn_selects_layers_by_name():
    model = _model()
    qk.quantize_(model, qk.Int8Config(weight_only=True), filter_fn=lambda m, name: name.startswith("2."))
    assert isinstance(model[0], nn.Linear)
    assert isinstance(model[2][0], qk.nn.Int8Linear) and model[2][0].weight_only


def test_failure_leaves_model_untouched():
    model = _model()
    with torch.no_grad():
        model[2][1].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"from_linear\('2.1'\): weight: expected finite values"):
        qk.quantize_(model, qk.Int8Config())
    assert all(type(m) is not qk.nn.Int8Linear for m in model.modules())


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"expected at least one of its nn\.Linear layers, got none"):
        qk.quantize_(nn.Sequential(nn.ReLU()), qk.Int8Config())
    with pytest.raises(ValueError, match="accepted by filter_fn"):
        qk.quantize_(_model(), qk.Int8Config(), filter_fn=lambda m, n: False)
    with pytest.raises(TypeError, match="config: expected a qkernels config"):
        qk.quantize_(_model(), {"bits": 8})
    with pytest.raises(TypeError, match=r"model: expected torch\.nn\.Module, got str"):
        qk.quantize_("model", qk.Int8Config())
    with pytest.raises(ValueError, match=r"got an nn\.Linear; use the module's from_linear"):
        qk.quantize_(nn.Linear(4, 4), qk.Int8Config())
