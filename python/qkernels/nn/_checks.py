"""Checks shared by the quantized Linear modules."""

from __future__ import annotations

import torch
from torch import nn


def check_features(cls_name: str, in_features: int, out_features: int) -> None:
    for arg, v in (("in_features", in_features), ("out_features", out_features)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{cls_name}: {arg}: expected a positive int, got {v!r}")


def check_source_linear(cls_name: str, linear: object, name: str | None) -> None:
    """Validates an ``nn.Linear`` before quantizing it; messages carry the layer's name."""
    where = f"{cls_name}.from_linear({name!r})" if name else f"{cls_name}.from_linear"
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"{where}: linear: expected torch.nn.Linear, got {type(linear).__name__}")
    w = linear.weight
    if not w.dtype.is_floating_point:
        raise TypeError(f"{where}: weight: expected a floating dtype, got {w.dtype}")
    if w.shape[0] < 1 or w.shape[1] < 1:
        raise ValueError(
            f"{where}: weight: expected out_features >= 1 and in_features >= 1, got {tuple(w.shape)}"
        )
    if w.is_meta:
        raise ValueError(f"{where}: weight: expected materialised values, got a meta tensor")
    with torch.no_grad():
        bad = (~torch.isfinite(w)).nonzero()
        if bad.numel():
            r, c = (int(v) for v in bad[0])
            raise ValueError(
                f"{where}: weight: expected finite values, got {w[r, c].item()} at [{r}, {c}] "
                f"({bad.shape[0]} non-finite in total)"
            )
