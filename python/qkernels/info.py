"""``qk.info()``: what this build of qkernels can run here."""

from __future__ import annotations

import torch

from . import _native, _thread_pool
from ._native import _C


def info() -> dict:
    """A dict: version, CPU paths (active, engine, available, compiled), CUDA status, threads and
    the thread pool that runs them."""
    return {
        "version": _C.version(),
        "isa": {
            "active": _native.isa_active(),
            "engine": _C.isa_engine(),
            "available": _native.isa_available(),
            "all": list(_native.ISA_NAMES),
        },
        "cuda": {"available": False, "reason": "this build has no CUDA kernels yet"},
        "threads": _native.threads(),
        "thread_pool": _thread_pool.thread_pool(),
        "torch": torch.__version__,
    }
