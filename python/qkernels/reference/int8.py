"""Oracles of the int8 ops. Same semantics as csrc/core/linear_int8.cpp, bit for bit where the kernel
is exact (quantization, int32 accumulation, the W8A8 epilogue)."""

from __future__ import annotations

import torch

from ..formats import int8 as fmt


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8 quantization: see :func:`qkernels.formats.int8.quantize`."""
    return fmt.quantize(w)


def matmul_int8(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a [M, K] int8 @ b [N, K]^T -> int32 [M, N]``, exact: |sums| < 2^31 < 2^53, so fp64 is exact."""
    return (a.double() @ b.double().T).round().to(torch.int32)


def linear_int8_w8a8(
    x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """Dynamic per-token activation quantization, exact int32 product, fp32 epilogue
    ``acc * (x_scale * w_scale) + bias`` (two roundings). Rows of x with NaN/Inf give NaN rows."""
    x2 = x.reshape(-1, x.shape[-1])
    xq, x_scale = fmt.quantize(x2)
    acc = matmul_int8(xq, weight).float()
    y = acc * (x_scale.unsqueeze(1) * weight_scale.float().unsqueeze(0))
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype).reshape(*x.shape[:-1], weight.shape[0])


def linear_int8_w8a16(
    x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x @ (weight * weight_scale)^T + bias`` in fp32, cast to x's dtype."""
    y = x.float() @ fmt.dequantize(weight, weight_scale.float()).T
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)
