"""``Int8Linear``: int8 weights (per output channel), W8A8 dynamic or W8A16."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .. import ops
from ..formats import int8 as fmt
from ._base import QuantizedLinear, run_op


class Int8Linear(QuantizedLinear):
    """``y = x @ W^T + b`` with ``W`` stored as int8 codes and one fp32 scale per output channel.

    ``weight_only=False`` (W8A8): activations are quantized per token to int8 inside the kernel and
    the product accumulates exactly in int32. ``weight_only=True`` (W8A16): activations stay float
    and the weights are dequantized in registers. Inputs may be float32, bfloat16 or float16; the
    output has the input's dtype.

    Buffers: ``weight`` int8 ``[out, in]``, ``weight_scale`` float32 ``[out]``, ``bias`` float32
    ``[out]`` or None. The state dict also carries the format name and version.
    """

    format_name = "int8"

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, weight_only: bool = False
    ) -> None:
        super().__init__(in_features, out_features, bias)
        if in_features > fmt.MAX_K:
            raise ValueError(
                f"Int8Linear: in_features: expected <= {fmt.MAX_K} (int32 accumulator), got {in_features}"
            )
        self.weight_only = bool(weight_only)
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32))

    @classmethod
    def from_linear(cls, linear: nn.Linear, weight_only: bool = False, name: str | None = None) -> Int8Linear:
        """Quantizes ``linear`` (per-output-channel symmetric int8). ``name`` labels errors."""
        mod = cls._empty_like(linear, name, weight_only=weight_only)
        with torch.no_grad():
            q, scale = ops.quantize_int8(linear.weight.detach().float().cpu())
            mod.weight.copy_(q)
            mod.weight_scale.copy_(scale)
        return mod._finish_from_linear(linear)

    def forward(self, x: Tensor) -> Tensor:
        if self.weight_only:
            eager, traced = ops.linear_int8_w8a16_eager, ops.linear_int8_w8a16
        else:
            eager, traced = ops.linear_int8_w8a8_eager, ops.linear_int8_w8a8
        return run_op(eager, traced, x, self.weight, self.weight_scale, self.bias)

    def config_fields(self) -> dict[str, Any]:
        """The constructor's config keyword arguments: ``Int8Linear(k, n, bias=..., **config_fields())``
        builds an empty module that this one's state dict loads into."""
        return {"weight_only": self.weight_only}

    def dequantize(self) -> Tensor:
        """The float32 ``[out, in]`` weight that ``forward`` effectively multiplies by."""
        return fmt.dequantize(self.weight, self.weight_scale)

    def extra_repr(self) -> str:
        mode = "W8A16" if self.weight_only else "W8A8 dynamic"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, format={self.format_name} {mode}"
        )

    # ---- state dict: see QuantizedLinear ------------------------------------------------------

    def set_extra_state(self, state: Any) -> None:
        # weight_only picks the kernel, not what is stored, so a state dict of either mode loads and
        # brings its mode along; the base checks the format tag and version.
        if isinstance(state, dict):
            super().set_extra_state({**state, "weight_only": self.weight_only})
            self.weight_only = bool(state.get("weight_only", False))
        else:
            super().set_extra_state(state)  # rejects it, naming what it got

    def _expected_buffers(self) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        return {
            "weight": (torch.int8, (self.out_features, self.in_features)),
            "weight_scale": (torch.float32, (self.out_features,)),
        }

    def _check_values(self, tensors: dict[str, Tensor]) -> list[str]:
        errors = []
        w = tensors.get("weight")
        if w is not None and bool((w == -128).any()):
            errors.append("weight: expected int8 codes in [-127, 127], got -128 (corrupted?)")
        s = tensors.get("weight_scale")
        if s is not None and not bool((torch.isfinite(s) & (s > 0)).all()):
            errors.append(f"weight_scale: expected finite positive scales, got {s[~(s > 0)][:4]}")
        return errors
