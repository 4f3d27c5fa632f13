"""What the group-wise integer formats (int4, int3) share: checks, grouping along K, RTN and the MSE
search, all parameterised by the bit width. The format modules add their packing on top.

A weight ``W [N, K]`` is cut along K into groups of ``G`` elements inside each row (the last one may
be partial). A group has one fp32 scale ``d`` and an integer zero ``z``, and stands for
``d * (q - z)`` with codes ``q`` in ``[0, qmax]``. Spec: docs/formats.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

# The MSE search scales RTN's step by these ratios (1.0 is RTN's own step): values past the clipped
# range of a smaller step lose less than the finer grid gains for the rest of the group.
CLIP_RATIOS = [(16 + i) / 32 for i in range(17)]
# The MSE search scores all candidates at once (broadcast) up to this many values, one candidate at
# a time above it (bounded memory).
BROADCAST_LIMIT = 1 << 22
METHODS = ("rtn", "mse", "gptq")


@dataclass(frozen=True)
class GroupFormat:
    """A ``bits``-wide group format: codes in ``[0, 2^bits - 1]``, symmetric zero ``2^(bits-1)``;
    ``even_k`` where the packing puts two codes in a byte, so rows need an even length."""

    name: str
    bits: int
    even_k: bool

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1

    @property
    def sym_zero(self) -> int:
        return 1 << (self.bits - 1)


def check_weight(where: str, w: object, name: str = "w") -> torch.Tensor:
    """``w`` as float32, after checking it is a non-empty 2-D finite floating-point tensor."""
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{where}: {name}: expected a torch.Tensor, got {type(w).__name__}")
    if not w.dtype.is_floating_point:
        raise TypeError(f"{where}: {name}: expected a floating-point dtype, got {w.dtype}")
    if w.dim() != 2 or w.numel() == 0:
        raise ValueError(
            f"{where}: {name}: expected a non-empty 2-D tensor [out_features, in_features], got shape "
            f"{tuple(w.shape)}"
        )
    wf = w.detach().to(device="cpu", dtype=torch.float32)
    bad = ~torch.isfinite(wf)
    if bool(bad.any()):
        n, k = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{where}: {name}: expected finite values (float32), got {float(wf[n, k])} at [{n}, {k}]"
        )
    return wf.contiguous()


def check_even(where: str, in_features: int) -> None:
    """Nibble packing stores two codes per byte, so a row needs an even length."""
    if in_features % 2:
        raise ValueError(
            f"{where}: in_features (K): expected an even number (nibble packing), got {in_features}"
        )


def resolve_group_size(where: str, group_size: object, in_features: int) -> int:
    """The group length G: ``group_size`` itself (a positive multiple of 32), or K for -1."""
    if isinstance(group_size, bool) or not isinstance(group_size, int):
        raise TypeError(f"{where}: group_size: expected an int, got {type(group_size).__name__}")
    if group_size == -1:
        return in_features
    if group_size <= 0 or group_size % 32:
        raise ValueError(f"{where}: group_size: expected a positive multiple of 32 or -1, got {group_size}")
    return group_size


def num_groups(in_features: int, group: int) -> int:
    """``ceil(K / G)``: the last group of a row may be partial."""
    return -(-in_features // group)


def expand_groups(t: torch.Tensor, group: int, in_features: int) -> torch.Tensor:
    """``[N, ngroups]`` -> ``[N, K]``: each group's value repeated over its elements."""
    return t.repeat_interleave(group, dim=1)[:, :in_features]


def split_groups(x: torch.Tensor, group: int) -> Iterator[torch.Tensor]:
    """Views of ``x [N, K]`` as ``[N, g, L]`` blocks: the full groups, then the partial last one, so
    that reductions over a group never see padding."""
    n, k = x.shape
    full = k // group
    if full:
        yield x[:, : full * group].view(n, full, group)
    if k % group:
        yield x[:, full * group :].unsqueeze(1)


def check_codes(
    where: str, name: str, codes: object, qmax: int, shape: tuple[int, ...] | None = None
) -> None:
    """``codes`` must be a uint8 tensor (of ``shape``, when given) with values in ``[0, qmax]``."""
    if not isinstance(codes, torch.Tensor):
        raise TypeError(f"{where}: {name}: expected a torch.Tensor, got {type(codes).__name__}")
    if codes.dtype != torch.uint8:
        raise TypeError(f"{where}: {name}: expected dtype torch.uint8, got {codes.dtype}")
    if shape is not None and tuple(codes.shape) != shape:
        raise ValueError(f"{where}: {name}: expected shape {shape}, got {tuple(codes.shape)}")
    if shape is None and (codes.dim() != 2 or codes.numel() == 0):
        raise ValueError(f"{where}: {name}: expected a non-empty 2-D tensor, got shape {tuple(codes.shape)}")
    if codes.numel() and int(codes.max()) > qmax:
        raise ValueError(f"{where}: {name}: expected values in [0, {qmax}], got {int(codes.max())}")


