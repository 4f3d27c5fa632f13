"""What the per-format roofline benchmarks share: a method (one way to compute a linear layer), the
timing of a method over a weight pool for every batch, the speed-up columns and the table."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from . import roofline as rl


class Source:
    """The weights of one shape: a seeded random-normal float32 matrix scaled like nn.Linear's."""

    def __init__(self, n: int, k: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.n, self.k, self.seed = n, k, seed
        self.weight = torch.randn(n, k, generator=gen) / k**0.5


@dataclass(frozen=True)
class Method:
    name: str  # --methods and JSON key
    label: str  # table label
    peak: str  # the compute peak its roofline uses
    x_dtype: torch.dtype
    bytes_per_weight: float
    scale_bytes_per_row: float
    build: Callable[[Source], Callable[[Tensor], Tensor]]  # one pool copy with its own weights
    is_qkernels: bool = False  # flagged when slower than F.linear fp32

    def weight_bytes(self, n: int, k: int) -> int:
        return int(n * k * self.bytes_per_weight + n * self.scale_bytes_per_row)


def dense(dtype: torch.dtype) -> Callable[[Source], Callable[[Tensor], Tensor]]:
    """The F.linear baseline in ``dtype``: one pool copy of the source weight."""

    def build(src: Source) -> Callable[[Tensor], Tensor]:
        w = src.weight.to(dtype, copy=True)
        return lambda x: F.linear(x, w)

    return build


def bench_method(
    method: Method, src: Source, args: argparse.Namespace, nbytes: int | None = None
) -> list[dict]:
    """Times ``method`` on every batch of ``args`` over a weight pool; ``nbytes`` (default: the
    method's own count) is the weight bytes of one copy."""
    nbytes = method.weight_bytes(src.n, src.k) if nbytes is None else nbytes
    pool = rl.build_pool(lambda: method.build(src), nbytes, args.pool_mib * rl.MIB)
    gen = torch.Generator().manual_seed(args.seed + 1)
    rows = []
    for m in args.batches:
        x = torch.randn(m, src.k, generator=gen).to(method.x_dtype)
        timing = rl.time_calls(lambda i, x=x: pool[i % len(pool)](x), rl.timing_opts(args))
        rows.append(
            {
                "shape": f"{src.n}x{src.k}",
                "N": src.n,
                "K": src.k,
                "M": m,
                "method": method.name,
                "us": timing.median_s * 1e6,
                "weight_bytes": nbytes,
                "ops": 2 * m * src.n * src.k,
                "peak": method.peak,
                "reps": timing.reps,
                "pool_copies": len(pool),
            }
        )
    return rows


def flag_slow(rows: list[dict], methods: dict[str, Method]) -> None:
    for r in rows:
        speedup = r["speedup_vs_fp32"]
        slow = methods[r["method"]].is_qkernels and speedup is not None and speedup < 1
        r["flag"] = "SLOWER THAN fp32" if slow else ""


COLUMNS = [
    rl.Column("M", "M"),
    rl.Column("method", "label", left=True),
    rl.Column("µs", "us", "{:.1f}"),
    rl.Column("GB/s", "gbps", "{:.2f}"),
    rl.Column("G(FL)OP/s", "gflops", "{:.1f}"),
    rl.Column("% roof", "pct_roofline", "{:.1f}"),
    rl.Column("bound", "bound", left=True),
    rl.Column("x fp32", "speedup_vs_fp32", "{:.2f}"),
    rl.Column("x bf16", "speedup_vs_bf16", "{:.2f}"),
    rl.Column("x qdyn", "speedup_vs_qdyn", "{:.2f}"),
    rl.Column("reps", "reps"),
    rl.Column("", "flag", left=True),
]


def print_tables(rows: list[dict], pool_mib: int, methods: dict[str, Method], columns=COLUMNS) -> None:
    for shape in dict.fromkeys(r["shape"] for r in rows):
        print(f"\n## N x K = {shape}  (each method rotates through > {pool_mib} MiB of weights)")
        mine = [r | {"label": methods[r["method"]].label} for r in rows if r["shape"] == shape]
        print(rl.format_table(columns, mine))


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
