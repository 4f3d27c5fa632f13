"""int4 / int3 / nf4 linears against their oracle (qkernels.reference.grouped) on every CPU path,
plus the byte-for-byte agreement of the C++ and Python packings and the kernels' input checks.

The kernels' integer group sums are exact; what remains is fp32 rounding of the per-group scale
products and of the sum over groups, held to STYLE.md's rule (tests/tolerance.py)."""

from __future__ import annotations

import itertools

import pytest
import torch
from qkernels._native import _C
from qkernels.formats import int3, int4, nf4
from qkernels.reference import grouped as oracle
from tolerance import assert_close_to_oracle

ops = torch.ops.qkernels
FORMATS = {"int4": int4, "int3": int3, "nf4": nf4}
M_GRID = (1, 3, 17, 118, 512)
# (N, K): a partial last 32-block, a partial last group, whole vectors only, and a long row.
NK_GRID = ((37, 200), (19, 4160), (5, 96), (3, 2))
GROUPS = {"int4": (32, 128, -1), "int3": (32, 128, -1), "nf4": (32, 64, 256)}


def _random_weights(fmt: str, n: int, k: int, group: int, symmetric: bool):
    """Random codes (every value of the range), scales of both signs, and zero points."""
    g = k if group == -1 else group
    ngroups = -(-k // g)
    mod = FORMATS[fmt]
    codes = torch.randint(0, 16 if fmt != "int3" else 8, (n, k), dtype=torch.uint8)
    if fmt == "nf4":
        return mod.pack(codes), torch.rand(n, ngroups) * 2, None
    scales = torch.randn(n, ngroups) * 0.1
    zeros = None if symmetric else torch.randint(0, mod.QMAX + 1, (n, ngroups), dtype=torch.uint8)
    return mod.pack(codes), scales, zeros


def _call(fmt: str, x, packed, scales, zeros, group: int, bias):
    if fmt == "nf4":
        return ops.linear_nf4(x, packed, scales, group, bias), oracle.linear_nf4(
            x, packed, scales, group, bias
        )
    op = getattr(ops, f"linear_{fmt}")
    ref = getattr(oracle, f"linear_{fmt}")
    return op(x, packed, scales, zeros, group, bias), ref(x, packed, scales, zeros, group, bias)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_matches_oracle_ragged_shapes(isa, fmt):
    for (n, k), m in itertools.product(NK_GRID, M_GRID):
        for group, symmetric in itertools.product(GROUPS[fmt], (True, False)):
            if fmt == "nf4" and not symmetric:
                continue
            packed, scales, zeros = _random_weights(fmt, n, k, group, symmetric)
            x = torch.randn(m, k)
            bias = torch.randn(n) if m % 2 else None
            out, ref = _call(fmt, x, packed, scales, zeros, group, bias)
            # fp64 reference: the same quantized activations and weights, multiplied exactly.
            g = k if group == -1 else group
            xq = oracle.quantize_activations(x, g)
            w = _dequantized(fmt, packed, scales, zeros, group, k)
            high = xq.double() @ w.T + (0 if bias is None else bias.double())
            assert_close_to_oracle(out, ref, high, (xq, w))


def _dequantized(fmt, packed, scales, zeros, group, k):
    """The weight the kernel multiplies by, from the format modules (not from the oracle)."""
    mod = FORMATS[fmt]
    codes = mod.unpack(packed, k)
    if fmt == "nf4":
        absmax = scales.repeat_interleave(group, dim=1)[:, :k]
        return nf4.TABLE_INT8.double()[codes.long()] * (absmax.double() / 127)
    return mod.dequantize(codes, scales, zeros, group).double()


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_activations(isa, fmt, dtype):
    n, k, group = 45, 320, 64
    packed, scales, zeros = _random_weights(fmt, n, k, group, symmetric=fmt == "nf4")
    x = torch.randn(7, 2, k).to(dtype)
    bias = torch.randn(n)
    out, ref = _call(fmt, x, packed, scales, zeros, group, bias)
    assert out.dtype == dtype and out.shape == (7, 2, n)
    high = _call(fmt, x.float(), packed, scales, zeros, group, bias)[1].double()
    xq = oracle.quantize_activations(x.float().reshape(-1, k), group)
    assert_close_to_oracle(out, ref, high, (xq, _dequantized(fmt, packed, scales, zeros, group, k)))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_byte_value_through_the_decoder(isa, fmt):
    """Each of the 256 byte values sits in every packed row, at a different position per row."""
    mod = FORMATS[fmt]
    k = 512 if fmt != "int3" else 22 * 32  # 256 bytes (nibbles) or 264 bytes (3-bit planes)
    row_bytes = mod.packed_row_bytes(k)
    base = torch.arange(row_bytes) % 256
    packed = torch.stack([torch.roll(base, shift) for shift in range(0, 64, 3)]).to(torch.uint8)
    n = packed.shape[0]
    group = 64
    scales = torch.rand(n, k // group) + 0.5
    zeros = None if fmt == "nf4" else torch.randint(0, mod.QMAX + 1, (n, k // group), dtype=torch.uint8)
    x = torch.randn(3, k)
    out, ref = _call(fmt, x, packed, scales, zeros, group, None)
    xq, w = oracle.quantize_activations(x, group), _dequantized(fmt, packed, scales, zeros, group, k)
    assert_close_to_oracle(out, ref, xq.double() @ w.T, (xq, w))


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("m", [3, 20])  # below and above the batch where panel kernels take over
def test_nan_activation_row_gives_nan_row(isa, fmt, m):
    packed, scales, zeros = _random_weights(fmt, 9, 64, 32, symmetric=True)
    x = torch.randn(m, 64)
    x[1, 5] = float("nan")
    out, _ = _call(fmt, x, packed, scales, zeros, 32, None)
    others = [0, *range(2, m)]
    assert bool(out[1].isnan().all()) and not bool(out[others].isnan().any())


@pytest.mark.parametrize("fmt", ["int4", "int3"])
def test_python_and_cpp_packings_agree_byte_for_byte(fmt):
    mod = FORMATS[fmt]
    code_id = 0 if fmt == "int4" else 1
    for n, k in ((1, 2), (3, 30), (5, 64), (2, 100), (4, 4098)):
        codes = torch.randint(0, mod.QMAX + 1, (n, k), dtype=torch.uint8)
        py = mod.pack(codes)
        cpp = torch.zeros_like(py)
        _C.pack_codes(code_id, codes.data_ptr(), cpp.data_ptr(), n, k)
        assert torch.equal(py, cpp), (n, k)
        back = torch.empty_like(codes)
        _C.unpack_codes(code_id, py.data_ptr(), back.data_ptr(), n, k)
        assert torch.equal(back, codes) and torch.equal(mod.unpack(cpp, k), codes)


def test_nf4_kernel_table_matches_python():
    assert _C.nf4_table_int8() == nf4.TABLE_INT8.tolist()
    assert torch.equal(nf4.TABLE_INT8, torch.round(nf4.TABLE * 127).to(torch.int8))


@pytest.mark.parametrize(
    ("fmt", "change", "message"),
    [
        ("int4", {"group": 48}, "group_size: expected a positive multiple of 32, or -1, got 48"),
        ("nf4", {"group": 48}, "block_size: expected 32, 64, 128 or 256, got 48"),
        ("int4", {"k": 63}, "expected an even in_features"),
        ("int3", {"packed_cols": 11}, r"packed: expected shape \(4, 24\)"),
        ("int4", {"scales_cols": 3}, r"scales: expected shape \(4, 2\)"),
        ("int4", {"zeros": 16}, r"zeros: expected values < 16, got 16"),
        ("int3", {"zeros": 8}, r"zeros: expected values < 8, got 8"),
        ("int4", {"packed_dtype": torch.int8}, "packed: expected dtype torch.uint8"),
        ("int4", {"x_dtype": torch.float64}, "x: expected dtype"),
    ],
)
def test_bad_arguments(fmt, change, message):
    n, k, group = 4, change.get("k", 64), change.get("group", 32)
    mod = FORMATS[fmt]
    packed = torch.zeros(n, change.get("packed_cols", mod.packed_row_bytes(k - k % 2)), dtype=torch.uint8)
    packed = packed.to(change.get("packed_dtype", torch.uint8))
    scales = torch.ones(n, change.get("scales_cols", 2))
    zeros = None
    if "zeros" in change:
        zeros = torch.zeros(n, 2, dtype=torch.uint8)
        zeros[3, 1] = change["zeros"]
    x = torch.randn(2, k, dtype=change.get("x_dtype", torch.float32))
    with pytest.raises((ValueError, TypeError), match=message):
        _call(fmt, x, packed, scales, zeros, group, None)
