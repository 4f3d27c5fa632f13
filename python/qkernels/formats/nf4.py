"""nf4: bitsandbytes' 4-bit NormalFloat, one fp32 absmax per block of B elements along K, with
optional double quantization of the absmax values. Mirrors ``csrc/formats/nf4.h``; spec in
docs/formats.md.

Storage for ``W [N, K]`` (K even) with block size B in {32, 64, 128, 256}:

    packed  uint8    [N, K/2]          byte j = code[2j] | code[2j+1] << 4  (low nibble first)
    absmax  float32  [N, ceil(K/B)]

``w[n, k] = TABLE[code[n, k]] * absmax[n, k // B]``. Codes match bitsandbytes'
``quantize_4bit(quant_type="nf4")`` whenever K % B == 0; bitsandbytes packs the first element of a
byte in the high nibble, this format in the low one.

Double quantization stores ``qabsmax uint8 [N, ceil(K/B)]``, ``absmax2 float32 [ceil(N*nblocks/256)]``
and ``offset float32 []`` instead of ``absmax``, as bitsandbytes' ``compress_statistics=True`` does.
"""

from __future__ import annotations

import torch

from . import _groups

BLOCK_SIZES = (32, 64, 128, 256)
# The 16 NormalFloat4 values (bitsandbytes' get_4bit_type("nf4")), in code order.
TABLE = torch.tensor(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ],
    dtype=torch.float32,
)
# What the CPU kernels multiply by (absmax / 127) in their int8 path.
TABLE_INT8 = torch.round(127 * TABLE).to(torch.int8)
# The decision thresholds of bitsandbytes' dQuantizeNF4 (csrc/kernels.cu), ascending; each is the fp32
# midpoint of two neighbouring TABLE values. A value's code is the number of thresholds strictly
# below it, so a value on a threshold takes the lower code, as the kernel's `x > t` tests do.
THRESHOLDS = torch.tensor(
    [
        -0.8480964004993439,
        -0.6106329262256622,
        -0.4599952697753906,
        -0.33967943489551544,
        -0.23460740596055984,
        -0.13791173323988914,
        -0.045525018125772476,
        0.03979014977812767,
        0.1202552504837513,
        0.2035212516784668,
        0.2920137718319893,
        0.3893125355243683,
        0.5016634166240692,
        0.6427869200706482,
        0.8614784181118011,
    ],
    dtype=torch.float32,
)
# Double quantization: blocks of 256 absmax values, 8-bit codes of bitsandbytes' signed dynamic map.
DQ_BLOCK = 256


def _dynamic_map() -> torch.Tensor:
    """bitsandbytes' ``create_dynamic_map(signed=True)``: 256 sorted fp32 values in [-1, 1]. For
    i = 0..6 the means of neighbouring points of linspace(0.1, 1, 2^i + 1), scaled by 10^(i-6), with
    both signs; plus 0 and 1. The same fp32 operations as bitsandbytes, so the values are identical."""
    values = [0.0, 1.0]
    for i in range(7):
        edges = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = (edges[:-1] + edges[1:]) / 2.0
        values += ((10 ** (i - 6)) * means).tolist()
        values += (-(10 ** (i - 6)) * means).tolist()
    return torch.tensor(sorted(values), dtype=torch.float32)


DYNAMIC_MAP = _dynamic_map()


def _check_block_size(where: str, block_size: object) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int):
        raise TypeError(f"{where}: block_size: expected an int, got {type(block_size).__name__}")
    if block_size not in BLOCK_SIZES:
        raise ValueError(f"{where}: block_size: expected one of {BLOCK_SIZES}, got {block_size!r}")
    return block_size


