"""qkernels: kernel-first quantized inference for PyTorch.

Usage::

    import qkernels as qk
    qk.quantize_(model, qk.Int8Config())  # swap nn.Linear -> qk.nn.Int8Linear in place
"""

from . import _native, _thread_pool

_native.check_env_isa()
_thread_pool.init_from_env()

from . import formats, nn, ops, reference  # noqa: E402  (ops registers torch.ops.qkernels.*)
from ._native import set_isa  # noqa: E402
from ._thread_pool import set_thread_pool  # noqa: E402
from .calibration import Calibration, calibrate  # noqa: E402
from .info import info  # noqa: E402
from .quantize import (  # noqa: E402
    FORMAT_CONFIGS,
    Int3Config,
    Int4Config,
    Int8Config,
    NF4Config,
    VQConfig,
    quantize_,
)
from .serialization import load, save  # noqa: E402

__version__ = _native._C.version()

__all__ = [
    "FORMAT_CONFIGS",
    "Calibration",
    "Int3Config",
    "Int4Config",
    "Int8Config",
    "NF4Config",
    "VQConfig",
    "calibrate",
    "formats",
    "info",
    "load",
    "nn",
    "ops",
    "quantize_",
    "reference",
    "save",
    "set_isa",
    "set_thread_pool",
]
