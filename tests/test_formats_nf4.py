"""nf4 (python/qkernels/formats/nf4.py) against bitsandbytes' rules as docs/formats.md writes them:
the decision tree, blocking, double quantization, quality floors and input checks. The nibble packing
and the checks on w and on codes that nf4 shares with int4 and int3 are in test_formats_grouped.py."""

from __future__ import annotations

import math

import pytest
import torch
from formats_common import (
    minilm_weight,
    normal_weight,
    sqnr_db,
)
from qkernels.formats import nf4


def bnb_tree(x: torch.Tensor) -> torch.Tensor:
    """bitsandbytes' dQuantizeNF4 (csrc/kernels.cu), transcribed branch by branch: fp32 comparisons
    against the kernel's float literals, in the kernel's order."""

    def gt(c: float) -> torch.Tensor:
        return x > torch.tensor(c, dtype=torch.float32)

    def pick(cond, a, b):
        return torch.where(cond, a, b)

    def code(c):
        return torch.full_like(x, c, dtype=torch.long)

    hi = pick(
        gt(0.3893125355243683),
        pick(
            gt(0.6427869200706482),
            pick(gt(0.8614784181118011), code(0b1111), code(0b1110)),
            pick(gt(0.5016634166240692), code(0b1101), code(0b1100)),
        ),
        pick(
            gt(0.2035212516784668),
            pick(gt(0.2920137718319893), code(0b1011), code(0b1010)),
            pick(gt(0.1202552504837513), code(0b1001), code(0b1000)),
        ),
    )
    lo = pick(
        gt(-0.33967943489551544),
        pick(
            gt(-0.13791173323988914),
            pick(gt(-0.045525018125772476), code(0b0111), code(0b0110)),
            pick(gt(-0.23460740596055984), code(0b0101), code(0b0100)),
        ),
        pick(
            gt(-0.6106329262256622),
            pick(gt(-0.4599952697753906), code(0b0011), code(0b0010)),
            pick(gt(-0.8480964004993439), code(0b0001), code(0b0000)),
        ),
    )
    return pick(gt(0.03979014977812767), hi, lo)


