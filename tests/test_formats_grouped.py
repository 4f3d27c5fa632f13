"""What int4 and int3 (python/qkernels/formats/) share against docs/formats.md, run once per format: RTN,
the MSE search, edge cases and input checks; with nf4, the nibble packing of int4 and the checks on w
and on codes. Each format's own layout and quality floors are in test_formats_<format>.py."""

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
    spec_rtn,
    sqnr_db,
)
from qkernels.formats import _groups, int3, int4, nf4

# The largest code of each format, from docs/formats.md (not read from the modules, so they are checked).
QMAX = {"int4": 15, "int3": 7, "nf4": 15}
MODULES = {"int4": int4, "int3": int3, "nf4": nf4}
QMAX_OF = {MODULES[name]: qmax for name, qmax in QMAX.items()}
GROUP_FORMATS = ("int4", "int3")  # group scales, symmetric or asymmetric zeros, RTN or MSE
NIBBLE_FORMATS = ("int4", "nf4")  # two codes a byte, even K


def formats(names):
    """``pytest.param(module)`` for each format, with the format's name as its id."""
    return [pytest.param(MODULES[name], id=name) for name in names]


def with_qmax(names):
    """``pytest.param(module, qmax)`` for each format, with the format's name as its id."""
    return [pytest.param(MODULES[name], QMAX[name], id=name) for name in names]


@pytest.mark.parametrize(("mod", "qmax"), with_qmax(GROUP_FORMATS))
def test_code_range_matches_the_spec(mod, qmax):
    assert qmax == mod.QMAX and (qmax + 1) // 2 == mod.SYM_ZERO


# --- nibble packing (int4, nf4) ------------------------------------------------------------------


