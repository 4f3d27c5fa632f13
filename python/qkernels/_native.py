"""Loads the private extension ``qkernels._C`` and translates between torch and its raw ABI."""

from __future__ import annotations

import torch

from . import _C

DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
ISA_NAMES = tuple(_C.isa_name(i) for i in range(_C.isa_count()))


def isa_available() -> list[str]:
    return [name for i, name in enumerate(ISA_NAMES) if _C.isa_available(i)]


def isa_active() -> str:
    return ISA_NAMES[_C.isa_active()]


def set_isa(name: str) -> None:
    """Forces the CPU kernel path (``generic``, ``avx2``, ``avx512`` or ``neon``) for this process."""
    if name not in ISA_NAMES:
        raise ValueError(f"set_isa: name: expected one of {', '.join(ISA_NAMES)}, got {name!r}")
    _C.set_isa(ISA_NAMES.index(name))


def check_env_isa() -> None:
    """Fails loudly when QKERNELS_ISA names a path that this CPU or build cannot run (the core's
    own check and message)."""
    error = _C.isa_env_error()
    if error is not None:
        raise RuntimeError(error)


def threads() -> int:
    """The thread count the kernels use for this call: torch's, so the two never oversubscribe."""
    return max(1, torch.get_num_threads())
