"""Argument checks shared by the op modules: messages name the op, the argument, what was expected
and what was given."""

from __future__ import annotations

import torch
from torch import Tensor

from . import _native

FLOAT_DTYPES = tuple(_native.DTYPE_CODES)


def _fail(op: str, arg: str, expected: str, got: object, exc: type[Exception] = ValueError):
    raise exc(f"{op}: {arg}: expected {expected}, got {got}")


def _check_tensor(op: str, arg: str, t: object, dtypes: tuple[torch.dtype, ...], ndim: int | None):
    if not isinstance(t, Tensor):
        _fail(op, arg, "a torch.Tensor", type(t).__name__, TypeError)
    if t.dtype not in dtypes:
        names = " or ".join(str(d) for d in dtypes)
        _fail(op, arg, f"dtype {names}", t.dtype, TypeError)
    if ndim is not None and t.dim() != ndim:
        _fail(op, arg, f"{ndim} dimensions", f"shape {tuple(t.shape)}")


def _addr(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()