def check_scales(where: str, name: str, t: object, shape: tuple[int, ...]) -> None:
    """``t`` must be a float32 tensor of ``shape``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{where}: {name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise TypeError(f"{where}: {name}: expected dtype torch.float32, got {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{where}: {name}: expected shape {shape}, got {tuple(t.shape)}")


def pack_nibbles(where: str, codes: object) -> torch.Tensor:
    """``codes uint8 [N, K]`` (values in [0, 15], K even) -> ``uint8 [N, K/2]``: element 2j in the low
    nibble of byte j, element 2j+1 in the high nibble."""
    check_codes(where, "codes", codes, 15)
    check_even(where, codes.shape[1])
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack_nibbles(where: str, packed: object, in_features: object) -> torch.Tensor:
    """Inverse of :func:`pack_nibbles`: ``uint8 [N, K/2]`` -> codes ``uint8 [N, K]``."""
    check_in_features(where, in_features)
    check_even(where, in_features)
    check_codes(where, "packed", packed, 255)
    expected = (packed.shape[0], in_features // 2)
    if tuple(packed.shape) != expected:
        raise ValueError(
            f"{where}: packed: expected shape [N, in_features / 2] = {list(expected)}, "
            f"got {list(packed.shape)}"
        )
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).view(packed.shape[0], in_features)


def check_in_features(where: str, in_features: object) -> None:
    """``in_features`` must be a positive int."""
    if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features <= 0:
        raise ValueError(f"{where}: in_features: expected a positive int, got {in_features!r}")


def _codes(x: torch.Tensor, d: torch.Tensor, z: torch.Tensor, qmax: int) -> torch.Tensor:
    """``clamp(round(x / d) + z, 0, qmax)`` per group (fp32, half to even); ``z`` where ``d == 0``."""
    safe = torch.where(d == 0, torch.ones_like(d), d)
    q = torch.round(x / safe.unsqueeze(-1)).add_(z.unsqueeze(-1)).clamp_(0, qmax)
    return torch.where((d == 0).unsqueeze(-1), z.unsqueeze(-1).expand_as(q), q)


def _dequant(q: torch.Tensor, d: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``(q - z) * d``: the same fp32 expression as :func:`dequantize`."""
    return (q - z.unsqueeze(-1)) * d.unsqueeze(-1)


