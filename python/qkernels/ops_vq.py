"""The codebook linear as a ``torch.ops.qkernels`` custom op: ``linear_vq`` (format in
docs/formats.md#vq). CPU tensors run the C++ kernel (``csrc/core/linear_vq.cpp``), which decodes
the codebooks in registers at every batch size; other devices run a PyTorch decode (the oracle).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import _native
from ._native import _C
from ._op_checks import FLOAT_DTYPES, _addr, _check_tensor, _fail
from .formats import vq


def _check(op, x, codes, codebooks, scales, bias) -> tuple[int, int, int, int]:
    """Validates the arguments; returns ``(N, K, num_codebooks, codebook_bits)``."""
    _check_tensor(op, "x", x, FLOAT_DTYPES, None)
    if x.dim() < 1:
        _fail(op, "x", "at least 1 dimension", "a 0-d tensor")
    k = x.shape[-1]
    if k < 8 or k % 8:
        _fail(op, "x", "in_features a positive multiple of 8", k)
    _check_tensor(op, "codes", codes, (torch.uint8, torch.int16), 3)
    bits = 8 if codes.dtype == torch.uint8 else 16
    n, groups, mc = codes.shape
    if groups != k // 8 or mc not in (1, 2):
        _fail(op, "codes", f"shape (N, {k // 8}, 1 or 2) for in_features {k}", f"shape {tuple(codes.shape)}")
    _check_tensor(op, "codebooks", codebooks, (torch.float32,), 3)
    if tuple(codebooks.shape) != (mc, 1 << bits, 8):
        _fail(
            op,
            "codebooks",
            f"shape ({mc}, {1 << bits}, 8) for {codes.dtype} codes",
            f"shape {tuple(codebooks.shape)}",
        )
    _check_tensor(op, "scales", scales, (torch.float32,), 1)
    if scales.shape[0] != n:
        _fail(op, "scales", f"shape ({n},)", f"shape {tuple(scales.shape)}")
    if bias is not None:
        _check_tensor(op, "bias", bias, (torch.float32,), 1)
        if bias.shape[0] != n:
            _fail(op, "bias", f"shape ({n},)", f"shape {tuple(bias.shape)}")
    for name, t in (("codes", codes), ("codebooks", codebooks), ("scales", scales), ("bias", bias)):
        if t is not None and t.device != x.device:
            _fail(op, name, f"device {x.device} (x's device)", t.device)
    return n, k, mc, bits


def _decode_rows(codes: Tensor, codebooks: Tensor) -> Tensor:
    """``codebooks``' entries summed per group: the unscaled fp32 weight of ``codes``."""
    idx = vq.code_indices(codes)  # [rows, K/8, Mc]
    w = codebooks[0][idx[..., 0]]
    for c in range(1, codes.shape[2]):
        w = w + codebooks[c][idx[..., c]]
    return w.reshape(codes.shape[0], -1)


def linear_vq_eager(
    x: Tensor, codes: Tensor, codebooks: Tensor, scales: Tensor, bias: Tensor | None
) -> Tensor:
    n, k, mc, bits = _check("linear_vq", x, codes, codebooks, scales, bias)
    m = math.prod(x.shape[:-1])
    x2 = x.reshape(m, k)
    if x.device.type != "cpu":
        y = (x2.float() @ _decode_rows(codes, codebooks).T) * scales
        if bias is not None:
            y = y + bias
        return y.to(x.dtype).reshape(*x.shape[:-1], n)
    x2 = x2.contiguous()
    y = torch.empty((m, n), dtype=x.dtype)
    codes, codebooks, scales = codes.contiguous(), codebooks.contiguous(), scales.contiguous()
    bias = None if bias is None else bias.contiguous()
    _C.linear_vq(
        x2.data_ptr(),
        _native.DTYPE_CODES[x.dtype],
        k,
        codes.data_ptr(),
        mc,
        bits,
        codebooks.data_ptr(),
        scales.data_ptr(),
        _addr(bias),
        y.data_ptr(),
        max(n, 1),
        m,
        n,
        k,
        _native.threads(),
    )
    return y.reshape(*x.shape[:-1], n)


@torch.library.custom_op("qkernels::linear_vq", mutates_args=())
def linear_vq(x: Tensor, codes: Tensor, codebooks: Tensor, scales: Tensor, bias: Tensor | None) -> Tensor:
    """``x [..., K] -> [..., N]`` (x's dtype) with ``codes [N, K/8, Mc]`` (uint8: 8-bit codebooks;
    int16: the bit pattern of 16-bit indices), fp32 ``codebooks [Mc, 2^B, 8]`` and ``scales [N]``."""
    return linear_vq_eager(x, codes, codebooks, scales, bias)


@linear_vq.register_fake
def _(x, codes, codebooks, scales, bias):
    n, _, _, _ = _check("linear_vq", x, codes, codebooks, scales, bias)
    return x.new_empty((*x.shape[:-1], n))
