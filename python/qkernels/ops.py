"""``torch.ops.qkernels.*``: the public op surface, as torch.library custom ops with fake
implementations (so they trace under torch.compile) and input checks that name the argument, the
expected value and the value given. CPU tensors run the C++ kernels; other devices fall back to
the PyTorch oracles in :mod:`qkernels.reference`."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from . import _native, reference
from ._native import _C
from ._op_checks import FLOAT_DTYPES, _addr, _check_tensor, _fail
from .formats import int8 as int8_format


def _check_linear(op: str, x: Tensor, weight: Tensor, weight_scale: Tensor, bias: Tensor | None):
    _check_tensor(op, "x", x, FLOAT_DTYPES, None)
    if x.dim() < 1:
        _fail(op, "x", "at least 1 dimension", "a 0-d tensor")
    _check_tensor(op, "weight", weight, (torch.int8,), 2)
    n, k = weight.shape
    if x.shape[-1] != k:
        _fail(op, "x", f"last dimension {k} (in_features)", f"shape {tuple(x.shape)}")
    if k > int8_format.MAX_K:
        _fail(op, "weight", f"in_features <= {int8_format.MAX_K}", k)
    _check_tensor(op, "weight_scale", weight_scale, (torch.float32,), 1)
    if weight_scale.shape[0] != n:
        _fail(op, "weight_scale", f"shape ({n},)", f"shape {tuple(weight_scale.shape)}")
    if bias is not None:
        _check_tensor(op, "bias", bias, (torch.float32,), 1)
        if bias.shape[0] != n:
            _fail(op, "bias", f"shape ({n},)", f"shape {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("weight_scale", weight_scale), ("bias", bias)):
        if t is not None and t.device != x.device:
            _fail(op, name, f"device {x.device} (x's device)", t.device)


# ---- quantize_int8 -------------------------------------------------------------------------------


@torch.library.custom_op("qkernels::quantize_int8", mutates_args=())
def quantize_int8(w: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row symmetric int8: ``w [N, K] float -> (q int8 [N, K], scale float32 [N])``.
    Raises ValueError naming the row when ``w`` holds NaN or Inf."""
    op = "quantize_int8"
    _check_tensor(op, "w", w, FLOAT_DTYPES, 2)
    if w.device.type != "cpu":
        q, scale = reference.quantize_int8(w)
        bad = torch.isnan(scale).nonzero()
        if bad.numel():
            _fail(op, "w", "finite values", f"NaN or Inf in row {int(bad[0])}")
        return q, scale
    w = w.contiguous()
    rows, cols = w.shape
    q = torch.empty((rows, cols), dtype=torch.int8)
    scale = torch.empty((rows,), dtype=torch.float32)
    _C.quantize_int8(
        w.data_ptr(),
        _native.DTYPE_CODES[w.dtype],
        rows,
        cols,
        max(cols, 1),
        q.data_ptr(),
        scale.data_ptr(),
        _native.threads(),
    )
    return q, scale


@quantize_int8.register_fake
def _(w: Tensor) -> tuple[Tensor, Tensor]:
    return w.new_empty(w.shape, dtype=torch.int8), w.new_empty(w.shape[:1], dtype=torch.float32)


# ---- matmul_int8 ---------------------------------------------------------------------------------


@torch.library.custom_op("qkernels::matmul_int8", mutates_args=())
def matmul_int8(a: Tensor, b: Tensor) -> Tensor:
    """Exact ``a [M, K] int8 @ b [N, K]^T -> int32 [M, N]``; values must lie in [-127, 127]."""
    op = "matmul_int8"
    _check_tensor(op, "a", a, (torch.int8,), 2)
    _check_tensor(op, "b", b, (torch.int8,), 2)
    if a.shape[1] != b.shape[1]:
        _fail(op, "b", f"shape (N, {a.shape[1]}) to match a's K", f"shape {tuple(b.shape)}")
    if b.device != a.device:
        _fail(op, "b", f"device {a.device} (a's device)", b.device)
    if a.device.type != "cpu":
        return reference.matmul_int8(a, b)
    a, b = a.contiguous(), b.contiguous()
    (m, k), n = a.shape, b.shape[0]
    c = torch.empty((m, n), dtype=torch.int32)
    _C.matmul_int8(
        a.data_ptr(),
        max(k, 1),
        b.data_ptr(),
        max(k, 1),
        c.data_ptr(),
        max(n, 1),
        m,
        n,
        k,
        _native.threads(),
    )
    return c


