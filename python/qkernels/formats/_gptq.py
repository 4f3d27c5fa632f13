"""GPTQ for the group formats (int4, int3): codes chosen one input column at a time, each column's
rounding error spread over the columns not yet quantized so that the layer's *output* error on the
calibration inputs, not the weight error, is minimised (Frantar et al., 2022, "GPTQ: Accurate
Post-Training Quantization for Generative Pre-trained Transformers").

For a layer ``y = x W^T`` and calibration inputs ``X [rows, K]``, ``H = X^T X / rows`` is the
second moment of the inputs (``Calibration`` in ``qkernels.calibration`` collects it). The output
error of a weight change ``E`` is ``tr(E H E^T)``, so the error made on column ``k`` is best
compensated by moving the later columns along row ``k`` of the inverse Hessian; the upper Cholesky
factor ``U`` of ``H^-1`` gives those moves for every column in sequence.

Each group's step and zero come from the MSE search (``_groups._mse``) on the group's weights *as
compensated so far*, at the moment the group's first column is reached, so the storage is the
format's own: any kernel that runs an RTN or MSE layer runs a GPTQ one.
"""

from __future__ import annotations

import torch

from . import _groups

# Damping added to H's diagonal, as a share of its mean: the calibration rows seldom span all of K
# (H is then singular), and a little damping also stops one column's error from moving far.
DAMP = 0.01
# Columns updated together: the error of a block reaches the later columns in one matrix product.
BLOCK = 128
# Cholesky retries, each with ten times the damping, before the Hessian is rejected.
RETRIES = 4


def check_hessian(where: str, hessian: object, in_features: int) -> torch.Tensor:
    """``hessian`` as float64, after checking it is a finite ``[K, K]`` floating-point tensor with a
    non-negative diagonal."""
    if not isinstance(hessian, torch.Tensor):
        raise TypeError(f"{where}: hessian: expected a torch.Tensor, got {type(hessian).__name__}")
    if not hessian.dtype.is_floating_point:
        raise TypeError(f"{where}: hessian: expected a floating-point dtype, got {hessian.dtype}")
    if tuple(hessian.shape) != (in_features, in_features):
        raise ValueError(
            f"{where}: hessian: expected shape {(in_features, in_features)} (in_features squared), got "
            f"{tuple(hessian.shape)}"
        )
    h = hessian.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(h).all()):
        raise ValueError(f"{where}: hessian: expected finite values, got NaN or Inf")
    if bool((h.diagonal() < 0).any()):
        raise ValueError(
            f"{where}: hessian: expected a non-negative diagonal (a second moment X^T X / rows), got "
            f"{float(h.diagonal().min())}"
        )
    return h


def _inverse_factor(where: str, h: torch.Tensor) -> torch.Tensor:
    """The upper Cholesky factor of ``(H + damping)^-1``, in fp32: the damping keeps H far enough
    from singular for it, and fp64 would take longer than the rest on a few cores."""
    h = h.float()
    diag = h.diagonal()
    # An input that was always 0 in calibration: its column's error goes nowhere else.
    diag[diag == 0] = 1.0
    scale = float(diag.mean())
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    for attempt in range(RETRIES):
        lower, info = torch.linalg.cholesky_ex(h + (DAMP * 10**attempt * scale) * eye)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(lower)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return upper
    raise ValueError(
        f"{where}: hessian: expected a positive semi-definite matrix (X^T X / rows), got one that stays "
        f"indefinite with {DAMP * 10 ** (RETRIES - 1):g} x its mean diagonal added"
    )


def quantize(
    fmt: _groups.GroupFormat, where: str, w: torch.Tensor, hessian: object, group: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ codes ``uint8 [N, K]``, steps ``float32 [N, ngroups]`` and zeros ``float32 [N, ngroups]``
    of the checked float32 weight ``w`` with group length ``group``."""
    n, k = w.shape
    upper = _inverse_factor(where, check_hessian(where, hessian, k))
    pivots = upper.diagonal().tolist()
    # Column-major work (row c = input column c): the loop below reads and updates whole columns.
    work = w.T.contiguous()
    codes = torch.empty((k, n))
    steps = torch.empty((_groups.num_groups(k, group), n))
    zeros = torch.empty_like(steps)
    if group == k:
        # One group per row: its step is fixed from the whole row before any column moves, as the
        # later columns it covers are not known yet when the first is rounded.
        d, z, _ = _groups._mse(fmt, w.view(n, 1, k), symmetric)
        steps[0], zeros[0] = d[:, 0], z[:, 0]
    # A block holds whole groups, so a group's step is taken once its columns are all up to date.
    block = BLOCK if group == k else group * -(-BLOCK // group)
    for start in range(0, k, block):
        end = min(start + block, k)
        cols = work[start:end]
        errors = torch.empty_like(cols)
        for i in range(end - start):
            col = start + i
            if col % group == 0:
                g = col // group
                if group != k:
                    length = min(group, k - col)
                    d, z, _ = _groups._mse(fmt, cols[i : i + length].T.reshape(n, 1, length), symmetric)
                    steps[g], zeros[g] = d[:, 0], z[:, 0]
                d, z = steps[g], zeros[g]
                # _codes' rule, unrolled: a zero step (an all-zero group) gives the zero code.
                flat = d == 0
                safe = torch.where(flat, torch.ones_like(d), d)
                any_flat = bool(flat.any())
            q = torch.div(cols[i], safe).round_().add_(z).clamp_(0, fmt.qmax)
            if any_flat:
                q = torch.where(flat, z, q)
            codes[col] = q
            # The error against _dequant's fp32 value, (q - z) * d.
            err = torch.sub(q, z).mul_(d).neg_().add_(cols[i]).div_(pivots[col])
            cols[i:].addr_(upper[col, col:end], err, alpha=-1.0)
            errors[i] = err
        work[end:].addmm_(upper[start:end, end:].T, errors, alpha=-1.0)
    # Weights near the fp32 limit can overflow once errors are moved onto them.
    if not (bool(torch.isfinite(steps).all()) and bool(torch.isfinite(codes).all())):
        raise ValueError(
            f"{where}: w: expected weights whose GPTQ updates stay finite in fp32, got |w| up to "
            f"{float(w.abs().max()):.3g} (method='mse' has no such limit)"
        )
    return codes.T.contiguous(), steps.T.contiguous(), zeros.T.contiguous()
