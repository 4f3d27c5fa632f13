"""Pure-PyTorch oracles: readable, vectorised fp32. Tests compare every kernel with these, and the
ops fall back to them on devices without a kernel."""

from .grouped import linear_int3, linear_int4, linear_nf4
from .int8 import linear_int8_w8a8, linear_int8_w8a16, matmul_int8, quantize_int8

__all__ = [
    "linear_int3",
    "linear_int4",
    "linear_int8_w8a8",
    "linear_int8_w8a16",
    "linear_nf4",
    "matmul_int8",
    "quantize_int8",
]