def _sq_error(xd: torch.Tensor, q: torch.Tensor, d: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-group squared error of the fp32 dequantized values against ``xd`` (the weight in fp64)."""
    return (_dequant(q, d, z).double() - xd).square_().sum(-1)


def _largest(x: torch.Tensor) -> torch.Tensor:
    """Each group's element of largest magnitude, with its sign (the first one on ties)."""
    return x.gather(-1, x.abs().argmax(-1, keepdim=True)).squeeze(-1)


def _rtn(fmt: GroupFormat, x: torch.Tensor, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """RTN step and zero (both fp32 ``[N, g]``) of the groups ``x [N, g, L]``."""
    v = _largest(x)
    d_sym = v / -fmt.sym_zero
    z_sym = torch.full_like(v, fmt.sym_zero)
    if symmetric:
        return d_sym, z_sym
    # The range always includes 0 (as torch's asymmetric observers do): then z = -mn/d lies in
    # [0, qmax] and a group of one sign keeps both ends, instead of losing the end that a clamped
    # zero cannot reach.
    lo, hi = x.amin(-1), x.amax(-1)
    mn, mx = lo.clamp(max=0), hi.clamp(min=0)
    # Dividing each end first keeps mx - mn from overflowing when both are near the fp32 limit.
    d = mx / fmt.qmax - mn / fmt.qmax
    z = torch.round(-mn / torch.where(d == 0, torch.ones_like(d), d)).clamp_(0, fmt.qmax)
    # A constant group c != 0 takes the symmetric rule, which represents c exactly; c == 0 keeps
    # d = 0 with zero 0.
    const = lo == hi
    d = torch.where(const, d_sym, d)
    z = torch.where(const, torch.where(v == 0, torch.zeros_like(z), z_sym), z)
    return d, z


def _candidates(fmt: GroupFormat, x: torch.Tensor, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The steps and zeros (fp32 ``[R, Z, N, g]``) that the MSE search tries for the groups
    ``x [N, g, L]``: R steps, each with Z zeros (symmetric: the one zero ``sym_zero``)."""
    ratios = torch.tensor(CLIP_RATIOS).view(-1, 1, 1, 1)
    if symmetric:
        v = _largest(x)
        # The largest value at code 0 (RTN's side, which has one level more), or at code qmax.
        d = torch.cat((v * ratios / -fmt.sym_zero, v * ratios / (fmt.qmax - fmt.sym_zero)))
        return d, torch.full_like(d, fmt.sym_zero)
    # The range always covers 0, so that a group of one sign is not clipped by a zero stuck at 0 or
    # qmax; the neighbouring integer zeros let the grid move off the range's ends.
    lo = x.amin(-1).clamp(max=0) * ratios
    hi = x.amax(-1).clamp(min=0) * ratios
    d = hi / fmt.qmax - lo / fmt.qmax
    z = torch.round(-lo / torch.where(d == 0, torch.ones_like(d), d))
    z = torch.cat((z, z - 1, z + 1), dim=1).clamp_(0, fmt.qmax)
    return d.expand_as(z), z


def _refit(x: torch.Tensor, q: torch.Tensor, d: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The least-squares step for fixed codes, ``sum(x * e) / sum(e^2)`` with ``e = q - z``; ``d``
    where every ``e`` is 0."""
    e = q - z.unsqueeze(-1)
    see = e.square().sum(-1, dtype=torch.float64)
    sxe = (x * e).sum(-1, dtype=torch.float64)
    ls = (sxe / torch.where(see == 0, torch.ones_like(see), see)).float()
    return torch.where((see == 0) | ~torch.isfinite(ls), d, ls)


def _candidate_sums(
    fmt: GroupFormat, x: torch.Tensor, steps: torch.Tensor, zeros: torch.Tensor, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum(x e)`` and ``sum(e^2)`` (fp32 ``[R, Z, N, g]``) of every candidate, with
    ``e = q - z = clamp(round(x / d), -z, qmax - z)``; x / 0 (an all-zero group) gives NaN sums."""
    n, g, length = x.shape
    if steps.numel() * length <= BROADCAST_LIMIT:
        # Few values (GPTQ asks for one group at a time): every candidate in a handful of ops.
        t = torch.round(x / steps[:, :1].unsqueeze(-1))
        if symmetric:
            e = t.clamp_(-fmt.sym_zero, fmt.qmax - fmt.sym_zero)
        else:
            z = zeros.unsqueeze(-1)
            e = (t + z).clamp_(0, fmt.qmax).sub_(z)
        return (x * e).sum(-1), e.square().sum(-1)
    # Many values: one candidate at a time in preallocated buffers, with the sums written by bmm
    # straight into their slots: on few (shared) cores the number of parallel ops, not their
    # arithmetic, sets the running time.
    rows = x.view(-1, 1, length)
    t = torch.empty_like(x)
    e = t if symmetric else torch.empty_like(x)
    sxe = torch.empty((*steps.shape[:2], n * g, 1, 1))
    see = torch.empty_like(sxe)
    for i in range(steps.shape[0]):
        torch.div(x, steps[i, 0].unsqueeze(-1), out=t).round_()
        for j in range(steps.shape[1]):
            if symmetric:
                t.clamp_(-fmt.sym_zero, fmt.qmax - fmt.sym_zero)
            else:
                z = zeros[i, j].unsqueeze(-1)
                torch.add(t, z, out=e).clamp_(0, fmt.qmax).sub_(z)
            ecol = e.view(-1, length, 1)
            torch.bmm(rows, ecol, out=sxe[i, j])
            torch.bmm(e.view(-1, 1, length), ecol, out=see[i, j])
    return sxe.view(*steps.shape), see.view(*steps.shape)


def _mse(
    fmt: GroupFormat, x: torch.Tensor, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step, zero and codes minimising each group's squared error over RTN, the clip grid and a
    least-squares refit; RTN is kept unless a candidate is strictly better."""
    n, g, _ = x.shape
    x = x.contiguous()
    steps, zeros = _candidates(fmt, x, symmetric)
    sxe, see = _candidate_sums(fmt, x, steps, zeros, symmetric)
    # Ranks by the error left after a least-squares refit of the step,
    # sum x^2 - sum(x e)^2 / sum(e^2), in fp64 so that the square cannot overflow.
    score = sxe.reshape(-1, n, g).double().square_().div_(see.reshape(-1, n, g).double()).neg_()
    best = score.nan_to_num_(nan=float("inf")).argmin(0, keepdim=True)
    d_b = steps.reshape(-1, n, g).gather(0, best).squeeze(0)
    z_b = zeros.reshape(-1, n, g).gather(0, best).squeeze(0)

    d_rtn, z_rtn = _rtn(fmt, x, symmetric)
    q_rtn = _codes(x, d_rtn, z_rtn, fmt.qmax)
    q_b = _codes(x, d_b, z_b, fmt.qmax)
    d_ls = _refit(x, q_b, d_b, z_b)
    # One more round: the codes nearest to the refitted step, and their own refit.
    q_2 = _codes(x, d_ls, z_b, fmt.qmax)
    d_2 = _refit(x, q_2, d_ls, z_b)

    xd = x.double()
    errors = [
        _sq_error(xd, q, d, z) for q, d, z in ((q_rtn, d_rtn, z_rtn), (q_b, d_ls, z_b), (q_2, d_2, z_b))
    ]
    # argmin takes the first minimum, so RTN (choice 0) wins ties; a NaN error never wins.
    pick = torch.stack(errors).nan_to_num_(nan=float("inf")).argmin(0)
    d_out = torch.where(pick == 0, d_rtn, torch.where(pick == 1, d_ls, d_2))
    z_out = torch.where(pick == 0, z_rtn, z_b)
    p = pick.unsqueeze(-1)
    q_out = torch.where(p == 0, q_rtn, torch.where(p == 1, q_b, q_2))
    return d_out, z_out, q_out


def quantize(
    fmt: GroupFormat,
    where: str,
    w: object,
    group_size: object,
    symmetric: object,
    method: object,
    hessian: object = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The shared ``quantize`` of the group formats; see ``int4.quantize``."""
    wf = check_weight(where, w)
    n, k = wf.shape
    if fmt.even_k:
        check_even(where, k)
    group = resolve_group_size(where, group_size, k)
    if not isinstance(symmetric, bool):
        raise TypeError(f"{where}: symmetric: expected a bool, got {type(symmetric).__name__}")
    if method not in METHODS:
        raise ValueError(f"{where}: method: expected one of {METHODS}, got {method!r}")
    if (method == "gptq") != (hessian is not None):
        got = "None" if hessian is None else f"a hessian with method={method!r}"
        raise ValueError(
            f"{where}: hessian: expected the layer's input second moment [K, K] exactly when method is "
            f"'gptq' (see qkernels.calibrate), got {got}"
        )
    if method == "gptq":
        from . import _gptq  # here: _gptq builds on this module

        q, d, z = _gptq.quantize(fmt, where, wf, hessian, group, symmetric)
        return q.to(torch.uint8), d, None if symmetric else z.to(torch.uint8)
    codes, scales, zeros = [], [], []
    for x in split_groups(wf, group):
        if method == "rtn":
            d, z = _rtn(fmt, x, symmetric)
            q = _codes(x, d, z, fmt.qmax)
        else:
            d, z, q = _mse(fmt, x, symmetric)
        codes.append(q.reshape(n, -1))
        scales.append(d)
        zeros.append(z)
    q = torch.cat(codes, 1).to(torch.uint8)
    d = torch.cat(scales, 1).contiguous()
    return q, d, None if symmetric else torch.cat(zeros, 1).to(torch.uint8)


def dequantize(
    fmt: GroupFormat, where: str, codes: object, scales: object, zeros: object, group_size: object
) -> torch.Tensor:
    """The shared ``dequantize`` of the group formats; see ``int4.dequantize``."""
    check_codes(where, "codes", codes, fmt.qmax)
    n, k = codes.shape
    if fmt.even_k:
        check_even(where, k)
    group = resolve_group_size(where, group_size, k)
    shape = (n, num_groups(k, group))
    check_scales(where, "scales", scales, shape)
    if zeros is None:
        z = torch.full(shape, float(fmt.sym_zero))
    else:
        check_codes(where, "zeros", zeros, fmt.qmax, shape)
        z = zeros.float()
    return (codes.float() - expand_groups(z, group, k)) * expand_groups(scales, group, k)