def _normalize(x: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
    """``x * (1 / absmax)`` per block (fp32 reciprocal, then fp32 multiply, as bitsandbytes'
    kernels); 0 in an all-zero block, and ``x / absmax`` where the reciprocal overflows (absmax
    below 2^-128), where the kernels would produce NaN."""
    r = 1.0 / absmax
    normed = x * r.unsqueeze(-1)
    odd = ~torch.isfinite(r)
    if bool(odd.any()):
        exact = x / torch.where(absmax == 0, torch.ones_like(absmax), absmax).unsqueeze(-1)
        normed = torch.where(odd.unsqueeze(-1), exact, normed)
    return normed


def _nf4_codes(normed: torch.Tensor) -> torch.Tensor:
    """The number of THRESHOLDS strictly below each value (uint8). Fifteen compare-and-add passes
    into preallocated buffers take about a third of the time of ``torch.bucketize``."""
    codes = torch.zeros(normed.shape, dtype=torch.uint8)
    above = torch.empty(normed.shape, dtype=torch.bool)
    for t in THRESHOLDS.tolist():
        codes.add_(torch.gt(normed, t, out=above))
    return codes


def quantize(w: torch.Tensor, block_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantizes ``w [N, K]`` (finite floats, K even) in blocks of ``block_size`` along K (the last
    block of a row may be partial), exactly as bitsandbytes' NF4 quantizer.

    Returns ``(codes uint8 [N, K], absmax float32 [N, nblocks])``: absmax is each block's max |w|,
    and a code is the TABLE entry nearest to ``w * (1 / absmax)`` (ties to the lower code); an
    all-zero block gets absmax 0 and code 7 (0.0).
    """
    wf = _groups.check_weight("nf4.quantize", w)
    n, k = wf.shape
    _groups.check_even("nf4.quantize", k)
    block = _check_block_size("nf4.quantize", block_size)
    codes, absmaxes = [], []
    for x in _groups.split_groups(wf, block):
        absmax = x.abs().amax(-1)
        codes.append(_nf4_codes(_normalize(x, absmax)).reshape(n, -1))
        absmaxes.append(absmax)
    return torch.cat(codes, 1), torch.cat(absmaxes, 1).contiguous()


def dequantize(codes: torch.Tensor, absmax: torch.Tensor, block_size: int) -> torch.Tensor:
    """The float32 weight ``[N, K]`` that unpacked ``codes`` stand for: ``TABLE[code] * absmax``."""
    _groups.check_codes("nf4.dequantize", "codes", codes, 15)
    n, k = codes.shape
    _groups.check_even("nf4.dequantize", k)
    block = _check_block_size("nf4.dequantize", block_size)
    _groups.check_scales("nf4.dequantize", "absmax", absmax, (n, _groups.num_groups(k, block)))
    return TABLE[codes.long()] * _groups.expand_groups(absmax, block, k)


def packed_row_bytes(in_features: int) -> int:
    """Bytes per packed row: ``K / 2``."""
    _groups.check_in_features("nf4.packed_row_bytes", in_features)
    _groups.check_even("nf4.packed_row_bytes", in_features)
    return in_features // 2


def pack(codes: torch.Tensor) -> torch.Tensor:
    """``codes uint8 [N, K]`` (values in [0, 15], K even) -> ``uint8 [N, K/2]``: element 2j in the
    low nibble of byte j, element 2j+1 in the high nibble (bitsandbytes has them the other way)."""
    return _groups.pack_nibbles("nf4.pack", codes)


def unpack(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """Inverse of :func:`pack`: ``uint8 [N, K/2]`` -> codes ``uint8 [N, K]``."""
    return _groups.unpack_nibbles("nf4.unpack", packed, in_features)


def _dynamic_codes(x: torch.Tensor) -> torch.Tensor:
    """The code of each ``x`` in DYNAMIC_MAP, exactly as bitsandbytes' CUDA ``dQuantize``: a 7-step
    binary search from code 127, then the nearer of the final pivot and the neighbour on x's side,
    by the fp32 midpoint. A value on a midpoint goes to the final pivot, which the search path
    decides (the lower code where x lies above the pivot, else the upper one)."""
    m = DYNAMIC_MAP
    pivot = torch.full(x.shape, 127, dtype=torch.long)
    lower_pivot = torch.zeros_like(pivot)
    upper_pivot = torch.full_like(pivot, 255)
    # The kernel starts from -1 and 1 and swaps in code[0] / code[255] when a bound was never
    # moved; starting from those entries is the same.
    lower = torch.full(x.shape, float(m[0]))
    upper = torch.full(x.shape, float(m[255]))
    val = m[pivot]
    for step in (64, 32, 16, 8, 4, 2, 1):
        above = x > val
        lower_pivot = torch.where(above, pivot, lower_pivot)
        lower = torch.where(above, val, lower)
        upper_pivot = torch.where(above, upper_pivot, pivot)
        upper = torch.where(above, upper, val)
        pivot = pivot + torch.where(above, step, -step)
        val = m[pivot]
    above = x > val
    up = torch.where(x > (upper + val) * 0.5, upper_pivot, pivot)
    down = torch.where(x < (lower + val) * 0.5, lower_pivot, pivot)
    return torch.where(above, up, down).to(torch.uint8)


def double_quantize(absmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compresses ``absmax float32 [N, nblocks]`` to 8 bits as bitsandbytes' double quantization:
    ``offset = mean(absmax)``; ``absmax - offset``, flattened, is quantized in blocks of 256 with the
    signed dynamic map (each block scaled by its max |.|, ``absmax2``).

    Returns ``(qabsmax uint8 [N, nblocks], absmax2 float32 [ceil(N*nblocks/256)], offset float32 [])``.
    An all-zero block of 256 gets absmax2 0 and the code of 0.0.
    """
    where = "nf4.double_quantize"
    checked = _groups.check_weight(where, absmax, "absmax")
    if absmax.dtype != torch.float32:
        raise TypeError(f"{where}: absmax: expected dtype torch.float32, got {absmax.dtype}")
    if bool((checked < 0).any()):
        raise ValueError(f"{where}: absmax: expected values >= 0, got {float(checked.min())} (min)")
    absmax = checked
    offset = absmax.mean()
    flat = (absmax - offset).reshape(1, -1)
    codes, scales = [], []
    for x in _groups.split_groups(flat, DQ_BLOCK):
        scale = x.abs().amax(-1)
        codes.append(_dynamic_codes(_normalize(x, scale)).reshape(-1))
        scales.append(scale.reshape(-1))
    return torch.cat(codes).view(absmax.shape), torch.cat(scales), offset


def dequantize_absmax(qabsmax: torch.Tensor, absmax2: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """The float32 absmax ``[N, nblocks]`` that double quantization stands for:
    ``DYNAMIC_MAP[qabsmax] * absmax2[i // 256] + offset`` (i the flat index), as the kernels use it."""
    where = "nf4.dequantize_absmax"
    _groups.check_codes(where, "qabsmax", qabsmax, 255)
    total = qabsmax.numel()
    _groups.check_scales(where, "absmax2", absmax2, (_groups.num_groups(total, DQ_BLOCK),))
    _groups.check_scales(where, "offset", offset, ())
    flat = DYNAMIC_MAP[qabsmax.reshape(1, -1).long()] * _groups.expand_groups(
        absmax2.view(1, -1), DQ_BLOCK, total
    )
    return (flat + offset).view(qabsmax.shape)
