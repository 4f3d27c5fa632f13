"""``VQLinear``: additive codebooks over groups of 8 weights, AQLM style (formats/vq.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .. import ops_vq
from ..formats import vq
from ._base import QuantizedLinear, check_finite_scales, run_op


class VQLinear(QuantizedLinear):
    """``y = x @ W^T + b`` with ``W[n, 8j:8j+8] = scales[n] * sum_c codebooks[c, codes[n, j, c]]``.

    Activations stay float. Buffers: ``codes`` ``[out, in/8, codebooks]`` (uint8 for 8-bit
    codebooks, int16 holding the uint16 index for 16-bit ones), ``codebooks`` float16
    ``[codebooks, 2^bits, 8]``, ``scales`` float32 ``[out]``, ``bias`` float32 ``[out]`` or None.
    The kernel reads an fp32 copy of the codebooks, made at load time and not saved.
    """

    format_name = "vq"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        codebooks: int = 2,
        codebook_bits: int = 8,
        group_size: int = 8,
        seed: int = 0,
    ) -> None:
        super().__init__(in_features, out_features, bias)
        name = type(self).__name__
        if codebooks not in vq.NUM_CODEBOOKS:
            raise ValueError(f"{name}: codebooks: expected 1 or 2, got {codebooks!r}")
        if codebook_bits not in vq.CODEBOOK_BITS:
            raise ValueError(f"{name}: codebook_bits: expected 8 or 16, got {codebook_bits!r}")
        if group_size != vq.GROUP_SIZE:
            raise ValueError(f"{name}: group_size: expected {vq.GROUP_SIZE}, got {group_size!r}")
        if in_features % vq.GROUP_SIZE:
            raise ValueError(
                f"{name}: in_features: expected a multiple of {vq.GROUP_SIZE}, got {in_features}"
            )
        self.codebooks_count = codebooks
        self.codebook_bits = codebook_bits
        self.group_size = group_size
        self.seed = seed
        dtype = vq.CODE_DTYPES[codebook_bits]
        self.register_buffer("codes", torch.zeros(out_features, in_features // 8, codebooks, dtype=dtype))
        self.register_buffer("codebooks", torch.zeros(codebooks, 1 << codebook_bits, 8, dtype=torch.float16))
        self.register_buffer("scales", torch.zeros(out_features, dtype=torch.float32))
        self.register_buffer("codebooks_f32", torch.zeros(self.codebooks.shape), persistent=False)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        codebooks: int = 2,
        codebook_bits: int = 8,
        group_size: int = 8,
        seed: int = 0,
        name: str | None = None,
    ) -> VQLinear:
        """Quantizes ``linear`` (k-means initialisation, beam-search refinement; deterministic for a
        given ``seed``). ``name`` labels errors."""
        cfg = {"codebooks": codebooks, "codebook_bits": codebook_bits, "group_size": group_size, "seed": seed}
        mod = cls._empty_like(linear, name, **cfg)
        codes, books, scales = vq.quantize(
            linear.weight.detach().float().cpu(),
            num_codebooks=codebooks,
            codebook_bits=codebook_bits,
            group_size=group_size,
            seed=seed,
        )
        with torch.no_grad():
            mod.codes.copy_(codes)
            mod.codebooks.copy_(books)
            mod.scales.copy_(scales)
            mod.codebooks_f32.copy_(books.float())
        return mod._finish_from_linear(linear)

    def forward(self, x: Tensor) -> Tensor:
        return run_op(
            ops_vq.linear_vq_eager,
            ops_vq.linear_vq,
            x,
            self.codes,
            self.codebooks_f32,
            self.scales,
            self.bias,
        )

    def dequantize(self) -> Tensor:
        return vq.dequantize(self.codes, self.codebooks, self.scales)

    def config_fields(self) -> dict[str, Any]:
        return {
            "codebooks": self.codebooks_count,
            "codebook_bits": self.codebook_bits,
            "group_size": self.group_size,
            "seed": self.seed,
        }

    def _expected_buffers(self):
        return {
            "codes": (self.codes.dtype, tuple(self.codes.shape)),
            "codebooks": (torch.float16, tuple(self.codebooks.shape)),
            "scales": (torch.float32, tuple(self.scales.shape)),
        }

    def _check_values(self, tensors):
        return check_finite_scales("scales", tensors.get("scales")) + check_finite_scales(
            "codebooks", tensors.get("codebooks")
        )

    def _load_from_state_dict(self, state_dict, prefix, *args):
        super()._load_from_state_dict(state_dict, prefix, *args)
        with torch.no_grad():  # the kernel reads fp32 codebooks
            self.codebooks_f32.copy_(self.codebooks.float())