@matmul_int8.register_fake
def _(a: Tensor, b: Tensor) -> Tensor:
    return a.new_empty((a.shape[0], b.shape[0]), dtype=torch.int32)


# ---- linear_int8_w8a8 / linear_int8_w8a16 ---------------------------------------------------------


def _linear(op: str, kernel, fallback, x, weight, weight_scale, bias) -> Tensor:
    _check_linear(op, x, weight, weight_scale, bias)
    if x.device.type != "cpu":
        return fallback(x, weight, weight_scale, bias)
    n, k = weight.shape
    m = math.prod(x.shape[:-1])  # not reshape(-1, k): that is ambiguous when k == 0
    x2 = x.reshape(m, k).contiguous()
    y = torch.empty((m, n), dtype=x.dtype)
    weight, weight_scale = weight.contiguous(), weight_scale.contiguous()
    bias = None if bias is None else bias.contiguous()
    kernel(
        x2.data_ptr(),
        _native.DTYPE_CODES[x.dtype],
        max(k, 1),
        weight.data_ptr(),
        weight_scale.data_ptr(),
        _addr(bias),
        y.data_ptr(),
        max(n, 1),
        m,
        n,
        k,
        _native.threads(),
    )
    return y.reshape(*x.shape[:-1], n)


# Eager entry points: the same work without the custom-op dispatcher, which costs tens of
# microseconds per call (more than the kernel itself on small layers). The modules use these
# outside torch.compile; everything else should use the torch.ops.qkernels ops below.
linear_int8_w8a8_eager = functools.partial(
    _linear, "linear_int8_w8a8", _C.linear_int8_w8a8, reference.linear_int8_w8a8
)
linear_int8_w8a16_eager = functools.partial(
    _linear, "linear_int8_w8a16", _C.linear_int8_w8a16, reference.linear_int8_w8a16
)


@torch.library.custom_op("qkernels::linear_int8_w8a8", mutates_args=())
def linear_int8_w8a8(x: Tensor, weight: Tensor, weight_scale: Tensor, bias: Tensor | None) -> Tensor:
    """W8A8 dynamic: per-token int8 activations, exact int32 accumulation, fp32 epilogue.
    ``x [..., K] float32/bfloat16/float16 -> [..., N]`` in x's dtype. Rows of x with NaN/Inf give
    rows of NaN."""
    return linear_int8_w8a8_eager(x, weight, weight_scale, bias)


@torch.library.custom_op("qkernels::linear_int8_w8a16", mutates_args=())
def linear_int8_w8a16(x: Tensor, weight: Tensor, weight_scale: Tensor, bias: Tensor | None) -> Tensor:
    """W8A16: float activations times int8 weights dequantized in registers, fp32 accumulation.
    ``x [..., K] float32/bfloat16/float16 -> [..., N]`` in x's dtype."""
    return linear_int8_w8a16_eager(x, weight, weight_scale, bias)


def _linear_fake(op: str):
    # The checks run under tracing too, so torch.compile reports bad shapes at compile time.
    def fake(x: Tensor, weight: Tensor, weight_scale: Tensor, bias: Tensor | None) -> Tensor:
        _check_linear(op, x, weight, weight_scale, bias)
        return x.new_empty((*x.shape[:-1], weight.shape[0]))

    return fake


linear_int8_w8a8.register_fake(_linear_fake("linear_int8_w8a8"))
linear_int8_w8a16.register_fake(_linear_fake("linear_int8_w8a16"))

# The sub-byte ops live in their own modules; importing them here registers them with
# torch.ops.qkernels and makes them part of this public surface.
from .ops_grouped import linear_int3, linear_int4, linear_nf4  # noqa: E402
from .ops_vq import linear_vq  # noqa: E402

__all__ = [
    "linear_int3",
    "linear_int4",
    "linear_int8_w8a8",
    "linear_int8_w8a16",
    "linear_nf4",
    "linear_vq",
    "matmul_int8",
    "quantize_int8",
]
