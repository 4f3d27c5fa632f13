"""vq: additive codebooks over groups of 8 weights (AQLM style). Spec in docs/formats.md.

A weight ``[N, K]`` is cut into groups of 8 consecutive weights along K. Each group is the sum of one
entry from each of ``Mc`` codebooks of ``2^B`` vectors, times a per-row scale:

    codes      uint8 [N, K/8, Mc] (B = 8), or int16 [N, K/8, Mc] holding the uint16 bit pattern (B = 16)
    codebooks  float16 [Mc, 2^B, 8]
    scales     float32 [N]
    w[n, 8j + i] = scales[n] * sum_c float(codebooks[c, codes[n, j, c], i])

The sum runs over c = 0, 1 in fp32 and is then multiplied by the scale in fp32.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from . import _vq_fit

GROUP_SIZE = 8
NUM_CODEBOOKS = (1, 2)
CODEBOOK_BITS = (8, 16)
# The named configurations: (num_codebooks, codebook_bits); both cost 2 bits per weight for the codes.
CONFIGS = {"2x8": (2, 8), "1x16": (1, 16)}
CODE_DTYPES = {8: torch.uint8, 16: torch.int16}
# Refinement rounds by codebook bits. Measured on N(0, 1) 4096x4096: 2x8 gains 0.02 dB from a third
# round, 1x16 0.08 dB (its rounds are Lloyd iterations over 65536 entries).
DEFAULT_ITERS = {8: 2, 16: 3}
DEFAULT_BEAM = 4

Progress = bool | Callable[[int, int, float], object] | None


def _check_config(num_codebooks: object, codebook_bits: object, group_size: object) -> None:
    if type(group_size) is not int or group_size != GROUP_SIZE:
        raise ValueError(f"group_size: expected {GROUP_SIZE}, got {group_size!r}")
    if type(num_codebooks) is not int or num_codebooks not in NUM_CODEBOOKS:
        raise ValueError(f"num_codebooks: expected 1 or 2, got {num_codebooks!r}")
    if type(codebook_bits) is not int or codebook_bits not in CODEBOOK_BITS:
        raise ValueError(f"codebook_bits: expected 8 or 16, got {codebook_bits!r}")


def _check_int(name: str, value: object, minimum: int) -> None:
    if type(value) is not int or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")


def _check_weight(w: object) -> None:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w: expected a torch.Tensor, got {type(w).__name__}")
    if not w.dtype.is_floating_point:
        raise TypeError(f"w: expected a floating dtype, got {w.dtype}")
    if w.dim() != 2 or w.shape[0] < 1:
        raise ValueError(f"w: expected a 2-D [out_features >= 1, in_features] tensor, got {tuple(w.shape)}")
    k = w.shape[1]
    if k < GROUP_SIZE or k % GROUP_SIZE:
        raise ValueError(f"w: expected in_features (K) a positive multiple of {GROUP_SIZE}, got K={k}")
    bad = (~torch.isfinite(w)).nonzero()
    if bad.numel():
        r, c = (int(v) for v in bad[0])
        raise ValueError(
            f"w: expected finite values, got {w[r, c].item()} at [{r}, {c}] "
            f"({bad.shape[0]} non-finite in total)"
        )


def code_indices(codes: torch.Tensor) -> torch.Tensor:
    """The codebook indices that ``codes`` (uint8, or int16 holding the uint16 bit pattern) stand for,
    as int64 of the same shape: ``codes & 0xFF`` or ``codes & 0xFFFF``."""
    if not isinstance(codes, torch.Tensor):
        raise TypeError(f"codes: expected a torch.Tensor, got {type(codes).__name__}")
    if codes.dtype == torch.uint8:
        return codes.long()
    if codes.dtype == torch.int16:
        return codes.long() & 0xFFFF
    raise TypeError(f"codes: expected uint8 (8-bit codebooks) or int16 (16-bit codebooks), got {codes.dtype}")


def codes_from_indices(indices: torch.Tensor, codebook_bits: int) -> torch.Tensor:
    """Stores codebook indices in ``[0, 2^codebook_bits)`` as codes: uint8 for 8 bits, int16 holding
    the uint16 bit pattern for 16 bits (index 40000 is stored as 40000 - 65536 = -25536)."""
    if codebook_bits not in CODEBOOK_BITS or type(codebook_bits) is not int:
        raise ValueError(f"codebook_bits: expected 8 or 16, got {codebook_bits!r}")
    if not isinstance(indices, torch.Tensor):
        raise TypeError(f"indices: expected a torch.Tensor, got {type(indices).__name__}")
    if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise TypeError(f"indices: expected an integer dtype, got {indices.dtype}")
    top = (1 << codebook_bits) - 1
    if indices.numel():
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi > top:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"indices: expected values in [0, {top}] for {codebook_bits}-bit codes, got {bad}"
            )
    idx = indices.long()
    if codebook_bits == 8:
        return idx.to(torch.uint8)
    return torch.where(idx >= 1 << 15, idx - (1 << 16), idx).to(torch.int16)


def _check_stored(codes: object, codebooks: object, scales: object) -> None:
    for name, t in (("codes", codes), ("codebooks", codebooks), ("scales", scales)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if codes.dtype not in (torch.uint8, torch.int16):
        raise TypeError(
            f"codes: expected uint8 (8-bit codebooks) or int16 (16-bit codebooks), got {codes.dtype}"
        )
    if codes.dim() != 3 or codes.shape[2] not in NUM_CODEBOOKS:
        raise ValueError(f"codes: expected [N, K/8, num_codebooks in (1, 2)], got {tuple(codes.shape)}")
    if codebooks.dtype != torch.float16:
        raise TypeError(f"codebooks: expected float16, got {codebooks.dtype}")
    entries = 1 << (8 if codes.dtype == torch.uint8 else 16)
    want = (codes.shape[2], entries, GROUP_SIZE)
    if tuple(codebooks.shape) != want:
        raise ValueError(
            f"codebooks: expected shape {want} for {codes.dtype} codes of shape {tuple(codes.shape)}, "
            f"got {tuple(codebooks.shape)}"
        )
    if scales.dtype != torch.float32:
        raise TypeError(f"scales: expected float32, got {scales.dtype}")
    if tuple(scales.shape) != (codes.shape[0],):
        raise ValueError(f"scales: expected shape ({codes.shape[0]},), got {tuple(scales.shape)}")
    devices = {codes.device, codebooks.device, scales.device}
    if len(devices) != 1:
        raise ValueError(f"codes, codebooks, scales: expected one device, got {sorted(map(str, devices))}")


def dequantize(codes: torch.Tensor, codebooks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The float32 weight ``[N, K]`` that the stored tensors stand for (module docstring formula)."""
    _check_stored(codes, codebooks, scales)
    idx = code_indices(codes)
    cb = codebooks.float()
    groups = cb[0][idx[..., 0]]
    for c in range(1, codes.shape[2]):
        groups = groups + cb[c][idx[..., c]]
    return groups.reshape(codes.shape[0], -1) * scales.unsqueeze(1)


