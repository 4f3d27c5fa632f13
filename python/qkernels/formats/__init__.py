"""Weight formats: one specification each (docs/formats.md), mirrored here in plain torch."""

from . import int8

__all__ = ["int8"]
