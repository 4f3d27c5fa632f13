"""The vq quantizer (formats/vq.py holds the format and the public API; docs/formats.md#vq the prose).

Minimises ||W - scales * decode(codes, codebooks)||^2 over codes, codebooks and per-row scales:
k-means initialisation, then rounds of least-squares codebook update, code search (AQLM's beam search
for two 8-bit codebooks, local search over a neighbour graph for 16-bit ones) and scale refit.

All searches run in the matmul form ||x||^2 - 2 x.c + ||c||^2, chunked so that a chunk's scores stay in
cache and memory stays far below 1 GiB.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

GROUP = 8
# About this many fp32 scores per chunk (2 MiB): the GEMM that writes them and the reductions that
# read them meet in cache (a beam-search pass on the 2-core development machine was fastest at 2^19
# among 2^18 .. 2^24, 10-20% ahead of 2^20; smaller chunks pay more per-op overhead).
_CHUNK_SCORES = 1 << 19
# k-means runs on a seeded subsample: 256 groups per entry of an 8-bit codebook; 2 per entry of a
# 16-bit one (the refinement rounds then use every group). Its k-means++ seeding uses the first
# _KMEANS_SEEDING points (the subsample is in random order) and picks _SEEDS_PER_STEP centres per step.
_SAMPLE_PER_ENTRY = {8: 256, 16: 2}
_KMEANS_SEEDING = 1 << 14
_SEEDS_PER_STEP = 16
_KMEANS_ITERS = 10
# 16-bit codebooks are 256 cells of 256 entries; the second k-means level sees at most _CELL_CAP
# sample points per cell.
_CELL_CAP = 1024
# Local search: each entry's _GRAPH_DEGREE nearest entries, searched among the entries of the
# _GRAPH_CELLS cells nearest to its own; _HOPS moves per code update. A sweep on N(0, 1) 2048x2048
# (3 rounds): degree 32 / 8 cells / 3 hops 11.75 dB; 32/4/3 11.68; 24/4/2 11.66; 48/8/3 11.78 at
# 1.25x the time; an exhaustive reassignment would still move 11% of the codes, +0.15 dB.
_GRAPH_DEGREE = 32
_GRAPH_CELLS = 8
_HOPS = 3
# Ridge weight of the codebook least squares, relative to the mean weight per entry: it keeps unused
# entries where they are and fixes the shift between two codebooks that their sum does not see.
_RIDGE = 1e-4
# Codebook least squares is solved jointly over all codebooks up to this many unknown vectors.
_JOINT_LSQ_MAX = 512
_FP16_MAX = 65504.0


class Workers:
    """Runs the independent chunks of a pass on a few Python threads.

    torch's own intra-op threads synchronise at the end of every op; on a shared 2-core machine a
    descheduled thread stalls each of the thousands of small ops of a pass (measured: a beam-search pass
    took 75 s with 2 torch threads against 2.6 s with 1). ``single_threaded()`` makes every op run on
    its calling thread and the chunks are spread over threads instead, which only meet at the end of a
    pass. Results do not depend on the number of threads: chunks are fixed by the data size."""

    def __init__(self, pool: ThreadPoolExecutor | None):
        self.pool = pool
        self._local = threading.local()

    @staticmethod
    @contextlib.contextmanager
    def single_threaded():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(threads) if threads > 1 else contextlib.nullcontext() as pool:
                yield Workers(pool)
        finally:
            torch.set_num_threads(threads)

    def run(self, fn: Callable[..., None], tasks: Iterable[tuple[int, ...]]) -> None:
        tasks = list(tasks)
        if self.pool is None or len(tasks) < 2:
            for task in tasks:
                fn(*task)
        else:
            for _ in self.pool.map(lambda task: fn(*task), tasks):
                pass

    def scratch(self, slot: int, *shape: int) -> torch.Tensor:
        """A float32 buffer of ``shape``, reused by the calling thread. Allocating a few MiB per chunk
        costs page faults that serialise the threads (measured: 1.05x on 2 threads with fresh
        outputs, 1.8x with reused ones)."""
        bufs = self._local.__dict__.setdefault("bufs", {})
        numel = math.prod(shape)
        if slot not in bufs or bufs[slot].numel() < numel:
            bufs[slot] = torch.empty(numel)
        return bufs[slot][:numel].view(shape)


def _chunks(total: int, per_item: int) -> list[tuple[int, int]]:
    step = max(1, _CHUNK_SCORES // max(1, per_item))
    return [(s, min(total, s + step)) for s in range(0, total, step)]


def _augmented(cb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(aug [E, 9], norms [E])`` with ||r - c||^2 = [r, ||r||^2] . aug[c] + norms[c]: one GEMM gives
    full squared distances."""
    return torch.cat([-2 * cb, torch.ones(cb.shape[0], 1)], 1), cb.square().sum(1)


