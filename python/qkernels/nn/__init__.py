"""Drop-in replacements for ``torch.nn.Linear``.

``MODULES`` maps each format name to its module class. ``qk.save`` / ``qk.load`` handle any class
registered there, and a class is registered only if it keeps this contract:

- ``format_name: str``, a class attribute: the format's name (``"int8"``), unique in ``MODULES``
  and equal to the key it is registered under.
- ``cls(in_features, out_features, bias=<bool>, **config)`` builds an empty module whose buffers
  already have the shapes and dtypes of a quantized one; ``config`` holds keyword arguments only.
- Attributes ``in_features`` and ``out_features`` (ints), and ``bias``: a tensor, or None when the
  layer has no bias.
- ``config_fields() -> dict``: the ``config`` above, with JSON values only (str, int, float, bool,
  None, lists and dicts of those), such that ``cls(in_features, out_features, bias=...,
  **module.config_fields())`` accepts ``module.state_dict()``.
- Quantized tensors are buffers (or parameters), so they are in the state dict. The format name,
  the format's own version and the config travel in ``get_extra_state()``, a dict with JSON values;
  ``set_extra_state`` rejects another format or a newer version.
- ``_load_from_state_dict`` checks the dtype and shape of every tensor, and the values that can be
  checked cheaply, and appends its complaints to ``error_msgs``, so ``load_state_dict(strict=True)``
  rejects a bad state dict.
- ``from_linear(linear, **config)`` quantizes an ``nn.Linear``; ``dequantize()`` returns the
  float32 ``[out, in]`` weight that ``forward`` uses.
"""

from .grouped_linear import Int3Linear, Int4Linear
from .int8_linear import Int8Linear
from .nf4_linear import NF4Linear
from .vq_linear import VQLinear

MODULES: dict[str, type] = {
    cls.format_name: cls for cls in (Int8Linear, Int4Linear, Int3Linear, NF4Linear, VQLinear)
}

__all__ = ["MODULES", "Int3Linear", "Int4Linear", "Int8Linear", "NF4Linear", "VQLinear"]
