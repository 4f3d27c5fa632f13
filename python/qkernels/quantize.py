"""``quantize_(model, config)``: swap a model's ``nn.Linear`` layers for quantized ones, in place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from torch import nn

from .nn import Int8Linear


@dataclass(frozen=True)
class Int8Config:
    """int8 weights per output channel. ``weight_only=False``: W8A8 with dynamic per-token
    activations (default); ``True``: W8A16."""

    weight_only: bool = False

    module_cls = Int8Linear


FilterFn = Callable[[nn.Module, str], bool]


def quantize_(model: nn.Module, config: Int8Config, filter_fn: FilterFn | None = None) -> nn.Module:
    """Replaces every ``nn.Linear`` in ``model`` (those for which ``filter_fn(module, name)`` is true,
    when given) by the quantized module of ``config``, in place, and returns ``model``.

    Every target layer is quantized before any is swapped in, so an error (it names the layer)
    leaves the model untouched.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_: model: expected torch.nn.Module, got {type(model).__name__}")
    if not hasattr(type(config), "module_cls"):
        raise TypeError(f"quantize_: config: expected a qkernels config such as Int8Config, got {config!r}")
    targets = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and (filter_fn is None or filter_fn(mod, name))
    ]
    if not targets:
        what = "nn.Linear layers" if filter_fn is None else "nn.Linear layers accepted by filter_fn"
        raise ValueError(f"quantize_: model: expected at least one of its {what}, got none")
    fields = asdict(config)
    replacements = {
        name: config.module_cls.from_linear(mod, name=name or "<root>", **fields) for name, mod in targets
    }
    if "" in replacements:  # the model itself is a Linear: nothing to swap it into
        raise ValueError(
            "quantize_: model: expected a container of nn.Linear layers, got an nn.Linear; "
            "use the module's from_linear instead"
        )
    for name, new in replacements.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, new)
    return model
