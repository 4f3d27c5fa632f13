"""``save(model, path)`` / ``load(path, model=None)``: a (partly) quantized model in one safetensors file.

The file is a plain safetensors file (no pickle anywhere). Its tensors are the model's whole state
dict under the usual keys: the buffers of the quantized layers and every other parameter and
persistent buffer. Its metadata holds ``"format": "pt"`` (read by other safetensors tools) and
``"qkernels"``: one JSON header::

    {"qkernels_format_version": 1,        # layout of this file; load refuses a newer one
     "qkernels_version": "0.1.0",         # the library that wrote it
     "layers": {"0": {"format": "int8", "class": "Int8Linear", "in_features": 32,
                      "out_features": 64, "bias": true, "config": {"weight_only": false}}},
     "extra_state": {"0._extra_state": {"format": "int8", "version": 1, "weight_only": false}},
     "aliases": {"head.weight": "embed.weight"}}

``extra_state`` holds what the modules' ``get_extra_state()`` returned (JSON values only), keyed by
state-dict key. ``aliases`` maps a state-dict key to the stored key holding the same tensor: tied
tensors (one view of one storage under several keys) are written once. A tensor that shares its
storage with another in some other way (an overlapping slice) is written as its own copy, since
safetensors refuses overlapping tensors; loading copies values into the model's own tensors, so the
model keeps its own tying either way. Quantized layers are the modules registered in
``qkernels.nn.MODULES``; ``qkernels.nn`` documents the contract they keep.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from . import _native
from .nn import MODULES

FORMAT_VERSION = 1
HEADER_KEY = "qkernels"
HEADER_FIELDS = ("aliases", "extra_state", "layers", "qkernels_format_version", "qkernels_version")
LAYER_FIELDS = ("bias", "class", "config", "format", "in_features", "out_features")

ModuleT = TypeVar("ModuleT", bound=nn.Module)


@dataclass(frozen=True)
class Checkpoint:
    """The raw contents of a file written by ``save``: ``header`` is the JSON header (schema in the
    module docstring), ``tensors`` the stored tensors by key (an aliased key is not among them)."""

    header: dict[str, Any]
    tensors: dict[str, Tensor] = field(repr=False)

    def state_dict(self) -> dict[str, Any]:
        """The model's state dict as saved: the tensors, the aliased keys, and the extra states."""
        sd: dict[str, Any] = dict(self.tensors)
        sd.update({key: self.tensors[target] for key, target in self.header["aliases"].items()})
        sd.update(copy.deepcopy(self.header["extra_state"]))
        return sd


def save(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Writes ``model`` (quantized layers and everything else in its state dict) to ``path`` as a
    safetensors file with a JSON header; ``load`` reads it back. The file appears whole or not at
    all: it is written beside ``path`` under a temporary name and then renamed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"qk.save: model: expected torch.nn.Module, got {type(model).__name__}")
    path = _check_path("qk.save", path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"qk.save: path: expected a file name, got the directory {path!r}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(
            f"qk.save: path: expected a file in an existing directory, got {path!r} ({parent} does not exist)"
        )
    layers = {name: _layer_spec(name, mod) for name, mod in _quantized_modules(model, "qk.save")}
    tensors: dict[str, Tensor] = {}
    extra_state: dict[str, Any] = {}
    for key, value in model.state_dict().items():
        if not isinstance(value, Tensor):
            extra_state[key] = _json_value(value, f"qk.save: {key}")
        elif value.is_meta:
            raise ValueError(f"qk.save: {key}: expected materialised values, got a meta tensor")
        else:
            tensors[key] = value
    stored, aliases = _dedupe(tensors)
    header = {
        "qkernels_format_version": FORMAT_VERSION,
        "qkernels_version": _native._C.version(),
        "layers": layers,
        "extra_state": extra_state,
        "aliases": aliases,
    }
    metadata = {"format": "pt", HEADER_KEY: json.dumps(header, sort_keys=True, allow_nan=False)}
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        save_file(stored, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@overload
def load(path: str | os.PathLike[str], model: None = None) -> Checkpoint: ...
@overload
def load(path: str | os.PathLike[str], model: ModuleT) -> ModuleT: ...
def load(path: str | os.PathLike[str], model: nn.Module | None = None) -> Checkpoint | nn.Module:
    """Reads a file written by ``save``.

    Without ``model``: returns a ``Checkpoint`` (header dict + tensors) to inspect; only the file
    and its header are checked. With ``model`` (the float architecture, or the same model already
    quantized): makes ``model`` the saved model and returns it. Each layer of the header replaces
    the ``nn.Linear`` (or quantized module) at its name by an empty module of the header's class,
    built through ``qkernels.nn.MODULES``; a module that already has that class and config is kept.
    Everything is checked before the model changes: the header; each layer's format, class,
    in/out features and bias against the module it replaces; the set of keys against the state
    dict the model will have (missing and unexpected keys); every tensor's shape and dtype; equal
    values for keys that the model ties to one tensor; and each quantized layer's own state-dict
    checks, run on a fresh module. Then the layers are swapped in and ``load_state_dict(strict=True)``
    copies the values. A failure raises an error naming the file, and the key or layer, with what
    was expected and what was found; the model is left as it was. (The one exception: a check that
    a third-party module runs inside its own ``_load_from_state_dict``/``set_extra_state`` can only
    run while loading. Then the layers are put back, and the error says that the float tensors may
    have been partly overwritten.)
    """
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"qk.load: model: expected torch.nn.Module or None, got {type(model).__name__}")
    path = _check_path("qk.load", path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"qk.load: path: expected an existing file, got {path!r} (not found)")
    if os.path.isdir(path):
        raise IsADirectoryError(f"qk.load: path: expected a file, got the directory {path!r}")
    checkpoint = _read(path)
    if model is None:
        return checkpoint
    _load_into(model, checkpoint, f"qk.load: {path}")
    return model


