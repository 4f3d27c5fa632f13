"""Roofline benchmarks, one module per format; ``qkernels bench <format>`` and ``bench/`` call them.
The shared method (timing, weight pools, machine peaks, columns) is in :mod:`.roofline`."""

from __future__ import annotations

from importlib import import_module

# Format name (as on the command line) -> module with ``main(argv) -> int``.
FORMATS = {"int8": "int8", "int4": "subbyte", "int3": "subbyte", "nf4": "subbyte", "vq": "subbyte"}


def run_bench(fmt: str, argv: list[str]) -> int:
    """Runs the benchmark of ``fmt`` with command-line options ``argv``; returns the exit status."""
    if fmt not in FORMATS:
        raise ValueError(f"run_bench: fmt: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    return import_module(f".{FORMATS[fmt]}", __name__).main(argv, fmt)
