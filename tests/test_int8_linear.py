"""Int8Linear: construction, forward against the oracle, dequantize, state_dict, compile, opcheck."""

from __future__ import annotations

import io

import pytest
import qkernels as qk
import torch
from qkernels import reference as ref
from torch import nn


def _linear(k=40, n=24, bias=True):
    return nn.Linear(k, n, bias=bias)


@pytest.mark.parametrize("weight_only", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_matches_oracle(isa, weight_only, bias):
    lin = _linear(bias=bias)
    mod = qk.nn.Int8Linear.from_linear(lin, weight_only=weight_only)
    x = torch.randn(5, 7, 40)
    b = None if lin.bias is None else lin.bias.detach()
    oracle = ref.linear_int8_w8a16 if weight_only else ref.linear_int8_w8a8
    expected = oracle(x, mod.weight, mod.weight_scale, b)
    out = mod(x)
    assert out.shape == (5, 7, 24)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_dequantize_is_within_half_a_step():
    lin = _linear()
    mod = qk.nn.Int8Linear.from_linear(lin)
    w = mod.dequantize()
    assert w.dtype == torch.float32 and w.shape == lin.weight.shape
    step = mod.weight_scale.unsqueeze(1)
    assert bool(((w - lin.weight.detach()).abs() <= step / 2 * (1 + 1e-6)).all())


def test_state_dict_round_trip():
    mod = qk.nn.Int8Linear.from_linear(_linear(), weight_only=True)
    buf = io.BytesIO()
    torch.save(mod.state_dict(), buf)
    buf.seek(0)
    fresh = qk.nn.Int8Linear(40, 24)
    fresh.load_state_dict(torch.load(buf))
    assert fresh.weight_only
    x = torch.randn(3, 40)
    assert torch.equal(fresh(x), mod(x))


def test_repr_names_the_format():
    r = repr(qk.nn.Int8Linear.from_linear(_linear()))
    assert "format=int8 W8A8 dynamic" in r and "in_features=40" in r
    assert "W8A16" in repr(qk.nn.Int8Linear(4, 4, weight_only=True))


@pytest.mark.parametrize(("k", "n", "arg"), [(0, 4, "in_features"), (4, 0, "out_features")])
def test_zero_features_rejected(k, n, arg):
    with pytest.raises(ValueError, match=rf"{arg}: expected a positive int, got 0"):
        qk.nn.Int8Linear(k, n)


def test_from_linear_rejects_non_finite_weight_with_layer_name():
    lin = _linear()
    with torch.no_grad():
        lin.weight[3, 7] = float("inf")
    with pytest.raises(
        ValueError,
        match=r"from_linear\('encoder.fc'\): weight: expected finite values, "
        r"got inf at \[3, 7\]",
    ):
        qk.nn.Int8Linear.from_linear(lin, name="encoder.fc")


def test_forward_rejects_wrong_inputs():
    mod = qk.nn.Int8Linear.from_linear(_linear())
    with pytest.raises(
        ValueError, match=r"x: expected last dimension 40 \(in_features\), got shape \(2, 39\)"
    ):
        mod(torch.randn(2, 39))
    with pytest.raises(TypeError, match=r"x: expected dtype .*float32.*, got torch.float64"):
        mod(torch.randn(2, 40, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"x: expected dtype .*, got torch.int32"):
        mod(torch.ones(2, 40, dtype=torch.int32))


def test_weights_on_another_device_rejected():
    mod = qk.nn.Int8Linear.from_linear(_linear())
    with pytest.raises(ValueError, match=r"weight: expected device meta \(x's device\), got cpu"):
        mod(torch.empty(2, 40, device="meta"))


def _state(**overrides):
    sd = qk.nn.Int8Linear.from_linear(_linear()).state_dict()
    sd.update(overrides)
    return sd


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"weight": torch.zeros(24, 40)},
            r"weight: expected torch.int8 of shape \(24, 40\), got torch.float32",
        ),
        (
            {"weight": torch.zeros(24, 41, dtype=torch.int8)},
            r"weight: expected torch.int8 of shape \(24, 40\)",
        ),
        ({"weight": torch.full((24, 40), -128, dtype=torch.int8)}, r"got -128 \(corrupted\?\)"),
        ({"weight_scale": -torch.ones(24)}, r"weight_scale: expected finite positive scales"),
        ({"weight_scale": torch.full((24,), float("nan"))}, r"weight_scale: expected finite positive scales"),
    ],
)
def test_corrupted_state_dict_rejected(overrides, message):
    with pytest.raises(RuntimeError, match=message):
        qk.nn.Int8Linear(40, 24).load_state_dict(_state(**overrides))


def test_wrong_version_or_format_rejected():
    sd = _state()
    sd["_extra_state"] = {"format": "int8", "version": 99, "weight_only": False}
    with pytest.raises(ValueError, match=r"version: expected 1..1 \(this qkernels\), got 99"):
        qk.nn.Int8Linear(40, 24).load_state_dict(sd)
    sd["_extra_state"] = {"format": "nf4", "version": 1}
    with pytest.raises(ValueError, match=r"format: expected 'int8', got 'nf4'"):
        qk.nn.Int8Linear(40, 24).load_state_dict(sd)
    del sd["_extra_state"]  # strict loading reports the missing format tag; strict=False accepts it
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "_extra_state"'):
        qk.nn.Int8Linear(40, 24).load_state_dict(sd)
    qk.nn.Int8Linear(40, 24).load_state_dict(sd, strict=False)


@pytest.mark.parametrize("weight_only", [False, True])
def test_torch_compile_fullgraph_same_results(weight_only):
    model = nn.Sequential(nn.Linear(32, 48), nn.GELU(), nn.Linear(48, 16))
    qk.quantize_(model, qk.Int8Config(weight_only=weight_only))
    x = torch.randn(6, 32)
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), eager)


def test_opcheck_every_op():
    w, s = torch.ops.qkernels.quantize_int8(torch.randn(12, 30))
    x = torch.randn(5, 30)
    torch.library.opcheck(torch.ops.qkernels.quantize_int8, (torch.randn(12, 30),))
    torch.library.opcheck(torch.ops.qkernels.matmul_int8, (w[:5], w))
    for op in (torch.ops.qkernels.linear_int8_w8a8, torch.ops.qkernels.linear_int8_w8a16):
        torch.library.opcheck(op, (x, w, s, torch.randn(12)))
        torch.library.opcheck(op, (x.bfloat16(), w, s, None))
