"""Calibration: the second moment ``H = X^T X / rows`` of the inputs of each ``nn.Linear``, over sample
batches run through the model. GPTQ (``method="gptq"`` in ``Int4Config``/``Int3Config``) needs it
to weigh a layer's rounding errors by how much they reach its outputs.

``calibrate(model, inputs)`` runs the model once; ``quantize_(model, config, calibration=...)``
takes the result, or the inputs themselves and calibrates the layers that need it. Every row of
every batch counts, padding positions included: pass batches without padding (or of similar
lengths) when it matters.

Memory: one float64 ``[K, K]`` matrix per calibrated layer (K = in_features), on the device the
layer's inputs are on while the model runs, on the CPU in the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ._batches import iter_batches

__all__ = ["Calibration", "calibrate", "needs_calibration"]


def needs_calibration(config: Any) -> bool:
    """Whether quantizing with ``config`` needs a :class:`Calibration` (GPTQ)."""
    return getattr(config, "method", None) == "gptq"


@dataclass(frozen=True)
class Calibration:
    """Per layer name: ``hessians[name]`` = ``X^T X / rows`` (float64 ``[K, K]``) and ``rows[name]``,
    the number of input rows it averages (a shared layer counts each of its calls)."""

    hessians: dict[str, Tensor]
    rows: dict[str, int]

    def hessian(self, name: str, where: str) -> Tensor:
        """The matrix of layer ``name``; ``where`` names the caller in the error for a layer that was
        not calibrated."""
        if name not in self.hessians:
            raise ValueError(
                f"{where}: calibration: expected statistics for layer {name!r}, got them for "
                f"{sorted(self.hessians)[:4]}{' ...' if len(self.hessians) > 4 else ''}"
            )
        return self.hessians[name]


def select_layers(available: list[str], layers: Any, fn: str, model_arg: str) -> list[str]:
    """``layers`` (default: all of ``available``), checked to be a non-empty list of names from
    ``available``, the nn.Linear names of the argument ``model_arg``; duplicates dropped."""
    if layers is None:
        return list(available)
    if isinstance(layers, str) or not isinstance(layers, (list, tuple)) or not layers:
        raise TypeError(f"{fn}: layers: expected a non-empty list of nn.Linear names, got {layers!r}")
    unknown = [n for n in layers if n not in available]
    if unknown:
        raise ValueError(
            f"{fn}: layers: expected names of nn.Linear layers of {model_arg} (e.g. {available[:3]}), got "
            f"{unknown}"
        )
    return list(dict.fromkeys(layers))


def _linears(model: nn.Module, fn: str) -> dict[str, nn.Linear]:
    # remove_duplicate=False: a Linear shared under several names is found under each of them.
    found = {n: m for n, m in model.named_modules(remove_duplicate=False) if isinstance(m, nn.Linear)}
    if not found or list(found) == [""]:
        raise ValueError(f"{fn}: model: expected a container of nn.Linear layers, got none")
    return found


def calibrate(
    model: nn.Module, inputs: Any, layers: Sequence[str] | None = None, progress: bool = True
) -> Calibration:
    """Runs ``model`` (as it is: train/eval mode untouched, no gradients) on ``inputs`` (a Tensor,
    a tuple of arguments, a dict of keyword arguments, or a list of those, one per batch) and
    returns the second moment of the inputs of each ``nn.Linear`` named in ``layers`` (default:
    all). A tqdm bar counts the batches unless ``progress=False``."""
    fn = "calibrate"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model: expected torch.nn.Module, got {type(model).__name__}")
    found = _linears(model, fn)
    names = select_layers(list(found), layers, fn, "model")
    # A shared Linear runs once per call whatever its names: one accumulator per module.
    modules = {id(found[n]): found[n] for n in names}
    # Summed where the inputs are (a model on a GPU keeps its activations there), fp64 throughout.
    sums: dict[int, Tensor] = {}
    rows = dict.fromkeys(modules, 0)

    def hook_for(key: int):
        def hook(_mod, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            if not bool(torch.isfinite(x).all()):
                raise ValueError(
                    f"{fn}: inputs: expected finite values at each Linear's input, got NaN or Inf"
                )
            # fp32 products, fp64 sum: a batch's error stays at fp32's, the total does not grow with rows.
            product = (x.T @ x).double()
            sums[key] = product if key not in sums else sums[key].add_(product)
            rows[key] += x.shape[0]

        return hook

    handles = [m.register_forward_pre_hook(hook_for(key)) for key, m in modules.items()]
    try:
        with torch.no_grad():
            batches = iter_batches(inputs, fn)
            for args, kwargs in tqdm(batches, desc=fn, unit="batch", disable=None if progress else True):
                model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    unseen = [n for n in names if rows[id(found[n])] == 0]
    if unseen:
        raise ValueError(f"{fn}: inputs: expected every calibrated layer to run, got none for {unseen[:4]}")
    means = {key: (s / rows[key]).cpu() for key, s in sums.items()}
    return Calibration({n: means[id(found[n])] for n in names}, {n: rows[id(found[n])] for n in names})
