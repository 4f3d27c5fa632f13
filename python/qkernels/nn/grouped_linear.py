"""``Int4Linear`` and ``Int3Linear``: group-wise integer codes along K (formats/int4.py, int3.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .. import ops_grouped
from ..formats import _groups, int3, int4
from ._base import QuantizedLinear, check_finite_scales, run_op


class _GroupwiseLinear(QuantizedLinear):
    """``y = x @ W^T + b`` with ``W[n, k] = scales[n, g] * (code[n, k] - zero[n, g])``.

    Activations are quantized to int8 per token and per group inside the kernel (docs/kernels.md).
    Buffers: ``packed`` uint8, ``scales`` float32 ``[out, groups]``, ``zeros`` uint8
    ``[out, groups]`` (asymmetric only), ``bias`` float32 ``[out]`` or None.
    """

    fmt: Any = None  # the format module
    eager: Any = None
    traced: Any = None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        group_size: int = 128,
        symmetric: bool = True,
        method: str = "rtn",
    ) -> None:
        super().__init__(in_features, out_features, bias)
        name = type(self).__name__
        self.group = _groups.resolve_group_size(name, group_size, in_features)
        if self.fmt.FORMAT.even_k:
            _groups.check_even(name, in_features)
        if method not in _groups.METHODS:
            raise ValueError(f"{name}: method: expected one of {_groups.METHODS}, got {method!r}")
        self.group_size = group_size
        self.symmetric = bool(symmetric)
        self.method = method
        groups = _groups.num_groups(in_features, self.group)
        row = self.fmt.packed_row_bytes(in_features)
        self.register_buffer("packed", torch.zeros(out_features, row, dtype=torch.uint8))
        self.register_buffer("scales", torch.zeros(out_features, groups, dtype=torch.float32))
        zeros = None if self.symmetric else torch.zeros(out_features, groups, dtype=torch.uint8)
        self.register_buffer("zeros", zeros)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        group_size: int = 128,
        symmetric: bool = True,
        method: str = "rtn",
        name: str | None = None,
        hessian: Tensor | None = None,
    ) -> _GroupwiseLinear:
        """Quantizes ``linear`` (RTN, the MSE scale search, or GPTQ with ``hessian``, the second
        moment of the layer's inputs: see ``qkernels.calibrate``). ``name`` labels errors."""
        mod = cls._empty_like(linear, name, group_size=group_size, symmetric=symmetric, method=method)
        try:
            codes, scales, zeros = cls.fmt.quantize(
                linear.weight.detach().float().cpu(),
                group_size=group_size,
                symmetric=symmetric,
                method=method,
                hessian=hessian,
            )
        except (TypeError, ValueError) as e:
            raise type(e)(f"{cls._where(name)}: {e}") from None
        with torch.no_grad():
            mod.packed.copy_(cls.fmt.pack(codes))
            mod.scales.copy_(scales)
            if zeros is not None:
                mod.zeros.copy_(zeros)
        return mod._finish_from_linear(linear)

    def forward(self, x: Tensor) -> Tensor:
        return run_op(
            self.eager, self.traced, x, self.packed, self.scales, self.zeros, self.group_size, self.bias
        )

    def dequantize(self) -> Tensor:
        codes = self.fmt.unpack(self.packed.cpu(), self.in_features)
        zeros = None if self.zeros is None else self.zeros.cpu()
        w = self.fmt.dequantize(codes, self.scales.cpu(), zeros, self.group_size)
        return w.to(self.packed.device)

    def config_fields(self) -> dict[str, Any]:
        return {"group_size": self.group_size, "symmetric": self.symmetric, "method": self.method}

    def _expected_buffers(self):
        expect = {
            "packed": (torch.uint8, tuple(self.packed.shape)),
            "scales": (torch.float32, tuple(self.scales.shape)),
        }
        if self.zeros is not None:
            expect["zeros"] = (torch.uint8, tuple(self.zeros.shape))
        return expect

    def _check_values(self, tensors):
        errors = check_finite_scales("scales", tensors.get("scales"))
        z = tensors.get("zeros")
        if z is not None and bool((z > self.fmt.QMAX).any()):
            errors.append(f"zeros: expected values <= {self.fmt.QMAX}, got {int(z.max())} (corrupted?)")
        return errors


class Int4Linear(_GroupwiseLinear):
    """4-bit codes (``packed [out, in/2]``, symmetric zero 8); see ``_GroupwiseLinear``."""

    format_name = "int4"
    fmt = int4
    eager = staticmethod(ops_grouped.linear_int4_eager)
    traced = staticmethod(ops_grouped.linear_int4)


class Int3Linear(_GroupwiseLinear):
    """3-bit codes in 2+1 bit planes (``packed [out, ceil(in/32) * 12]``, symmetric zero 4); see
    ``_GroupwiseLinear``."""

    format_name = "int3"
    fmt = int3
    eager = staticmethod(ops_grouped.linear_int3_eager)
    traced = staticmethod(ops_grouped.linear_int3)
