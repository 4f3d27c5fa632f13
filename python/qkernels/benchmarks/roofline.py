"""Roofline machinery shared by the per-format benchmarks (``qkernels bench <format>``).

Method
------
Timing
    :func:`time_calls` runs a warm-up (at least one call and ``--warmup`` seconds), then times single
    calls with ``time.perf_counter`` until it has at least ``--min-reps`` calls and ``--min-time``
    seconds in total, capped at ``--max-reps`` calls. Slow calls stop earlier: once ``--max-time``
    seconds have been spent, three calls (or ``--min-reps`` if fewer) are enough, so that a 2 s
    bf16 GEMM does not hold the run for minutes. The reported time is the median call.

Weight pool
    Each call ``i`` uses copy ``i mod P`` of the weights, where P (:func:`pool_copies`) is the smallest
    count whose total size exceeds ``--pool-mib`` (default 256 MiB, eight times a 32 MiB L3). Every
    call therefore reads weights that the previous P - 1 calls have evicted from the last-level cache:
    what a decoder layer sees, where each weight matrix is used once per token.

Machine peaks (:func:`measure_peaks`, before and after the rows, with the rows' threads)
    * bandwidth: the best of a ``sum`` and an ``amax`` over a float32 tensor of ``--stream-mib``
      (1 GiB) — a pure streaming read; ``--bandwidth GBPS`` overrides it.
    * fp32: the best ``torch.mm`` over squares of ``--peak-gemms`` sizes (512, 1024, 2048: compute
      bound, blocked for the cache). This is what the BLAS torch ships reaches here, not the
      data-sheet FMA peak.
    * int8: the best of the int8 GEMMs this run has, qkernels ``matmul_int8`` and fbgemm through
      ``torch.ao`` ``quantize_dynamic``, on the same squares. 100 % of it means "as fast as the best
      int8 GEMM measured on this machine", not the silicon limit.
    Each measurement keeps its best call (a peak is a ceiling) and the better of its two runs,
    before and after the rows, so that a neighbour busy during one of them does not lower it.

Rows
    GB/s is weight bytes / time (the bytes a decode step must stream; activations are < 1 % of them
    at batch 1). G(FL)OP/s is 2·M·N·K / time (GOPS for int8×int8 methods). The roofline time is
    ``max(weight_bytes / bandwidth, 2·M·N·K / peak)`` with the compute peak that matches the
    method's arithmetic; ``% roofline = roofline_time / measured_time``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

MIB = 1 << 20
SCHEMA = 1
# Calls kept once --max-time is spent: enough for a median that ignores one outlier.
SLOW_REPS = 3
PEAK_GEMMS = "512,1024,2048"
# % of roofline past which a row is not noise but a sign that a peak was measured too low.
OVER_ROOFLINE = 110


# ---- timing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimingOpts:
    min_reps: int = 5
    min_time: float = 0.3
    max_reps: int = 1000
    max_time: float = 2.0
    warmup: float = 0.1


@dataclass(frozen=True)
class Timing:
    median_s: float
    best_s: float
    reps: int


def _enough(reps: int, total: float, opts: TimingOpts) -> bool:
    if reps >= opts.max_reps:
        return True
    if reps >= opts.min_reps and total >= opts.min_time:
        return True
    return reps >= min(SLOW_REPS, opts.min_reps) and total >= opts.max_time


def time_calls(call: Callable[[int], object], opts: TimingOpts) -> Timing:
    """Times ``call(i)`` for i = 0, 1, 2, ...; the caller picks pool copy ``i mod P``."""
    i = 0
    start = time.perf_counter()
    while i < 1 or time.perf_counter() - start < opts.warmup:
        call(i)
        i += 1
    times: list[float] = []
    while not _enough(len(times), sum(times), opts):
        t0 = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - t0)
        i += 1
    return Timing(statistics.median(times), min(times), len(times))


# ---- weight pools ---------------------------------------------------------------------------------


def pool_copies(copy_bytes: int, pool_bytes: int) -> int:
    """The smallest number of copies whose total size exceeds ``pool_bytes``."""
    return pool_bytes // max(copy_bytes, 1) + 1


def build_pool(make: Callable[[], object], copy_bytes: int, pool_bytes: int) -> list:
    """``make()`` called once per copy; each call must allocate its own weights."""
    return [make() for _ in range(pool_copies(copy_bytes, pool_bytes))]


def free_memory() -> None:
    """Drops unreachable pools now, so two shapes' pools never coexist in RAM."""
    gc.collect()


