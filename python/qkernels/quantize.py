"""``quantize_(model, config)``: swap a model's ``nn.Linear`` layers for quantized ones, in place.

``config`` is one config for every layer, or a mapping from layer name (or regular expression) to a
config, or to None to keep that layer in float: mixed precision.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from .calibration import Calibration, calibrate, needs_calibration
from .nn import Int3Linear, Int4Linear, Int8Linear, NF4Linear, VQLinear


@dataclass(frozen=True)
class Int8Config:
    """int8 weights per output channel. ``weight_only=False``: W8A8 with dynamic per-token
    activations (default); ``True``: W8A16."""

    weight_only: bool = False

    module_cls = Int8Linear


@dataclass(frozen=True)
class Int4Config:
    """4-bit codes with one scale (and, asymmetric, one zero point) per ``group_size`` weights along
    the input dimension (32, 64, 128, ... or -1 for the whole row). ``method``: ``"rtn"``
    (round to nearest), ``"mse"`` (a per-group clipping search that minimises the weight error) or
    ``"gptq"`` (GPTQ: minimises the output error on calibration inputs, given to ``quantize_``)."""

    group_size: int = 128
    symmetric: bool = True
    method: str = "rtn"

    module_cls = Int4Linear


@dataclass(frozen=True)
class Int3Config:
    """3-bit codes, grouped as :class:`Int4Config`."""

    group_size: int = 128
    symmetric: bool = True
    method: str = "rtn"

    module_cls = Int3Linear


@dataclass(frozen=True)
class NF4Config:
    """bitsandbytes' NormalFloat4 with one absmax per ``block_size`` weights (32, 64, 128 or 256);
    ``double_quant`` stores the absmax values in 8 bits."""

    block_size: int = 64
    double_quant: bool = False

    module_cls = NF4Linear


@dataclass(frozen=True)
class VQConfig:
    """Additive codebooks (AQLM style): ``codebooks`` codebooks (1 or 2) of ``2^codebook_bits``
    entries (8 or 16 bits) over groups of ``group_size`` = 8 weights, one scale per output channel.
    The named configurations are 2x8 (the default) and 1x16, both 2 bits per weight plus codebooks.
    ``seed`` makes the k-means initialisation reproducible."""

    codebooks: int = 2
    codebook_bits: int = 8
    group_size: int = 8
    seed: int = 0

    module_cls = VQLinear


Config = Int8Config | Int4Config | Int3Config | NF4Config | VQConfig

# The formats by name, as the command line, the demo and the report spell them.
FORMAT_CONFIGS: dict[str, Config] = {
    "int8": Int8Config(),
    "int8-w8a16": Int8Config(weight_only=True),
    "int4": Int4Config(),
    "int4-gptq": Int4Config(method="gptq"),
    "int3": Int3Config(),
    "nf4": NF4Config(),
    "vq": VQConfig(),
}
FilterFn = Callable[[nn.Module, str], bool]


def _is_config(c: object) -> bool:
    return hasattr(type(c), "module_cls")


def _resolver(config: object) -> Callable[[str], object | None]:
    """Maps a layer name to its config (None: keep float), validating ``config`` first."""
    if _is_config(config):
        return lambda name: config
    if not isinstance(config, Mapping):
        raise TypeError(
            f"quantize_: config: expected a qkernels config such as Int8Config, or a mapping from "
            f"layer names or patterns to configs, got {config!r}"
        )
    patterns = []
    for key, value in config.items():
        if not isinstance(key, str):
            raise TypeError(f"quantize_: config: expected str keys (layer names or patterns), got {key!r}")
        if value is not None and not _is_config(value):
            raise TypeError(f"quantize_: config[{key!r}]: expected a qkernels config or None, got {value!r}")
        try:
            patterns.append((key, re.compile(key), value))
        except re.error as e:
            raise ValueError(
                f"quantize_: config: key {key!r}: expected a layer name or a regex, got {e}"
            ) from None

    def resolve(name: str) -> object | None:
        if name in config:  # an exact name wins over any pattern
            return config[name]
        for _, pattern, value in patterns:
            if pattern.fullmatch(name):
                return value
        return None

    resolve.keys_matching = lambda names: {  # type: ignore[attr-defined]
        key for key, pattern, _ in patterns for n in names if n == key or pattern.fullmatch(n)
    }
    return resolve


def _calibration(model: nn.Module, names: list[str], calibration: Any, progress: bool) -> Calibration | None:
    """The statistics of the layers ``names`` that need them: ``calibration`` itself, or computed
    from it when it holds inputs."""
    if not names:
        return None
    if calibration is None:
        raise ValueError(
            f"quantize_: calibration: expected a Calibration or sample inputs for the method='gptq' layers "
            f"{names[:4]}{' ...' if len(names) > 4 else ''}, got None"
        )
    if isinstance(calibration, Calibration):
        return calibration
    return calibrate(model, calibration, layers=list(dict.fromkeys(names)), progress=progress)


def quantize_(
    model: nn.Module,
    config: Config | Mapping[str, Config | None],
    filter_fn: FilterFn | None = None,
    progress: bool = True,
    calibration: Any = None,
) -> nn.Module:
    """Replaces the ``nn.Linear`` layers of ``model`` by quantized modules, in place, and returns
    ``model``.

    ``config``: one config for every layer, or a mapping ``{name or regex: config or None}`` for
    mixed precision (an exact layer name wins; otherwise the first pattern that matches the whole
    name, in the mapping's order; None and unmatched layers stay float; a key that matches no layer
    is an error, to catch typos). ``filter_fn(module, name)``, when given, must also accept a layer.

    Every target layer is quantized before any is swapped in, so an error (it names the layer)
    leaves the model untouched. ``progress`` shows a tqdm bar over the layers on a terminal.

    ``calibration``: for GPTQ configs (``method="gptq"``), a :class:`~qkernels.calibration.Calibration`
    of this model, or sample inputs (as for ``qkernels.calibrate``) that the model, with its
    layers as they are before this call, runs once to calibrate the GPTQ layers.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_: model: expected torch.nn.Module, got {type(model).__name__}")
    resolve = _resolver(config)
    # remove_duplicate=False: a Linear shared under several names is found under each of them.
    linears = [
        (name, mod) for name, mod in model.named_modules(remove_duplicate=False) if isinstance(mod, nn.Linear)
    ]
    if hasattr(resolve, "keys_matching"):
        unused = set(config) - resolve.keys_matching([name for name, _ in linears])
        if unused:
            raise ValueError(
                f"quantize_: config: expected every key to match an nn.Linear layer, got no match for "
                f"{sorted(unused)}"
            )
    targets = [
        (name, mod, resolve(name))
        for name, mod in linears
        if resolve(name) is not None and (filter_fn is None or filter_fn(mod, name))
    ]
    if not targets:
        what = "nn.Linear layers" if filter_fn is None else "nn.Linear layers accepted by filter_fn"
        raise ValueError(f"quantize_: model: expected at least one of its {what}, got none")
    if any(name == "" for name, _, _ in targets):  # the model itself is a Linear: nothing to swap it into
        raise ValueError(
            "quantize_: model: expected a container of nn.Linear layers, got an nn.Linear; "
            "use the module's from_linear instead"
        )
    gptq = [name for name, _, cfg in targets if needs_calibration(cfg)]
    stats = _calibration(model, gptq, calibration, progress)
    replacements, done = {}, {}
    for name, mod, cfg in tqdm(targets, desc="quantize_", unit="layer", disable=None if progress else True):
        # A shared Linear is quantized once (under its first name) and stays shared.
        key = (id(mod), cfg)
        if key not in done:
            extra = {"hessian": stats.hessian(name, "quantize_")} if needs_calibration(cfg) else {}
            done[key] = cfg.module_cls.from_linear(mod, name=name, **asdict(cfg), **extra)
        replacements[name] = done[key]
    for name, new in replacements.items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, new)
    return model
