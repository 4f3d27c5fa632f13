"""``qkernels bench int8``: the int8 kernels on real model shapes against torch's baselines.

Methods (no bias, as in Llama's projections; float32 activations unless named)::

    name   what runs                                        compute peak of its roofline
    fp32   F.linear, float32 x and w (baseline)             fp32
    bf16   F.linear, bfloat16 x and w (baseline)            fp32 (no bf16 peak is measured)
    qdyn   torch.ao quantize_dynamic int8 (baseline)        int8
    w8a8   qk.nn.Int8Linear, W8A8 dynamic                   int8
    w8a16  qk.nn.Int8Linear(weight_only=True), W8A16        fp32 (weights become float in registers)

Weights: one seeded random-normal float32 matrix per shape, scaled like ``nn.Linear``'s init. The
qkernels methods quantize it once with ``torch.ops.qkernels.quantize_int8`` and copy the codes into
every ``Int8Linear`` of their pool; ``quantize_dynamic`` runs once per pool copy; fp32/bf16 copies are
clones. Weight bytes per copy: 4·N·K (fp32), 2·N·K (bf16), N·K + 4·N (int8 codes + scales; qdyn
stores a single scale, so N·K).

Order: shapes, then methods, then batches, so one pool is alive at a time and is freed before the
next (the largest, fp32 14336x4096, is 2 copies = 470 MB). Every batch of a method rotates through
the same pool (> ``--pool-mib``, 256 MiB): batch 1 needs it to read weights from memory; larger
batches would do with less, but rotating costs nothing per call and keeps the rows comparable.

Time: a full run (4 shapes x 5 batches x 5 methods) takes a few minutes on 2 quiet cores and under
2 GB of RAM. The slowest rows, bf16 at M=512 (2-3 s a call on a CPU without bf16 arithmetic), stop
after a warm-up call and 3 timed calls once ``--max-time`` is spent.

Timing, pools, peaks and columns are described in :mod:`.roofline`; how to run, in bench/README.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import cached_property

import torch
from torch import Tensor

from .. import nn as qnn
from .. import ops
from . import harness as h
from . import roofline as rl

SHAPES = "4096x4096,11008x4096,4096x11008,14336x4096"
BATCHES = "1,8,32,128,512"
BASELINES = ("fp32", "bf16", "qdyn")
# The large-batch summary reports this shape (Llama-7B's MLP up/gate projection) when it was run.
SUMMARY_SHAPE = "11008x4096"
SUMMARY_BATCHES = (128, 512)


class Source(h.Source):
    """The weights of one shape: a float32 matrix and, on first use, its qkernels int8 codes."""

    @cached_property
    def int8(self) -> tuple[Tensor, Tensor]:
        return ops.quantize_int8(self.weight)


def _qdyn(src: Source) -> Callable[[Tensor], Tensor]:
    return rl.quantize_dynamic_linear(src.weight)


def _int8_linear(weight_only: bool) -> Callable[[Source], Callable[[Tensor], Tensor]]:
    def build(src: Source) -> Callable[[Tensor], Tensor]:
        mod = qnn.Int8Linear(src.k, src.n, bias=False, weight_only=weight_only)
        q, scale = src.int8
        mod.weight.copy_(q)
        mod.weight_scale.copy_(scale)
        return mod

    return build


# Columns: name, label, compute peak, activation dtype, bytes per weight, scale bytes per row, builder.
METHODS = {
    m.name: m
    for m in (
        h.Method("fp32", "F.linear fp32", "fp32", torch.float32, 4, 0, h.dense(torch.float32)),
        h.Method("bf16", "F.linear bf16", "fp32", torch.bfloat16, 2, 0, h.dense(torch.bfloat16)),
        h.Method("qdyn", "quantize_dynamic", "int8", torch.float32, 1, 0, _qdyn),
        h.Method("w8a8", "qk w8a8", "int8", torch.float32, 1, 4, _int8_linear(False), is_qkernels=True),
        h.Method("w8a16", "qk w8a16", "fp32", torch.float32, 1, 4, _int8_linear(True), is_qkernels=True),
    )
}


def _parse_methods(text: str) -> list[str]:
    names = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in names if s not in METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"--methods: expected names from {', '.join(METHODS)}, got {', '.join(unknown) or text!r}"
        )
    return names


def _print_summary(rows: list[dict]) -> None:
    print("\n## Summary")
    find = {(r["shape"], r["M"], r["method"]): r for r in rows}
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    for shape in shapes:
        for name in ("w8a8", "w8a16"):
            r = find.get((shape, 1, name))
            if r:
                print(
                    f"M=1    {shape:>11} {name:5}: {r['gbps']:6.2f} GB/s "
                    f"({r['pct_roofline']:.0f}% of bandwidth), vs qdyn {h.ratio(r['speedup_vs_qdyn'])}"
                )
    large = [SUMMARY_SHAPE] if SUMMARY_SHAPE in shapes else shapes
    for shape in large:
        for m in SUMMARY_BATCHES:
            r = find.get((shape, m, "w8a8"))
            if r:
                print(
                    f"M={m:<4} {shape:>11} w8a8 : {r['gflops']:6.1f} GOPS "
                    f"({r['pct_roofline']:.0f}% of int8 peak), vs qdyn {h.ratio(r['speedup_vs_qdyn'])}, "
                    f"vs bf16 {h.ratio(r['speedup_vs_bf16'])}"
                )
    slow = [r for r in rows if r["flag"]]
    if not any(r["method"] == "fp32" for r in rows):
        print("slower than F.linear fp32: not checked (fp32 not run)")
    elif slow:
        for r in slow:
            print(
                f"SLOWER THAN F.linear fp32: {r['shape']} M={r['M']} {r['method']} "
                f"({r['speedup_vs_fp32']:.2f}x)"
            )
    else:
        print("no qkernels row is slower than F.linear fp32")
    warning = rl.peaks_warning(rows)
    if warning:
        print(warning)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qkernels bench int8",
        description="Roofline table of the int8 kernels (W8A8, W8A16) against F.linear fp32/bf16 and "
        "torch.ao quantize_dynamic. See bench/README.md.",
    )
    rl.add_common_args(p, SHAPES, BATCHES)
    p.add_argument(
        "--methods",
        type=_parse_methods,
        default=list(METHODS),
        help=f"comma-separated, from {','.join(METHODS)} (default: all)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and activations")
    return p


def _measure_rows(args: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []
    with torch.inference_mode():
        for n, k in args.shapes:
            src = Source(n, k, args.seed)
            for name in args.methods:
                # Progress on stderr: the tables only come at the end, minutes later.
                print(f"# measuring {n}x{k} {name}", file=sys.stderr, flush=True)
                rows += h.bench_method(METHODS[name], src, args)
                rl.free_memory()
            del src  # before the next shape's weights are made
    order = {name: i for i, name in enumerate(args.methods)}
    rows.sort(key=lambda r: (args.shapes.index((r["N"], r["K"])), r["M"], order[r["method"]]))
    return rows


def run(args: argparse.Namespace) -> list[dict]:
    """Measures the peaks, every (shape, method, batch), then the peaks again (see
    :meth:`.roofline.Peaks.best_of`); prints the tables and the summary; returns the rows."""
    machine = rl.machine_info()
    before = rl.measure_peaks(args)
    rows = _measure_rows(args)
    peaks = before.best_of(rl.measure_peaks(args))
    machine |= rl.peaks_info(peaks)
    rl.add_metrics(rows, peaks)
    rl.add_speedups(rows, BASELINES)
    h.flag_slow(rows, METHODS)
    rl.print_peaks(machine)
    h.print_tables(rows, args.pool_mib, METHODS)
    _print_summary(rows)
    if args.json:
        config = {k: v for k, v in vars(args).items() if k != "json"}
        rl.write_json(args.json, machine, config, rows)
        print(f"\nwrote {args.json}")
    return rows


def main(argv: list[str] | None = None, fmt: str = "int8") -> int:
    args = build_parser().parse_args(argv)
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        run(args)
    finally:
        torch.set_num_threads(previous)
    return 0
