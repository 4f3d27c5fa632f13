"""Roofline benchmark of the int8 kernels; the same as ``qkernels bench int8``. Options: ``-h``.
The method is written in ``qkernels/benchmarks/int8.py`` and ``roofline.py``; see bench/README.md."""

import sys

from qkernels.benchmarks import run_bench

if __name__ == "__main__":
    sys.exit(run_bench("int8", sys.argv[1:]))
