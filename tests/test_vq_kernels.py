"""linear_vq against an fp64 decoding of the codebooks on every CPU path: ragged shapes (M in
{1, 3, 17, 118}, N and K off any block size), every codebook index, the upper half of the 16-bit index
range, 16-bit activations, inputs of any rank and layout, NaN propagation, and the op's argument checks.

Codebooks are random fp32 (the op's input dtype), not rounded to fp16 as stored codebooks are, so the
op cannot rely on fp16-representable entries."""

from __future__ import annotations

import pytest
import torch
from qkernels.formats import vq
from tolerance import assert_close_to_oracle

ops = torch.ops.qkernels
CONFIGS = [(1, 8), (2, 8), (1, 16), (2, 16)]  # (codebooks, codebook bits)
M_GRID = (1, 3, 17, 118, 512)
# (N, K): ragged N with rows of 25 groups, one group per row, and a wide layer (300 rows: past any
# power-of-two block of output rows).
NK_GRID = ((37, 200), (5, 8), (300, 64))


def _ids(configs):
    return [f"{mc}x{bits}" for mc, bits in configs]


def _random_vq(n: int, k: int, mc: int, bits: int, indices: torch.Tensor | None = None):
    """Codes (from ``indices`` [N, K/8, Mc], random when None), fp32 codebooks and scales of both
    signs, and a bias."""
    if indices is None:
        indices = torch.randint(0, 1 << bits, (n, k // 8, mc))
    codes = vq.codes_from_indices(indices, bits)
    books = torch.randn(mc, 1 << bits, 8)
    scales = torch.randn(n)
    return codes, books, scales, torch.randn(n)


def _weight(codes, books, scales, dtype) -> torch.Tensor:
    """The weight ``[N, K]`` in ``dtype``, decoded from the spec (docs/formats.md#vq) independently of
    the op: the stored code read back as an unsigned index, entries summed over codebooks, times the
    row scale."""
    raw = codes.long()
    idx = torch.where(raw < 0, raw + (1 << 16), raw)  # int16 codes hold the uint16 bit pattern
    b = books.to(dtype)
    groups = sum(b[c][idx[..., c]] for c in range(codes.shape[2]))
    return groups.reshape(codes.shape[0], -1) * scales.to(dtype).unsqueeze(1)


class _Layer:
    """A layer's stored tensors and its weight decoded once in fp32 and fp64 (the oracles' inputs)."""

    def __init__(self, codes, books, scales, bias):
        self.codes, self.books, self.scales, self.bias = codes, books, scales, bias
        self.w32 = _weight(codes, books, scales, torch.float32)
        self.w64 = _weight(codes, books, scales, torch.float64)

    def check(self, x, bias=True):
        """Runs the op on ``x`` and holds it to the tolerance rule against the oracle in the op's
        working precision (fp32, rounded to x's dtype) and the fp64 one."""
        b = self.bias if bias else None
        out = ops.linear_vq(x, self.codes, self.books, self.scales, b)
        assert out.dtype == x.dtype and out.shape == (*x.shape[:-1], self.codes.shape[0])
        high = x.double() @ self.w64.T + (0 if b is None else b.double())
        low = (x.float() @ self.w32.T + (0 if b is None else b)).to(x.dtype)
        assert_close_to_oracle(out, low, high, (x.reshape(-1, x.shape[-1]), self.w32))
        return out


@pytest.mark.parametrize(("mc", "bits"), CONFIGS, ids=_ids(CONFIGS))
def test_matches_oracle_ragged_shapes(isa, mc, bits):
    for n, k in NK_GRID:
        layer = _Layer(*_random_vq(n, k, mc, bits))
        for m in M_GRID:
            layer.check(torch.randn(m, k), bias=m % 2 == 1)


@pytest.mark.parametrize(("mc", "bits"), CONFIGS, ids=_ids(CONFIGS))
def test_every_codebook_index_is_decoded(isa, mc, bits):
    """Each codebook's codes are a permutation of all 2^B indices (a different one per codebook), so
    every entry is read once, at a different place in each codebook."""
    entries = 1 << bits
    n = 16 if bits == 8 else 256
    k = entries // n * 8
    perms = torch.stack([torch.randperm(entries) for _ in range(mc)], dim=-1)
    layer = _Layer(*_random_vq(n, k, mc, bits, perms.view(n, k // 8, mc)))
    for c in range(mc):
        assert torch.equal(
            vq.code_indices(layer.codes[..., c]).flatten().sort().values, torch.arange(entries)
        )
    for m in (3, 17):
        layer.check(torch.randn(m, k))


@pytest.mark.parametrize("mc", [1, 2])
def test_int16_codes_of_indices_from_32768(isa, mc):
    """Indices >= 2^15 are stored as negative int16: the decoder must read them unsigned."""
    n, k = 21, 96
    layer = _Layer(*_random_vq(n, k, mc, 16, torch.randint(1 << 15, 1 << 16, (n, k // 8, mc))))
    assert bool((layer.codes < 0).all())
    for m in (1, 3, 17):
        layer.check(torch.randn(m, k))


@pytest.mark.parametrize(("mc", "bits"), CONFIGS, ids=_ids(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_activations(isa, mc, bits, dtype):
    n, k = 45, 320
    layer = _Layer(*_random_vq(n, k, mc, bits))
    for m in (3, 118):
        layer.check(torch.randn(m, k).to(dtype))


@pytest.mark.parametrize(
    "shape",
    [(64,), (1, 3, 64), (2, 9, 64), (4, 1, 5, 64)],
    ids=["1d", "3d-3rows", "3d-18rows", "4d"],
)
def test_input_of_any_rank(isa, shape):
    _Layer(*_random_vq(19, 64, 2, 8)).check(torch.randn(shape))


@pytest.mark.parametrize("m", [5, 40])
def test_non_contiguous_inputs(isa, m):
    """A transposed activation and codes sliced from a larger tensor give the same result as their
    contiguous copies."""
    codes, books, scales, bias = _random_vq(23, 128, 2, 8)
    x = torch.randn(128, m).T
    wide = torch.cat([codes, codes], dim=1)[:, ::2]
    assert not x.is_contiguous() and not wide.is_contiguous()
    out = _Layer(wide, books, scales, bias).check(x)
    assert torch.equal(out, ops.linear_vq(x.contiguous(), wide.contiguous(), books, scales, bias))


def test_no_rows():
    codes, books, scales, bias = _random_vq(7, 16, 1, 8)
    assert ops.linear_vq(torch.randn(0, 16), codes, books, scales, bias).shape == (0, 7)


@pytest.mark.parametrize(("mc", "bits"), CONFIGS, ids=_ids(CONFIGS))
@pytest.mark.parametrize("m", [3, 17])
def test_nan_activation_row_gives_nan_row(isa, mc, bits, m):
    codes, books, scales, bias = _random_vq(9, 64, mc, bits)
    x = torch.randn(m, 64)
    x[1, 5] = float("nan")
    out = ops.linear_vq(x, codes, books, scales, bias)
    others = torch.ones(m, dtype=torch.bool)
    others[1] = False
    assert bool(out[1].isnan().all()) and not bool(out[others].isnan().any())


def _args(n=4, k=32, mc=2, bits=8):
    codes, books, scales, bias = _random_vq(n, k, mc, bits)
    return {"x": torch.randn(3, k), "codes": codes, "codebooks": books, "scales": scales, "bias": bias}


@pytest.mark.parametrize(
    ("change", "exc", "message"),
    [
        ({"x": torch.randn(3, 36)}, ValueError, r"x: expected in_features a positive multiple of 8, got 36"),
        ({"x": torch.randn(3, 4)}, ValueError, r"x: expected in_features a positive multiple of 8, got 4"),
        ({"x": torch.tensor(1.0)}, ValueError, r"x: expected at least 1 dimension"),
        (
            {"x": torch.randn(3, 32, dtype=torch.float64)},
            TypeError,
            r"x: expected dtype .*, got torch.float64",
        ),
        (
            {"codes": torch.zeros(4, 4, dtype=torch.uint8)},
            ValueError,
            r"codes: expected 3 dimensions, got shape \(4, 4\)",
        ),
        (
            {"codes": torch.zeros(4, 5, 2, dtype=torch.uint8)},
            ValueError,
            r"codes: expected shape \(N, 4, 1 or 2\) for in_features 32, got shape \(4, 5, 2\)",
        ),
        (
            {"codes": torch.zeros(4, 4, 3, dtype=torch.uint8)},
            ValueError,
            r"codes: expected shape \(N, 4, 1 or 2\)",
        ),
        (
            {"codes": torch.zeros(4, 4, 2, dtype=torch.int32)},
            TypeError,
            r"codes: expected dtype torch.uint8 or torch.int16, got torch.int32",
        ),
        (
            {"codes": torch.zeros(4, 4, 2, dtype=torch.int16)},
            ValueError,
            r"codebooks: expected shape \(2, 65536, 8\) for torch.int16 codes, got shape \(2, 256, 8\)",
        ),
        (
            {"codebooks": torch.randn(1, 256, 8)},
            ValueError,
            r"codebooks: expected shape \(2, 256, 8\) for torch.uint8 codes, got shape \(1, 256, 8\)",
        ),
        (
            {"codebooks": torch.randn(2, 256, 8).half()},
            TypeError,
            r"codebooks: expected dtype torch.float32, got torch.float16",
        ),
        ({"scales": torch.ones(5)}, ValueError, r"scales: expected shape \(4,\), got shape \(5,\)"),
        ({"scales": torch.ones(4, 1)}, ValueError, r"scales: expected 1 dimensions, got shape \(4, 1\)"),
        ({"bias": torch.ones(3)}, ValueError, r"bias: expected shape \(4,\), got shape \(3,\)"),
        ({"bias": torch.ones(4).half()}, TypeError, r"bias: expected dtype torch.float32, got torch.float16"),
    ],
)
def test_bad_arguments(change, exc, message):
    args = {**_args(), **change}
    with pytest.raises(exc, match=rf"^linear_vq: {message}"):
        ops.linear_vq(**args)
