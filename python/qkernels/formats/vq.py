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
import torch.nn.functional as F

GROUP_SIZE = 8
NUM_CODEBOOKS = (1, 2)
CODEBOOK_BITS = (8, 16)
# The named configurations: (num_codebooks, codebook_bits); both cost 2 bits per weight for the codes.
CONFIGS = {"2x8": (2, 8), "1x16": (1, 16)}
CODE_DTYPES = {8: torch.uint8, 16: torch.int16}
DEFAULT_ITERS = 4
DEFAULT_BEAM = 4

# Distance computations are cut in chunks of about this many fp32 scores (4 MiB): the scores of a chunk
# stay in cache between the GEMM that writes them and the reduction that reads them, and memory stays
# far below 1 GiB.
_CHUNK_SCORES = 1 << 20
# k-means runs on a seeded subsample of the groups: 256 per entry for 8-bit codebooks; for 16-bit ones
# 2 per entry (their refinement rounds then run on every group). k-means++ seeding uses the first
# _KMEANS_SEEDING points of each subsample (already in random order).
_SAMPLE_PER_ENTRY = {8: 256, 16: 2}
_KMEANS_SEEDING = 1 << 14
_KMEANS_ITERS = 10
# 16-bit codebooks: 256 cells of 256 entries; k-means on at most _CELL_CAP sample points per cell.
_CELL_CAP = 1024
# Local search over the _GRAPH_DEGREE nearest entries of an entry (found among the entries of its
# _GRAPH_CELLS nearest cells), _HOPS steps per code update.
_GRAPH_DEGREE = 32
_GRAPH_CELLS = 8
_HOPS = 3
# Ridge weight of the codebook least squares, relative to the mean weight per codebook entry: it keeps
# unused entries where they are and fixes the shift between two codebooks that their sum does not see.
_RIDGE = 1e-4
# Codebook least squares is solved jointly over all codebooks up to this many unknown vectors.
_JOINT_LSQ_MAX = 512
_FP16_MAX = 65504.0

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
            f"w: expected finite values, got {w[r, c].item()} at [{r}, {c}] ({bad.shape[0]} non-finite in total)"
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


