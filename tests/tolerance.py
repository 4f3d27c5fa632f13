"""The tolerance rule of STYLE.md, shared by the float-kernel tests."""

from __future__ import annotations

import torch


def assert_close_to_oracle(out: torch.Tensor, ref_low: torch.Tensor, ref_high: torch.Tensor) -> None:
    """STYLE.md's rule: the kernel may differ from the exact (fp64) result by at most twice what the
    oracle computed in the kernel's precision differs from it, plus one ulp of the output's scale
    (where the oracle happens to be exact)."""
    ref_high = ref_high.double()
    oracle_err = (ref_low.double() - ref_high).abs().max().item() if ref_high.numel() else 0.0
    err = (out.double() - ref_high).abs().max().item() if ref_high.numel() else 0.0
    ulp = torch.finfo(out.dtype).eps * (ref_high.abs().max().item() if ref_high.numel() else 0.0)
    assert err <= 2 * oracle_err + ulp, f"error {err:.3g} > 2 x oracle error {oracle_err:.3g} + {ulp:.3g}"
