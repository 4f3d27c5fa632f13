"""Drop-in replacements for ``torch.nn.Linear``."""

from .int8_linear import Int8Linear

__all__ = ["Int8Linear"]
