"""``NF4Linear``: bitsandbytes' NormalFloat4 codes with one absmax per block along K
(formats/nf4.py), optionally with double-quantized absmax values."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .. import ops_grouped
from ..formats import _groups, nf4
from ._base import QuantizedLinear, check_finite_scales, run_op


class NF4Linear(QuantizedLinear):
    """``y = x @ W^T + b`` with ``W[n, k] = NF4[code[n, k]] * absmax[n, k // block_size]``.

    Activations are quantized to int8 per token and per block inside the kernel, which multiplies
    by ``round(127 * NF4[code]) / 127`` (docs/kernels.md gives the accuracy this costs).
    Buffers: ``packed`` uint8 ``[out, in/2]``; ``absmax`` float32 ``[out, blocks]``, or with
    ``double_quant`` the 8-bit ``qabsmax [out, blocks]``, ``absmax2`` float32 and ``offset``
    float32 (then ``absmax`` is rebuilt from them and not saved); ``bias`` float32 ``[out]`` or None.
    """

    format_name = "nf4"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        block_size: int = 64,
        double_quant: bool = False,
    ) -> None:
        super().__init__(in_features, out_features, bias)
        name = type(self).__name__
        if block_size not in nf4.BLOCK_SIZES:
            raise ValueError(f"{name}: block_size: expected one of {nf4.BLOCK_SIZES}, got {block_size!r}")
        _groups.check_even(name, in_features)
        self.block_size = block_size
        self.double_quant = bool(double_quant)
        blocks = _groups.num_groups(in_features, block_size)
        self.register_buffer("packed", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
        absmax = torch.zeros(out_features, blocks, dtype=torch.float32)
        self.register_buffer("absmax", absmax, persistent=not self.double_quant)
        if self.double_quant:
            self.register_buffer("qabsmax", torch.zeros(out_features, blocks, dtype=torch.uint8))
            self.register_buffer(
                "absmax2", torch.zeros(-(-out_features * blocks // 256), dtype=torch.float32)
            )
            self.register_buffer("offset", torch.zeros((), dtype=torch.float32))

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, block_size: int = 64, double_quant: bool = False, name: str | None = None
    ) -> NF4Linear:
        """Quantizes ``linear`` exactly as bitsandbytes' NF4 does. ``name`` labels errors."""
        mod = cls._empty_like(linear, name, block_size=block_size, double_quant=double_quant)
        codes, absmax = nf4.quantize(linear.weight.detach().float().cpu(), block_size=block_size)
        with torch.no_grad():
            mod.packed.copy_(nf4.pack(codes))
            if double_quant:
                qabsmax, absmax2, offset = nf4.double_quantize(absmax)
                mod.qabsmax.copy_(qabsmax)
                mod.absmax2.copy_(absmax2)
                mod.offset.copy_(offset)
                absmax = nf4.dequantize_absmax(qabsmax, absmax2, offset)
            mod.absmax.copy_(absmax)
        return mod._finish_from_linear(linear)

    def forward(self, x: Tensor) -> Tensor:
        return run_op(
            ops_grouped.linear_nf4_eager,
            ops_grouped.linear_nf4,
            x,
            self.packed,
            self.absmax,
            self.block_size,
            self.bias,
        )

    def dequantize(self) -> Tensor:
        """The float32 ``[out, in]`` weight that ``forward`` uses: the int8-rounded table times
        ``absmax / 127``."""
        codes = nf4.unpack(self.packed.cpu(), self.in_features).long()
        scale = _groups.expand_groups(self.absmax.cpu(), self.block_size, self.in_features) / 127
        return (nf4.TABLE_INT8.float()[codes] * scale).to(self.packed.device)

    def config_fields(self) -> dict[str, Any]:
        return {"block_size": self.block_size, "double_quant": self.double_quant}

    def _expected_buffers(self):
        expect = {"packed": (torch.uint8, tuple(self.packed.shape))}
        if self.double_quant:
            expect["qabsmax"] = (torch.uint8, tuple(self.qabsmax.shape))
            expect["absmax2"] = (torch.float32, tuple(self.absmax2.shape))
            expect["offset"] = (torch.float32, ())
        else:
            expect["absmax"] = (torch.float32, tuple(self.absmax.shape))
        return expect

    def _check_values(self, tensors):
        errors = []
        for key in ("absmax", "absmax2", "offset"):
            errors += check_finite_scales(key, tensors.get(key))
        a = tensors.get("absmax")
        if self.double_quant and not errors and all(k in tensors for k in ("qabsmax", "absmax2", "offset")):
            # A negative absmax2 or offset would flip the sign of whole blocks: check what they give.
            a = nf4.dequantize_absmax(
                tensors["qabsmax"].cpu(), tensors["absmax2"].cpu(), tensors["offset"].cpu()
            )
        if a is not None and bool((a < 0).any()):
            errors.append(f"absmax: expected values >= 0, got {a.min().item()} (corrupted?)")
        return errors

    def _load_from_state_dict(self, state_dict, prefix, *args):
        super()._load_from_state_dict(state_dict, prefix, *args)
        if self.double_quant:  # the kernel reads fp32 absmax: rebuild it from the loaded 8-bit copy
            with torch.no_grad():
                self.absmax.copy_(
                    nf4.dequantize_absmax(self.qabsmax.cpu(), self.absmax2.cpu(), self.offset.cpu())
                )
