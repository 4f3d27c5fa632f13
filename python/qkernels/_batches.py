"""The sample inputs that evaluation and calibration run a model on: one batch (a Tensor, a tuple
of positional arguments or a dict of keyword arguments) or an iterable of batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

Batch = tuple[tuple[Any, ...], dict[str, Any]]


def _as_batch(b: Any, where: str) -> Batch:
    if isinstance(b, Tensor):
        return (b,), {}
    if isinstance(b, tuple):
        return b, {}
    if isinstance(b, dict):
        return (), b
    raise TypeError(
        f"{where}: expected a Tensor, a tuple of arguments or a dict of keyword arguments, got "
        f"{type(b).__name__}"
    )


def _check_finite(batch: Batch, where: str) -> Batch:
    args, kwargs = batch
    for key, v in [*enumerate(args), *kwargs.items()]:
        if isinstance(v, Tensor) and v.dtype.is_floating_point and not bool(torch.isfinite(v).all()):
            bad = v[~torch.isfinite(v)][0].item()
            raise ValueError(f"{where}: expected finite values, got {bad} in argument {key!r}")
    return batch


def iter_batches(inputs: Any, fn: str) -> Iterator[Batch]:
    """Yields ``(args, kwargs)`` per batch: a Tensor, tuple or dict is one batch, a list (or any
    other iterable) is a sequence of batches. Each batch is checked for NaN/Inf before it runs;
    errors name ``fn`` and its argument ``inputs``."""
    expected = "a Tensor, a tuple of arguments or a list of batches"
    if inputs is None:
        raise ValueError(f"{fn}: inputs: expected {expected}, got None")
    if isinstance(inputs, (Tensor, tuple, dict)):
        yield _check_finite(_as_batch(inputs, f"{fn}: inputs"), f"{fn}: inputs")
        return
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Iterable):
        raise TypeError(f"{fn}: inputs: expected {expected}, got {type(inputs).__name__}")
    count = 0
    for i, b in enumerate(inputs):
        where = f"{fn}: inputs[{i}]"
        yield _check_finite(_as_batch(b, where), where)
        count += 1
    if count == 0:
        raise ValueError(f"{fn}: inputs: expected at least one batch, got an empty {type(inputs).__name__}")
