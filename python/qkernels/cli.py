"""The ``qkernels`` command: ``info | bench | demo | report``."""

from __future__ import annotations

import argparse
import json
import sys


def _info(args: argparse.Namespace) -> int:
    import qkernels

    print(json.dumps(qkernels.info(), indent=2))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .benchmarks import run_bench

    return run_bench(args.format, args.rest)


def _demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(args.rest)


def _report(args: argparse.Namespace) -> int:
    from .eval.report_cli import main as report_main

    return report_main(args.rest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qkernels", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build, CPU paths and threads as JSON").set_defaults(fn=_info)
    p = sub.add_parser(
        "bench", add_help=False, help="roofline benchmark of one format (see `qkernels bench int8 -h`)"
    )
    p.add_argument("format", choices=["int8", "int4", "int3", "nf4", "vq"])
    p.set_defaults(fn=_bench)
    p = sub.add_parser(
        "demo", add_help=False, help="quantize real models with every format and print the tables"
    )
    p.set_defaults(fn=_demo)
    p = sub.add_parser(
        "report",
        add_help=False,
        help="compare a model with its quantized copies and write an HTML/JSON report "
        "(see `qkernels report -h`)",
    )
    p.set_defaults(fn=_report)
    # Options after `bench FORMAT`, `demo` and `report` belong to those programs, which parse them themselves
    # (and answer -h with their own help).
    args, rest = parser.parse_known_args(argv)
    if args.command == "info" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