def quantize(
    w: torch.Tensor,
    num_codebooks: int = 2,
    codebook_bits: int = 8,
    group_size: int = GROUP_SIZE,
    seed: int = 0,
    iters: int | None = None,
    beam: int = DEFAULT_BEAM,
    progress: Progress = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantizes ``w [N, K]`` (K a multiple of 8) to ``(codes, codebooks float16 [Mc, 2^B, 8],
    scales float32 [N])``, codes uint8 (B = 8) or int16 (B = 16) ``[N, K/8, Mc]``.

    Minimises ||w - dequantize(...)||^2 (docs/formats.md#vq has the details). Scales start at each
    row's RMS; each codebook starts from a weighted k-means (k-means++ seeding on a seeded subsample)
    of what the codebooks before it leave. Then ``iters`` rounds (None: DEFAULT_ITERS[codebook_bits])
    of least-squares codebook update (rounded to fp16), code update and per-row scale refit. Codes:
    beam search with ``beam`` hypotheses for two 8-bit codebooks, exhaustive for one, local search
    over neighbouring entries for 16-bit codebooks. No step increases the error, and the last ones
    are a code update and a scale fit against the fp16 codebooks, so dequantize() of the result is
    exactly what was optimised. Deterministic for a given ``seed``, whatever the thread count. Runs
    on the CPU.

    ``progress``: None/False; True for a tqdm bar over the rounds; a tqdm bar to advance; or a callable
    ``progress(round, iters, relative_error)``, called after the initialisation (round 0) and after
    every round, with relative_error = ||w - w_hat||^2 / ||w||^2.
    """
    _check_config(num_codebooks, codebook_bits, group_size)
    _check_weight(w)
    _check_int("seed", seed, 0)
    if iters is None:
        iters = DEFAULT_ITERS[codebook_bits]
    _check_int("iters", iters, 0)
    _check_int("beam", beam, 1)
    report, close = _progress(progress, iters)
    try:
        wf = w.detach().to("cpu", torch.float32)
        codes, codebooks, scales = _vq_fit.fit(wf, num_codebooks, codebook_bits, seed, iters, beam, report)
    finally:
        close()
    return codes_from_indices(codes, codebook_bits), codebooks, scales


def _progress(progress: object, iters: int):
    """``(report(round, relative_error), close())`` for the accepted forms of ``progress``."""
    if progress is None or progress is False:
        return (lambda t, err: None), (lambda: None)
    if callable(progress) and not hasattr(progress, "update"):
        return (lambda t, err: progress(t, iters, err)), (lambda: None)
    if progress is True:
        from tqdm.auto import tqdm

        bar, owned = tqdm(total=iters, desc="vq rounds", leave=False), True
    elif hasattr(progress, "update") and hasattr(progress, "set_postfix"):
        bar, owned = progress, False
    else:
        raise TypeError(f"progress: expected None, a bool, a tqdm bar or a callable, got {progress!r}")

    def report(t: int, err: float) -> None:
        if t:
            bar.update(1)
        bar.set_postfix(sqnr_db=round(-10 * math.log10(err), 2) if err > 0 else math.inf)

    return report, (bar.close if owned else lambda: None)
