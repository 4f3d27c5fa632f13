"""Weight formats: one specification each (docs/formats.md), mirrored here in plain torch."""

from . import int3, int4, int8, nf4, vq

__all__ = ["int3", "int4", "int8", "nf4", "vq"]
