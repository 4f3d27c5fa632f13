"""The tolerance rule of STYLE.md, shared by the float-kernel tests."""

from __future__ import annotations

import torch


def fp32_sequential_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a [M, K] @ b [N, K]^T`` in fp32, one rounded product and one rounded add per term, summed
    over K in order. Elementwise fp32 ops round the same on every CPU, so unlike a BLAS call this
    oracle's error does not depend on the machine; and no kernel sums in a worse order than one
    long running sum."""
    a, b = a.float(), b.float()
    acc = torch.zeros(a.shape[0], b.shape[0])
    for k in range(a.shape[1]):
        acc = acc + a[:, k : k + 1] * b[:, k]
    return acc


def assert_close_to_oracle(
    out: torch.Tensor,
    ref_low: torch.Tensor,
    ref_high: torch.Tensor,
    factors: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """STYLE.md's rule: the kernel may differ from the exact (fp64) result by at most twice what the
    oracle computed in the kernel's precision differs from it, plus one ulp of the output's scale
    (where the oracle happens to be exact).

    The oracle's error is the larger of two: ``ref_low`` (the library's oracle, which goes through
    whatever BLAS path torch takes on this machine, and is nearly exact on some) and the fixed-order
    fp32 product of ``factors = (a [M, K], b [N, K])``, whose exact product is ``ref_high`` less any
    bias. The second makes the bound the same on every CPU."""
    ref_high = ref_high.double()
    if not ref_high.numel():
        return
    a, b = factors
    fixed = fp32_sequential_matmul(a.reshape(-1, a.shape[-1]), b).double()
    exact_product = (a.reshape(-1, a.shape[-1]).double() @ b.double().T).reshape(fixed.shape)
    oracle_err = max(
        (ref_low.double() - ref_high).abs().max().item(), (fixed - exact_product).abs().max().item()
    )
    err = (out.double() - ref_high).abs().max().item()
    ulp = torch.finfo(out.dtype).eps * ref_high.abs().max().item()
    assert err <= 2 * oracle_err + ulp, f"error {err:.3g} > 2 x oracle error {oracle_err:.3g} + {ulp:.3g}"
