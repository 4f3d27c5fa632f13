"""int8: symmetric, one fp32 scale per row. Mirrors ``csrc/formats/int8.h``; spec in docs/formats.md.

Storage is one signed byte per weight, row-major ``[out_features, in_features]``, codes in
[-127, 127] (-128 is never produced), plus ``scale: float32 [out_features]``.
"""

from __future__ import annotations

import torch

BITS = 8
QMAX = 127
# Largest in_features for which the int32 accumulator cannot overflow (K * 127 * 127 < 2^31).
MAX_K = 1 << 17


# The smallest scale: the smallest normal fp32 (2^-126). A subnormal scale keeps only a few
# significant bits, so its codes could miss their values by more than half a step.
MIN_SCALE = torch.finfo(torch.float32).tiny


def scale_from_absmax(absmax: torch.Tensor) -> torch.Tensor:
    """``absmax / 127`` raised to ``MIN_SCALE``, or 1 where absmax is 0 (an all-zero row; any
    positive scale reproduces zeros). Rows with absmax below ``127 * MIN_SCALE`` are coded in steps
    of ``MIN_SCALE``."""
    scale = (absmax / QMAX).clamp(min=MIN_SCALE)
    return torch.where(absmax > 0, scale, torch.ones_like(scale))


def quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantizes each row of ``w`` (``[..., K]``): returns ``(q int8, scale float32 [...])``.

    ``q = round_half_even(w / scale)`` clamped to [-127, 127], computed in fp32 with a true division
    so that it matches the C++ kernels bit for bit. Rows holding NaN/Inf get a NaN scale and zero
    codes (callers that quantize weights reject them before this point).
    """
    wf = w.float()
    finite = torch.isfinite(wf).all(dim=-1)
    scale = scale_from_absmax(wf.abs().amax(dim=-1)) if wf.shape[-1] else torch.ones(wf.shape[:-1])
    q = torch.round(wf / scale.unsqueeze(-1)).clamp_(-QMAX, QMAX)
    q = torch.where(finite.unsqueeze(-1), q, torch.zeros_like(q)).to(torch.int8)
    scale = torch.where(finite, scale, torch.full_like(scale, float("nan")))
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 weight that the codes stand for: ``q * scale[:, None]``."""
    return q.float() * scale.unsqueeze(-1)