def _chunks(total: int, per_item: int):
    step = max(1, _CHUNK_SCORES // max(1, per_item))
    for start in range(0, total, step):
        yield start, min(total, start + step)


def _augmented(cb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(aug [E, 9], norms [E])`` with ||r - c||^2 = [r, ||r||^2] . aug[c] + norms[c], so that one GEMM
    gives full squared distances (the matmul form, never an [G, E, 8] difference tensor)."""
    return torch.cat([-2 * cb, torch.ones(cb.shape[0], 1)], 1), cb.square().sum(1)


def _distances(r: torch.Tensor, aug: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    return torch.addmm(norms, torch.cat([r, r.square().sum(1, keepdim=True)], 1), aug.T)


def _packed_keys(dist: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Overwrites ``dist [g, n]`` (squared distances) with int32 keys: the float's bit pattern with its
    low ceil(log2 n) bits replaced by the column index. Non-negative floats order like their bit
    patterns, so an int32 amin (vectorised, several times faster than argmin) finds the smallest
    distance and its index at once; ties within 2^-13 relative go to either, which only the guards
    in _update_codes see. A distance that rounding made slightly negative sorts first, as ~0 should."""
    bits = (dist.shape[1] - 1).bit_length()
    iota = torch.arange(dist.shape[1], dtype=torch.int32)
    return dist.view(torch.int32).bitwise_and_(-(1 << bits)).bitwise_or_(iota), (1 << bits) - 1


def _argmin(dist: torch.Tensor) -> torch.Tensor:
    keys, low = _packed_keys(dist)
    return keys.amin(1).bitwise_and_(low).long()


def _smallest(dist: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices ``[g, k]`` of the k smallest distances of each row, best first."""
    keys, low = _packed_keys(dist)
    out = torch.empty(dist.shape[0], k, dtype=torch.int64)
    for i in range(k):
        out[:, i] = keys.amin(1).bitwise_and_(low)
        keys.scatter_(1, out[:, i : i + 1], torch.iinfo(torch.int32).max)
    return out


def _nearest(x: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    """Index of the nearest entry of ``cb [E, 8]`` for each row of ``x [G, 8]`` (exhaustive, chunked)."""
    return _nearest_batched(x.unsqueeze(0), cb.unsqueeze(0))[0]


def _nearest_batched(data: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``[C, P]``: for each of C independent problems, the nearest of ``centers [C, k, 8]`` to each
    point of ``data [C, P, 8]``."""
    c, p, _ = data.shape
    k = centers.shape[1]
    aug = torch.cat([-2 * centers, torch.ones(c, k, 1)], 2).transpose(1, 2)
    norms = centers.square().sum(2).unsqueeze(1)
    daug = torch.cat([data, data.square().sum(2, keepdim=True)], 2)
    out = torch.empty(c, p, dtype=torch.int64)
    cstep = max(1, _CHUNK_SCORES // max(1, p * k))
    for c0 in range(0, c, cstep):
        c1 = min(c, c0 + cstep)
        for p0, p1 in _chunks(p, k * (c1 - c0)):
            d = torch.baddbmm(norms[c0:c1], daug[c0:c1, p0:p1], aug[c0:c1])
            out[c0:c1, p0:p1] = _argmin(d.view(-1, k)).view(c1 - c0, p1 - p0)
    return out


def _kmeans(data: torch.Tensor, weight: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """C independent weighted k-means ``[C, k, 8]`` of ``data [C, P, 8]`` (random subsamples; weight 0
    marks padding): k-means++ seeding on the first points, then Lloyd iterations. An entry that
    loses all its points stays where it is."""
    c, p, dim = data.shape
    rows = torch.arange(c)
    seed_x, seed_w = data[:, :_KMEANS_SEEDING], weight[:, :_KMEANS_SEEDING]
    centers = torch.empty(c, k, dim)
    d2 = torch.full(seed_w.shape, float("inf"))
    for i in range(k):
        # Sample with probability ~ weight * distance^2 (k-means++) by inverting the cumulative sum. When
        # nothing is left to sample (fewer distinct points than entries) this repeats the last point.
        cum = torch.cumsum(seed_w if i == 0 else seed_w * d2, 1, dtype=torch.float64)
        u = torch.rand(c, 1, generator=gen, dtype=torch.float64) * cum[:, -1:]
        j = (cum <= u).sum(1).clamp_max(seed_w.shape[1] - 1)
        centers[:, i] = seed_x[rows, j]
        d2 = torch.minimum(d2, (seed_x - centers[:, i : i + 1]).square().sum(2))
    wx = (data * weight.unsqueeze(2)).view(-1, dim)
    flat_w = weight.reshape(-1)
    for _ in range(_KMEANS_ITERS):
        flat = (_nearest_batched(data, centers) + rows.unsqueeze(1) * k).view(-1)
        wsum = torch.zeros(c * k).index_add_(0, flat, flat_w).unsqueeze(1)
        sums = torch.zeros(c * k, dim).index_add_(0, flat, wx)
        centers = torch.where(wsum > 0, sums / wsum.clamp_min(1e-30), centers.view(-1, dim)).view(c, k, dim)
    return centers


def _fp16(cb: torch.Tensor) -> torch.Tensor:
    """Rounds to the stored precision, so that every later step sees what the kernels will read."""
    return cb.clamp(-_FP16_MAX, _FP16_MAX).half().float()


def _decode(cbs: list[torch.Tensor], codes: torch.Tensor, skip: int = -1) -> torch.Tensor:
    """Sum over codebooks (except ``skip``) of the entries that ``codes [G, Mc]`` pick, in fp32."""
    out = torch.zeros(codes.shape[0], GROUP_SIZE)
    for c, cb in enumerate(cbs):
        if c != skip:
            out += cb[codes[:, c]]
    return out


def _group_errors(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (x - v).square().sum(1)


def _beam_search(x: torch.Tensor, cbs: list[torch.Tensor], codes: torch.Tensor, beam: int, first: int):
    """New codes for two 256-entry codebooks (the beam search of AQLM, in a compact form): codebook
    ``first`` is re-chosen keeping its ``beam`` best entries given the other code, then the other
    codebook is chosen exhaustively for each of them and the best pair wins. The current pair is
    among the candidates, so no group's error grows (beam = 1 is coordinate descent)."""
    last = 1 - first
    (aug_a, norms_a), (aug_b, norms_b) = _augmented(cbs[first]), _augmented(cbs[last])
    ca, entries = cbs[first], cbs[last].shape[0]
    out = torch.empty_like(codes)
    for s, e in _chunks(x.shape[0], beam * entries):
        xs = x[s:e]
        top = _smallest(_distances(xs - cbs[last][codes[s:e, last]], aug_a, norms_a), beam)
        r = (xs.unsqueeze(1) - ca[top]).view(-1, GROUP_SIZE)  # [g * beam, 8]: what `last` has to fit
        best = _argmin(_distances(r, aug_b, norms_b).view(e - s, -1))
        out[s:e, first] = top.gather(1, torch.div(best, entries, rounding_mode="floor").unsqueeze(1)).squeeze(
            1
        )
        out[s:e, last] = best % entries
    return out


def _local_search(x: torch.Tensor, cbs: list[torch.Tensor], codes: torch.Tensor) -> torch.Tensor:
    """New codes for 16-bit codebooks, one codebook at a time: each code moves to the nearest of its
    graph neighbours (itself included) for what the other codebooks leave, ``_HOPS`` times. An
    exhaustive search over 65536 entries would cost ~250 GFLOP per 4096x4096 layer."""
    codes = codes.clone()
    for c, cb in enumerate(cbs):
        graph = _Graph(cb)
        target = x - _decode(cbs, codes, skip=c)
        for _ in range(_HOPS):
            graph.add_rows(codes[:, c])
            for s, e in _chunks(x.shape[0], _GRAPH_DEGREE * GROUP_SIZE):
                cur = codes[s:e, c]
                vecs = F.embedding(cur, graph.vecs).view(e - s, _GRAPH_DEGREE, GROUP_SIZE)
                norms = graph.norms.index_select(0, cur).unsqueeze(2)
                dist = torch.baddbmm(norms, vecs, target[s:e].unsqueeze(2), alpha=-2).squeeze(2)
                codes[s:e, c] = graph.rows.index_select(0, cur).gather(1, dist.argmin(1, keepdim=True)).squeeze(1)
    return codes


def _update_codes(x, cbs, codes, beam, first):
    """One code update, guarded: a group keeps its codes unless the new ones have a smaller error
    (exactly computed), so fp32 rounding in the search can never make the error grow."""
    if cbs[0].shape[0] == 1 << 16:
        new = _local_search(x, cbs, codes)
    elif len(cbs) == 1:
        new = _nearest(x, cbs[0]).unsqueeze(1)
    else:
        new = _beam_search(x, cbs, codes, min(beam, cbs[0].shape[0]), first)
    keep = _group_errors(x, _decode(cbs, new)) >= _group_errors(x, _decode(cbs, codes))
    return torch.where(keep.unsqueeze(1), codes, new)


def _lsq_codebooks(x, weight, codes, cbs):
    """Codebooks minimising sum_g weight_g ||x_g - sum_c cb_c[codes_gc]||^2 for fixed codes, plus a
    small ridge towards the current codebooks; rounded to fp16. Jointly (normal equations in fp64)
    when small, else one codebook at a time given the others (exact for one codebook)."""
    mc, entries = len(cbs), cbs[0].shape[0]
    lam = max(_RIDGE * float(weight.sum()) / entries, 1e-30)
    w64 = weight.double()
    if mc * entries <= _JOINT_LSQ_MAX:
        n = mc * entries
        flat = codes + torch.arange(mc) * entries  # [G, Mc]: rows of the stacked unknowns
        pairs = (flat.unsqueeze(2) * n + flat.unsqueeze(1)).flatten()
        gram = torch.bincount(pairs, weights=w64.repeat_interleave(mc * mc), minlength=n * n).view(n, n)
        rhs = torch.zeros(n, GROUP_SIZE, dtype=torch.float64)
        rhs.index_add_(0, flat.flatten(), (x.double() * w64.unsqueeze(1)).repeat_interleave(mc, 0))
        eye = torch.eye(n, dtype=torch.float64)
        sol = torch.linalg.solve(gram + lam * eye, rhs + lam * torch.cat(cbs).double())
        return [_fp16(part.float()) for part in sol.split(entries)]
    cbs = list(cbs)
    for c in range(mc):
        target = (x - _decode(cbs, codes, skip=c)).double() * w64.unsqueeze(1)
        wsum = torch.zeros(entries, dtype=torch.float64).index_add_(0, codes[:, c], w64)
        sums = torch.zeros(entries, GROUP_SIZE, dtype=torch.float64).index_add_(0, codes[:, c], target)
        cbs[c] = _fp16(((sums + lam * cbs[c].double()) / (wsum + lam).unsqueeze(1)).float())
    return cbs


def _neighbours(cb: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` nearest entries ``[E, k]`` of each entry of a small codebook, itself first."""
    d = torch.cdist(cb, cb)
    d.fill_diagonal_(-1.0)
    return d.topk(k, dim=1, largest=False).indices


class _Graph:
    """Neighbour lists of a 16-bit codebook's entries: an entry's row holds itself and its nearest
    other entries among those of the _GRAPH_CELLS cells (blocks of 256 entries) whose means are
    nearest to its cell's. Rows are computed on demand for the entries that codes use, so a small
    layer does not pay for all 65536; each row's vectors are stored contiguously, so a group gathers
    one 1 KiB row instead of 32 scattered vectors."""

    def __init__(self, cb: torch.Tensor):
        self.cb = cb
        cell_means = cb.view(256, 256, GROUP_SIZE).mean(1)
        near = _neighbours(cell_means, _GRAPH_CELLS)  # [256, t], own cell first
        self.cand = (near.unsqueeze(2) * 256 + torch.arange(256)).view(256, -1)  # [256, t * 256]
        aug, self.entry_norms = _augmented(cb)
        self.cand_aug = aug[self.cand].transpose(1, 2)  # [256, 9, t * 256]
        self.rows = torch.empty(cb.shape[0], _GRAPH_DEGREE, dtype=torch.int64)
        self.vecs = torch.empty(cb.shape[0], _GRAPH_DEGREE * GROUP_SIZE)
        self.norms = torch.empty(cb.shape[0], _GRAPH_DEGREE)
        self.done = torch.zeros(cb.shape[0], dtype=torch.bool)

    def add_rows(self, codes: torch.Tensor) -> None:
        need = torch.unique(codes[~self.done[codes]])  # sorted, so grouped by cell
        counts = torch.bincount(need // 256, minlength=256).tolist()
        start = 0
        for cell, n in enumerate(counts):
            if n == 0:
                continue
            ent = need[start : start + n]
            start += n
            cand = self.cand[cell]
            x = self.cb[ent]
            xa = torch.cat([x, x.square().sum(1, keepdim=True)], 1)
            d = torch.addmm(self.entry_norms[cand], xa, self.cand_aug[cell])
            d[torch.arange(n), ent % 256] = -1.0  # the entry itself first (its cell leads `cand`)
            top = cand[d.topk(_GRAPH_DEGREE, dim=1, largest=False).indices]
            self.rows[ent] = top
            self.vecs[ent] = F.embedding(top, self.cb).view(n, -1)
            self.norms[ent] = self.entry_norms[top]
        self.done[need] = True


def _by_cell(x: torch.Tensor, w: torch.Tensor, cell: torch.Tensor, cap: int) -> tuple[torch.Tensor, ...]:
    """The points of each of 256 cells as ``[256, cap, 8]`` (at most ``cap``, zero-weight padding)."""
    order = torch.argsort(cell, stable=True)
    cs = cell[order]
    start = torch.cumsum(torch.bincount(cs, minlength=256), 0) - torch.bincount(cs, minlength=256)
    pos = torch.arange(cs.numel()) - start[cs]
    keep = pos < cap
    data, wts = torch.zeros(256, cap, x.shape[1]), torch.zeros(256, cap)
    data[cs[keep], pos[keep]] = x[order[keep]]
    wts[cs[keep], pos[keep]] = w[order[keep]]
    return data, wts


def _init_codebook(resid, weight, gen, bits):
    """One codebook ``[2^bits, 8]`` for ``resid [G, 8]`` and its codes ``[G]``.

    8 bits: weighted k-means on a subsample, codes by exhaustive search. 16 bits: k-means with 65536
    entries costs far too much on a CPU, so it is built in two levels: 256 cells by k-means, then 256
    entries per cell by k-means of the cell's sample points (entry 256 i + j is cell i's j-th);
    a group's code is the nearest entry of its nearest cell."""
    live = (weight > 0).nonzero().squeeze(1)  # all-zero rows would only pull entries towards 0
    count = min(live.numel(), _SAMPLE_PER_ENTRY[bits] << bits)
    sample = live[torch.randperm(live.numel(), generator=gen)[:count]]
    xs, ws = resid[sample], weight[sample]
    coarse = _kmeans(xs.unsqueeze(0), ws.unsqueeze(0), 256, gen)[0]
    if bits == 8:
        cb = _fp16(coarse)
        return cb, _nearest(resid, cb)
    cell = _nearest(xs, coarse)
    cap = min(_CELL_CAP, int(torch.bincount(cell, minlength=256).max()))
    data, wts = _by_cell(xs - coarse[cell], ws, cell, cap)
    cb = _fp16((coarse.unsqueeze(1) + _kmeans(data, wts, 256, gen)).view(-1, GROUP_SIZE))
    cell = _nearest(resid, coarse)
    order = torch.argsort(cell, stable=True)
    ends = torch.cumsum(torch.bincount(cell, minlength=256), 0).tolist()
    codes = torch.empty_like(cell)
    for i, (s, e) in enumerate(zip([0, *ends[:-1]], ends)):
        if s == e:
            continue
        rows = order[s:e]
        codes[rows] = 256 * i + _nearest(resid[rows], cb[256 * i : 256 * (i + 1)])
    return cb, codes


class _Rows:
    """The weight in the units the search works in: groups ``x = w / scale`` (0 where the scale is 0)
    and the loss weight (scale / unit)^2 of each row, unit being the largest initial scale (so that
    squares neither overflow nor underflow for huge or tiny weights)."""

    def __init__(self, wf: torch.Tensor, scales: torch.Tensor, unit: float):
        self.wf, self.scales, self.unit = wf, scales, unit
        s = scales.unsqueeze(1)
        self.x = torch.where(s > 0, wf / torch.where(s > 0, s, 1.0), 0.0).view(-1, GROUP_SIZE)
        self.row_w = (scales / unit).square()

    @property
    def group_w(self) -> torch.Tensor:
        return self.row_w.repeat_interleave(self.wf.shape[1] // GROUP_SIZE)

    def row_errors(self, v: torch.Tensor) -> torch.Tensor:
        """Weighted squared error per row, summed per group first (as the code guard compares)."""
        return self.row_w * _group_errors(self.x, v).view(self.wf.shape[0], -1).sum(1)

    def refit(self, v: torch.Tensor) -> _Rows:
        """Per-row least-squares scales for the decoded groups ``v``, kept where the row error drops."""
        n = self.wf.shape[0]
        xv = (self.x * v).view(n, -1).sum(1)
        vv = v.square().view(n, -1).sum(1)
        alpha = xv / torch.where(vv > 0, vv, 1.0)
        ok = (vv > 0) & (alpha > 0) & torch.isfinite(alpha)
        new = _Rows(self.wf, torch.where(ok, self.scales * alpha, self.scales), self.unit)
        better = ok & (new.row_errors(v) <= self.row_errors(v))
        return _Rows(self.wf, torch.where(better, new.scales, self.scales), self.unit)


def quantize(
    w: torch.Tensor,
    num_codebooks: int = 2,
    codebook_bits: int = 8,
    group_size: int = GROUP_SIZE,
    seed: int = 0,
    iters: int = DEFAULT_ITERS,
    beam: int = DEFAULT_BEAM,
    progress: Progress = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantizes ``w [N, K]`` (K a multiple of 8) to ``(codes, codebooks float16 [Mc, 2^B, 8],
    scales float32 [N])``, codes uint8 (B = 8) or int16 (B = 16) ``[N, K/8, Mc]``.

    Minimises ||w - dequantize(...)||^2. Scales start at each row's RMS; each codebook starts from a
    weighted k-means (k-means++ seeding on a seeded subsample) of what the codebooks before it leave.
    Then ``iters`` rounds of: least-squares codebook update (rounded to fp16), code update, per-row
    scale refit. Codes: beam search with ``beam`` hypotheses for two 8-bit codebooks, exhaustive for
    one, local search over neighbouring entries for 16-bit codebooks. Every step is guarded so the
    error never grows; the last steps are a code update and a scale fit against the fp16 codebooks,
    so dequantize() of the result is exactly what was optimised. Deterministic for a given ``seed``
    and thread count.

    ``progress``: None/False; True for a tqdm bar over the rounds; a tqdm bar to advance; or a callable
    ``progress(round, iters, relative_error)``, called after the initialisation (round 0) and after
    every round, with relative_error = ||w - w_hat||^2 / ||w||^2.
    """
    _check_config(num_codebooks, codebook_bits, group_size)
    _check_weight(w)
    _check_int("seed", seed, 0)
    _check_int("iters", iters, 0)
    _check_int("beam", beam, 1)
    report, close = _progress(progress, iters)
    n, k = w.shape
    mc, entries = num_codebooks, 1 << codebook_bits
    wf = w.detach().to("cpu", torch.float32)
    # Row RMS without overflow or underflow: absmax * rms(w / absmax).
    absmax = wf.abs().amax(1)
    safe = torch.where(absmax > 0, absmax, 1.0).unsqueeze(1)
    scales = absmax * (wf / safe).square().mean(1).sqrt()
    unit = float(scales.max())
    if unit == 0.0:  # all-zero weight: zero scales reproduce it with any codes and codebooks
        report(0, 0.0)
        close()
        codes = torch.zeros(n, k // GROUP_SIZE, mc, dtype=torch.int64)
        cbs = torch.zeros(mc, entries, GROUP_SIZE, dtype=torch.float16)
        return codes_from_indices(codes, codebook_bits), cbs, scales

    rows = _Rows(wf, scales, unit)
    total = float((rows.row_w * rows.x.square().view(n, -1).sum(1)).sum())
    gen = torch.Generator().manual_seed(seed)
    cbs, parts = [], []
    resid = rows.x
    for _ in range(mc):
        cb, idx = _init_codebook(resid, rows.group_w, gen, codebook_bits)
        cbs.append(cb)
        parts.append(idx)
        resid = resid - cb[idx]
    codes = torch.stack(parts, 1)
    if mc == 2 or codebook_bits == 16:
        codes = _update_codes(rows.x, cbs, codes, beam, 0)
    v = _decode(cbs, codes)
    rows = rows.refit(v)
    loss = float(rows.row_errors(v).sum())
    report(0, loss / total)
    for t in range(iters):
        new_cbs = _lsq_codebooks(rows.x, rows.group_w, codes, cbs)
        if float(rows.row_errors(_decode(new_cbs, codes)).sum()) <= loss:
            cbs = new_cbs
        codes = _update_codes(rows.x, cbs, codes, beam, t % 2)
        v = _decode(cbs, codes)
        rows = rows.refit(v)
        loss = float(rows.row_errors(v).sum())
        report(t + 1, loss / total)
    close()
    codes = codes.view(n, k // GROUP_SIZE, mc)
    return codes_from_indices(codes, codebook_bits), torch.stack(cbs).half(), rows.scales


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