@pytest.mark.parametrize("shape", RAGGED_SHAPES)
@pytest.mark.parametrize("mod", formats(NIBBLE_FORMATS))
def test_nibble_pack_unpack_identity(mod, shape):
    n, k = shape
    codes = torch.randint(0, 16, shape, dtype=torch.uint8)
    packed = mod.pack(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (n, mod.packed_row_bytes(k)) == (n, k // 2)
    assert torch.equal(mod.unpack(packed, k), codes)
    raw = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8)
    assert torch.equal(mod.pack(mod.unpack(raw, k)), raw)


@pytest.mark.parametrize("mod", formats(NIBBLE_FORMATS))
def test_nibble_unpack_every_byte_value_bit_by_bit(mod):
    packed = every_byte_at_every_position(3)
    codes = mod.unpack(packed, 6)
    # Element 2j is bits 0..3 of byte j, element 2j+1 bits 4..7.
    assert torch.equal(codes[:, 0::2].long(), bits_of(packed, 0, 4))
    assert torch.equal(codes[:, 1::2].long(), bits_of(packed, 4, 4))


@pytest.mark.parametrize("mod", formats(NIBBLE_FORMATS))
def test_pack_puts_the_even_element_in_the_low_nibble(mod):
    # Low nibble first for nf4 too (bitsandbytes has the first element in the high nibble).
    codes = torch.randint(0, 16, (5, 66), dtype=torch.uint8)
    packed = mod.pack(codes)
    for j in range(33):
        assert torch.equal(packed[:, j].long(), codes[:, 2 * j].long() + 16 * codes[:, 2 * j + 1].long())


# --- quantization (int4, int3) -------------------------------------------------------------------


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("group", GROUP_SIZES)
@pytest.mark.parametrize("shape", [(3, 34), (4, 100), (2, 256)])
@pytest.mark.parametrize(("mod", "qmax"), with_qmax(GROUP_FORMATS))
def test_rtn_matches_the_spec_group_by_group(mod, qmax, shape, group, symmetric):
    w = torch.randn(shape) * torch.rand(shape[0], 1) * 4
    codes, scales, zeros = mod.quantize(w, group, symmetric, "rtn")
    e_codes, e_scales, e_zeros = spec_rtn(w, group, symmetric, qmax)
    assert torch.equal(codes, e_codes)
    assert torch.equal(scales, e_scales)
    assert zeros is None if symmetric else torch.equal(zeros.float(), e_zeros)


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("group", GROUP_SIZES)
@pytest.mark.parametrize("mod", formats(GROUP_FORMATS))
def test_rtn_error_within_half_a_step(mod, group, symmetric):
    w = torch.randn(16, 4102) * torch.rand(16, 1) * 10
    check_quantize_result(mod, w, group, symmetric, "rtn")
    check_rtn_half_step(mod, w, group, symmetric)


@pytest.mark.parametrize(("mod", "qmax"), with_qmax(GROUP_FORMATS))
def test_symmetric_takes_the_first_largest_magnitude_and_maps_it_to_code_0(mod, qmax):
    sym_zero = (qmax + 1) // 2
    w = torch.tensor([[0.5, -2.0, 2.0, 1.0] * 8, [3.0, -1.0, 0.25, -3.0] * 8])
    codes, scales, _ = mod.quantize(w, 32)
    assert scales.flatten().tolist() == [2.0 / sym_zero, 3.0 / -sym_zero]
    assert codes[0, 1] == 0 and codes[1, 0] == 0
    # The opposite extreme is clipped to code qmax (one level short).
    assert codes[0, 2] == qmax and codes[1, 3] == qmax


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("group", GROUP_SIZES)
@pytest.mark.parametrize(
    ("mod", "gain_db"),
    [
        # What the search buys on this data: measured 0.38..1.43 dB (more for larger groups).
        pytest.param(int4, 0.25, id="int4"),
        # What the search buys on this data: measured 0.63..2.68 dB (more for larger groups).
        pytest.param(int3, 0.5, id="int3"),
    ],
)
def test_mse_never_worse_than_rtn_in_any_group(mod, gain_db, group, symmetric):
    w = torch.randn(64, 1030) * torch.rand(64, 1) * 3
    rtn_db, mse_db = check_mse_not_worse(mod, w, group, symmetric)
    assert mse_db > rtn_db + gain_db, (rtn_db, mse_db)


@pytest.mark.parametrize("mod", formats(GROUP_FORMATS))
def test_asymmetric_rtn_keeps_groups_of_one_sign_in_range(mod):
    # The range includes 0, so the zero never clamps: every value of an all-positive or all-negative
    # group is within half a step of its code (nothing is clipped), and MSE is still no worse.
    for w in (torch.rand(8, 256) + 1.0, -torch.rand(8, 256) - 1.0):
        codes, scales, zeros = mod.quantize(w, group_size=32, symmetric=False)
        step = scales.abs().repeat_interleave(32, dim=1)
        err = (w - mod.dequantize(codes, scales, zeros, 32)).abs()
        assert bool((err <= step / 2 * (1 + 1e-5)).all())
        rtn = check_quantize_result(mod, w, 32, False, "rtn")
        mse = check_quantize_result(mod, w, 32, False, "mse")
        assert sqnr_db(w, mse) >= sqnr_db(w, rtn)


# --- edge cases (int4, int3) ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["rtn", "mse"])
@pytest.mark.parametrize(("mod", "qmax"), with_qmax(GROUP_FORMATS))
def test_all_zero_and_constant_groups(mod, qmax, method):
    w = torch.randn(4, 128)
    w[0, :32] = 0.0
    w[1, 32:64] = 0.75
    w[2, 64:96] = -3.0
    w[3] = 0.0
    for symmetric in (True, False):
        codes, scales, zeros = mod.quantize(w, 32, symmetric, method)
        w_hat = mod.dequantize(codes, scales, zeros, 32)
        assert torch.equal(w_hat[0, :32], w[0, :32]) and torch.equal(w_hat[3], w[3])
        assert torch.equal(w_hat[1, 32:64], w[1, 32:64]) and torch.equal(w_hat[2, 64:96], w[2, 64:96])
        assert scales[0, 0] == 0 and bool((scales[3] == 0).all())
        if symmetric:
            assert bool((codes[3] == (qmax + 1) // 2).all())
        else:
            assert bool((codes[3] == 0).all()) and bool((zeros[3] == 0).all())


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("magnitude", [1e30, 1e-30])
@pytest.mark.parametrize("mod", formats(GROUP_FORMATS))
def test_huge_and_tiny_magnitudes_keep_their_quality(mod, magnitude, symmetric):
    w = torch.randn(32, 256)
    base = sqnr_db(w, check_quantize_result(mod, w, 64, symmetric, "rtn"))
    for method in ("rtn", "mse"):
        scaled = w * magnitude
        w_hat = check_quantize_result(mod, scaled, 64, symmetric, method)
        assert bool(torch.isfinite(w_hat).all())
        assert sqnr_db(scaled, w_hat) > base - 0.05


SMALLEST_SHAPES = [
    pytest.param(MODULES[name], QMAX[name], shape, id=f"{name}-{shape[0]}x{shape[1]}")
    for name, shapes in (
        ("int4", [(1, 2), (5, 2), (1, 4096)]),
        # int3 takes odd K too: a single element, and one chunk plus one.
        ("int3", [(1, 1), (1, 2), (5, 2), (3, 33), (1, 4096)]),
    )
    for shape in shapes
]


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize(("mod", "qmax", "shape"), SMALLEST_SHAPES)
def test_smallest_shapes(mod, qmax, shape, symmetric):
    w = torch.randn(shape)
    for group in (32, -1):
        codes, scales, _ = mod.quantize(w, group, symmetric, "rtn")
        e_codes, e_scales, _ = spec_rtn(w, group, symmetric, qmax)
        assert torch.equal(codes, e_codes) and torch.equal(scales, e_scales)
        assert torch.equal(mod.unpack(mod.pack(codes), shape[1]), codes)
        check_mse_not_worse(mod, w, group, symmetric)


# --- bad inputs ----------------------------------------------------------------------------------

# (id, call on the format's module, error, message pattern with {name}, {qmax} and {over} = qmax + 1)
W_AND_CODES_CASES = [
    (
        "w-int32",
        lambda m: m.quantize(torch.randn(4, 96).int(), 32),
        TypeError,
        r"w: expected a floating-point dtype, got torch.int32",
    ),
    (
        "w-int8",
        lambda m: m.quantize(torch.randn(4, 96).to(torch.int8), 32),
        TypeError,
        r"w: expected a floating-point dtype, got torch.int8",
    ),
    (
        "w-int64",
        lambda m: m.quantize(torch.randn(4, 96).long(), 32),
        TypeError,
        r"w: expected a floating-point dtype, got torch.int64",
    ),
    (
        "w-1d",
        lambda m: m.quantize(torch.randn(96), 32),
        ValueError,
        r"w: expected a non-empty 2-D tensor .* got shape \(96,\)",
    ),
    (
        "w-3d",
        lambda m: m.quantize(torch.randn(2, 3, 32), 32),
        ValueError,
        r"w: expected a non-empty 2-D tensor .* got shape \(2, 3, 32\)",
    ),
    (
        "w-empty",
        lambda m: m.quantize(torch.randn(0, 96), 32),
        ValueError,
        r"w: expected a non-empty 2-D tensor",
    ),
    (
        "w-nan",
        lambda m: m.quantize(torch.tensor([[1.0, float("nan")]]), 32),
        ValueError,
        r"w: expected finite values .* nan at \[0, 1\]",
    ),
    (
        "w-inf",
        lambda m: m.quantize(torch.tensor([[1.0, float("inf")]]), 32),
        ValueError,
        r"w: expected finite values .* inf at \[0, 1\]",
    ),
    (
        "w-minus-inf",
        lambda m: m.quantize(torch.tensor([[0.0, float("-inf")]]), 32),
        ValueError,
        r"w: expected finite values .* -inf at \[0, 1\]",
    ),
    ("w-list", lambda m: m.quantize([[1.0, 2.0]], 32), TypeError, r"w: expected a torch.Tensor, got list"),
    (
        "pack-code-over-qmax",
        lambda m: m.pack(torch.full((2, 4), QMAX_OF[m] + 1, dtype=torch.uint8)),
        ValueError,
        r"{name}.pack: codes: expected values in \[0, {qmax}\], got {over}",
    ),
    (
        "pack-int32",
        lambda m: m.pack(torch.zeros(2, 4, dtype=torch.int32)),
        TypeError,
        r"codes: expected dtype torch.uint8, got torch.int32",
    ),
    (
        "pack-float32",
        lambda m: m.pack(torch.zeros(2, 4)),
        TypeError,
        r"codes: expected dtype torch.uint8, got torch.float32",
    ),
    (
        "pack-1d",
        lambda m: m.pack(torch.zeros(8, dtype=torch.uint8)),
        ValueError,
        r"codes: expected a non-empty 2-D tensor, got shape \(8,\)",
    ),
    (
        "unpack-int16",
        lambda m: m.unpack(torch.zeros(2, m.packed_row_bytes(32), dtype=torch.int16), 32),
        TypeError,
        r"packed: expected dtype torch.uint8, got torch.int16",
    ),
    (
        "unpack-in_features-0",
        lambda m: m.unpack(torch.zeros(2, 3, dtype=torch.uint8), 0),
        ValueError,
        r"in_features: expected a positive int, got 0",
    ),
    (
        "unpack-in_features-minus-32",
        lambda m: m.unpack(torch.zeros(2, 12, dtype=torch.uint8), -32),
        ValueError,
        r"in_features: expected a positive int, got -32",
    ),
    (
        "packed_row_bytes-0",
        lambda m: m.packed_row_bytes(0),
        ValueError,
        r"in_features: expected a positive int, got 0",
    ),
]

_codes = torch.zeros(2, 64, dtype=torch.uint8)

GROUP_CASES = [
    (
        "group_size-48",
        lambda m: m.quantize(torch.randn(4, 96), 48),
        ValueError,
        r"{name}.quantize: group_size: expected a positive multiple of 32 or -1, got 48",
    ),
    ("group_size-0", lambda m: m.quantize(torch.randn(4, 96), 0), ValueError, r"group_size: .* got 0"),
    ("group_size-16", lambda m: m.quantize(torch.randn(4, 96), 16), ValueError, r"group_size: .* got 16"),
    (
        "group_size-minus-2",
        lambda m: m.quantize(torch.randn(4, 96), -2),
        ValueError,
        r"group_size: .* got -2",
    ),
    (
        "group_size-float",
        lambda m: m.quantize(torch.randn(4, 96), 32.0),
        TypeError,
        r"group_size: expected an int, got float",
    ),
    (
        "group_size-str",
        lambda m: m.quantize(torch.randn(4, 96), "128"),
        TypeError,
        r"group_size: expected an int, got str",
    ),
    (
        "method-gptq-without-hessian",
        lambda m: m.quantize(torch.randn(4, 96), 32, method="gptq"),
        ValueError,
        r"hessian: expected the layer's input second moment \[K, K\] exactly when method is 'gptq' "
        r"\(see qkernels.calibrate\), got None",
    ),
    (
        "hessian-without-gptq",
        lambda m: m.quantize(torch.randn(4, 96), 32, method="mse", hessian=torch.eye(96)),
        ValueError,
        r"hessian: expected .* exactly when method is 'gptq' .*, got a hessian with method='mse'",
    ),
    (
        "method-upper-case",
        lambda m: m.quantize(torch.randn(4, 96), 32, method="MSE"),
        ValueError,
        r"method: expected one of \('rtn', 'mse', 'gptq'\), got 'MSE'",
    ),
    (
        "symmetric-int",
        lambda m: m.quantize(torch.randn(4, 96), 32, symmetric=1),
        TypeError,
        r"symmetric: expected a bool, got int",
    ),
    (
        "dequantize-scales-shape",
        lambda m: m.dequantize(_codes, torch.ones(2, 3), None, 32),
        ValueError,
        r"scales: expected shape \(2, 2\), got \(2, 3\)",
    ),
    (
        "dequantize-scales-float64",
        lambda m: m.dequantize(_codes, torch.ones(2, 2).double(), None, 32),
        TypeError,
        r"scales: expected dtype torch.float32, got torch.float64",
    ),
    (
        "dequantize-zero-over-qmax",
        lambda m: m.dequantize(
            _codes, torch.ones(2, 2), torch.full((2, 2), QMAX_OF[m] + 1, dtype=torch.uint8), 32
        ),
        ValueError,
        r"zeros: expected values in \[0, {qmax}\], got {over}",
    ),
    (
        "dequantize-zeros-shape",
        lambda m: m.dequantize(_codes, torch.ones(2, 2), torch.zeros(2, 1, dtype=torch.uint8), 32),
        ValueError,
        r"zeros: expected shape \(2, 2\), got \(2, 1\)",
    ),
    (
        "dequantize-zeros-float32",
        lambda m: m.dequantize(_codes, torch.ones(2, 2), torch.zeros(2, 2), 32),
        TypeError,
        r"zeros: expected dtype torch.uint8, got torch.float32",
    ),
    (
        "dequantize-code-over-qmax",
        lambda m: m.dequantize(_codes + QMAX_OF[m] + 1, torch.ones(2, 2), None, 32),
        ValueError,
        r"codes: expected values in \[0, {qmax}\], got {over}",
    ),
    (
        "dequantize-code-17",
        lambda m: m.dequantize(_codes + 17, torch.ones(2, 2), None, 32),
        ValueError,
        r"codes: expected values in \[0, {qmax}\], got 17",
    ),
    (
        "dequantize-group_size-48",
        lambda m: m.dequantize(_codes, torch.ones(2, 2), None, 48),
        ValueError,
        r"group_size: .* got 48",
    ),
]

NIBBLE_CASES = [
    (
        "quantize-odd-k",
        lambda m: m.quantize(torch.randn(4, 97), 32),
        ValueError,
        r"in_features \(K\): expected an even number .* got 97",
    ),
    (
        "pack-k-3",
        lambda m: m.pack(torch.zeros(2, 3, dtype=torch.uint8)),
        ValueError,
        r"in_features \(K\): expected an even number .* got 3",
    ),
    (
        "pack-k-5",
        lambda m: m.pack(torch.zeros(2, 5, dtype=torch.uint8)),
        ValueError,
        r"in_features \(K\): expected an even number .* got 5",
    ),
    (
        "unpack-odd-in_features",
        lambda m: m.unpack(torch.zeros(2, 3, dtype=torch.uint8), 7),
        ValueError,
        r"in_features \(K\): expected an even number .* got 7",
    ),
    (
        "packed_row_bytes-odd",
        lambda m: m.packed_row_bytes(33),
        ValueError,
        r"in_features \(K\): expected an even number .* got 33",
    ),
    (
        "unpack-short-row",
        lambda m: m.unpack(torch.zeros(2, 3, dtype=torch.uint8), 8),
        ValueError,
        r"packed: expected shape \[N, in_features / 2\] = \[2, 4\], got \[2, 3\]",
    ),
    (
        "unpack-long-row",
        lambda m: m.unpack(torch.zeros(2, 5, dtype=torch.uint8), 8),
        ValueError,
        r"packed: expected shape \[N, in_features / 2\] = \[2, 4\], got \[2, 5\]",
    ),
]


def bad_input_cases(names, cases):
    """One ``pytest.param(module, call, error, pattern)`` per format and case, with id ``<format>-<case>``."""
    return [
        pytest.param(
            MODULES[name],
            call,
            error,
            pattern.format(name=name, qmax=QMAX[name], over=QMAX[name] + 1),
            id=f"{name}-{case}",
        )
        for name in names
        for case, call, error, pattern in cases
    ]


@pytest.mark.parametrize(
    ("mod", "call", "error", "match"),
    [
        *bad_input_cases(MODULES, W_AND_CODES_CASES),
        *bad_input_cases(GROUP_FORMATS, GROUP_CASES),
        *bad_input_cases(NIBBLE_FORMATS, NIBBLE_CASES),
    ],
)
def test_bad_inputs_raise_with_a_clear_message(mod, call, error, match):
    with pytest.raises(error, match=match):
        call(mod)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("fmt", [int4.FORMAT, int3.FORMAT], ids=lambda f: f.name)
def test_both_ways_of_scoring_the_mse_candidates_agree(fmt, symmetric, monkeypatch):
    # All candidates at once (few values, as GPTQ asks) or one at a time (bounded memory).
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(24, 5, 32, generator=gen)
    x[3, 1] = 0  # an all-zero group: NaN sums either way
    steps, zeros = _groups._candidates(fmt, x, symmetric)
    monkeypatch.setattr(_groups, "BROADCAST_LIMIT", 0)
    looped = _groups._candidate_sums(fmt, x, steps, zeros, symmetric)
    monkeypatch.setattr(_groups, "BROADCAST_LIMIT", 1 << 40)
    broadcast = _groups._candidate_sums(fmt, x, steps, zeros, symmetric)
    for a, b in zip(looped, broadcast, strict=True):
        assert a.shape == b.shape == steps.shape
        # The same products summed in another order: fp32 rounding of 32 terms apart.
        torch.testing.assert_close(a, b, rtol=32 * torch.finfo(torch.float32).eps, atol=1e-5, equal_nan=True)
