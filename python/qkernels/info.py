"""``qk.info()``: what this build of qkernels can run here."""

from __future__ import annotations

import torch

from . import _native
from ._native import _C


def info() -> dict:
    """A dict: version, CPU paths (active, available, compiled), CUDA status and threads."""
    return {
        "version": _C.version(),
        "isa": {
            "active": _native.isa_active(),
            "available": _native.isa_available(),
            "all": list(_native.ISA_NAMES),
        },
        "cuda": {"available": False, "reason": "this build has no CUDA kernels yet"},
        "threads": _native.threads(),
        "torch": torch.__version__,
    }
