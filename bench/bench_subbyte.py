"""Roofline benchmark of the sub-byte kernels: ``--format int4|int3|nf4|vq`` (default int4), the
same as ``qkernels bench <format>``. Other options: ``-h``. The method is written in
``qkernels/benchmarks/subbyte.py`` and ``roofline.py``; see bench/README.md."""

import argparse
import sys

from qkernels.benchmarks import run_bench

if __name__ == "__main__":
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--format", default="int4", choices=["int4", "int3", "nf4", "vq"])
    args, rest = parser.parse_known_args()
    sys.exit(run_bench(args.format, rest))
