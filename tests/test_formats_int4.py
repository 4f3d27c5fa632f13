"""int4 (python/qkernels/formats/int4.py) against docs/formats.md: packing, RTN, the MSE search,
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
from qkernels.formats import int4

# --- packing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", RAGGED_SHAPES)
def test_pack_unpack_identity(shape):
    n, k = shape
    codes = torch.randint(0, 16, shape, dtype=torch.uint8)
    packed = int4.pack(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (n, int4.packed_row_bytes(k)) == (n, k // 2)
    assert torch.equal(int4.unpack(packed, k), codes)
    raw = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8)
    assert torch.equal(int4.pack(int4.unpack(raw, k)), raw)


def test_unpack_every_byte_value_bit_by_bit():
    packed = every_byte_at_every_position(3)
    codes = int4.unpack(packed, 6)
    # Element 2j is bits 0..3 of byte j, element 2j+1 bits 4..7.
    assert torch.equal(codes[:, 0::2].long(), bits_of(packed, 0, 4))
    assert torch.equal(codes[:, 1::2].long(), bits_of(packed, 4, 4))


def test_pack_puts_the_even_element_in_the_low_nibble():
    codes = torch.randint(0, 16, (5, 66), dtype=torch.uint8)
    packed = int4.pack(codes)
    for j in range(33):
        assert torch.equal(packed[:, j].long(), codes[:, 2 * j].long() + 16 * codes[:, 2 * j + 1].long())


# --- quantization --------------------------------------------------------------------------------


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("group", GROUP_SIZES)
@pytest.mark.parametrize("shape", [(3, 34), (4, 100), (2, 256)])
def test_rtn_matches_the_spec_group_by_group(shape, group, symmetric):
    w = torch.randn(shape) * torch.rand(shape[0], 1) * 4
    codes, scales, zeros = int4.quantize(w, group, symmetric, "rtn")
    e_codes, e_scales, e_zeros = spec_rtn(w, group, symmetric, int4.QMAX)
    assert torch.equal(codes, e_codes)
    assert torch.equal(scales, e_scales)
    assert zeros is None if symmetric else torch.equal(zeros.float(), e_zeros)


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("group", GROUP_SIZES)
def test_rtn_error_within_half_a_step(group, symmetric):
    w = torch.randn(16, 4102) * torch.rand(16, 1) * 10
    check_quantize_result(int4, w, group, symmetric, "rtn")
    check_rtn_half_step(int4, w, group, symmetric)


def test_symmetric_takes_the_first_largest_magnitude_and_maps_it_to_code_0():
    w = torch.tensor([[0.5, -2.0, 2.0, 1.0] * 8, [3.0, -1.0, 0.25, -3.0] * 8])
    codes, scales, _ = int4.quantize(w, 32)
    assert scales.flatten().tolist() == [2.0 / 8, 3.0 / -8]
    assert codes[0, 1] == 0 and codes[1, 0] == 0
    # The opposite extreme is clipped to code 15 (one level short).
    assert codes[0, 2] == 15 and codes[1, 3] == 15


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("group", GROUP_SIZES)
def test_mse_never_worse_than_rtn_in_any_group(group, symmetric):
    w = torch.randn(64, 1030) * torch.rand(64, 1) * 3
    rtn_db, mse_db = check_mse_not_worse(int4, w, group, symmetric)
    # What the search buys on this data: measured 0.38..1.43 dB (more for larger groups).
    assert mse_db > rtn_db + 0.25, (rtn_db, mse_db)


def test_asymmetric_rtn_keeps_groups_of_one_sign_in_range():
    # The range includes 0, so the zero never clamps: every value of an all-positive or all-negative
    # group is within half a step of its code (nothing is clipped), and MSE is still no worse.
    for w in (torch.rand(8, 256) + 1.0, -torch.rand(8, 256) - 1.0):
        codes, scales, zeros = int4.quantize(w, group_size=32, symmetric=False)
        step = scales.abs().repeat_interleave(32, dim=1)
        err = (w - int4.dequantize(codes, scales, zeros, 32)).abs()
        assert bool((err <= step / 2 * (1 + 1e-5)).all())
        rtn = check_quantize_result(int4, w, 32, False, "rtn")
        mse = check_quantize_result(int4, w, 32, False, "mse")
        assert sqnr_db(w, mse) >= sqnr_db(w, rtn)


# Measured SQNR (dB) on the seeded N(0, 1) [512, 1024] weight and on MiniLM's query layer; each floor
# sits about 0.1 dB below.  (symmetric, group, method): (normal floor, minilm floor)
FLOORS = {
    (True, 32, "rtn"): (21.2, 21.0),  # measured 21.316, 21.178
    (True, 64, "rtn"): (20.35, 20.1),  # measured 20.451, 20.240
    (True, 128, "rtn"): (19.6, 19.35),  # measured 19.717, 19.452
    (True, -1, "rtn"): (17.95, 18.15),  # measured 18.054, 18.254
    (False, 32, "rtn"): (21.75, 21.65),  # measured 21.848, 21.762
    (False, 64, "rtn"): (20.7, 20.55),  # measured 20.812, 20.659
    (False, 128, "rtn"): (19.85, 19.6),  # measured 19.949, 19.736
    (False, -1, "rtn"): (17.9, 18.4),  # measured 18.025, 18.513
    (True, 32, "mse"): (21.7, 21.55),  # measured 21.830, 21.677
    (True, 128, "mse"): (20.15, 19.9),  # measured 20.295, 20.025
    (True, -1, "mse"): (19.35, 19.2),  # measured 19.481, 19.317
    (False, 32, "mse"): (22.1, 22.0),  # measured 22.225, 22.134
    (False, 128, "mse"): (20.35, 20.1),  # measured 20.454, 20.245
    (False, -1, "mse"): (19.35, 19.3),  # measured 19.482, 19.438
}


@pytest.mark.parametrize(("symmetric", "group", "method"), list(FLOORS), ids=str)
def test_sqnr_floor(symmetric, group, method):
    normal_floor, minilm_floor = FLOORS[symmetric, group, method]
    for w, floor in ((normal_weight(), normal_floor), (minilm_weight(), minilm_floor)):
        w_hat = check_quantize_result(int4, w, group, symmetric, method)
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
        codes, scales, zeros = int4.quantize(w, 32, symmetric, method)
        w_hat = int4.dequantize(codes, scales, zeros, 32)
        assert torch.equal(w_hat[0, :32], w[0, :32]) and torch.equal(w_hat[3], w[3])
        assert torch.equal(w_hat[1, 32:64], w[1, 32:64]) and torch.equal(w_hat[2, 64:96], w[2, 64:96])
        assert scales[0, 0] == 0 and bool((scales[3] == 0).all())
        if symmetric:
            assert bool((codes[3] == 8).all())
        else:
            assert bool((codes[3] == 0).all()) and bool((zeros[3] == 0).all())


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("magnitude", [1e30, 1e-30])
def test_huge_and_tiny_magnitudes_keep_their_quality(magnitude, symmetric):
    w = torch.randn(32, 256)
    base = sqnr_db(w, check_quantize_result(int4, w, 64, symmetric, "rtn"))
    for method in ("rtn", "mse"):
        scaled = w * magnitude
        w_hat = check_quantize_result(int4, scaled, 64, symmetric, method)
        assert bool(torch.isfinite(w_hat).all())
        assert sqnr_db(scaled, w_hat) > base - 0.05


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("shape", [(1, 2), (5, 2), (1, 4096)])
def test_smallest_shapes(shape, symmetric):
    w = torch.randn(shape)
    for group in (32, -1):
        codes, scales, _ = int4.quantize(w, group, symmetric, "rtn")
        e_codes, e_scales, _ = spec_rtn(w, group, symmetric, int4.QMAX)
        assert torch.equal(codes, e_codes) and torch.equal(scales, e_scales)
        assert torch.equal(int4.unpack(int4.pack(codes), shape[1]), codes)
        check_mse_not_worse(int4, w, group, symmetric)


# --- bad inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: int4.quantize(torch.randn(4, 96), 48),
            ValueError,
            r"group_size: expected a positive multiple of 32 or -1, got 48",
        ),
        (lambda: int4.quantize(torch.randn(4, 96), 0), ValueError, r"group_size: .* got 0"),
        (lambda: int4.quantize(torch.randn(4, 96), -2), ValueError, r"group_size: .* got -2"),
        (
            lambda: int4.quantize(torch.randn(4, 96), 32.0),
            TypeError,
            r"group_size: expected an int, got float",
        ),
        (
            lambda: int4.quantize(torch.randn(4, 97), 32),
            ValueError,
            r"in_features \(K\): expected an even number .* got 97",
        ),
        (
            lambda: int4.quantize(torch.randn(4, 96).int(), 32),
            TypeError,
            r"w: expected a floating-point dtype, got torch.int32",
        ),
        (
            lambda: int4.quantize(torch.randn(96), 32),
            ValueError,
            r"w: expected a non-empty 2-D tensor .* got shape \(96,\)",
        ),
        (lambda: int4.quantize(torch.randn(0, 96), 32), ValueError, r"w: expected a non-empty 2-D tensor"),
        (
            lambda: int4.quantize(torch.tensor([[1.0, float("nan")]]), 32),
            ValueError,
            r"w: expected finite values .* nan at \[0, 1\]",
        ),
        (lambda: int4.quantize([[1.0, 2.0]], 32), TypeError, r"w: expected a torch.Tensor, got list"),
        (
            lambda: int4.quantize(torch.randn(4, 96), 32, method="gptq"),
            ValueError,
            r"method: expected one of \('rtn', 'mse'\), got 'gptq'",
        ),
        (
            lambda: int4.quantize(torch.randn(4, 96), 32, symmetric=1),
            TypeError,
            r"symmetric: expected a bool, got int",
        ),
        (
            lambda: int4.pack(torch.full((2, 4), 16, dtype=torch.uint8)),
            ValueError,
            r"int4.pack: codes: expected values in \[0, 15\], got 16",
        ),
        (
            lambda: int4.pack(torch.zeros(2, 4, dtype=torch.int32)),
            TypeError,
            r"codes: expected dtype torch.uint8, got torch.int32",
        ),
        (
            lambda: int4.pack(torch.zeros(2, 5, dtype=torch.uint8)),
            ValueError,
            r"in_features \(K\): expected an even number .* got 5",
        ),
        (
            lambda: int4.pack(torch.zeros(8, dtype=torch.uint8)),
            ValueError,
            r"codes: expected a non-empty 2-D tensor, got shape \(8,\)",
        ),
        (
            lambda: int4.unpack(torch.zeros(2, 3, dtype=torch.uint8), 8),
            ValueError,
            r"packed: expected shape \[N, in_features / 2\] = \[2, 4\], got \[2, 3\]",
        ),
        (
            lambda: int4.unpack(torch.zeros(2, 3, dtype=torch.uint8), 7),
            ValueError,
            r"in_features \(K\): expected an even number .* got 7",
        ),
        (
            lambda: int4.unpack(torch.zeros(2, 3, dtype=torch.uint8), 0),
            ValueError,
            r"in_features: expected a positive int, got 0",
        ),
        (
            lambda: int4.packed_row_bytes(33),
            ValueError,
            r"in_features \(K\): expected an even number .* got 33",
        ),
        (
            lambda: int4.dequantize(torch.zeros(2, 64, dtype=torch.uint8), torch.ones(2, 3), None, 32),
            ValueError,
            r"scales: expected shape \(2, 2\), got \(2, 3\)",
        ),
        (
            lambda: int4.dequantize(
                torch.zeros(2, 64, dtype=torch.uint8), torch.ones(2, 2).double(), None, 32
            ),
            TypeError,
            r"scales: expected dtype torch.float32, got torch.float64",
        ),
        (
            lambda: int4.dequantize(
                torch.zeros(2, 64, dtype=torch.uint8),
                torch.ones(2, 2),
                torch.full((2, 2), 16, dtype=torch.uint8),
                32,
            ),
            ValueError,
            r"zeros: expected values in \[0, 15\], got 16",
        ),
        (
            lambda: int4.dequantize(
                torch.zeros(2, 64, dtype=torch.uint8),
                torch.ones(2, 2),
                torch.zeros(2, 1, dtype=torch.uint8),
                32,
            ),
            ValueError,
            r"zeros: expected shape \(2, 2\), got \(2, 1\)",
        ),
        (
            lambda: int4.dequantize(torch.full((2, 64), 17, dtype=torch.uint8), torch.ones(2, 2), None, 32),
            ValueError,
            r"codes: expected values in \[0, 15\], got 17",
        ),
        (
            lambda: int4.dequantize(torch.zeros(2, 64, dtype=torch.uint8), torch.ones(2, 2), None, 48),
            ValueError,
            r"group_size: .* got 48",
        ),
    ],
)
def test_bad_inputs_raise_with_a_clear_message(call, error, match):
    with pytest.raises(error, match=match):
        call()