def _with_norm(r: torch.Tensor) -> torch.Tensor:
    return torch.cat([r, r.square().sum(-1, keepdim=True)], -1)


def _distances(r: torch.Tensor, aug: torch.Tensor, norms: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return torch.addmm(norms, _with_norm(r), aug.T, out=out)


def _packed_keys(dist: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Overwrites ``dist [g, n]`` (squared distances) with int32 keys: the float's bit pattern with its
    low ceil(log2 n) bits replaced by the column index. Non-negative floats order like their bit
    patterns, so an int32 amin (vectorised; several times faster than argmin) finds the smallest
    distance and its index at once. Distances within 2^-13 relative of each other tie (the guard in
    update_codes keeps the search from ever increasing an error); one that rounding made slightly
    negative sorts first, as the ~0 it is should."""
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


def nearest(x: torch.Tensor, cb: torch.Tensor, workers: Workers) -> torch.Tensor:
    """Index of the nearest entry of ``cb [E, 8]`` for each row of ``x [G, 8]`` (exhaustive)."""
    return _nearest_batched(x.unsqueeze(0), cb.unsqueeze(0), workers)[0]


def _nearest_batched(data: torch.Tensor, centers: torch.Tensor, workers: Workers) -> torch.Tensor:
    """``[C, P]``: for each of C independent problems, the nearest of ``centers [C, k, 8]`` to each
    point of ``data [C, P, 8]``."""
    c, p, _ = data.shape
    k = centers.shape[1]
    aug = torch.cat([-2 * centers, torch.ones(c, k, 1)], 2).transpose(1, 2)
    norms = centers.square().sum(2).unsqueeze(1)
    daug = _with_norm(data)
    out = torch.empty(c, p, dtype=torch.int64)

    def chunk(c0: int, c1: int, p0: int, p1: int) -> None:
        d = workers.scratch(0, c1 - c0, p1 - p0, k)
        torch.baddbmm(norms[c0:c1], daug[c0:c1, p0:p1], aug[c0:c1], out=d)
        out[c0:c1, p0:p1] = _argmin(d.view(-1, k)).view(c1 - c0, p1 - p0)

    cstep = max(1, _CHUNK_SCORES // max(1, p * k))
    tasks = [
        (c0, min(c, c0 + cstep), p0, p1)
        for c0 in range(0, c, cstep)
        for p0, p1 in _chunks(p, k * min(cstep, c - c0))
    ]
    workers.run(chunk, tasks)
    return out


def _kmeans(data: torch.Tensor, weight: torch.Tensor, k: int, gen: torch.Generator, workers: Workers):
    """C independent weighted k-means ``[C, k, 8]`` of ``data [C, P, 8]`` (random subsamples; weight 0
    marks padding): k-means++ seeding on the first points, then Lloyd iterations. An entry that
    loses all its points stays where it is."""
    c, _, dim = data.shape
    seed_x, seed_w = data[:, :_KMEANS_SEEDING], weight[:, :_KMEANS_SEEDING]
    seed_aug = _with_norm(seed_x)
    centers = torch.empty(c, k, dim)
    d2 = torch.full(seed_w.shape, float("inf"))
    for i in range(0, k, _SEEDS_PER_STEP):
        # k-means++ several centres at a time (as k-means|| does): draw them without replacement with
        # probability ~ weight * distance^2 (keys log(u) / p, the largest win), then update the
        # distances once. Chosen points have p = 0 and come back only when no other point is left (fewer
        # distinct points than entries), which makes duplicate entries, harmless.
        b = min(_SEEDS_PER_STEP, k - i)
        keys = torch.rand(seed_w.shape, generator=gen).log_().div_(seed_w if i == 0 else seed_w * d2)
        pick = keys.topk(min(b, keys.shape[1]), dim=1).indices
        pick = torch.cat([pick, pick[:, -1:].expand(c, b - pick.shape[1])], 1)
        new = seed_x.gather(1, pick.unsqueeze(2).expand(c, b, dim))
        centers[:, i : i + b] = new
        aug = torch.cat([-2 * new, torch.ones(c, b, 1)], 2).transpose(1, 2)
        dist = torch.baddbmm(new.square().sum(2).unsqueeze(1), seed_aug, aug)  # [c, S, b]
        d2 = torch.minimum(d2, dist.amin(2).clamp_min_(0.0))
    offsets = torch.arange(c).unsqueeze(1) * k
    wx = (data * weight.unsqueeze(2)).view(-1, dim)
    flat_w = weight.reshape(-1)
    for _ in range(_KMEANS_ITERS):
        flat = (_nearest_batched(data, centers, workers) + offsets).view(-1)
        wsum = torch.zeros(c * k).index_add_(0, flat, flat_w).unsqueeze(1)
        sums = torch.zeros(c * k, dim).index_add_(0, flat, wx)
        centers = torch.where(wsum > 0, sums / wsum.clamp_min(1e-30), centers.view(-1, dim)).view(c, k, dim)
    return centers


def fp16(cb: torch.Tensor) -> torch.Tensor:
    """Rounds to the stored precision, so that every later step sees what the kernels will read."""
    return cb.clamp(-_FP16_MAX, _FP16_MAX).half().float()


def decode(cbs: list[torch.Tensor], codes: torch.Tensor, skip: int = -1) -> torch.Tensor:
    """Sum over codebooks (except ``skip``), in order, of the entries that ``codes [G, Mc]`` pick."""
    out = torch.zeros(codes.shape[0], GROUP)
    for c, cb in enumerate(cbs):
        if c != skip:
            out += F.embedding(codes[:, c], cb)
    return out


def group_errors(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (x - v).square_().sum(1)


def _beam_search(x, cbs, codes, beam: int, workers: Workers) -> torch.Tensor:
    """New codes for two 256-entry codebooks (the beam search of AQLM, in compact form): codebook 0 is
    re-chosen keeping its ``beam`` best entries given the code of codebook 1, then codebook 1 is
    searched exhaustively for each of them and the best pair wins. The current pair is among the
    candidates, so no group's error grows (beam = 1 is coordinate descent). Codebook 0 is the one
    that carries most of the weight (it was fitted first); running the beam over codebook 1 instead
    measured 0.2 dB worse on N(0, 1) 2048x2048."""
    a, b = cbs
    (aug_a, norms_a), (aug_b, norms_b) = _augmented(a), _augmented(b)
    beam = min(beam, a.shape[0])
    out = torch.empty_like(codes)

    def chunk(s: int, e: int) -> None:
        xs = x[s:e]
        dist = _distances(
            xs - F.embedding(codes[s:e, 1], b), aug_a, norms_a, workers.scratch(0, e - s, a.shape[0])
        )
        top = _smallest(dist, beam)  # [g, beam] candidates for codebook 0
        r = (xs.unsqueeze(1) - F.embedding(top, a)).view(-1, GROUP)  # what codebook 1 has to fit
        dist = _distances(r, aug_b, norms_b, workers.scratch(1, r.shape[0], b.shape[0])).view(e - s, -1)
        best = _argmin(dist)  # over (candidate, entry of codebook 1)
        cand = torch.div(best, b.shape[0], rounding_mode="floor")
        out[s:e, 0] = top.gather(1, cand.unsqueeze(1)).squeeze(1)
        out[s:e, 1] = best % b.shape[0]

    workers.run(chunk, _chunks(x.shape[0], beam * b.shape[0]))
    return out


def _cell_slots(cell: torch.Tensor, cap: int | None = None) -> tuple[torch.Tensor, ...]:
    """Lays items out per cell (256 cells), in item order within a cell, at most ``cap`` per cell:
    ``(items, cells, slots, width)`` for the items kept, width being the widest cell."""
    order = torch.argsort(cell, stable=True)
    sorted_cells = cell[order]
    counts = torch.bincount(sorted_cells, minlength=256)
    slots = torch.arange(cell.numel()) - (torch.cumsum(counts, 0) - counts)[sorted_cells]
    width = int(counts.max()) if cap is None else min(cap, int(counts.max()))
    keep = slots < width
    return order[keep], sorted_cells[keep], slots[keep], width


class _Graph:
    """Neighbour lists of a 16-bit codebook's entries. An entry's row holds itself, then its nearest
    other entries among those of the _GRAPH_CELLS cells (blocks of 256 entries) whose means are
    nearest to its own cell's. Rows are made on demand for the entries codes use, so a small layer
    does not pay for all 65536; a row's vectors are stored contiguously, so a group gathers one
    1 KiB row rather than 32 scattered vectors."""

    def __init__(self, cb: torch.Tensor, workers: Workers):
        self.cb, self.workers = cb, workers
        near = _neighbours(cb.view(256, 256, GROUP).mean(1), _GRAPH_CELLS)  # [256, t], own cell first
        self.cand = (near.unsqueeze(2) * 256 + torch.arange(256)).view(256, -1)  # [256, t * 256]
        aug, self.entry_norms = _augmented(cb)
        self.cand_aug = aug[self.cand].transpose(1, 2)  # [256, 9, t * 256]
        self.cand_norms = self.entry_norms[self.cand].unsqueeze(1)
        self.rows = torch.empty(cb.shape[0], _GRAPH_DEGREE, dtype=torch.int64)
        self.vecs = torch.empty(cb.shape[0], _GRAPH_DEGREE * GROUP)
        self.norms = torch.empty(cb.shape[0], _GRAPH_DEGREE)
        self.done = torch.zeros(cb.shape[0], dtype=torch.bool)

    def add_rows(self, codes: torch.Tensor) -> None:
        need = torch.unique(codes[~self.done[codes]])
        if need.numel() == 0:
            return
        # The entries laid out per cell, so that one batched GEMM serves each cell's candidates.
        items, cells, slots, width = _cell_slots(need // 256)
        ent = need[items]
        x = torch.zeros(256, width, GROUP)
        x[cells, slots] = self.cb[ent]
        own = torch.zeros(256, width, 1, dtype=torch.int64)
        own[cells, slots, 0] = ent % 256
        xa = _with_norm(x)
        top = torch.empty(256, width, _GRAPH_DEGREE, dtype=torch.int64)

        def chunk(c0: int, c1: int) -> None:
            d = self.workers.scratch(0, c1 - c0, width, self.cand.shape[1])
            torch.baddbmm(self.cand_norms[c0:c1], xa[c0:c1], self.cand_aug[c0:c1], out=d)
            d.scatter_(2, own[c0:c1], -1.0)  # the entry itself first (its own cell leads `cand`)
            top[c0:c1] = d.topk(_GRAPH_DEGREE, dim=2, largest=False).indices

        self.workers.run(chunk, _chunks(256, width * self.cand.shape[1]))
        rows = self.cand.unsqueeze(1).expand(-1, width, -1).gather(2, top)[cells, slots]
        self.rows[ent] = rows
        self.vecs[ent] = F.embedding(rows, self.cb).view(ent.numel(), -1)
        self.norms[ent] = self.entry_norms[rows]
        self.done[need] = True


def _neighbours(cb: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` nearest entries ``[E, k]`` of each entry of a small codebook, itself first."""
    d = torch.cdist(cb, cb)
    d.fill_diagonal_(-1.0)
    return d.topk(k, dim=1, largest=False).indices


def _local_search(x, cbs, codes, workers: Workers) -> torch.Tensor:
    """New codes for 16-bit codebooks, one codebook at a time: each code moves to the nearest of its
    graph row for what the other codebooks leave, _HOPS times. (An exhaustive search over 65536
    entries would cost ~270 GFLOP per 4096x4096 layer.)"""
    codes = codes.clone()
    for c, cb in enumerate(cbs):
        graph = _Graph(cb, workers)
        target = x - decode(cbs, codes, skip=c)

        def chunk(s: int, e: int, graph: _Graph = graph, target: torch.Tensor = target, c: int = c) -> None:
            cur = codes[s:e, c]
            vecs = F.embedding(cur, graph.vecs).view(e - s, _GRAPH_DEGREE, GROUP)
            dist = torch.baddbmm(
                graph.norms.index_select(0, cur).unsqueeze(2), vecs, target[s:e].unsqueeze(2), alpha=-2
            ).squeeze(2)
            codes[s:e, c] = graph.rows.index_select(0, cur).gather(1, dist.argmin(1, keepdim=True)).squeeze(1)

        for _ in range(_HOPS):
            graph.add_rows(codes[:, c])
            workers.run(chunk, _chunks(x.shape[0], _GRAPH_DEGREE * GROUP))
    return codes


def update_codes(x, cbs, codes, v, beam: int, workers: Workers):
    """One code update, guarded: a group keeps its codes unless the new ones have a smaller error
    (computed exactly), so no rounding in the search can make the error grow. ``v`` is what the
    current codes decode to; returns the new codes and what they decode to."""
    if cbs[0].shape[0] == 1 << 16:
        new = _local_search(x, cbs, codes, workers)
    elif len(cbs) == 1:
        new = nearest(x, cbs[0], workers).unsqueeze(1)
    else:
        new = _beam_search(x, cbs, codes, beam, workers)
    v_new = decode(cbs, new)
    keep = (group_errors(x, v_new) >= group_errors(x, v)).unsqueeze(1)
    return torch.where(keep, codes, new), torch.where(keep, v, v_new)


def lsq_codebooks(x, weight, codes, cbs) -> list[torch.Tensor]:
    """Codebooks minimising sum_g weight_g ||x_g - sum_c cb_c[codes_gc]||^2 for fixed codes, plus a
    small ridge towards the current codebooks; rounded to fp16. Jointly (normal equations in fp64)
    when small, else one codebook at a time given the others (exact for a single codebook)."""
    mc, entries = len(cbs), cbs[0].shape[0]
    lam = max(_RIDGE * float(weight.sum()) / entries, 1e-30)
    w64 = weight.double()
    if mc * entries <= _JOINT_LSQ_MAX:
        n = mc * entries
        flat = codes + torch.arange(mc) * entries  # [G, Mc]: rows of the stacked unknowns
        gram = torch.zeros(n * n, dtype=torch.float64)
        rhs = torch.zeros(n, GROUP, dtype=torch.float64)
        wx = x.double() * w64.unsqueeze(1)
        for c in range(mc):
            rhs.index_add_(0, flat[:, c], wx)
            for d in range(mc):
                gram += torch.bincount(flat[:, c] * n + flat[:, d], weights=w64, minlength=n * n)
        gram = gram.view(n, n)
        eye = torch.eye(n, dtype=torch.float64)
        sol = torch.linalg.solve(gram + lam * eye, rhs + lam * torch.cat(cbs).double())
        return [fp16(part.float()) for part in sol.split(entries)]
    cbs = list(cbs)
    for c in range(mc):
        target = (x - decode(cbs, codes, skip=c)).double() * w64.unsqueeze(1)
        wsum = torch.zeros(entries, dtype=torch.float64).index_add_(0, codes[:, c], w64)
        sums = torch.zeros(entries, GROUP, dtype=torch.float64).index_add_(0, codes[:, c], target)
        cbs[c] = fp16(((sums + lam * cbs[c].double()) / (wsum + lam).unsqueeze(1)).float())
    return cbs


def init_codebook(resid, weight, gen: torch.Generator, bits: int, workers: Workers):
    """One codebook ``[2^bits, 8]`` for ``resid [G, 8]`` and its codes ``[G]``.

    8 bits: weighted k-means on a subsample, codes by exhaustive search. 16 bits: k-means with 65536
    entries costs far too much on a CPU, so it is built in two levels: 256 cells by k-means, then 256
    entries per cell by k-means of the cell's sample points (entry 256 i + j is cell i's j-th); a
    group's first code is the nearest entry of its nearest cell."""
    live = (weight > 0).nonzero().squeeze(1)  # all-zero rows would only pull entries towards 0
    count = min(live.numel(), _SAMPLE_PER_ENTRY[bits] << bits)
    sample = live[torch.randperm(live.numel(), generator=gen)[:count]]
    xs, ws = resid[sample], weight[sample]
    coarse = _kmeans(xs.unsqueeze(0), ws.unsqueeze(0), 256, gen, workers)[0]
    if bits == 8:
        cb = fp16(coarse)
        return cb, nearest(resid, cb, workers)
    items, cells, slots, width = _cell_slots(nearest(xs, coarse, workers), _CELL_CAP)
    data, wts = torch.zeros(256, width, GROUP), torch.zeros(256, width)
    data[cells, slots] = xs[items] - coarse[cells]
    wts[cells, slots] = ws[items]
    cb = fp16((coarse.unsqueeze(1) + _kmeans(data, wts, 256, gen, workers)).view(-1, GROUP))
    items, cells, slots, width = _cell_slots(nearest(resid, coarse, workers))
    data = torch.zeros(256, width, GROUP)
    data[cells, slots] = resid[items]
    codes = torch.empty(resid.shape[0], dtype=torch.int64)
    codes[items] = cells * 256 + _nearest_batched(data, cb.view(256, 256, GROUP), workers)[cells, slots]
    return cb, codes


class Rows:
    """The weight in the units the search works in: groups ``x = w / scale`` (0 where the scale is 0)
    and the loss weight (scale / unit)^2 of each row, unit being the largest initial scale, so that
    squares neither overflow nor underflow for huge or tiny weights."""

    def __init__(self, wf: torch.Tensor, scales: torch.Tensor, unit: float):
        self.wf, self.scales, self.unit = wf, scales, unit
        s = scales.unsqueeze(1)
        self.x = (wf / torch.where(s > 0, s, 1.0)).masked_fill_(s == 0, 0.0).view(-1, GROUP)
        self.row_w = (scales / unit).square()

    @property
    def group_w(self) -> torch.Tensor:
        return self.row_w.repeat_interleave(self.wf.shape[1] // GROUP)

    def row_errors(self, v: torch.Tensor) -> torch.Tensor:
        """Weighted squared error per row, summed per group first (as the code guard compares)."""
        return self.row_w * group_errors(self.x, v).view(self.wf.shape[0], -1).sum(1)

    def refit(self, v: torch.Tensor) -> tuple[Rows, torch.Tensor]:
        """Per-row least-squares scales for the decoded groups ``v``, kept where the row error drops;
        returns the new rows and their errors."""
        n = self.wf.shape[0]
        xv = (self.x * v).view(n, -1).sum(1)
        vv = v.square().view(n, -1).sum(1)
        alpha = xv / torch.where(vv > 0, vv, 1.0)
        ok = (vv > 0) & (alpha > 0) & torch.isfinite(alpha)
        new = Rows(self.wf, torch.where(ok, self.scales * alpha, self.scales), self.unit)
        err, new_err = self.row_errors(v), new.row_errors(v)
        better = ok & (new_err <= err)
        if bool(better.all()):
            return new, new_err
        return Rows(self.wf, torch.where(better, new.scales, self.scales), self.unit), torch.where(
            better, new_err, err
        )


def fit(wf: torch.Tensor, mc: int, bits: int, seed: int, iters: int, beam: int, report):
    """``(codes int64 [N, K/8, Mc], codebooks float16 [Mc, 2^bits, 8], scales float32 [N])`` for the
    float32 weight ``wf``; ``report(round, relative_error)`` after the initialisation and each round."""
    n, k = wf.shape
    # Row RMS without overflow or underflow: absmax * rms(w / absmax).
    absmax = wf.abs().amax(1)
    scales = absmax * (wf / torch.where(absmax > 0, absmax, 1.0).unsqueeze(1)).square().mean(1).sqrt()
    unit = float(scales.max())
    if unit == 0.0:  # all-zero weight: zero scales reproduce it with any codes and codebooks
        report(0, 0.0)
        codes = torch.zeros(n, k // GROUP, mc, dtype=torch.int64)
        return codes, torch.zeros(mc, 1 << bits, GROUP, dtype=torch.float16), scales
    with Workers.single_threaded() as workers:
        rows = Rows(wf, scales, unit)
        total = float((rows.row_w * rows.x.square().view(n, -1).sum(1)).sum())
        gen = torch.Generator().manual_seed(seed)
        cbs, parts = [], []
        resid = rows.x
        for _ in range(mc):  # each codebook fits what the ones before it leave
            cb, idx = init_codebook(resid, rows.group_w, gen, bits, workers)
            cbs.append(cb)
            parts.append(idx)
            resid = resid - F.embedding(idx, cb)
        codes = torch.stack(parts, 1)
        v = decode(cbs, codes)
        rows, err = rows.refit(v)
        loss = float(err.sum())
        report(0, loss / total)
        for t in range(iters):
            new_cbs = lsq_codebooks(rows.x, rows.group_w, codes, cbs)
            v_new = decode(new_cbs, codes)
            if float(rows.row_errors(v_new).sum()) <= loss:
                cbs, v = new_cbs, v_new
            codes, v = update_codes(rows.x, cbs, codes, v, beam, workers)
            rows, err = rows.refit(v)
            loss = float(err.sum())
            report(t + 1, loss / total)
    return codes.view(n, k // GROUP, mc), torch.stack(cbs).half(), rows.scales
