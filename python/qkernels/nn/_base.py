"""What the quantized Linear modules share: the bias buffer, the format tag in the state dict, the
state-dict checks, and the choice between the eager op and the traced custom op."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ._checks import check_features, check_source_linear


class QuantizedLinear(nn.Module):
    """Base of the quantized Linear modules (int8, group-wise, codebook). Subclasses set
    ``format_name`` and ``format_version``, register their quantized buffers, and implement
    ``config_fields``, ``_expected_buffers`` and, where values can be checked, ``_check_values``;
    see the contract in :mod:`qkernels.nn`."""

    format_name = ""
    format_version = 1

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        check_features(type(self).__name__, in_features, out_features)
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    # ---- hooks for subclasses ------------------------------------------------------------------

    def config_fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def _expected_buffers(self) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        """Name -> (dtype, shape) of every persistent quantized buffer (bias excluded)."""
        raise NotImplementedError

    def _check_values(self, tensors: dict[str, Tensor]) -> list[str]:
        """Complaints about buffer values that can be checked cheaply (shapes already match)."""
        return []

    # ---- shared behaviour ------------------------------------------------------------------------

    def _apply(self, fn, recurse=True):
        # The quantized buffers keep their dtypes: model.to(torch.bfloat16) or .half() moves them
        # (device changes still apply) but must not round codes, scales and codebooks.
        return super()._apply(lambda t: fn(t).to(t.dtype), recurse)

    @classmethod
    def _where(cls, name: str | None) -> str:
        return f"{cls.__name__}.from_linear({name!r})" if name else f"{cls.__name__}.from_linear"

    @classmethod
    def _empty_like(cls, linear: nn.Linear, name: str | None, **config: Any) -> QuantizedLinear:
        """Validates ``linear`` and builds an empty module of its shape; errors in ``config`` are
        reported with the layer's name."""
        check_source_linear(cls.__name__, linear, name)
        out_features, in_features = linear.weight.shape
        try:
            return cls(in_features, out_features, bias=linear.bias is not None, **config)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{cls._where(name)}: {e}") from None

    def _finish_from_linear(self, linear: nn.Linear) -> QuantizedLinear:
        if linear.bias is not None:
            with torch.no_grad():
                self.bias.copy_(linear.bias.detach().float())
        return self.to(linear.weight.device)

    def extra_repr(self) -> str:
        cfg = ", ".join(f"{k}={v}" for k, v in self.config_fields().items())
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, format={self.format_name}, {cfg}"
        )

    def get_extra_state(self) -> dict[str, Any]:
        return {"format": self.format_name, "version": self.format_version, **self.config_fields()}

    def set_extra_state(self, state: Any) -> None:
        cls = type(self).__name__
        if not isinstance(state, dict) or state.get("format") != self.format_name:
            got = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{cls} state_dict: format: expected {self.format_name!r}, got {got!r}")
        version = state.get("version")
        if not isinstance(version, int) or not 1 <= version <= self.format_version:
            raise ValueError(
                f"{cls} state_dict: version: expected 1..{self.format_version} (this qkernels), "
                f"got {version!r}; upgrade qkernels to load it"
            )
        for key, value in self.config_fields().items():
            if key in state and state[key] != value:
                raise ValueError(
                    f"{cls} state_dict: {key}: expected {value!r} (this module's config), got {state[key]!r}"
                )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        expect = dict(self._expected_buffers())
        if self.bias is not None:
            expect["bias"] = (torch.float32, (self.out_features,))
        present = {}
        for key, (dtype, shape) in expect.items():
            t = state_dict.get(prefix + key)
            if t is None:
                continue  # reported as missing by torch
            if t.dtype != dtype or tuple(t.shape) != shape:
                errors.append(
                    f"{prefix}{key}: expected {dtype} of shape {shape}, got {t.dtype} of shape "
                    f"{tuple(t.shape)}"
                )
            else:
                present[key] = t
        errors.extend(f"{prefix}{msg}" for msg in self._check_values(present))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)


def check_finite_scales(name: str, t: Tensor | None) -> list[str]:
    """A NaN/Inf scale would turn outputs into NaN silently: report it as corruption."""
    if t is None or bool(torch.isfinite(t).all()):
        return []
    bad = (~torch.isfinite(t)).nonzero()[0].tolist()
    return [f"{name}: expected finite values, got {t[tuple(bad)].item()} at {bad} (corrupted?)"]


def run_op(eager, traced, *args):
    """Inference only: torch.compile traces the registered op; eager calls skip the dispatcher."""
    return (traced if torch.compiler.is_compiling() else eager)(*args)
