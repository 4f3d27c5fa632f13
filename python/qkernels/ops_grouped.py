"""The group-wise sub-byte linears as ``torch.ops.qkernels`` custom ops: ``linear_int4``,
``linear_int3`` and ``linear_nf4`` (formats in docs/formats.md). CPU tensors run the C++ kernels
(``csrc/core/linear_q.cpp``); other devices run the oracles of :mod:`qkernels.reference.grouped`.

Each op quantizes the activations to int8 per token and per weight group inside the kernel, so the
integer dot product of every group is exact (docs/kernels.md gives the accuracy against fp32).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from . import _native
from ._native import _C
from ._op_checks import FLOAT_DTYPES, _addr, _check_tensor, _fail
from .formats import int8 as int8_format
from .reference import grouped as oracle

# Kernel format ids: qk::QFormat in csrc/core/kernels.h.
_FMT = {"int4": 0, "int3": 1, "nf4": 2}
# Packed bytes per row, as plain arithmetic so that it also works on torch.compile's symbolic sizes
# (the formats' packed_row_bytes insist on a concrete int).
_ROW_BYTES = {"int4": lambda k: k // 2, "int3": lambda k: (k + 31) // 32 * 12, "nf4": lambda k: k // 2}
_NF4_BLOCKS = (32, 64, 128, 256)


def _check(op: str, fmt: str, x, packed, scales, zeros, group_size, bias) -> tuple[int, int, int]:
    """Validates the arguments; returns ``(N, K, group length)``."""
    _check_tensor(op, "x", x, FLOAT_DTYPES, None)
    if x.dim() < 1:
        _fail(op, "x", "at least 1 dimension", "a 0-d tensor")
    k = x.shape[-1]
    if k < 1:
        _fail(op, "x", "in_features >= 1", f"shape {tuple(x.shape)}")
    if k > int8_format.MAX_K:
        _fail(op, "x", f"in_features <= {int8_format.MAX_K}", k)
    gname = "block_size" if fmt == "nf4" else "group_size"
    if isinstance(group_size, bool) or not isinstance(group_size, int):
        _fail(op, gname, "an int", type(group_size).__name__, TypeError)
    if fmt == "nf4":
        if group_size not in _NF4_BLOCKS:
            _fail(op, gname, "32, 64, 128 or 256", group_size)
    elif group_size != -1 and (group_size <= 0 or group_size % 32):
        _fail(op, gname, "a positive multiple of 32, or -1", group_size)
    if fmt != "int3" and k % 2:
        _fail(op, "x", "an even in_features (two codes per byte)", k)
    group = k if group_size == -1 else group_size
    ngroups = -(-k // group)
    _check_tensor(op, "packed", packed, (torch.uint8,), 2)
    n = packed.shape[0]
    if packed.shape[1] != _ROW_BYTES[fmt](k):
        _fail(
            op,
            "packed",
            f"shape ({n}, {_ROW_BYTES[fmt](k)}) for in_features {k}",
            f"shape {tuple(packed.shape)}",
        )
    sname = "absmax" if fmt == "nf4" else "scales"
    _check_tensor(op, sname, scales, (torch.float32,), 2)
    if tuple(scales.shape) != (n, ngroups):
        _fail(op, sname, f"shape ({n}, {ngroups})", f"shape {tuple(scales.shape)}")
    if zeros is not None:
        _check_tensor(op, "zeros", zeros, (torch.uint8,), 2)
        if tuple(zeros.shape) != (n, ngroups):
            _fail(op, "zeros", f"shape ({n}, {ngroups})", f"shape {tuple(zeros.shape)}")
    if bias is not None:
        _check_tensor(op, "bias", bias, (torch.float32,), 1)
        if bias.shape[0] != n:
            _fail(op, "bias", f"shape ({n},)", f"shape {tuple(bias.shape)}")
    for name, t in (("packed", packed), (sname, scales), ("zeros", zeros), ("bias", bias)):
        if t is not None and t.device != x.device:
            _fail(op, name, f"device {x.device} (x's device)", t.device)
    return n, k, group


def _linear(fmt: str, x, packed, scales, zeros, group_size: int, bias) -> Tensor:
    op = f"linear_{fmt}"
    n, k, _ = _check(op, fmt, x, packed, scales, zeros, group_size, bias)
    if x.device.type != "cpu":
        if fmt == "nf4":
            return oracle.linear_nf4(x, packed, scales, group_size, bias)
        return getattr(oracle, op)(x, packed, scales, zeros, group_size, bias)
    m = math.prod(x.shape[:-1])
    x2 = x.reshape(m, k).contiguous()
    y = torch.empty((m, n), dtype=x.dtype)
    packed, scales = packed.contiguous(), scales.contiguous()
    zeros = None if zeros is None else zeros.contiguous()
    bias = None if bias is None else bias.contiguous()
    _C.linear_q(
        _FMT[fmt],
        x2.data_ptr(),
        _native.DTYPE_CODES[x.dtype],
        k,
        packed.data_ptr(),
        scales.data_ptr(),
        _addr(zeros),
        group_size,
        _addr(bias),
        y.data_ptr(),
        max(n, 1),
        m,
        n,
        k,
        _native.threads(),
    )
    return y.reshape(*x.shape[:-1], n)


# Eager entry points (no dispatcher; see ops.linear_int8_w8a8_eager).
linear_int4_eager = functools.partial(_linear, "int4")
linear_int3_eager = functools.partial(_linear, "int3")


def linear_nf4_eager(
    x: Tensor, packed: Tensor, absmax: Tensor, block_size: int, bias: Tensor | None
) -> Tensor:
    return _linear("nf4", x, packed, absmax, None, block_size, bias)


@torch.library.custom_op("qkernels::linear_int4", mutates_args=())
def linear_int4(
    x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor | None, group_size: int, bias: Tensor | None
) -> Tensor:
    """``x [..., K] -> [..., N]`` (x's dtype) with int4 weights ``packed [N, K/2]``, ``scales`` and
    optional ``zeros [N, ceil(K/G)]`` (None: symmetric, zero 8); ``group_size`` G: a multiple of 32
    or -1 (whole row)."""
    return linear_int4_eager(x, packed, scales, zeros, group_size, bias)


@torch.library.custom_op("qkernels::linear_int3", mutates_args=())
def linear_int3(
    x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor | None, group_size: int, bias: Tensor | None
) -> Tensor:
    """As :func:`linear_int4` with 3-bit codes, ``packed [N, ceil(K/32) * 12]`` in 2+1 bit planes
    and symmetric zero 4."""
    return linear_int3_eager(x, packed, scales, zeros, group_size, bias)


@torch.library.custom_op("qkernels::linear_nf4", mutates_args=())
def linear_nf4(x: Tensor, packed: Tensor, absmax: Tensor, block_size: int, bias: Tensor | None) -> Tensor:
    """``x [..., K] -> [..., N]`` (x's dtype) with NF4 weights ``packed [N, K/2]`` and
    ``absmax [N, ceil(K/B)]`` for blocks of ``block_size`` B (32, 64, 128 or 256)."""
    return linear_nf4_eager(x, packed, absmax, block_size, bias)


def _fake(fmt: str):
    def fake(x, packed, scales, zeros, group_size, bias):
        n, _, _ = _check(f"linear_{fmt}", fmt, x, packed, scales, zeros, group_size, bias)
        return x.new_empty((*x.shape[:-1], n))

    return fake


linear_int4.register_fake(_fake("int4"))
linear_int3.register_fake(_fake("int3"))


@linear_nf4.register_fake
def _(x, packed, absmax, block_size, bias):
    n, _, _ = _check("linear_nf4", "nf4", x, packed, absmax, None, block_size, bias)
    return x.new_empty((*x.shape[:-1], n))