def bnb_normed(w: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each block's absmax and ``w * (1 / absmax)`` (fp32 reciprocal, then multiply), one block at a
    time (K need not be a multiple of the block)."""
    n, k = w.shape
    normed = torch.empty_like(w)
    absmax = torch.empty(n, -(-k // block))
    for j, start in enumerate(range(0, k, block)):
        x = w[:, start : start + block]
        a = x.abs().max(dim=1).values
        absmax[:, j] = a
        normed[:, start : start + block] = x * (torch.tensor(1.0) / a).unsqueeze(1)
    return absmax, normed


# --- the table -----------------------------------------------------------------------------------


def test_table_and_its_int8_copy():
    assert nf4.TABLE.dtype == torch.float32 and nf4.TABLE.shape == (16,)
    assert float(nf4.TABLE[0]) == -1.0 and float(nf4.TABLE[7]) == 0.0 and float(nf4.TABLE[15]) == 1.0
    assert bool((nf4.TABLE.diff() > 0).all())
    assert nf4.TABLE_INT8.dtype == torch.int8
    assert nf4.TABLE_INT8.tolist() == [round(127 * float(v)) for v in nf4.TABLE]
    # The tree's thresholds are the fp32 midpoints of neighbouring table values.
    assert torch.equal(nf4.THRESHOLDS, (nf4.TABLE[:-1] + nf4.TABLE[1:]) / 2)


# --- quantization: exactly bitsandbytes' decisions -----------------------------------------------


@pytest.mark.parametrize("block", nf4.BLOCK_SIZES)
@pytest.mark.parametrize("shape", [(5, 70), (3, 256), (2, 1000)])
def test_codes_match_the_bnb_tree_on_random_data(shape, block):
    w = torch.randn(shape) * torch.rand(shape[0], 1) * 5
    codes, absmax = nf4.quantize(w, block)
    e_absmax, normed = bnb_normed(w, block)
    assert torch.equal(absmax, e_absmax)
    assert torch.equal(codes.long(), bnb_tree(normed))


def test_values_at_and_next_to_every_threshold():
    th = nf4.THRESHOLDS
    up, down = torch.nextafter(th, torch.tensor(2.0)), torch.nextafter(th, torch.tensor(-2.0))
    # Each row is one block of 64 whose absmax is exactly 1, so w * (1 / absmax) is w itself.
    w = torch.zeros(4, 64)
    w[:, 0] = torch.tensor([1.0, -1.0, 1.0, -1.0])
    w[0, 1:16], w[1, 1:16] = th, up
    w[2, 1:16], w[3, 1:16] = down, th.flip(0)
    codes, _ = nf4.quantize(w, 64)
    assert torch.equal(codes.long(), bnb_tree(w))
    i = torch.arange(15)
    assert torch.equal(codes[0, 1:16].long(), i)  # on a threshold: the lower code
    assert torch.equal(codes[1, 1:16].long(), i + 1)  # one ulp above: the upper code
    assert torch.equal(codes[2, 1:16].long(), i)


def test_every_code_is_produced():
    w = (nf4.TABLE * 3.5).repeat(2, 4)
    codes, absmax = nf4.quantize(w, 32)
    assert torch.equal(codes[0, :16].long(), torch.arange(16))
    assert torch.equal(nf4.dequantize(codes, absmax, 32), w)


def test_all_zero_block():
    w = torch.randn(3, 256)
    w[1, 64:128] = 0.0
    w[2] = 0.0
    codes, absmax = nf4.quantize(w, 64)
    assert float(absmax[1, 1]) == 0.0 and bool((absmax[2] == 0).all())
    assert bool((codes[1, 64:128] == 7).all()) and bool((codes[2] == 7).all())
    w_hat = nf4.dequantize(codes, absmax, 64)
    assert bool((w_hat[1, 64:128] == 0).all()) and bool((w_hat[2] == 0).all())


@pytest.mark.parametrize("block", nf4.BLOCK_SIZES)
def test_dequantize_is_table_times_absmax(block):
    w = torch.randn(6, 300)
    codes, absmax = nf4.quantize(w, block)
    w_hat = nf4.dequantize(codes, absmax, block)
    for k in range(300):
        assert torch.equal(w_hat[:, k], nf4.TABLE[codes[:, k].long()] * absmax[:, k // block])


# --- double quantization -------------------------------------------------------------------------


def test_dynamic_map_is_bnb_signed_dynamic_type():
    m = nf4.DYNAMIC_MAP.double()
    assert nf4.DYNAMIC_MAP.dtype == torch.float32 and m.shape == (256,)
    assert bool((m.diff() > 0).all()) and float(m[127]) == 0.0 and float(m[255]) == 1.0
    # Positive entries: for each exponent i = 0..6, the 2^i midpoints of an even split of
    # [0.1, 1] scaled by 10^(i-6); the negative entries mirror them.
    expected = sorted(10.0 ** (i - 6) * (0.1 + 0.9 * (j + 0.5) / 2**i) for i in range(7) for j in range(2**i))
    assert torch.allclose(m[128:255], torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0)
    assert torch.equal(m[:127], -m[128:255].flip(0))


def bnb_dquantize(x: float, code: list[float]) -> int:
    """bitsandbytes' CUDA dQuantize<0> (csrc/kernels.cu) for one value, in fp32 scalars."""
    f = torch.float32
    x = torch.tensor(x, dtype=f)
    pivot, upper_pivot, lower_pivot = 127, 255, 0
    lower, upper = torch.tensor(-1.0, dtype=f), torch.tensor(1.0, dtype=f)
    val = torch.tensor(code[pivot], dtype=f)
    i = 64
    while i > 0:
        if x > val:
            lower_pivot, lower, pivot = pivot, val, pivot + i
        else:
            upper_pivot, upper, pivot = pivot, val, pivot - i
        val = torch.tensor(code[pivot], dtype=f)
        i >>= 1
    if upper_pivot == 255:
        upper = torch.tensor(code[255], dtype=f)
    if lower_pivot == 0:
        lower = torch.tensor(code[0], dtype=f)
    if x > val:
        return upper_pivot if x > (upper + val) * 0.5 else pivot
    return lower_pivot if x < (lower + val) * 0.5 else pivot


def test_absmax_codes_match_bnb_search_at_midpoints():
    # The search itself (nf4._dynamic_codes, what double_quantize applies to the scaled values), on
    # every map entry, every midpoint and the floats on either side of each midpoint: where exact
    # ties fall depends on bitsandbytes' search path, so the transcription above is the oracle.
    m = nf4.DYNAMIC_MAP
    mid = (m[:-1] + m[1:]) * 0.5
    probes = torch.cat(
        (m, mid, torch.nextafter(mid, torch.tensor(2.0)), torch.nextafter(mid, torch.tensor(-2.0)))
    )
    code = m.tolist()
    expected = torch.tensor([bnb_dquantize(float(v), code) for v in probes])
    got = nf4._dynamic_codes(probes)
    assert got.dtype == torch.uint8
    assert torch.equal(got.long(), expected)
    assert torch.equal(got[:256].long(), torch.arange(256))  # every entry maps to itself


@pytest.mark.parametrize(("rows", "block"), [(64, 64), (33, 32), (5, 256), (300, 64)])
def test_double_quant_round_trip(rows, block):
    w = torch.randn(rows, 1024) * torch.rand(rows, 1)
    codes, absmax = nf4.quantize(w, block)
    q, absmax2, offset = nf4.double_quantize(absmax)
    nb = absmax.shape[1]
    assert q.dtype == torch.uint8 and q.shape == absmax.shape
    assert absmax2.dtype == torch.float32 and absmax2.shape == (math.ceil(rows * nb / 256),)
    assert offset.dtype == torch.float32 and offset.shape == () and float(offset) == float(absmax.mean())
    back = nf4.dequantize_absmax(q, absmax2, offset)
    assert back.dtype == torch.float32 and back.shape == absmax.shape
    # Each value takes a nearest map entry: off by at most half the map's gap around it (times the
    # block's scale), plus fp32 rounding of the scaling and of the offset.
    m = nf4.DYNAMIC_MAP.double()
    scale = absmax2.double().repeat_interleave(256)[: absmax.numel()].view_as(absmax)
    normed = (absmax.double() - offset.double()) / scale
    nearest = (normed.unsqueeze(-1) - m).abs().min(-1).values
    chosen = (normed - m[q.long()]).abs()
    assert bool((chosen <= nearest + 1e-6).all())
    err = (back.double() - absmax.double()).abs()
    bound = scale * (m.diff().max() / 2) + 4e-7 * (absmax.double() + offset.double())
    assert bool((err <= bound).all())
    # And the weight it gives back is close to the one with exact absmax.
    assert (
        sqnr_db(w, nf4.dequantize(codes, back, block))
        > sqnr_db(w, nf4.dequantize(codes, absmax, block)) - 0.05
    )


def test_double_quant_of_equal_absmax_is_exact():
    absmax = torch.full((4, 16), 0.375)
    q, absmax2, offset = nf4.double_quantize(absmax)
    assert float(offset) == 0.375 and bool((absmax2 == 0).all())
    assert torch.equal(nf4.dequantize_absmax(q, absmax2, offset), absmax)


# --- quality -------------------------------------------------------------------------------------

# Measured SQNR (dB) on the seeded N(0, 1) [512, 1024] weight and on MiniLM's query layer, with plain
# and double-quantized absmax; each floor sits about 0.1 dB below. block: (normal, minilm)
FLOORS = {
    32: (21.05, 21.0),  # measured 21.177 / 21.174 (double quant), 21.154 / 21.146
    64: (20.6, 20.5),  # measured 20.735 / 20.732, 20.649 / 20.640
    128: (20.3, 20.1),  # measured 20.397 / 20.396, 20.241 / 20.238
    256: (20.0, 19.9),  # measured 20.097 / 20.096, 20.010 / 20.006
}


@pytest.mark.parametrize("block", nf4.BLOCK_SIZES)
def test_sqnr_floor(block):
    for w, floor in zip((normal_weight(), minilm_weight()), FLOORS[block], strict=True):
        codes, absmax = nf4.quantize(w, block)
        assert sqnr_db(w, nf4.dequantize(codes, absmax, block)) > floor
        back = nf4.dequantize_absmax(*nf4.double_quantize(absmax))
        assert sqnr_db(w, nf4.dequantize(codes, back, block)) > floor


# --- edge cases ----------------------------------------------------------------------------------


@pytest.mark.parametrize("magnitude", [1e30, 1e-30, 1e-40])
def test_huge_and_tiny_magnitudes(magnitude):
    # 1e-40 is subnormal, so 1 / absmax overflows: the block is scaled by division instead.
    w = torch.randn(8, 128)
    base_codes, _ = nf4.quantize(w, 64)
    scaled = (w.double() * magnitude).float()
    codes, absmax = nf4.quantize(scaled, 64)
    w_hat = nf4.dequantize(codes, absmax, 64)
    assert bool(torch.isfinite(w_hat).all())
    if magnitude > 1e-38:
        _, normed = bnb_normed(scaled, 64)
        assert torch.equal(codes.long(), bnb_tree(normed))
        assert (
            sqnr_db(scaled, w_hat) > sqnr_db(w, nf4.dequantize(base_codes, nf4.quantize(w, 64)[1], 64)) - 0.05
        )
    else:
        # Subnormals keep few significant bits: the codes of the exact ratios w / absmax.
        ratio = scaled.double() / absmax.double().repeat_interleave(64, 1)
        assert torch.equal(codes.long(), bnb_tree(ratio.float()))


@pytest.mark.parametrize("block", nf4.BLOCK_SIZES)
def test_smallest_shapes(block):
    for w in (torch.tensor([[0.5, -1.0]]), torch.randn(1, 2), torch.randn(4, 2), torch.randn(1, 4096)):
        codes, absmax = nf4.quantize(w, block)
        assert absmax.shape == (w.shape[0], -(-w.shape[1] // block))
        _, normed = bnb_normed(w, block)
        assert torch.equal(codes.long(), bnb_tree(normed))
        assert torch.equal(nf4.unpack(nf4.pack(codes), w.shape[1]), codes)


# --- bad inputs ----------------------------------------------------------------------------------

_codes = torch.zeros(2, 64, dtype=torch.uint8)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: nf4.quantize(torch.randn(4, 96), 48),
            ValueError,
            r"nf4.quantize: block_size: expected one of \(32, 64, 128, 256\), got 48",
        ),
        (lambda: nf4.quantize(torch.randn(4, 96), 512), ValueError, r"block_size: .* got 512"),
        (lambda: nf4.quantize(torch.randn(4, 96), 0), ValueError, r"block_size: .* got 0"),
        (
            lambda: nf4.quantize(torch.randn(4, 96), 64.0),
            TypeError,
            r"block_size: expected an int, got float",
        ),
        (
            lambda: nf4.dequantize(_codes, torch.ones(2, 2), 64),
            ValueError,
            r"absmax: expected shape \(2, 1\), got \(2, 2\)",
        ),
        (
            lambda: nf4.dequantize(_codes, torch.ones(2, 1, dtype=torch.float16), 64),
            TypeError,
            r"absmax: expected dtype torch.float32, got torch.float16",
        ),
        (
            lambda: nf4.dequantize(_codes + 16, torch.ones(2, 1), 64),
            ValueError,
            r"codes: expected values in \[0, 15\], got 16",
        ),
        (lambda: nf4.dequantize(_codes, torch.ones(2, 1), 100), ValueError, r"block_size: .* got 100"),
        (
            lambda: nf4.double_quantize(-torch.ones(2, 3)),
            ValueError,
            r"double_quantize: absmax: expected values >= 0, got -1.0",
        ),
        (
            lambda: nf4.double_quantize(torch.ones(2, 3).double()),
            TypeError,
            r"absmax: expected dtype torch.float32, got torch.float64",
        ),
        (
            lambda: nf4.double_quantize(torch.tensor([[1.0, float("nan")]])),
            ValueError,
            r"absmax: expected finite values",
        ),
        (lambda: nf4.double_quantize(torch.ones(6)), ValueError, r"absmax: expected a non-empty 2-D tensor"),
        (
            lambda: nf4.dequantize_absmax(
                torch.zeros(2, 300, dtype=torch.uint8), torch.ones(2), torch.tensor(0.0)
            ),
            ValueError,
            r"absmax2: expected shape \(3,\), got \(2,\)",
        ),
        (
            lambda: nf4.dequantize_absmax(
                torch.zeros(2, 3, dtype=torch.uint8), torch.ones(1), torch.tensor([0.0])
            ),
            ValueError,
            r"offset: expected shape \(\), got \(1,\)",
        ),
        (
            lambda: nf4.dequantize_absmax(torch.zeros(2, 3, dtype=torch.uint8), torch.ones(1), 0.5),
            TypeError,
            r"offset: expected a torch.Tensor, got float",
        ),
        (
            lambda: nf4.dequantize_absmax(torch.zeros(2, 3), torch.ones(1), torch.tensor(0.0)),
            TypeError,
            r"qabsmax: expected dtype torch.uint8, got torch.float32",
        ),
    ],
)
def test_bad_inputs_raise_with_a_clear_message(call, error, match):
    with pytest.raises(error, match=match):
        call()