# ---- baselines shared across formats --------------------------------------------------------------


def quantize_dynamic_linear(weight: Tensor) -> nn.Module:
    """``torch.ao.quantization.quantize_dynamic`` int8 (fbgemm/x86) of ``nn.Linear(weight)``, no bias.
    Its deprecation and per-tensor notices are silenced: it is here as a baseline, knowingly."""
    n, k = weight.shape
    # On "meta", the layer skips its random init; the weight is ours, and quantizing in place
    # replaces only the layer, so it spares a float copy of the weight.
    lin = nn.Linear(k, n, bias=False, device="meta")
    lin.weight = nn.Parameter(weight, requires_grad=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor")
        return torch.ao.quantization.quantize_dynamic(
            nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8, inplace=True
        )


# ---- machine peaks --------------------------------------------------------------------------------


@dataclass
class Peaks:
    """Each peak is the best of the measurements behind it, which are kept by name."""

    bandwidth: dict[str, float]  # GB/s; empty when --bandwidth gave the value
    compute: dict[str, dict[str, float]]  # "fp32": GFLOP/s, "int8": GOPS
    bandwidth_override: float | None = None

    @property
    def bandwidth_gbps(self) -> float:
        return self.bandwidth_override or max(self.bandwidth.values())

    def peak(self, kind: str) -> float:
        return max(self.compute[kind].values())

    def roofline_s(self, nbytes: float, ops: float, kind: str) -> float:
        return max(nbytes / (self.bandwidth_gbps * 1e9), ops / (self.peak(kind) * 1e9))

    def bound(self, nbytes: float, ops: float, kind: str) -> str:
        return "mem" if nbytes / self.bandwidth_gbps >= ops / self.peak(kind) else kind

    def best_of(self, other: Peaks) -> Peaks:
        """Keeps the better value of every measurement: a neighbour that slowed one down is less
        likely to have been busy during both."""

        def best(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
            return {k: max(a[k], b.get(k, 0.0)) for k in a}

        compute = {kind: best(rates, other.compute[kind]) for kind, rates in self.compute.items()}
        return Peaks(best(self.bandwidth, other.bandwidth), compute, self.bandwidth_override)


def _best_rate(work: float, fn: Callable[[], object], opts: TimingOpts) -> float:
    """``work / best call time / 1e9``."""
    return work / time_calls(lambda _i: fn(), opts).best_s / 1e9


def measure_bandwidth(mib: int, opts: TimingOpts) -> dict[str, float]:
    """GB/s of reductions that stream a float32 tensor once from memory."""
    t = torch.ones(mib * MIB // 4)
    nbytes = t.numel() * 4
    return {
        f"sum over {mib} MiB float32 (GB/s)": _best_rate(nbytes, t.sum, opts),
        f"amax over {mib} MiB float32 (GB/s)": _best_rate(nbytes, t.amax, opts),
    }


def measure_fp32(n: int, opts: TimingOpts) -> dict[str, float]:
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    return {f"torch.mm fp32 {n}^3 (GFLOP/s)": _best_rate(2 * n**3, lambda: torch.mm(a, b, out=c), opts)}


def measure_int8(n: int, opts: TimingOpts) -> dict[str, float]:
    a = torch.randint(-127, 128, (n, n), dtype=torch.int8)
    b = torch.randint(-127, 128, (n, n), dtype=torch.int8)
    qdyn = quantize_dynamic_linear(torch.randn(n, n))
    x = torch.randn(n, n)
    return {
        f"qkernels matmul_int8 {n}^3 (GOPS)": _best_rate(
            2 * n**3, lambda: torch.ops.qkernels.matmul_int8(a, b), opts
        ),
        f"quantize_dynamic int8 {n}^3 (GOPS)": _best_rate(2 * n**3, lambda: qdyn(x), opts),
    }


def measure_peaks(args: argparse.Namespace) -> Peaks:
    """The three peaks, each timed like a row (``--min-time``, ``--warmup``) with 3 to 50 calls."""
    opts = TimingOpts(min_reps=SLOW_REPS, min_time=args.min_time, max_reps=50, warmup=args.warmup)
    with torch.inference_mode():
        bandwidth = {} if args.bandwidth else measure_bandwidth(args.stream_mib, opts)
        # The size a GEMM likes best differs by library (on a 2-core EPYC: fp32 512, int8 2048).
        fp32 = {k: v for n in args.peak_gemms for k, v in measure_fp32(n, opts).items()}
        int8 = {k: v for n in args.peak_gemms for k, v in measure_int8(n, opts).items()}
    free_memory()
    return Peaks(bandwidth, {"fp32": fp32, "int8": int8}, args.bandwidth)


# The CPU flags that decide which kernels and which torch paths can run.
_KERNEL_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "amx_bf16",
)


def _cpuinfo() -> dict[str, str]:
    """The first CPU's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def _cpu_model(cpuinfo: dict[str, str]) -> str:
    return cpuinfo.get("model name") or platform.processor() or platform.machine()


def _cpu_flags(cpuinfo: dict[str, str]) -> list[str]:
    flags = set(cpuinfo.get("flags", "").split())
    return [f for f in _KERNEL_FLAGS if f in flags]


def machine_info() -> dict:
    """The machine, threads and software; call it before measuring, since the load average is
    the one thing here that says whether something else was running."""
    import qkernels

    info = qkernels.info()
    cpuinfo = _cpuinfo()
    return {
        "cpu": _cpu_model(cpuinfo),
        "cpu_flags": _cpu_flags(cpuinfo),
        "isa": info["isa"],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "qkernels": info["version"],
        "quantized_engine": torch.backends.quantized.engine,
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def peaks_info(peaks: Peaks) -> dict:
    return {
        "bandwidth_gbps": peaks.bandwidth_gbps,
        "bandwidth_source": "--bandwidth" if peaks.bandwidth_override else "measured",
        "fp32_gflops": peaks.peak("fp32"),
        "int8_gops": peaks.peak("int8"),
        "peak_detail": peaks.bandwidth | peaks.compute["fp32"] | peaks.compute["int8"],
    }


def print_peaks(machine: dict) -> None:
    print(
        f"# {machine['cpu']} ({' '.join(machine['cpu_flags']) or 'no SIMD flags read'}), "
        f"{machine['threads']} threads, isa {machine['isa']['active']} ({machine['isa']['engine']}), "
        f"torch {machine['torch']}, quantized engine {machine['quantized_engine']}, "
        f"load average before the run {machine['loadavg_1min']}"
    )
    print(
        f"# bandwidth {machine['bandwidth_gbps']:.1f} GB/s ({machine['bandwidth_source']}), "
        f"fp32 peak {machine['fp32_gflops']:.1f} GFLOP/s, int8 peak {machine['int8_gops']:.1f} GOPS"
    )
    for name, rate in machine["peak_detail"].items():
        print(f"#   {rate:7.1f}  {name}")


# ---- rows -----------------------------------------------------------------------------------------


def add_metrics(rows: list[dict], peaks: Peaks) -> None:
    """Adds the roofline columns to rows that hold ``us``, ``weight_bytes``, ``ops`` and ``peak``
    (the compute peak that matches the method's arithmetic)."""
    for r in rows:
        seconds = r["us"] * 1e-6
        r["gbps"] = r["weight_bytes"] / seconds / 1e9
        r["gflops"] = r["ops"] / seconds / 1e9
        r["pct_roofline"] = 100 * peaks.roofline_s(r["weight_bytes"], r["ops"], r["peak"]) / seconds
        r["bound"] = peaks.bound(r["weight_bytes"], r["ops"], r["peak"])


def add_speedups(rows: list[dict], baselines: Sequence[str]) -> None:
    """Adds ``speedup_vs_<b>`` = time of baseline ``b`` / time of the row, for the same shape and
    batch in this run; None where ``b`` was not run."""
    times = {(r["shape"], r["M"], r["method"]): r["us"] for r in rows}
    for r in rows:
        for b in baselines:
            base = times.get((r["shape"], r["M"], b))
            r[f"speedup_vs_{b}"] = None if base is None else base / r["us"]


def peaks_warning(rows: list[dict]) -> str | None:
    """A note when rows beat the roofline by more than noise: then a peak was measured low, most
    often because something else was running at the time."""
    over = [r for r in rows if r["pct_roofline"] > OVER_ROOFLINE]
    if not over:
        return None
    worst = max(over, key=lambda r: r["pct_roofline"])
    return (
        f"note: {len(over)} row(s) exceed {OVER_ROOFLINE}% of the roofline (up to "
        f"{worst['pct_roofline']:.0f}%, {worst['shape']} M={worst['M']} {worst['method']}): a peak was "
        "measured low, probably on a busy machine; rerun on a quiet one, or pass --bandwidth"
    )


# ---- output ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    header: str
    key: str
    fmt: str = "{}"  # applied to the value; None prints "-"
    left: bool = False  # text columns align left, numbers right


def format_table(columns: Sequence[Column], rows: Iterable[dict]) -> str:
    cells = [[c.header for c in columns]]
    for r in rows:
        cells.append(["-" if r.get(c.key) is None else c.fmt.format(r[c.key]) for c in columns])
    widths = [max(len(row[j]) for row in cells) for j in range(len(columns))]
    lines = [
        "  ".join(
            cell.ljust(w) if c.left else cell.rjust(w)
            for c, cell, w in zip(columns, row, widths, strict=True)
        ).rstrip()
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths).rstrip())
    return "\n".join(lines)


def write_json(path: str, machine: dict, config: dict, rows: list[dict]) -> None:
    doc = {"schema": SCHEMA, "machine": machine, "config": config, "rows": rows}
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")


# ---- command line ---------------------------------------------------------------------------------


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``"4096x4096,11008x4096"`` -> ``[(4096, 4096), (11008, 4096)]`` as (N, K)."""
    shapes = []
    for item in text.split(","):
        n, sep, k = item.strip().lower().partition("x")
        if not sep or not n.isdigit() or not k.isdigit() or int(n) < 1 or int(k) < 1:
            raise argparse.ArgumentTypeError(f"--shapes: expected NxK items like 4096x4096, got {item!r}")
        shapes.append((int(n), int(k)))
    return list(dict.fromkeys(shapes))


def parse_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,8,32, got {text!r}")
    return list(dict.fromkeys(values))


def add_common_args(p: argparse.ArgumentParser, shapes: str, batches: str) -> None:
    p.add_argument(
        "--shapes",
        type=parse_shapes,
        default=parse_shapes(shapes),
        help=f"weight shapes NxK (out x in), comma-separated (default {shapes})",
    )
    p.add_argument(
        "--batches", type=parse_ints, default=parse_ints(batches), help=f"batch sizes M (default {batches})"
    )
    p.add_argument("--json", metavar="PATH", help="also write the rows and the machine as JSON")
    p.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch (and so qkernels) threads (default: torch.get_num_threads())",
    )
    p.add_argument(
        "--pool-mib",
        type=int,
        default=256,
        help="each method's weight pool exceeds this many MiB (default 256)",
    )
    p.add_argument("--min-reps", type=int, default=5, help="timed calls at least (default 5)")
    p.add_argument("--min-time", type=float, default=0.3, help="timed seconds at least (default 0.3)")
    p.add_argument("--max-reps", type=int, default=1000, help="timed calls at most (default 1000)")
    p.add_argument(
        "--max-time",
        type=float,
        default=2.0,
        help=f"after this many seconds, {SLOW_REPS} calls suffice (default 2)",
    )
    p.add_argument("--warmup", type=float, default=0.1, help="warm-up seconds, at least one call")
    p.add_argument(
        "--bandwidth", type=float, metavar="GBPS", help="memory bandwidth to use instead of measuring it"
    )
    p.add_argument(
        "--stream-mib", type=int, default=1024, help="size of the bandwidth-measuring tensor (default 1024)"
    )
    p.add_argument(
        "--peak-gemms",
        type=parse_ints,
        default=parse_ints(PEAK_GEMMS),
        help=f"square sizes of the GEMMs that measure the compute peaks (default {PEAK_GEMMS})",
    )


def timing_opts(args: argparse.Namespace) -> TimingOpts:
    return TimingOpts(args.min_reps, args.min_time, args.max_reps, args.max_time, args.warmup)
