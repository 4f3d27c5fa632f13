"""int3: 3-bit codes in groups along K, one fp32 scale (and, asymmetric, one zero) per group, packed
as "2+1 bit planes". Mirrors ``csrc/formats/int3.h``; spec in docs/formats.md.

Storage for ``W [N, K]`` (any K) with group length G (a multiple of 32, or the whole row):

    packed  uint8    [N, ceil(K/32) * 12]   32 codes per 12-byte chunk, last chunk padded with code 0
    scales  float32  [N, ceil(K/G)]
    zeros   uint8    [N, ceil(K/G)]         asymmetric only; symmetric groups use zero 4

A chunk holds elements i = 0..31 of its 32:

    bytes 0..7   low plane:  byte j, bits 2t..2t+1 = bits 0..1 of element j + 8t   (t = 0..3)
    bytes 8..11  high plane: little-endian uint32, bit i = bit 2 of element i

``w[n, k] = scales[n, k // G] * (code[n, k] - zero[n, k // G])``.
"""

from __future__ import annotations

import torch

from . import _groups

BITS = 3
QMAX = 7
SYM_ZERO = 4
FORMAT = _groups.GroupFormat("int3", BITS, even_k=False)
CHUNK = 32  # codes per chunk
CHUNK_BYTES = 12  # 8 bytes of low plane + 4 of high plane

# Bit offsets inside the [4, 8] view of a chunk: row t of the low plane shifts by 2t, bit b of a
# high-plane byte is element 8 * byte + b.
_LOW_SHIFTS = torch.tensor([0, 2, 4, 6], dtype=torch.uint8).view(4, 1)
_HIGH_SHIFTS = torch.arange(8, dtype=torch.uint8)


def quantize(
    w: torch.Tensor,
    group_size: int = 128,
    symmetric: bool = True,
    method: str = "rtn",
    hessian: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Quantizes ``w [N, K]`` (finite floats) in groups of ``group_size`` along K (a positive multiple
    of 32, or -1 for the whole row; the last group may be partial).

    Returns ``(codes uint8 [N, K], scales float32 [N, ngroups], zeros uint8 [N, ngroups] or None)``;
    ``zeros`` is None when ``symmetric`` (every group's zero is 4).

    ``method="rtn"``: symmetric maps the group's largest-magnitude value v to code 0 (scale v / -4);
    asymmetric spans [min, max] with an integer zero. ``"mse"`` searches clipped scales (and zeros)
    with a least-squares refit per group and never does worse than RTN.
    ``"gptq"`` needs ``hessian``, the second moment ``X^T X / rows`` ``[K, K]`` of the layer's
    inputs (``qkernels.calibrate``), and minimises the output error on those inputs instead
    (``_gptq``); the steps come from the MSE search on the compensated weights.
    """
    return _groups.quantize(FORMAT, "int3.quantize", w, group_size, symmetric, method, hessian)


def dequantize(
    codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, group_size: int
) -> torch.Tensor:
    """The float32 weight ``[N, K]`` that unpacked ``codes`` stand for: ``scale * (code - zero)``,
    with zero 4 when ``zeros`` is None."""
    return _groups.dequantize(FORMAT, "int3.dequantize", codes, scales, zeros, group_size)


def packed_row_bytes(in_features: int) -> int:
    """Bytes per packed row: ``ceil(K / 32) * 12``."""
    _groups.check_in_features("int3.packed_row_bytes", in_features)
    return -(-in_features // CHUNK) * CHUNK_BYTES


def pack(codes: torch.Tensor) -> torch.Tensor:
    """``codes uint8 [N, K]`` (values in [0, 7]) -> ``uint8 [N, ceil(K/32) * 12]`` in the 2+1 bit
    plane layout of the module docstring."""
    _groups.check_codes("int3.pack", "codes", codes, QMAX)
    n, k = codes.shape
    chunks = -(-k // CHUNK)
    c = torch.nn.functional.pad(codes, (0, chunks * CHUNK - k)).view(n, chunks, 4, 8)
    low = ((c & 3) << _LOW_SHIFTS).sum(-2, dtype=torch.uint8)
    high = (((c >> 2) & 1) << _HIGH_SHIFTS).sum(-1, dtype=torch.uint8)
    return torch.cat((low, high), dim=-1).view(n, chunks * CHUNK_BYTES)


def unpack(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """Inverse of :func:`pack`: ``uint8 [N, ceil(K/32) * 12]`` -> codes ``uint8 [N, K]`` (the
    padding of the last chunk is dropped)."""
    _groups.check_in_features("int3.unpack", in_features)
    _groups.check_codes("int3.unpack", "packed", packed, 255)
    n = packed.shape[0]
    expected = (n, packed_row_bytes(in_features))
    if tuple(packed.shape) != expected:
        raise ValueError(
            f"int3.unpack: packed: expected shape [N, ceil(in_features / 32) * 12] = {list(expected)}, "
            f"got {list(packed.shape)}"
        )
    p = packed.reshape(n, -1, CHUNK_BYTES)
    low = (p[..., :8].unsqueeze(-2) >> _LOW_SHIFTS) & 3
    high = (p[..., 8:].unsqueeze(-1) >> _HIGH_SHIFTS) & 1
    return (low | (high << 2)).reshape(n, -1)[:, :in_features].contiguous()
