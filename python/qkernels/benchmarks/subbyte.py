"""``qkernels bench int4 | int3 | nf4 | vq``: the sub-byte kernels on real model shapes against
torch's baselines, with the method of :mod:`.roofline` (weight pool > LLC, medians, peaks measured
in the same run).

Methods (no bias; float32 activations unless named)::

    name     what runs                                              compute peak of its roofline
    fp32     F.linear, float32 x and w (baseline)                   fp32
    bf16     F.linear, bfloat16 x and w (baseline)                  fp32
    tint4    torch's CPU int4 kernel, _weight_int4pack_mm_for_cpu,  fp32
             bf16 x, group 128 (baseline for int4 and nf4)
    int4     qk.nn.Int4Linear, group 128, symmetric                 int8 (int8 activations)
    int3     qk.nn.Int3Linear, group 128, symmetric                 int8
    nf4      qk.nn.NF4Linear, block 64                              int8
    vq       qk.nn.VQLinear, 2 x 8-bit codebooks                    fp32 (float activations)
    vq1x16   qk.nn.VQLinear, 1 x 16-bit codebook                    fp32

Weights: speed does not depend on the values, so the quantized modules get seeded random codes and
positive scales (quantizing 14336 x 4096 to VQ would dominate the run); the dense baselines use the
seeded random-normal matrix. Weight bytes are the module's buffers: packed codes, scales, zero
points, codebooks — what a decode step streams.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch
from torch import Tensor

from .. import nn as qnn
from . import harness as h
from . import roofline as rl

SHAPES = "4096x4096,11008x4096,4096x11008,14336x4096"
BATCHES = "1,8,32,128,512"
BASELINES = ("fp32", "bf16", "tint4", "int4")
TINT4_GROUP = 128


def _tint4(src: h.Source) -> Callable[[Tensor], Tensor]:
    gen = torch.Generator().manual_seed(src.seed)
    codes = torch.randint(0, 16, (src.n, src.k), dtype=torch.int32, generator=gen)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 2)
    scales_zeros = torch.rand(src.k // TINT4_GROUP, src.n, 2, generator=gen).to(torch.bfloat16)
    return lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, TINT4_GROUP, scales_zeros)


def _random_module(cls: type, **config) -> Callable[[h.Source], torch.nn.Module]:
    """An empty module of ``cls`` filled with seeded random codes and positive scales."""

    def build(src: h.Source) -> torch.nn.Module:
        gen = torch.Generator().manual_seed(src.seed)
        mod = cls(src.k, src.n, bias=False, **config)
        with torch.no_grad():
            for name, buf in mod.named_buffers():
                if name == "codebooks_f32":
                    continue
                if buf.dtype.is_floating_point:
                    buf.copy_(torch.rand(buf.shape, generator=gen) / src.k**0.5 + 1e-3)
                else:
                    info = torch.iinfo(buf.dtype)
                    limit = 16 if name == "zeros" else info.max + 1
                    buf.copy_(torch.randint(max(info.min, 0), limit, buf.shape, generator=gen))
            if hasattr(mod, "codebooks_f32"):
                mod.codebooks_f32.copy_(mod.codebooks.float())
        return mod

    return build


def _qk(label: str, cls: type, peak: str, x_dtype=torch.float32, **config) -> h.Method:
    build = _random_module(cls, **config)
    return h.Method(label.split()[1], label, peak, x_dtype, 0.0, 0.0, build, is_qkernels=True)


METHODS = {
    m.name: m
    for m in (
        h.Method("fp32", "F.linear fp32", "fp32", torch.float32, 4, 0, h.dense(torch.float32)),
        h.Method("bf16", "F.linear bf16", "fp32", torch.bfloat16, 2, 0, h.dense(torch.bfloat16)),
        h.Method("tint4", "torch int4 g128", "fp32", torch.bfloat16, 0.5, 0, _tint4),
        _qk("qk int4", qnn.Int4Linear, "int8", group_size=128),
        _qk("qk int3", qnn.Int3Linear, "int8", group_size=128),
        _qk("qk nf4", qnn.NF4Linear, "int8", block_size=64),
        _qk("qk vq", qnn.VQLinear, "fp32", codebooks=2, codebook_bits=8),
        _qk("qk vq1x16", qnn.VQLinear, "fp32", codebooks=1, codebook_bits=16),
    )
}
DEFAULT_METHODS = {
    "int4": ("fp32", "bf16", "tint4", "int4"),
    "nf4": ("fp32", "bf16", "tint4", "nf4"),
    "int3": ("fp32", "bf16", "int4", "int3"),
    "vq": ("fp32", "bf16", "vq", "vq1x16"),
}
COLUMNS = [c for c in h.COLUMNS if c.key != "speedup_vs_qdyn"]
COLUMNS[-2:-2] = [
    rl.Column("x tint4", "speedup_vs_tint4", "{:.2f}"),
    rl.Column("x int4", "speedup_vs_int4", "{:.2f}"),
]


def _weight_bytes(method: h.Method, n: int, k: int) -> int:
    if not method.is_qkernels:
        return method.weight_bytes(n, k)
    mod = method.build(h.Source(1, k, 0))  # one row: the per-row bytes, plus the shared codebooks
    per_row = sum(
        t.numel() * t.element_size()
        for key, t in mod.state_dict().items()
        if isinstance(t, Tensor) and key != "codebooks"
    )
    shared = mod.codebooks.numel() * 2 if hasattr(mod, "codebooks") else 0
    return n * per_row + shared


def _print_summary(fmt: str, rows: list[dict]) -> None:
    print("\n## Summary")
    for r in rows:
        if r["method"] == fmt and r["M"] in (1, 512):
            rate = f"{r['gbps']:6.2f} GB/s" if r["M"] == 1 else f"{r['gflops']:6.1f} GOPS"
            print(
                f"M={r['M']:<4} {r['shape']:>11} {fmt}: {rate} ({r['pct_roofline']:.0f}% of roofline), "
                f"vs bf16 {h.ratio(r['speedup_vs_bf16'])}, vs fp32 {h.ratio(r['speedup_vs_fp32'])}"
            )
    slow = [r for r in rows if r["flag"]]
    for r in slow:
        print(
            f"SLOWER THAN F.linear fp32: {r['shape']} M={r['M']} {r['method']} ({r['speedup_vs_fp32']:.2f}x)"
        )
    if not slow and any(r["method"] == "fp32" for r in rows):
        print("no qkernels row is slower than F.linear fp32")
    warning = rl.peaks_warning(rows)
    if warning:
        print(warning)


def build_parser(fmt: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"qkernels bench {fmt}",
        description=f"Roofline table of the {fmt} kernels against F.linear fp32/bf16 and torch's int4 "
        "kernel. See bench/README.md.",
    )
    rl.add_common_args(p, SHAPES, BATCHES)
    p.add_argument(
        "--methods",
        type=lambda t: [s.strip() for s in t.split(",") if s.strip()],
        default=list(DEFAULT_METHODS[fmt]),
        help=f"comma-separated, from {','.join(METHODS)} (default: {','.join(DEFAULT_METHODS[fmt])})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and activations")
    return p


def main(argv: list[str] | None = None, fmt: str = "int4") -> int:
    args = build_parser(fmt).parse_args(argv)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        raise SystemExit(
            f"--methods: expected names from {', '.join(METHODS)}, got {', '.join(unknown) or 'none'}"
        )
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        machine = rl.machine_info()
        before = rl.measure_peaks(args)
        rows: list[dict] = []
        with torch.inference_mode():
            for n, k in args.shapes:
                src = h.Source(n, k, args.seed)
                for name in args.methods:
                    print(f"# measuring {n}x{k} {name}", file=sys.stderr, flush=True)
                    method = METHODS[name]
                    rows += h.bench_method(method, src, args, _weight_bytes(method, src.n, src.k))
                    rl.free_memory()
                del src
        order = {name: i for i, name in enumerate(args.methods)}
        rows.sort(key=lambda r: (args.shapes.index((r["N"], r["K"])), r["M"], order[r["method"]]))
        peaks = before.best_of(rl.measure_peaks(args))
        machine |= rl.peaks_info(peaks)
        rl.add_metrics(rows, peaks)
        rl.add_speedups(rows, BASELINES)
        h.flag_slow(rows, METHODS)
        rl.print_peaks(machine)
        h.print_tables(rows, args.pool_mib, METHODS, COLUMNS)
        _print_summary(fmt, rows)
        if args.json:
            config = {k: v for k, v in vars(args).items() if k != "json"} | {"format": fmt}
            rl.write_json(args.json, machine, config, rows)
            print(f"\nwrote {args.json}")
    finally:
        torch.set_num_threads(previous)
    return 0
