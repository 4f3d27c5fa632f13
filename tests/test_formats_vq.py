"""formats/vq.py: decoding against the spec, every codebook index, the quantizer's guarantees and
quality, edge cases and argument checks."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
from formats_common import minilm_weight, sqnr_db
from qkernels.formats import vq

CONFIGS = [(2, 8), (1, 16), (1, 8), (2, 16)]


def _random_stored(n: int, k: int, mc: int, bits: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 1 << bits, (n, k // 8, mc), generator=g)
    books = torch.randn(mc, 1 << bits, 8, generator=g).half()
    scales = torch.rand(n, generator=g) + 0.5
    return vq.codes_from_indices(idx, bits), books, scales


def _spec_value(codes, books, scales, n: int, col: int) -> np.float32:
    """docs/formats.md's formula for one weight, with scalar fp32 arithmetic: the stored code read
    back as an unsigned index, the entries summed over codebooks in order, times the scale."""
    j, i = divmod(col, 8)
    acc = np.float32(0.0)
    for c in range(codes.shape[2]):
        raw = int(codes[n, j, c])
        index = raw + (1 << 16) if raw < 0 else raw
        acc = np.float32(acc + np.float32(books[c, index, i].item()))
    return np.float32(np.float32(scales[n].item()) * acc)


@pytest.mark.parametrize(("mc", "bits"), CONFIGS)
def test_dequantize_matches_the_formula_element_by_element(mc, bits):
    n, k = 3, 24
    codes, books, scales = _random_stored(n, k, mc, bits)
    if bits == 16:  # make sure both halves of the int16 range are exercised
        assert bool((codes < 0).any()) and bool((codes >= 0).any())
    out = vq.dequantize(codes, books, scales)
    assert out.dtype == torch.float32 and out.shape == (n, k)
    expected = torch.tensor(
        [[_spec_value(codes, books, scales, r, col) for col in range(k)] for r in range(n)]
    )
    assert torch.equal(out, expected)


@pytest.mark.parametrize("bits", [8, 16])
def test_every_codebook_index_decodes_to_its_entry(bits):
    entries = 1 << bits
    k = 8 * 256
    n = entries // 256  # one group per index
    g = torch.Generator().manual_seed(3)
    books = (torch.randn(2, entries, 8, generator=g) * 4).half()
    idx0 = torch.arange(entries)
    idx1 = (idx0 * 7 + 11) % entries  # every index again, in another order
    codes = vq.codes_from_indices(torch.stack([idx0, idx1], 1).view(n, k // 8, 2), bits)
    ones = torch.ones(n)
    one_book = vq.dequantize(codes[..., :1].contiguous(), books[:1], ones).view(entries, 8)
    assert torch.equal(one_book, books[0].float())
    two_books = vq.dequantize(codes, books, ones).view(entries, 8)
    assert torch.equal(two_books, books[0].float() + books[1, idx1].float())
    assert torch.equal(vq.code_indices(codes).view(entries, 2), torch.stack([idx0, idx1], 1))


def test_16_bit_codes_hold_the_uint16_bit_pattern():
    idx = torch.tensor([0, 1, 255, 256, 32767, 32768, 40000, 65534, 65535])
    codes = vq.codes_from_indices(idx, 16)
    assert codes.dtype == torch.int16
    expected = torch.from_numpy(idx.numpy().astype(np.uint16).view(np.int16))
    assert torch.equal(codes, expected)
    assert torch.equal(vq.code_indices(codes), idx)
    assert codes[idx >= 32768].lt(0).all() and codes[idx < 32768].ge(0).all()
    assert torch.equal(vq.code_indices(vq.codes_from_indices(idx[:3], 8)), idx[:3])


def _small_weight(n=64, k=256, seed=5):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("mc", "bits"), CONFIGS)
def test_quantize_returns_the_documented_tensors(mc, bits):
    w = _small_weight(5, 48)
    codes, books, scales = vq.quantize(w, mc, bits, iters=1)
    assert codes.dtype == vq.CODE_DTYPES[bits] and codes.shape == (5, 6, mc)
    assert books.dtype == torch.float16 and books.shape == (mc, 1 << bits, 8)
    assert scales.dtype == torch.float32 and scales.shape == (5,)
    assert vq.dequantize(codes, books, scales).shape == w.shape


@pytest.mark.parametrize(("mc", "bits"), [(2, 8), (1, 16)])
def test_deterministic_for_a_seed(mc, bits):
    w = _small_weight()
    a = vq.quantize(w, mc, bits, seed=7, iters=2)
    b = vq.quantize(w, mc, bits, seed=7, iters=2)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    c = vq.quantize(w, mc, bits, seed=8, iters=2)
    assert not torch.equal(a[0], c[0])


def test_result_does_not_depend_on_the_thread_count():
    # 8192 groups: the passes are cut in several chunks, which run on as many threads as torch has.
    w = _small_weight(128, 512)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = vq.quantize(w, iters=1)
        torch.set_num_threads(2)
        two = vq.quantize(w, iters=1)
        assert torch.get_num_threads() == 2  # quantize hands torch its threads back
    finally:
        torch.set_num_threads(before)
    for x, y in zip(one, two, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize(("mc", "bits"), CONFIGS)
def test_refinement_never_increases_the_error(mc, bits):
    w = _small_weight(96, 512)
    history = []
    codes, books, scales = vq.quantize(
        w, mc, bits, iters=4, progress=lambda t, total, err: history.append((t, total, err))
    )
    assert [t for t, _, _ in history] == [0, 1, 2, 3, 4] and {total for _, total, _ in history} == {4}
    errors = [err for _, _, err in history]
    assert all(b <= a for a, b in itertools.pairwise(errors)), errors
    if errors[0] > 1e-9:  # 2x16 fits 6144 groups exactly from the start: nothing left to improve
        assert errors[-1] < errors[0]
    # The reported error is the error of what dequantize() gives (fp32 sums against fp64 ones).
    measured = 10 ** (-sqnr_db(w, vq.dequantize(codes, books, scales)) / 10)
    assert errors[-1] == pytest.approx(measured, rel=1e-4)


def test_progress_accepts_a_tqdm_bar_and_true(capsys):
    tqdm = pytest.importorskip("tqdm").tqdm
    w = _small_weight(8, 64)
    out = io.StringIO()
    with tqdm(total=3, file=out) as bar:
        vq.quantize(w, iters=3, progress=bar)
        assert bar.n == 3
    assert "sqnr_db=" in out.getvalue()
    vq.quantize(w, iters=1, progress=True)
    assert "vq rounds" in capsys.readouterr().err
    with pytest.raises(TypeError, match="progress: expected None, a bool, a tqdm bar or a callable, got 3"):
        vq.quantize(w, progress=3)


# Quality floors, ~0.2 dB below the SQNR measured with exactly these settings (seeded):
#   2x8, iters=4: N(0, 1) [256, 1024] 10.45 dB; MiniLM query [384, 384] 10.75 dB.
#   1x16, iters=2: 73.7 dB on both: they have fewer groups (32768, 18432) than the 65536 entries, so
#   k-means gives every group its own entry and only the fp16 rounding of the codebook is left.
FLOORS = {(2, 8, 4): (10.25, 10.55), (1, 16, 2): (73.5, 73.5)}


@pytest.mark.parametrize(("mc", "bits", "iters"), list(FLOORS))
def test_sqnr_floors(mc, bits, iters):
    normal_floor, minilm_floor = FLOORS[mc, bits, iters]
    normal = torch.randn(256, 1024, generator=torch.Generator().manual_seed(1234))
    for w, floor in ((normal, normal_floor), (minilm_weight(), minilm_floor)):
        assert sqnr_db(w, vq.dequantize(*vq.quantize(w, mc, bits, iters=iters))) >= floor


@pytest.mark.slow
def test_1x16_beats_2x8_when_groups_outnumber_entries():
    # 131072 groups, two per 16-bit entry. Measured: 2x8 10.05 dB, 1x16 15.56 dB.
    w = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(99))
    two_by_eight = sqnr_db(w, vq.dequantize(*vq.quantize(w, 2, 8, iters=2)))
    one_by_sixteen = sqnr_db(w, vq.dequantize(*vq.quantize(w, 1, 16, iters=2)))
    assert two_by_eight >= 9.85
    assert one_by_sixteen >= 15.35


def test_zero_rows_and_zero_weights_are_exact():
    w = _small_weight(16, 64)
    w[[0, 5, 15]] = 0.0
    for mc, bits in [(2, 8), (1, 16)]:
        codes, books, scales = vq.quantize(w, mc, bits, iters=1)
        out = vq.dequantize(codes, books, scales)
        assert torch.equal(scales[[0, 5, 15]], torch.zeros(3))
        assert torch.equal(out[[0, 5, 15]], torch.zeros(3, 64))
        zero = torch.zeros(4, 16)
        codes, books, scales = vq.quantize(zero, mc, bits)
        assert torch.equal(vq.dequantize(codes, books, scales), zero)


def test_constant_rows_are_reproduced():
    consts = torch.tensor([3.0, -0.5, 1e-3, 250.0, -7.25, 0.0, 42.0, -1.0])
    w = consts.unsqueeze(1).expand(8, 32).contiguous()
    for mc, bits in [(2, 8), (1, 16), (1, 8)]:
        out = vq.dequantize(*vq.quantize(w, mc, bits, iters=2))
        torch.testing.assert_close(out, w, rtol=1e-3, atol=0.0)


def test_single_row():
    w = _small_weight(1, 512)
    codes, books, scales = vq.quantize(w, 2, 8, iters=2)
    assert codes.shape == (1, 64, 2)
    # 64 groups against 2 x 256 entries: far more freedom than data, so the fit is close.
    assert sqnr_db(w, vq.dequantize(codes, books, scales)) > 20


def test_power_of_two_rescaling_commutes_with_quantize():
    w = _small_weight(32, 128)
    base = vq.quantize(w, 2, 8, iters=2)
    for factor in (2.0**100, 2.0**-100):
        codes, books, scales = vq.quantize(w * factor, 2, 8, iters=2)
        assert torch.equal(codes, base[0]) and torch.equal(books, base[1])
        assert torch.equal(scales, base[2] * factor)


def test_rows_of_very_different_magnitude_each_keep_their_accuracy():
    # Row scales spanning 40 decades. The loss weights rows by their squared scale, so codebooks are
    # fitted to the large rows; the small ones are searched in their own units against those
    # codebooks and still fit. Measured minimum row SQNR: 2x8 8.3 dB, 1x16 5.0 dB (the large rows
    # take every 16-bit entry, see test_sqnr_floors).
    w = _small_weight(64, 512)
    ws = w * (10.0 ** torch.linspace(-20, 20, 64)).unsqueeze(1)
    for mc, bits, floor in [(2, 8, 7.5), (1, 16, 4.0)]:
        out = vq.dequantize(*vq.quantize(ws, mc, bits, iters=2))
        assert bool(torch.isfinite(out).all())
        row_sqnr = [sqnr_db(ws[r], out[r]) for r in range(ws.shape[0])]
        assert min(row_sqnr) > floor, row_sqnr


def test_huge_and_tiny_weights():
    # The search runs on w / row scale, so any uniform factor leaves the result unchanged up to the
    # rounding of that division: measured within 1e-8 dB of the unscaled 12.01 dB, while another seed
    # moves it by 0.03 dB.
    w = _small_weight(64, 512)
    ref = sqnr_db(w, vq.dequantize(*vq.quantize(w, iters=2)))
    for factor in (1e30, 1e-30, 3e37):
        wf = w * factor
        out = vq.dequantize(*vq.quantize(wf, iters=2))
        assert bool(torch.isfinite(out).all())
        assert sqnr_db(wf, out) == pytest.approx(ref, abs=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"group_size": 4}, ValueError, r"group_size: expected 8, got 4"),
        ({"group_size": -1}, ValueError, r"group_size: expected 8, got -1"),
        ({"num_codebooks": 3}, ValueError, r"num_codebooks: expected 1 or 2, got 3"),
        ({"codebook_bits": 4}, ValueError, r"codebook_bits: expected 8 or 16, got 4"),
        ({"codebook_bits": 8.0}, ValueError, r"codebook_bits: expected 8 or 16, got 8.0"),
        ({"iters": -1}, ValueError, r"iters: expected an int >= 0, got -1"),
        ({"beam": 0}, ValueError, r"beam: expected an int >= 1, got 0"),
        ({"seed": "x"}, ValueError, r"seed: expected an int >= 0, got 'x'"),
    ],
)
def test_quantize_rejects_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        vq.quantize(_small_weight(4, 16), **kwargs)


@pytest.mark.parametrize(
    ("w", "exc", "match"),
    [
        (torch.randn(4, 12), ValueError, r"w: expected in_features \(K\) a positive multiple of 8, got K=12"),
        (torch.randn(4, 4), ValueError, r"K=4"),
        (
            torch.randn(16),
            ValueError,
            r"w: expected a 2-D \[out_features >= 1, in_features\] tensor, got \(16,\)",
        ),
        (torch.randn(0, 16), ValueError, r"got \(0, 16\)"),
        (torch.ones(4, 16, dtype=torch.int32), TypeError, r"w: expected a floating dtype, got torch.int32"),
        ([[1.0] * 8], TypeError, r"w: expected a torch.Tensor, got list"),
    ],
)
def test_quantize_rejects_bad_weights(w, exc, match):
    with pytest.raises(exc, match=match):
        vq.quantize(w)


def test_quantize_rejects_non_finite_weights():
    w = _small_weight(4, 16)
    w[2, 9] = float("nan")
    with pytest.raises(ValueError, match=r"w: expected finite values, got nan at \[2, 9\] \(1 non-finite"):
        vq.quantize(w)


def test_dequantize_rejects_inconsistent_tensors():
    codes, books, scales = _random_stored(2, 16, 2, 8)
    with pytest.raises(ValueError, match=r"codebooks: expected shape \(2, 256, 8\) for torch.uint8 codes"):
        vq.dequantize(codes, books[:1], scales)
    with pytest.raises(ValueError, match=r"codebooks: expected shape \(2, 65536, 8\) for torch.int16 codes"):
        vq.dequantize(codes.to(torch.int16), books, scales)
    with pytest.raises(ValueError, match=r"codebooks: expected shape \(2, 256, 8\).*got \(2, 256, 4\)"):
        vq.dequantize(codes, books[..., :4], scales)
    with pytest.raises(TypeError, match=r"codes: expected uint8 .* or int16 .*, got torch.int32"):
        vq.dequantize(codes.int(), books, scales)
    with pytest.raises(
        ValueError, match=r"codes: expected \[N, K/8, num_codebooks in \(1, 2\)\], got \(2, 2\)"
    ):
        vq.dequantize(codes[..., 0], books, scales)
    with pytest.raises(TypeError, match=r"codebooks: expected float16, got torch.float32"):
        vq.dequantize(codes, books.float(), scales)
    with pytest.raises(TypeError, match=r"scales: expected float32, got torch.float64"):
        vq.dequantize(codes, books, scales.double())
    with pytest.raises(ValueError, match=r"scales: expected shape \(2,\), got \(3,\)"):
        vq.dequantize(codes, books, torch.ones(3))
    with pytest.raises(TypeError, match=r"codes: expected a torch.Tensor, got list"):
        vq.dequantize([1], books, scales)


def test_codes_from_indices_rejects_out_of_range_values():
    with pytest.raises(ValueError, match=r"indices: expected values in \[0, 255\] for 8-bit codes, got 256"):
        vq.codes_from_indices(torch.tensor([0, 256]), 8)
    with pytest.raises(
        ValueError, match=r"indices: expected values in \[0, 65535\] for 16-bit codes, got -1"
    ):
        vq.codes_from_indices(torch.tensor([-1, 5]), 16)
    with pytest.raises(TypeError, match=r"indices: expected an integer dtype, got torch.float32"):
        vq.codes_from_indices(torch.tensor([1.0]), 8)
    with pytest.raises(ValueError, match=r"codebook_bits: expected 8 or 16, got 12"):
        vq.codes_from_indices(torch.tensor([1]), 12)
    with pytest.raises(TypeError, match=r"codes: expected uint8 .* or int16 .*, got torch.int64"):
        vq.code_indices(torch.tensor([1]))
