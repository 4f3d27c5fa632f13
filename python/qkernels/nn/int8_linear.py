"""``Int8Linear``: int8 weights (per output channel), W8A8 dynamic or W8A16."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .. import ops
from ..formats import int8 as fmt
from ._checks import check_features, check_source_linear

FORMAT = "int8"
FORMAT_VERSION = 1


class Int8Linear(nn.Module):
    """``y = x @ W^T + b`` with ``W`` stored as int8 codes and one fp32 scale per output channel.

    ``weight_only=False`` (W8A8): activations are quantized per token to int8 inside the kernel and
    the product accumulates exactly in int32. ``weight_only=True`` (W8A16): activations stay float
    and the weights are dequantized in registers. Inputs may be float32, bfloat16 or float16; the
    output has the input's dtype.

    Buffers: ``weight`` int8 ``[out, in]``, ``weight_scale`` float32 ``[out]``, ``bias`` float32
    ``[out]`` or None. The state dict also carries the format name and version.
    """

    format_name = FORMAT

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, weight_only: bool = False
    ) -> None:
        super().__init__()
        check_features(type(self).__name__, in_features, out_features)
        if in_features > fmt.MAX_K:
            raise ValueError(
                f"Int8Linear: in_features: expected <= {fmt.MAX_K} (int32 accumulator), got {in_features}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.weight_only = bool(weight_only)
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, weight_only: bool = False, name: str | None = None) -> Int8Linear:
        """Quantizes ``linear`` (per-output-channel symmetric int8). ``name`` labels errors."""
        check_source_linear(cls.__name__, linear, name)
        out_features, in_features = linear.weight.shape
        mod = cls(in_features, out_features, bias=linear.bias is not None, weight_only=weight_only)
        with torch.no_grad():
            q, scale = ops.quantize_int8(linear.weight.detach().float().cpu())
            mod.weight.copy_(q)
            mod.weight_scale.copy_(scale)
            if linear.bias is not None:
                mod.bias.copy_(linear.bias.detach().float())
        return mod.to(linear.weight.device)

    def forward(self, x: Tensor) -> Tensor:
        # Inference only: no autograd. torch.compile traces the registered op; eager calls skip the
        # dispatcher (see ops.linear_int8_w8a8_eager).
        if torch.compiler.is_compiling():
            op = ops.linear_int8_w8a16 if self.weight_only else ops.linear_int8_w8a8
        else:
            op = ops.linear_int8_w8a16_eager if self.weight_only else ops.linear_int8_w8a8_eager
        return op(x, self.weight, self.weight_scale, self.bias)

    def _apply(self, fn, recurse=True):
        # int8 codes and fp32 scales keep their dtypes under model.to(dtype) / .half(): see _base.
        return super()._apply(lambda t: fn(t).to(t.dtype), recurse)

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
            f"bias={self.bias is not None}, format={FORMAT} {mode}"
        )

    # ---- state dict: format tag + validation --------------------------------------------------

    def get_extra_state(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "weight_only": self.weight_only}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            got = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"Int8Linear state_dict: format: expected {FORMAT!r}, got {got!r}")
        version = state.get("version")
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise ValueError(
                f"Int8Linear state_dict: version: expected 1..{FORMAT_VERSION} (this qkernels), "
                f"got {version!r}; upgrade qkernels to load it"
            )
        self.weight_only = bool(state.get("weight_only", False))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        n, k = self.out_features, self.in_features
        expect = {"weight": (torch.int8, (n, k)), "weight_scale": (torch.float32, (n,))}
        if self.bias is not None:
            expect["bias"] = (torch.float32, (n,))
        for key, (dtype, shape) in expect.items():
            t = state_dict.get(prefix + key)
            if t is None:
                continue  # reported as missing by torch
            if t.dtype != dtype or tuple(t.shape) != shape:
                errors.append(
                    f"{prefix}{key}: expected {dtype} of shape {shape}, got {t.dtype} of shape "
                    f"{tuple(t.shape)}"
                )
        w = state_dict.get(prefix + "weight")
        if w is not None and w.dtype == torch.int8 and bool((w == -128).any()):
            errors.append(f"{prefix}weight: expected int8 codes in [-127, 127], got -128 (corrupted?)")
        s = state_dict.get(prefix + "weight_scale")
        if s is not None and s.dtype == torch.float32 and not bool((torch.isfinite(s) & (s > 0)).all()):
            errors.append(f"{prefix}weight_scale: expected finite positive scales, got {s[~(s > 0)][:4]}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)