# ---- save -------------------------------------------------------------------------------------------


def _quantized_modules(model: nn.Module, where: str) -> list[tuple[str, nn.Module]]:
    """The registered quantized modules of ``model`` under every name (a shared one under each)."""
    found = []
    for name, mod in model.named_modules(remove_duplicate=False):
        cls = MODULES.get(getattr(type(mod), "format_name", None))
        if cls is None:
            continue
        if type(mod) is not cls:
            raise TypeError(
                f"{where}: layer {_label(name)}: expected a class registered in qkernels.nn.MODULES, "
                f"got {type(mod).__name__} (a subclass of {cls.__name__}, which load could not rebuild)"
            )
        found.append((name, mod))
    return found


def _layer_spec(name: str, mod: nn.Module) -> dict[str, Any]:
    config = _json_value(mod.config_fields(), f"qk.save: layer {_label(name)}: config_fields()")
    return {
        "format": mod.format_name,
        "class": type(mod).__name__,
        "in_features": mod.in_features,
        "out_features": mod.out_features,
        "bias": mod.bias is not None,
        "config": config,
    }


def _json_value(value: Any, where: str) -> Any:
    """``value`` if it survives a JSON round trip unchanged (no tuples, non-str keys, NaN, objects)."""
    try:
        same = json.loads(json.dumps(value, allow_nan=False)) == value
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where}: expected a value made of JSON types, got {value!r} ({e})") from None
    if not same:
        raise TypeError(
            f"{where}: expected a value made of JSON types, got {value!r}, which JSON changes "
            "(tuples become lists, dict keys become strings)"
        )
    return value


