"""Oracles of the group-wise sub-byte linears (int4, int3, nf4): the same arithmetic as
``csrc/core/linear_q.cpp``, in readable fp32 PyTorch.

The kernels quantize each activation row to int8 per group of the weight's group size (the int8
rule of :mod:`qkernels.formats.int8`), so every group's dot product is an exact integer sum; the
result equals ``x_q @ w^T + bias`` with ``x_q`` the dequantized int8 activations and ``w`` the
dequantized weights. nf4 multiplies by ``round(127 * NF4[code]) * absmax / 127``
(:data:`qkernels.formats.nf4.TABLE_INT8`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..formats import int3, int4, nf4
from ..formats import int8 as int8_format


def quantize_activations(x: torch.Tensor, group: int) -> torch.Tensor:
    """``x [M, K]`` quantized to int8 per row and per group of ``group`` values along K, returned
    dequantized (fp32). A group holding NaN/Inf becomes NaN."""
    m, k = x.shape
    ngroups = -(-k // group)
    padded = F.pad(x.float(), (0, ngroups * group - k)).view(m, ngroups, group)
    q, scale = int8_format.quantize(padded)  # zero padding never changes a group's absmax
    xq = q.float() * scale.unsqueeze(-1)
    return xq.view(m, ngroups * group)[:, :k]


def _expand(t: torch.Tensor, group: int, k: int) -> torch.Tensor:
    return t.float().repeat_interleave(group, dim=1)[:, :k]


def _linear(x: torch.Tensor, w: torch.Tensor, group: int, bias: torch.Tensor | None) -> torch.Tensor:
    x2 = x.reshape(-1, x.shape[-1])
    y = quantize_activations(x2, group) @ w.T
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype).reshape(*x.shape[:-1], w.shape[0])


def _group(group_size: int, k: int) -> int:
    return k if group_size == -1 else group_size


def linear_int4(x, packed, scales, zeros, group_size: int, bias) -> torch.Tensor:
    """``x [..., K] @ dequant(int4)^T + bias`` with int8 activations per group."""
    k = x.shape[-1]
    g = _group(group_size, k)
    z = int4.SYM_ZERO if zeros is None else _expand(zeros, g, k)
    w = (int4.unpack(packed, k).float() - z) * _expand(scales, g, k)
    return _linear(x, w, g, bias)


def linear_int3(x, packed, scales, zeros, group_size: int, bias) -> torch.Tensor:
    """``x [..., K] @ dequant(int3)^T + bias`` with int8 activations per group."""
    k = x.shape[-1]
    g = _group(group_size, k)
    z = int3.SYM_ZERO if zeros is None else _expand(zeros, g, k)
    w = (int3.unpack(packed, k).float() - z) * _expand(scales, g, k)
    return _linear(x, w, g, bias)


def linear_nf4(x, packed, absmax, block_size: int, bias) -> torch.Tensor:
    """``x [..., K] @ dequant(nf4)^T + bias`` with int8 activations per block and the int8 table."""
    k = x.shape[-1]
    table = nf4.TABLE_INT8.float()
    w = table[nf4.unpack(packed, k).long()] * (_expand(absmax, block_size, k) / 127)
    return _linear(x, w, block_size, bias)
