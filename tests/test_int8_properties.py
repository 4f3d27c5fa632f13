"""Hypothesis properties of the int8 quantizer (the C++ one, through the op)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from qkernels.formats import int8 as int8_format

# Bounds exactly representable in fp32; +-2^100 keeps absmax / 127 and w / scale finite.
finite = st.floats(-(2.0**100), 2.0**100, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=200, deadline=None)
@given(arrays("float32", st.tuples(st.integers(1, 6), st.integers(1, 80)), elements=finite))
def test_round_trip_within_half_step_and_positive_scale(w):
    t = torch.from_numpy(w)
    q, scale = torch.ops.qkernels.quantize_int8(t)
    assert bool((scale > 0).all()) and bool(torch.isfinite(scale).all())
    assert int(q.min()) >= -127
    err = (q.double() * scale.double().unsqueeze(1) - t.double()).abs()
    # Half a step, plus the fp32 rounding of w / scale (a few ulps of the code).
    bound = scale.double().unsqueeze(1) * (0.5 + 1e-5)
    assert bool((err <= bound).all())


def test_tiny_and_subnormal_rows_keep_the_half_step_on_every_path(isa):
    """Rows whose absmax / 127 would be subnormal get the scale FLT_MIN (docs/formats.md#int8): the
    C++ quantizer of every path and the Python one agree bit for bit, and every code is within half
    a step of its value."""
    tiny = torch.finfo(torch.float32).tiny
    absmax = torch.tensor([8.434e-42, 1.4e-45, tiny, 63 * tiny, 127 * tiny, 128 * tiny, 1e-30])
    w = torch.linspace(-1, 1, 37) * absmax.unsqueeze(1)
    q, scale = torch.ops.qkernels.quantize_int8(w)
    q_py, scale_py = int8_format.quantize(w)
    assert torch.equal(q, q_py) and torch.equal(scale, scale_py)
    assert torch.equal(scale, torch.maximum(absmax / 127, torch.tensor(tiny)))
    err = (q.double() * scale.double().unsqueeze(1) - w.double()).abs()
    assert bool((err <= scale.double().unsqueeze(1) * (0.5 + 1e-5)).all())