def _dedupe(tensors: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Stores each tied tensor once (the first key; later keys become aliases) and copies any tensor
    that shares its storage with another stored one, so that no two stored tensors overlap."""
    first_key: dict[tuple, str] = {}
    by_storage: dict[tuple, list[str]] = {}
    aliases: dict[str, str] = {}
    for key, t in tensors.items():
        if t.numel() == 0:  # owns no memory: nothing to share
            by_storage[("empty", key)] = [key]
            continue
        storage = (t.device, t.untyped_storage().data_ptr())
        view = (storage, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if view in first_key:
            aliases[key] = first_key[view]
            continue
        first_key[view] = key
        by_storage.setdefault(storage, []).append(key)
    stored = {}
    for keys in by_storage.values():
        for key in keys:
            t = tensors[key]
            stored[key] = t.contiguous() if len(keys) == 1 else t.clone(memory_format=torch.contiguous_format)
    return stored, aliases


# ---- load -------------------------------------------------------------------------------------------


def _read(path: str) -> Checkpoint:
    where = f"qk.load: {path}"
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except SafetensorError as e:
        raise ValueError(
            f"{where}: expected a safetensors file, got unreadable content (corrupted or truncated?): {e}"
        ) from e
    text = metadata.get(HEADER_KEY)
    if text is None:
        raise ValueError(
            f"{where}: expected a qkernels header (safetensors metadata key {HEADER_KEY!r}), got none "
            f"(metadata keys: {sorted(metadata)}); it was not written by qk.save"
        )
    try:
        header = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: header: expected JSON, got {text[:80]!r} ({e})") from None
    _check_header(header, tensors, where)
    return Checkpoint(header, tensors)


def _check_header(header: Any, tensors: dict[str, Tensor], where: str) -> None:
    if not isinstance(header, dict):
        raise ValueError(f"{where}: header: expected a JSON object, got {type(header).__name__}")
    version = header.get("qkernels_format_version")
    if not _is_int(version) or version < 1:
        raise ValueError(
            f"{where}: qkernels_format_version: expected an int in 1..{FORMAT_VERSION}, got {version!r}"
        )
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where}: qkernels_format_version: expected at most {FORMAT_VERSION} (what qkernels "
            f"{_native._C.version()} reads), got {version} (written by qkernels "
            f"{header.get('qkernels_version')}); upgrade qkernels to load it"
        )
    if sorted(header) != list(HEADER_FIELDS):
        raise ValueError(f"{where}: header: expected the fields {list(HEADER_FIELDS)}, got {sorted(header)}")
    for key, kind in (("qkernels_version", str), ("layers", dict), ("extra_state", dict), ("aliases", dict)):
        if not isinstance(header[key], kind):
            raise ValueError(
                f"{where}: {key}: expected a JSON {kind.__name__}, got {type(header[key]).__name__}"
            )
    for name, spec in header["layers"].items():
        _check_layer_spec(spec, f"{where}: layer {_label(name)}")
    for key, target in header["aliases"].items():
        if not isinstance(target, str) or target not in tensors or key in tensors:
            raise ValueError(
                f"{where}: aliases: {key}: expected the key of a stored tensor (and no stored tensor "
                f"{key!r}), got {target!r}"
            )
    clash = sorted(header["extra_state"].keys() & (tensors.keys() | header["aliases"].keys()))
    if clash:
        raise ValueError(f"{where}: extra_state: expected keys that hold no tensor, got {_few(clash)}")


def _check_layer_spec(spec: Any, where: str) -> None:
    if not isinstance(spec, dict) or sorted(spec) != list(LAYER_FIELDS):
        got = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise ValueError(f"{where}: expected the fields {list(LAYER_FIELDS)}, got {got}")
    for key, ok, what in (
        ("format", isinstance(spec["format"], str), "a string"),
        ("class", isinstance(spec["class"], str), "a string"),
        ("in_features", _is_int(spec["in_features"]) and spec["in_features"] >= 1, "a positive int"),
        ("out_features", _is_int(spec["out_features"]) and spec["out_features"] >= 1, "a positive int"),
        ("bias", isinstance(spec["bias"], bool), "true or false"),
        ("config", isinstance(spec["config"], dict), "a JSON object"),
    ):
        if not ok:
            raise ValueError(f"{where}: {key}: expected {what}, got {spec[key]!r}")


@dataclass
class _Swap:
    """One module of the model that a layer of the checkpoint goes into (under one or more names)."""

    names: list[str]
    spec: dict[str, Any]
    old: nn.Module
    fresh: nn.Module  # built from the header; validated, then swapped in unless ``reuse``
    reuse: bool


def _plan(model: nn.Module, layers: dict[str, dict[str, Any]], where: str) -> list[_Swap]:
    registered = tuple(MODULES.values())
    swaps: dict[int, _Swap] = {}
    for name, spec in layers.items():
        at = f"{where}: layer {_label(name)}"
        cls = MODULES.get(spec["format"])
        if cls is None:
            raise ValueError(
                f"{at}: format: expected one of {sorted(MODULES)}, got {spec['format']!r} (unknown to "
                f"qkernels {_native._C.version()}; a newer qkernels may know it)"
            )
        if spec["class"] != cls.__name__:
            raise ValueError(
                f"{at}: class: expected {cls.__name__!r} (format {spec['format']!r}), got {spec['class']!r}"
            )
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"{at}: expected the model ({type(model).__name__}) to have a module of that name, got none"
            ) from None
        if not isinstance(old, (nn.Linear, *registered)):
            raise ValueError(
                f"{at}: expected torch.nn.Linear or a qkernels quantized module there, "
                f"got {type(old).__name__}"
            )
        found = {
            "in_features": old.in_features,
            "out_features": old.out_features,
            "bias": old.bias is not None,
        }
        for key, got in found.items():
            if got != spec[key]:
                raise ValueError(
                    f"{at}: {key}: expected {spec[key]} (the checkpoint), got {got} (the model's "
                    f"{type(old).__name__})"
                )
        if id(old) in swaps:  # one module under several names
            swap = swaps[id(old)]
            if swap.spec != spec:
                raise ValueError(
                    f"{at}: expected the same layer as {_label(swap.names[0])} (one module in the model), "
                    f"got {spec} against {swap.spec}"
                )
            swap.names.append(name)
            continue
        reuse = type(old) is cls and old.config_fields() == spec["config"]
        if name == "" and not reuse:
            raise ValueError(
                f"{at}: expected {cls.__name__} with config {spec['config']} (the model itself cannot "
                f"be replaced), got {type(old).__name__}"
            )
        try:
            fresh = cls(spec["in_features"], spec["out_features"], bias=spec["bias"], **spec["config"])
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"{at}: config: expected arguments {cls.__name__} accepts, got {spec['config']}: {e}"
            ) from e
        swaps[id(old)] = _Swap([name], spec, old, fresh, reuse)
    return list(swaps.values())


def _load_into(model: nn.Module, checkpoint: Checkpoint, where: str) -> None:
    layers = checkpoint.header["layers"]
    state = checkpoint.state_dict()
    swaps = _plan(model, layers, where)
    for name, mod in _quantized_modules(model, where):
        if name not in layers:
            raise ValueError(
                f"{where}: layer {_label(name)}: expected a float layer, as in the checkpoint, got "
                f"{type(mod).__name__} (load into the float model instead)"
            )

    # The state dict the model will have once the layers are swapped (the live tensors, so that
    # tied ones can be recognised).
    prefixes = tuple(_prefix(name) for name in layers)
    expected = {k: v for k, v in model.state_dict(keep_vars=True).items() if not k.startswith(prefixes)}
    for swap in swaps:
        for name in swap.names:
            expected.update(swap.fresh.state_dict(prefix=_prefix(name), keep_vars=True))
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(
            f"{where}: state dict: expected the keys of the model, got {len(missing)} missing "
            f"{_few(missing)} and {len(unexpected)} unexpected {_few(unexpected)}"
        )
    errors = []
    tied: dict[int, list[str]] = {}
    for key, want in expected.items():
        got = state[key]
        if not isinstance(want, Tensor) or not isinstance(got, Tensor):
            if isinstance(want, Tensor) != isinstance(got, Tensor):
                kinds = ["a tensor" if isinstance(v, Tensor) else "an extra state" for v in (want, got)]
                errors.append(f"{key}: expected {kinds[0]}, got {kinds[1]}")
            continue
        if want.dtype != got.dtype or want.shape != got.shape:
            errors.append(
                f"{key}: expected {want.dtype} of shape {tuple(want.shape)}, got {got.dtype} of shape "
                f"{tuple(got.shape)}"
            )
        tied.setdefault(id(want), []).append(key)
    if errors:
        raise ValueError(f"{where}: {len(errors)} entries do not fit the model:\n  " + "\n  ".join(errors))
    for keys in tied.values():
        first = state[keys[0]]
        for key in keys[1:]:
            if state[key] is not first and not torch.equal(state[key], first):
                raise ValueError(
                    f"{where}: {key}: expected the values of {keys[0]} (the model ties the two), got others"
                )

    # Each layer's own checks, on its fresh (detached) module.
    for swap in swaps:
        prefix = _prefix(swap.names[0])
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            swap.fresh.load_state_dict(sub, strict=True)
        except (RuntimeError, ValueError, TypeError) as e:
            raise ValueError(f"{where}: layer {_label(swap.names[0])}: {e}") from e
        if swap.fresh.config_fields() != swap.spec["config"]:
            raise ValueError(
                f"{where}: layer {_label(swap.names[0])}: config: expected {swap.spec['config']} (the "
                f"header), got {swap.fresh.config_fields()} from the layer's extra state"
            )

    replaced: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for swap in swaps:
            if swap.reuse:
                continue
            new = swap.fresh.to(_device_of(swap.old))
            for name in swap.names:
                parent_name, _, child = name.rpartition(".")
                parent = model.get_submodule(parent_name)
                replaced.append((parent, child, getattr(parent, child)))
                setattr(parent, child, new)
        model.load_state_dict(state, strict=True)
    except BaseException as e:
        for parent, child, old in reversed(replaced):
            setattr(parent, child, old)
        if not isinstance(e, Exception):
            raise
        raise RuntimeError(
            f"{where}: loading failed after every check had passed ({e}); the layers were put back, "
            "but the model's other tensors may have been partly overwritten"
        ) from e


# ---- small helpers ----------------------------------------------------------------------------------


def _check_path(where: str, path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{where}: path: expected str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"{where}: path: expected a str path, got {type(path).__name__}")
    if not path:
        raise ValueError(f"{where}: path: expected a file name, got ''")
    return path


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _label(name: str) -> str:
    return repr(name) if name else "<root>"


def _prefix(name: str) -> str:
    return f"{name}." if name else ""


def _few(keys: list[str], n: int = 6) -> str:
    return str(keys[:n])[:-1] + ", ...]" if len(keys) > n else str(keys)


def _device_of(mod: nn.Module) -> torch.device:
    for t in (*mod.parameters(), *mod.buffers()):
        return t.device
    return torch.device("cpu")
