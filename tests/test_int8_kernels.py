"""int8 ops against their oracles, on every CPU path: exact where the kernel is exact (codes, int32
accumulators, the W8A8 epilogue), within the data-derived tolerance elsewhere (W8A16)."""

from __future__ import annotations

import itertools

import pytest
import torch
from qkernels import reference as ref
from qkernels.formats import int8 as fmt
from tolerance import assert_close_to_oracle

ops = torch.ops.qkernels
M_GRID = (1, 3, 17, 118, 512)
NK_GRID = ((1, 1), (5, 31), (13, 33), (37, 64), (67, 100), (9, 4097))
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _weights(n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return ops.quantize_int8(torch.randn(n, k))


def test_quantize_matches_python_spec_bytes(isa):
    for n, k in (*NK_GRID, (3, 0)):
        w = torch.randn(n, k) * torch.logspace(-3, 3, n).unsqueeze(1)
        q, s = ops.quantize_int8(w)
        q_ref, s_ref = fmt.quantize(w)
        assert torch.equal(q, q_ref) and torch.equal(s, s_ref), (n, k)


def test_quantize_every_code_and_ties(isa):
    scale = 0.03125  # a power of two: code * scale and (code + 0.5) * scale are exact
    codes = torch.arange(-127, 128, dtype=torch.float32)
    row = codes * scale  # absmax = 127 * scale, so the scale is reproduced exactly
    q, s = ops.quantize_int8(row.unsqueeze(0))
    assert s.item() == scale
    assert torch.equal(q[0].float(), codes)
    # Halfway points round to the even code, as torch.round does.
    ties = torch.cat([row, (codes[:-1] + 0.5) * scale]).unsqueeze(0)
    q, _ = ops.quantize_int8(ties)
    expected = torch.cat([codes, torch.round(codes[:-1] + 0.5)])
    assert torch.equal(q[0].float(), expected)
    # All 256 byte values dequantize as q * scale.
    all_bytes = torch.arange(-128, 128, dtype=torch.int8)
    assert torch.equal(
        fmt.dequantize(all_bytes.unsqueeze(0), torch.tensor([scale]))[0], all_bytes.float() * scale
    )


def test_quantize_edge_rows(isa):
    w = torch.zeros(6, 40)
    w[1] = 7.5  # constant row
    w[2, 3] = -1e-30  # tiny
    w[4, :3] = 1e-44  # subnormal: absmax / 127 underflows to 0, the scale is FLT_MIN
    w[5, 9] = -1e-40  # absmax / 127 subnormal, raised to FLT_MIN
    w[3] = torch.linspace(-1e38, 1e38, 40)  # huge
    q, s = ops.quantize_int8(w)
    q_ref, s_ref = fmt.quantize(w)
    assert torch.equal(q, q_ref) and torch.equal(s, s_ref)
    assert s[0].item() == 1.0 and not q[0].any()
    assert s[4].item() == s[5].item() == torch.finfo(torch.float32).tiny
    assert bool((s > 0).all())
    err = (fmt.dequantize(q, s) - w).abs()
    assert bool((err <= s.unsqueeze(1) / 2).all())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_quantize_rejects_non_finite(isa, bad):
    w = torch.randn(5, 70)
    w[3, 41] = bad
    with pytest.raises(ValueError, match=r"w: expected finite values, got NaN or Inf in row 3"):
        ops.quantize_int8(w)


def test_matmul_int8_exact(isa):
    for m, (n, k) in itertools.product(M_GRID, NK_GRID):
        a = torch.randint(-127, 128, (m, k), dtype=torch.int8)
        b = torch.randint(-127, 128, (n, k), dtype=torch.int8)
        assert torch.equal(ops.matmul_int8(a, b), ref.matmul_int8(a, b)), (m, n, k)


def test_matmul_int8_extremes_do_not_saturate(isa):
    # Every pair sum at its extreme (+-2 * 127 * 127), which a saturating int16 step would clip.
    k = 4097
    a = torch.full((3, k), -127, dtype=torch.int8)
    a[1] = 127
    a[2, ::2] = 127
    b = torch.full((5, k), 127, dtype=torch.int8)
    b[1] = -127
    b[2, 1::2] = -127
    assert torch.equal(ops.matmul_int8(a, b), ref.matmul_int8(a, b))


def test_matmul_int8_rejects_minus_128(isa):
    a = torch.zeros(2, 8, dtype=torch.int8)
    a[1, 5] = -128
    with pytest.raises(ValueError, match=r"a: expected values in \[-127, 127\], got -128 in row 1"):
        ops.matmul_int8(a, a.clone().fill_(1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_w8a8_bit_exact(isa, dtype, with_bias):
    for m, (n, k) in itertools.product(M_GRID, NK_GRID):
        w, s = _weights(n, k)
        x = (torch.randn(m, k) * 3).to(dtype)
        b = torch.randn(n) if with_bias else None
        out = ops.linear_int8_w8a8(x, w, s, b)
        assert out.dtype == dtype and out.shape == (m, n)
        assert torch.equal(out, ref.linear_int8_w8a8(x, w, s, b)), (m, n, k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_w8a16_within_oracle_tolerance(isa, dtype):
    for m, (n, k) in itertools.product(M_GRID, NK_GRID):
        w, s = _weights(n, k)
        x = torch.randn(m, k).to(dtype)
        b = torch.randn(n)
        out = ops.linear_int8_w8a16(x, w, s, b)
        wf = fmt.dequantize(w, s)
        exact = x.double() @ wf.double().T + b.double()
        assert out.dtype == dtype
        assert_close_to_oracle(out, ref.linear_int8_w8a16(x, w, s, b), exact, (x, wf))


@pytest.mark.parametrize("op", ["linear_int8_w8a8", "linear_int8_w8a16"])
def test_linear_strided_and_batched_inputs(isa, op):
    w, s = _weights(19, 45)
    fn, oracle = getattr(ops, op), getattr(ref, op)
    base = torch.randn(90, 7)
    for x in (
        base.T.reshape(7, 90)[:, :45],
        torch.randn(45, 6).T,
        torch.randn(2, 3, 4, 45),
        torch.randn(8, 90)[:, ::2],
    ):
        out = fn(x, w, s, None)
        expected = oracle(x.contiguous(), w, s, None)
        if op == "linear_int8_w8a8":
            assert torch.equal(out, expected)
        else:
            torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        assert out.shape == (*x.shape[:-1], 19)


@pytest.mark.parametrize("op", ["linear_int8_w8a8", "linear_int8_w8a16"])
def test_empty_batch(isa, op):
    w, s = _weights(6, 10)
    out = getattr(ops, op)(torch.empty(0, 10), w, s, None)
    assert out.shape == (0, 6)


@pytest.mark.parametrize("m", [4, 20])  # below and above the batch where panel kernels take over
def test_w8a8_non_finite_rows_give_nan_rows(isa, m):
    w, s = _weights(21, 70)
    x = torch.randn(m, 70)
    x[1, 5] = float("nan")
    x[2, 69] = float("inf")
    b = torch.randn(21)
    out = ops.linear_int8_w8a8(x, w, s, b)
    assert torch.isnan(out[1:3]).all()
    # Per-token quantization: the finite rows are exactly what they would be on their own.
    finite = [0, *range(3, m)]
    assert torch.equal(out[finite], ops.linear_int8_w8a8(x[finite], w, s, b))


@pytest.mark.parametrize("m", [3, 20])
def test_w8a16_non_finite_propagate(isa, m):
    w, s = _weights(21, 70)
    x = torch.randn(m, 70)
    x[1, 5] = float("nan")
    out = ops.linear_int8_w8a16(x, w, s, None)
    assert torch.isnan(out[1]).all()
    assert torch.isfinite(out[[0, *range(2, m)]]).all()


@pytest.mark.parametrize("m", [3, 20])
@pytest.mark.parametrize("op", ["linear_int8_w8a8", "linear_int8_w8a16"])
def test_k_zero_gives_bias(isa, op, m):
    w = torch.empty(4, 0, dtype=torch.int8)
    b = torch.randn(4)
    out = getattr(ops, op)(torch.empty(m, 0), w, torch.ones(4), b)
    assert torch.equal(out, b.expand(m, 4))
