"""int4: 4-bit codes in groups along K, one fp32 scale (and, asymmetric, one zero) per group.
Mirrors ``csrc/formats/int4.h``; spec in docs/formats.md.

Storage for ``W [N, K]`` (K even) with group length G (a multiple of 32, or the whole row):

    packed  uint8    [N, K/2]        byte j = code[2j] | code[2j+1] << 4  (low nibble first)
    scales  float32  [N, ceil(K/G)]
    zeros   uint8    [N, ceil(K/G)]  asymmetric only; symmetric groups use zero 8

``w[n, k] = scales[n, k // G] * (code[n, k] - zero[n, k // G])``.
"""

from __future__ import annotations

import torch

from . import _groups

BITS = 4
QMAX = 15
SYM_ZERO = 8
FORMAT = _groups.GroupFormat("int4", BITS, even_k=True)


def quantize(
    w: torch.Tensor,
    group_size: int = 128,
    symmetric: bool = True,
    method: str = "rtn",
    hessian: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Quantizes ``w [N, K]`` (finite floats, K even) in groups of ``group_size`` along K (a positive
    multiple of 32, or -1 for the whole row; the last group may be partial).

    Returns ``(codes uint8 [N, K], scales float32 [N, ngroups], zeros uint8 [N, ngroups] or None)``;
    ``zeros`` is None when ``symmetric`` (every group's zero is 8).

    ``method="rtn"``: symmetric takes ggml's q4_0 rule (the group's largest-magnitude value v maps to
    code 0: scale v / -8); asymmetric spans [min, max] with an integer zero. ``"mse"`` searches
    clipped scales (and zeros) with a least-squares refit per group and never does worse than RTN.
    ``"gptq"`` needs ``hessian``, the second moment ``X^T X / rows`` ``[K, K]`` of the layer's
    inputs (``qkernels.calibrate``), and minimises the output error on those inputs instead
    (``_gptq``); the steps come from the MSE search on the compensated weights.
    """
    return _groups.quantize(FORMAT, "int4.quantize", w, group_size, symmetric, method, hessian)


def dequantize(
    codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, group_size: int
) -> torch.Tensor:
    """The float32 weight ``[N, K]`` that unpacked ``codes`` stand for: ``scale * (code - zero)``,
    with zero 8 when ``zeros`` is None."""
    return _groups.dequantize(FORMAT, "int4.dequantize", codes, scales, zeros, group_size)


def packed_row_bytes(in_features: int) -> int:
    """Bytes per packed row: ``K / 2``."""
    _groups.check_in_features("int4.packed_row_bytes", in_features)
    _groups.check_even("int4.packed_row_bytes", in_features)
    return in_features // 2


def pack(codes: torch.Tensor) -> torch.Tensor:
    """``codes uint8 [N, K]`` (values in [0, 15], K even) -> ``uint8 [N, K/2]``: element 2j in the
    low nibble of byte j, element 2j+1 in the high nibble (the GPTQ/AWQ order)."""
    return _groups.pack_nibbles("int4.pack", codes)


def unpack(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """Inverse of :func:`pack`: ``uint8 [N, K/2]`` -> codes ``uint8 [N, K]``."""
    return _groups.unpack_nibbles("int4.unpack", packed, in_features)
