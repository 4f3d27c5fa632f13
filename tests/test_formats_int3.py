"""int3 (python/qkernels/formats/int3.py) against docs/formats.md: packing, RTN, the MSE search,
quality floors and input checks."""

from __future__ import annotations

import pytest
import torch
from formats_common import (
    GROUP_SIZES,
    RAGGED_SHAPES,
    bits_of,
    check_mse_not_worse,
    check_quantize_result,
    check_rtn_half_step,
    every_byte_at_every_position,
    minilm_weight,
    normal_weight,
    spec_rtn,
    sqnr_db,
)
from qkernels.formats import int3

# --- packing -------------------------------------------------------------------------------------


def spec_chunk_bytes(codes: list[int]) -> list[int]:
    """docs/formats.md's 12 bytes for 32 codes: byte j (0..7) bits 2t..2t+1 = bits 0..1 of element
    j + 8t; bytes 8..11 a little-endian uint32 whose bit i is bit 2 of element i."""
    out = [0] * 12
    for i, c in enumerate(codes):
        out[i % 8] |= (c & 3) << (2 * (i // 8))
        out[8 + i // 8] |= ((c >> 2) & 1) << (i % 8)
    return out


@pytest.mark.parametrize("shape", [*RAGGED_SHAPES, (3, 1), (2, 33), (4, 63)])
def test_pack_unpack_identity(shape):
    n, k = shape
    codes = torch.randint(0, 8, shape, dtype=torch.uint8)
    packed = int3.pack(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (n, int3.packed_row_bytes(k)) == (
        n,
        -(-k // 32) * 12,
    )
    assert torch.equal(int3.unpack(packed, k), codes)
    if k % 32 == 0:  # no padding: every byte pattern is a valid row
        raw = torch.randint(0, 256, (n, k // 32 * 12), dtype=torch.uint8)
        assert torch.equal(int3.pack(int3.unpack(raw, k)), raw)


@pytest.mark.parametrize("shape", [(3, 32), (2, 70), (1, 5)])
def test_pack_layout_bit_by_bit(shape):
    n, k = shape
    codes = torch.randint(0, 8, shape, dtype=torch.uint8)
    packed = int3.pack(codes)
    for r in range(n):
        row = codes[r].tolist() + [0] * (-k % 32)  # the last chunk is padded with code 0
        expected = [b for c in range(0, len(row), 32) for b in spec_chunk_bytes(row[c : c + 32])]
        assert packed[r].tolist() == expected


def test_unpack_every_byte_value_bit_by_bit():
    packed = every_byte_at_every_position(12)
    codes = int3.unpack(packed, 32).long()
    for i in range(32):
        low = bits_of(packed[:, i % 8], 2 * (i // 8), 2)
        high = bits_of(packed[:, 8 + i // 8], i % 8, 1)
        assert torch.equal(codes[:, i], low + 4 * high), i


def test_packed_row_bytes():
    assert [int3.packed_row_bytes(k) for k in (1, 32, 33, 64, 4096)] == [12, 12, 24, 24, 1536]


# --- quantization --------------------------------------------------------------------------------


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("group", GROUP_SIZES)
@pytest.mark.parametrize("shape", [(3, 34), (4, 100), (2, 256)])
def test_rtn_matches_the_spec_group_by_group(shape, group, symmetric):
    w = torch.randn(shape) * torch.rand(shape[0], 1) * 4
    codes, scales, zeros = int3.quantize(w, group, symmetric, "rtn")
    e_codes, e_scales, e_zeros = spec_rtn(w, group, symmetric, int3.QMAX)
    assert torch.equal(codes, e_codes)
    assert torch.equal(scales, e_scales)
    assert zeros is None if symmetric else torch.equal(zeros.float(), e_zeros)


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("group", GROUP_SIZES)
def test_rtn_error_within_half_a_step(group, symmetric):
    w = torch.randn(16, 4102) * torch.rand(16, 1) * 10
    check_quantize_result(int3, w, group, symmetric, "rtn")
    check_rtn_half_step(int3, w, group, symmetric)


def test_symmetric_takes_the_first_largest_magnitude_and_maps_it_to_code_0():
    w = torch.tensor([[0.5, -2.0, 2.0, 1.0] * 8, [3.0, -1.0, 0.25, -3.0] * 8])
    codes, scales, _ = int3.quantize(w, 32)
    assert scales.flatten().tolist() == [2.0 / 4, 3.0 / -4]
    assert codes[0, 1] == 0 and codes[1, 0] == 0
    # The opposite extreme is clipped to code 7 (one level short).
    assert codes[0, 2] == 7 and codes[1, 3] == 7


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("group", GROUP_SIZES)
def test_mse_never_worse_than_rtn_in_any_group(group, symmetric):
    w = torch.randn(64, 1030) * torch.rand(64, 1) * 3
    rtn_db, mse_db = check_mse_not_worse(int3, w, group, symmetric)
    # What the search buys on this data: measured 0.63..2.68 dB (more for larger groups).
    assert mse_db > rtn_db + 0.5, (rtn_db, mse_db)


def test_asymmetric_rtn_keeps_groups_of_one_sign_in_range():
    # The range includes 0, so the zero never clamps: every value of an all-positive or all-negative
    # group is within half a step of its code (nothing is clipped), and MSE is still no worse.
    for w in (torch.rand(8, 256) + 1.0, -torch.rand(8, 256) - 1.0):
        codes, scales, zeros = int3.quantize(w, group_size=32, symmetric=False)
        step = scales.abs().repeat_interleave(32, dim=1)
        err = (w - int3.dequantize(codes, scales, zeros, 32)).abs()
        assert bool((err <= step / 2 * (1 + 1e-5)).all())
        rtn = check_quantize_result(int3, w, 32, False, "rtn")
        mse = check_quantize_result(int3, w, 32, False, "mse")
        assert sqnr_db(w, mse) >= sqnr_db(w, rtn)


# Measured SQNR (dB) on the seeded N(0, 1) [512, 1024] weight and on MiniLM's query layer; each floor
# sits about 0.1 dB below.  (symmetric, group, method): (normal floor, minilm floor)
FLOORS = {
    (True, 32, "rtn"): (15.05, 14.9),  # measured 15.178, 15.023
    (True, 64, "rtn"): (14.25, 14.0),  # measured 14.360, 14.105
    (True, 128, "rtn"): (13.55, 13.25),  # measured 13.650, 13.343
    (True, -1, "rtn"): (11.9, 12.05),  # measured 12.022, 12.176
    (False, 32, "rtn"): (15.1, 15.0),  # measured 15.241, 15.111
    (False, 64, "rtn"): (14.1, 13.9),  # measured 14.202, 14.003
    (False, 128, "rtn"): (13.2, 13.0),  # measured 13.329, 13.092
    (False, -1, "rtn"): (11.3, 11.75),  # measured 11.405, 11.866
    (True, 32, "mse"): (15.7, 15.55),  # measured 15.795, 15.647
    (True, 128, "mse"): (14.5, 14.3),  # measured 14.629, 14.393
    (True, -1, "mse"): (14.0, 13.85),  # measured 14.092, 13.985
    (False, 32, "mse"): (15.8, 15.65),  # measured 15.901, 15.783
    (False, 128, "mse"): (14.5, 14.3),  # measured 14.632, 14.422
    (False, -1, "mse"): (14.0, 13.9),  # measured 14.096, 13.998
}


@pytest.mark.parametrize(("symmetric", "group", "method"), list(FLOORS), ids=str)
def test_sqnr_floor(symmetric, group, method):
    normal_floor, minilm_floor = FLOORS[symmetric, group, method]
    for w, floor in ((normal_weight(), normal_floor), (minilm_weight(), minilm_floor)):
        w_hat = check_quantize_result(int3, w, group, symmetric, method)
        assert sqnr_db(w, w_hat) > floor


# --- edge cases ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["rtn", "mse"])
def test_all_zero_and_constant_groups(method):
    w = torch.randn(4, 128)
    w[0, :32] = 0.0
    w[1, 32:64] = 0.75
    w[2, 64:96] = -3.0
    w[3] = 0.0
    for symmetric in (True, False):
        codes, scales, zeros = int3.quantize(w, 32, symmetric, method)
        w_hat = int3.dequantize(codes, scales, zeros, 32)
        assert torch.equal(w_hat[0, :32], w[0, :32]) and torch.equal(w_hat[3], w[3])
        assert torch.equal(w_hat[1, 32:64], w[1, 32:64]) and torch.equal(w_hat[2, 64:96], w[2, 64:96])
        assert scales[0, 0] == 0 and bool((scales[3] == 0).all())
        if symmetric:
            assert bool((codes[3] == 4).all())
        else:
            assert bool((codes[3] == 0).all()) and bool((zeros[3] == 0).all())


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("magnitude", [1e30, 1e-30])
def test_huge_and_tiny_magnitudes_keep_their_quality(magnitude, symmetric):
    w = torch.randn(32, 256)
    base = sqnr_db(w, check_quantize_result(int3, w, 64, symmetric, "rtn"))
    for method in ("rtn", "mse"):
        scaled = w * magnitude
        w_hat = check_quantize_result(int3, scaled, 64, symmetric, method)
        assert bool(torch.isfinite(w_hat).all())
        assert sqnr_db(scaled, w_hat) > base - 0.05


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (5, 2), (3, 33), (1, 4096)])
def test_smallest_shapes(shape, symmetric):
    w = torch.randn(shape)
    for group in (32, -1):
        codes, scales, _ = int3.quantize(w, group, symmetric, "rtn")
        e_codes, e_scales, _ = spec_rtn(w, group, symmetric, int3.QMAX)
        assert torch.equal(codes, e_codes) and torch.equal(scales, e_scales)
        assert torch.equal(int3.unpack(int3.pack(codes), shape[1]), codes)
        check_mse_not_worse(int3, w, group, symmetric)


# --- bad inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: int3.quantize(torch.randn(4, 96), 48),
            ValueError,
            r"int3.quantize: group_size: expected a positive multiple of 32 or -1, got 48",
        ),
        (lambda: int3.quantize(torch.randn(4, 96), 0), ValueError, r"group_size: .* got 0"),
        (lambda: int3.quantize(torch.randn(4, 96), 16), ValueError, r"group_size: .* got 16"),
        (
            lambda: int3.quantize(torch.randn(4, 96), "128"),
            TypeError,
            r"group_size: expected an int, got str",
        ),
        (
            lambda: int3.quantize(torch.randn(4, 96).to(torch.int8), 32),
            TypeError,
            r"w: expected a floating-point dtype, got torch.int8",
        ),
        (
            lambda: int3.quantize(torch.randn(2, 3, 32), 32),
            ValueError,
            r"w: expected a non-empty 2-D tensor .* got shape \(2, 3, 32\)",
        ),
        (
            lambda: int3.quantize(torch.tensor([[1.0, float("inf")]]), 32),
            ValueError,
            r"w: expected finite values .* inf at \[0, 1\]",
        ),
        (
            lambda: int3.quantize(torch.randn(4, 96), 32, method="MSE"),
            ValueError,
            r"method: expected one of \('rtn', 'mse'\), got 'MSE'",
        ),
        (
            lambda: int3.pack(torch.full((2, 4), 8, dtype=torch.uint8)),
            ValueError,
            r"int3.pack: codes: expected values in \[0, 7\], got 8",
        ),
        (
            lambda: int3.pack(torch.zeros(2, 4)),
            TypeError,
            r"codes: expected dtype torch.uint8, got torch.float32",
        ),
        (
            lambda: int3.unpack(torch.zeros(2, 11, dtype=torch.uint8), 32),
            ValueError,
            r"packed: expected shape \[N, ceil\(in_features / 32\) \* 12\] = \[2, 12\], got \[2, 11\]",
        ),
        (
            lambda: int3.unpack(torch.zeros(2, 12, dtype=torch.uint8), 33),
            ValueError,
            r"packed: expected shape .* = \[2, 24\], got \[2, 12\]",
        ),
        (
            lambda: int3.unpack(torch.zeros(2, 12, dtype=torch.int16), 32),
            TypeError,
            r"packed: expected dtype torch.uint8, got torch.int16",
        ),
        (
            lambda: int3.unpack(torch.zeros(2, 12, dtype=torch.uint8), -32),
            ValueError,
            r"in_features: expected a positive int, got -32",
        ),
        (lambda: int3.packed_row_bytes(0), ValueError, r"in_features: expected a positive int, got 0"),
        (
            lambda: int3.dequantize(torch.zeros(2, 65, dtype=torch.uint8), torch.ones(2, 2), None, 32),
            ValueError,
            r"scales: expected shape \(2, 3\), got \(2, 2\)",
        ),
        (
            lambda: int3.dequantize(
                torch.zeros(2, 64, dtype=torch.uint8),
                torch.ones(2, 2),
                torch.full((2, 2), 8, dtype=torch.uint8),
                32,
            ),
            ValueError,
            r"zeros: expected values in \[0, 7\], got 8",
        ),
        (
            lambda: int3.dequantize(
                torch.zeros(2, 64, dtype=torch.uint8), torch.ones(2, 2), torch.zeros(2, 2), 32
            ),
            TypeError,
            r"zeros: expected dtype torch.uint8, got torch.float32",
        ),
        (
            lambda: int3.dequantize(torch.full((2, 64), 8, dtype=torch.uint8), torch.ones(2, 2), None, 32),
            ValueError,
            r"codes: expected values in \[0, 7\], got 8",
        ),
        (
            lambda: int3.dequantize(torch.zeros(2, 64, dtype=torch.uint8), torch.ones(2, 2), None, 48),
            ValueError,
            r"group_size: .* got 48",
        ),
    ],
)
def test_bad_inputs_raise_with_a_clear_message(call, error, match):
    with pytest.raises(error, match=match):
        call()
