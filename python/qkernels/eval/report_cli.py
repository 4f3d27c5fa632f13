"""``qkernels report``: quantize a model with each format, compare every copy with the float model and
write the report (JSON, Markdown, HTML and PNG plots) into a directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..calibration import calibrate, needs_calibration
from ..quantize import FORMAT_CONFIGS
from .compare import compare_formats
from .layerwise import allocate
from .models import BUILTIN_MODELS, load_workload
from .report import format_summary, write_report
from .report_tables import allocation_table, text_table

INSTALL_HINT = (
    "the built-in models need scikit-learn, sentence-transformers and the model, the plots matplotlib: "
    "pip install 'qkernels[demo,plot]'"
)
MIXED = "mixed"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="qkernels report", description=" ".join(__doc__.replace("``", "").split())
    )
    p.add_argument(
        "--model",
        required=True,
        help=f"a built-in model ({', '.join(BUILTIN_MODELS)}) or module.path:callable returning "
        "(model, inputs, task[, labels[, calibration inputs]])",
    )
    p.add_argument(
        "--formats",
        help=f"comma-separated formats (default all: {','.join(FORMAT_CONFIGS)}; the GPTQ ones only for "
        "a model that brings calibration inputs)",
    )
    p.add_argument("--data", help="data for the model: for minilm a text file with one sentence per line")
    p.add_argument("--samples", type=int, help="evaluate on this many samples (default: the model's own)")
    p.add_argument(
        "--budget",
        type=float,
        help="also pick a format per layer (or fp32) within this many bits per weight, from --formats, "
        f"and report that model as {MIXED!r}",
    )
    p.add_argument(
        "--latency-repeats", type=int, default=10, help="timed calls per model (default 10; 0 skips)"
    )
    p.add_argument("--out", type=Path, required=True, help="directory to write the report into")
    p.add_argument("--title", help="the report's title (default: '<model>: quantization report')")
    # `qkernels report -- --out x` reaches here with the "--" still in front.
    if argv and argv[0] == "--":
        argv = argv[1:]
    args = p.parse_args(argv)
    args.default_formats = args.formats is None
    formats = ",".join(FORMAT_CONFIGS) if args.formats is None else args.formats
    args.formats = list(dict.fromkeys(f.strip() for f in formats.split(",") if f.strip()))
    unknown = [f for f in args.formats if f not in FORMAT_CONFIGS]
    if unknown or not args.formats:
        p.error(f"--formats: expected names from {', '.join(FORMAT_CONFIGS)}, got {args.formats or '(none)'}")
    if args.samples is not None and args.samples < 1:
        p.error(f"--samples: expected a positive integer, got {args.samples}")
    if args.latency_repeats < 0:
        p.error(f"--latency-repeats: expected an integer >= 0, got {args.latency_repeats}")
    if args.budget is not None and not args.budget > 0:
        p.error(f"--budget: expected a positive number of bits per weight, got {args.budget}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit status (2 for a missing optional dependency or bad model)."""
    args = _parse_args(argv)
    print(f"loading {args.model} ...", file=sys.stderr)
    try:
        work = load_workload(args.model, args.samples, args.data)
    except ImportError as e:
        print(f"qkernels report: {INSTALL_HINT} ({e})", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as e:
        print(f"qkernels report: {e}", file=sys.stderr)
        return 2
    gptq = [f for f in args.formats if needs_calibration(FORMAT_CONFIGS[f])]
    if gptq and work.calibration is None and args.default_formats:
        # The default asks for every format: those that cannot run here are left out, not an error.
        args.formats = [f for f in args.formats if f not in gptq]
        left = ", ".join(gptq)
        print(f"qkernels report: left out {left}: {work.name} brings no calibration inputs", file=sys.stderr)
        gptq = []
    specs: dict[str, object] = {f: f for f in args.formats}
    calibration = None
    if gptq:
        if work.calibration is None:
            print(
                f"qkernels report: --formats: {', '.join(gptq)} calibrate on inputs apart from the "
                f"evaluated ones, and {work.name} brings none (a model callable may return them as a "
                "fifth value)",
                file=sys.stderr,
            )
            return 2
        calibration = calibrate(work.model, work.calibration)
    allocation = None
    if args.budget is not None:
        candidates = [FORMAT_CONFIGS[f] for f in args.formats] + [None]
        try:
            allocation = allocate(
                work.model, candidates, args.budget, inputs=work.inputs, calibration=calibration
            )
        except ValueError as e:
            print(f"qkernels report: --budget: {e}", file=sys.stderr)
            return 2
        if all(c is None for c in allocation.mapping.values()):
            print(
                f"qkernels report: --budget {args.budget:g} keeps every layer fp32; no {MIXED!r} model",
                file=sys.stderr,
            )
            allocation = None
        else:
            specs[MIXED] = allocation.mapping
    results = compare_formats(
        work.model,
        specs,
        work.inputs,
        work.task,
        work.labels,
        class_names=work.class_names,
        latency_repeats=args.latency_repeats,
        calibration=calibration,
    )
    title = args.title or f"{work.name}: quantization report"
    files = write_report(results, args.out, title=title, allocation=allocation)
    print(title)
    print(format_summary(results))
    if allocation is not None:
        print(f"{MIXED}: {allocation.bits_per_weight:.3f} bits/weight (budget {args.budget:g})")
        print(text_table(allocation_table(allocation)))
    print(f"report: {files.html} ({files.json.name}, {files.markdown.name}, {len(files.plots)} plots)")
    return 0
