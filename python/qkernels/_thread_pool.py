"""Which threads run the kernels' parallel work: torch's OpenMP team (the default) or the library's
own pool (docs/architecture.md#threads).

torch's OpenMP workers spin for a while after every torch op. On the library's own pool, a
quantized layer that follows a torch op shares the cores with those spinning threads; on torch's
team the same threads that just finished the torch op pick up the kernel's tasks, as they would
for the next torch op.
"""

from __future__ import annotations

import ctypes
import os

from ._native import _C

POOLS = ("openmp", "own")
_state = {"pool": "own", "why": "not chosen yet"}


def _openmp_runtime() -> tuple[str, int] | tuple[None, str]:
    """``(path, address of GOMP_parallel)`` of the OpenMP runtime loaded in this process (torch's),
    or ``(None, why not)``."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if line.rstrip().endswith(".so") or ".so." in line}
    except OSError as e:
        return None, f"cannot read /proc/self/maps ({e.strerror})"
    names = ("libgomp", "libiomp5", "libomp")
    for path in sorted(paths):
        if any(os.path.basename(path).startswith(n) for n in names):
            try:
                lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | ctypes.RTLD_GLOBAL)
                return path, ctypes.cast(lib.GOMP_parallel, ctypes.c_void_p).value
            except (OSError, AttributeError):
                continue
    return None, "no OpenMP runtime (libgomp, libiomp5, libomp) with GOMP_parallel is loaded"


def set_thread_pool(name: str) -> None:
    """Runs the kernels' parallel work on ``"openmp"``, the OpenMP team torch uses (the default
    when torch has one), or on ``"own"``, the library's own threads. ``QKERNELS_POOL`` sets it at
    import. Either gives bit-identical results."""
    if name not in POOLS:
        raise ValueError(f"set_thread_pool: name: expected one of {', '.join(POOLS)}, got {name!r}")
    if name == "own":
        _C.use_openmp(0)
        _state.update(pool="own", why="chosen with set_thread_pool('own') or QKERNELS_POOL=own")
        return
    path, found = _openmp_runtime()
    if path is None:
        raise RuntimeError(f"set_thread_pool: 'openmp' is not available: {found}")
    _C.use_openmp(found)
    _state.update(pool="openmp", why=path)


def init_from_env() -> None:
    """At import: ``QKERNELS_POOL`` if set (an unusable choice raises), else OpenMP where torch has
    it and the own pool where not."""
    env = os.environ.get("QKERNELS_POOL", "")
    if env:
        if env not in POOLS:
            raise RuntimeError(f"QKERNELS_POOL: expected one of {', '.join(POOLS)}, got {env!r}")
        set_thread_pool(env)
        return
    try:
        set_thread_pool("openmp")
    except RuntimeError as e:
        _state.update(pool="own", why=str(e).split(": ", 2)[-1])


def thread_pool() -> dict:
    """``{"pool": "openmp" | "own", "detail": the runtime's path, or why the own pool}``."""
    return {"pool": _state["pool"], "detail": _state["why"]}
