"""Layer by layer: where quantization error enters a model, which layers are sensitive, and a per-layer
choice of format under a bits-per-weight budget.

- ``layerwise(float_model, quant_model, inputs)`` compares every quantized layer with its float twin.
- ``sensitivity(float_model, config, metric=...)`` quantizes one layer at a time and ranks the layers
  by what that costs the metric.
- ``allocate(model, candidates, budget_bits_per_weight)`` picks a format (or float) per layer so that
  the model fits the budget at the lowest estimated cost.

Nothing here knows a format: a quantized layer is any module with ``dequantize()`` (the float32
``[out, in]`` weight it effectively uses), and a config is any frozen dataclass with ``module_cls``
whose ``from_linear(linear, name=..., **fields)`` builds the layer. Definitions of every number are
in docs/evaluation.md.
"""

from __future__ import annotations

import copy
import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._batches import iter_batches as _batches
from ..calibration import Calibration, calibrate, needs_calibration, select_layers
from ..quantize import quantize_

__all__ = [
    "Allocation",
    "AllocationRow",
    "GridUse",
    "LayerReport",
    "LayerSensitivity",
    "Sensitivity",
    "TensorStats",
    "allocate",
    "layerwise",
    "sensitivity",
]

MODES = ("isolated", "propagated")
OUTLIER_STDS = 6.0
# Percentiles and outliers are computed on at most this many values per tensor (exact below it).
MAX_SAMPLES = 1 << 18

Metric = Callable[[nn.Module], float]


# ---- statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorStats:
    """Distribution of a tensor's values. ``min``/``max``/``numel`` cover every value seen; the rest
    are computed on ``sampled`` values (all of them up to ``MAX_SAMPLES``, beyond that an evenly
    strided subset). ``outliers``: sampled values with ``|x - mean| > 6 std`` (population std)."""

    numel: int
    sampled: int
    min: float
    max: float
    mean: float
    std: float
    p1: float
    p50: float
    p99: float
    p99_9: float
    outliers: int


class _Sampler:
    """Streams values in and keeps every ``stride``-th of them (global index), doubling the stride
    whenever more than ``cap`` are kept, so the kept set stays an even subset of everything seen."""

    def __init__(self, cap: int = MAX_SAMPLES) -> None:
        self.cap, self.stride, self.seen = cap, 1, 0
        self.parts: list[Tensor] = []
        self.kept = 0
        self.lo, self.hi = math.inf, -math.inf

    def add(self, x: Tensor) -> None:
        flat = x.detach().reshape(-1).float().cpu()
        if flat.numel() == 0:
            return
        self.lo = min(self.lo, flat.min().item())
        self.hi = max(self.hi, flat.max().item())
        part = flat[(-self.seen) % self.stride :: self.stride].clone()
        self.parts.append(part)
        self.kept += part.numel()
        self.seen += flat.numel()
        while self.kept > self.cap:
            # The kept values sit at global indices 0, s, 2s, ...: every other one of them is 0, 2s, ...
            kept = torch.cat(self.parts)[::2]
            self.parts, self.kept, self.stride = [kept], kept.numel(), self.stride * 2

    def stats(self) -> TensorStats | None:
        if not self.seen:
            return None
        v = torch.cat(self.parts).double()
        mean, std = v.mean(), v.std(correction=0)
        q = torch.quantile(v, torch.tensor([0.01, 0.5, 0.99, 0.999], dtype=torch.float64))
        outliers = int(((v - mean).abs() > OUTLIER_STDS * std).sum())
        return TensorStats(
            self.seen, v.numel(), self.lo, self.hi, mean.item(), std.item(), *q.tolist(), outliers
        )


def _tensor_stats(x: Tensor) -> TensorStats | None:
    s = _Sampler()
    s.add(x)
    return s.stats()


def _sqnr_db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


@dataclass(frozen=True)
class GridUse:
    """How a layer's weights use their quantized grid, measured from the float weight ``w`` and
    ``ŵ = dequantize()`` per group (``group_size``/``block_size`` of the module when it has one,
    else per row); every share is averaged over groups (fractions of weights: over all weights).

    - ``bits``: code bits per weight (``module.bits``, else the bits of the module's integer
      state-dict tensors per weight, rounded); None when neither exists, and then ``level_use`` and
      ``range_use`` are None.
    - ``level_use``: distinct values of ŵ in a group / min(2^bits, group length).
    - ``range_use``: round((max ŵ − min ŵ) / step) / (2^bits − 1), capped at 1: the share of the
      code range the group spans, with step = the smallest gap between distinct values of ŵ in the
      group (the grid step of a uniform grid; smaller on a non-uniform one, where the share is then
      an upper bound).
    - ``clipped``: share of weights beyond their group's reproduced range by more than rounding
      explains: ``w > max ŵ + step/2`` or ``w < min ŵ − step/2``.
    - ``underflowed``: share of weights with ``w != 0`` and ``ŵ == 0``.
    """

    group_size: int
    bits: int | None
    level_use: float | None
    range_use: float | None
    clipped: float
    underflowed: float


def _code_bits(module: nn.Module, weights: int) -> int | None:
    bits = getattr(module, "bits", None)
    if isinstance(bits, int) and not isinstance(bits, bool) and bits > 0:
        return bits
    stored = sum(
        t.numel() * t.element_size() * 8
        for t in module.state_dict().values()
        if isinstance(t, Tensor) and _is_integer(t.dtype)
    )
    return round(stored / weights) if stored else None


def _is_integer(dtype: torch.dtype) -> bool:
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def _group_size(module: nn.Module, k: int) -> int:
    for attr in ("group_size", "block_size"):
        g = getattr(module, attr, None)
        if isinstance(g, int) and not isinstance(g, bool) and 0 < g < k:
            return g
    return k


def _grid_use(w: Tensor, w_hat: Tensor, group_size: int, bits: int | None) -> GridUse:
    n, k = w.shape
    ngroups = -(-k // group_size)
    pad = ngroups * group_size - k
    # Padding with NaN keeps a partial last group out of every comparison (NaN sorts last).
    wg = F.pad(w.float(), (0, pad), value=math.nan).reshape(n, ngroups, group_size)
    hg = F.pad(w_hat.float(), (0, pad), value=math.nan).reshape(n, ngroups, group_size)
    levels, _ = hg.sort(dim=-1)
    length = (~hg.isnan()).sum(-1)
    lo, hi = levels[..., 0], levels.gather(-1, (length - 1).unsqueeze(-1)).squeeze(-1)
    gaps = levels.diff(dim=-1)
    distinct = 1 + (gaps > 0).sum(-1)
    step = torch.where(gaps > 0, gaps, torch.full_like(gaps, math.inf)).amin(-1)
    # A single-level group has no step; nothing in it counts as clipped.
    half = torch.where(step.isinf(), torch.full_like(step, math.inf), step / 2)
    tol = 4 * torch.finfo(torch.float32).eps * torch.maximum(lo.abs(), hi.abs())
    reach_hi, reach_lo = (hi + half + tol).unsqueeze(-1), (lo - half - tol).unsqueeze(-1)
    clipped = ((wg > reach_hi) | (wg < reach_lo)).sum().item() / w.numel()
    underflowed = ((w != 0) & (w_hat == 0)).sum().item() / w.numel()
    level_use = range_use = None
    if bits is not None:
        cap = torch.clamp(length, max=2**bits).double()
        level_use = (distinct / cap).clamp(max=1.0).mean().item()
        # Whole steps: fp32 products q * scale put the gaps an ulp or so apart.
        span = torch.where(step.isinf(), torch.zeros_like(step), ((hi - lo) / step).round()).double()
        range_use = (span / (2**bits - 1)).clamp(max=1.0).mean().item()
    return GridUse(group_size, bits, level_use, range_use, clipped, underflowed)


# ---- inputs -------------------------------------------------------------------------------------


def _first_tensor(args: tuple, kwargs: dict) -> Tensor | None:
    return next((v for v in [*args, *kwargs.values()] if isinstance(v, Tensor)), None)


def _check_model(model: Any, fn: str, arg: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: {arg}: expected torch.nn.Module, got {type(model).__name__}")


def _linear_names(model: nn.Module, fn: str, arg: str = "model") -> list[str]:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{fn}: {arg}: expected at least one nn.Linear layer, got none")
    if names == [""]:
        raise ValueError(f"{fn}: {arg}: expected a container of nn.Linear layers, got an nn.Linear")
    return names


# ---- layerwise ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerReport:
    """One quantized layer against its float twin. Output figures cover every call of the layer
    over all inputs: ``sqnr_db = 10 log10(Σ y² / Σ (ŷ − y)²)``, ``cosine`` of the flattened
    outputs, ``mse`` per element. ``weight_sqnr_db`` compares the float weight with
    ``dequantize()``; ``input_stats`` describe the float model's input to the layer. A layer the
    inputs never reach has ``calls == 0``, NaN output figures and no ``input_stats``."""

    name: str
    format: str
    calls: int
    sqnr_db: float
    cosine: float
    mse: float
    weight_sqnr_db: float
    weight_stats: TensorStats
    input_stats: TensorStats | None
    grid: GridUse


@dataclass
class _ErrorAcc:
    ref2: float = 0.0
    err2: float = 0.0
    dot: float = 0.0
    quant2: float = 0.0
    count: int = 0
    calls: int = 0
    inputs: _Sampler = field(default_factory=_Sampler)

    def add(self, ref: Tensor, out: Tensor, name: str) -> None:
        if not isinstance(out, Tensor) or out.shape != ref.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"layerwise: quant_model: layer {name!r} expected output of shape "
                f"{tuple(ref.shape)}, got {got}"
            )
        r, o = ref.detach().double(), out.detach().double()
        self.ref2 += (r * r).sum().item()
        self.err2 += ((o - r) ** 2).sum().item()
        self.dot += (r * o).sum().item()
        self.quant2 += (o * o).sum().item()
        self.count += r.numel()
        self.calls += 1


def _format_name(module: nn.Module) -> str:
    # The house convention puts "format=<name> <variant>" last in extra_repr.
    extra = module.extra_repr()
    _, found, fmt = extra.partition("format=")
    return f"{type(module).__name__} ({fmt.strip()})" if found else type(module).__name__


def _quantized_pairs(
    float_model: nn.Module, quant_model: nn.Module
) -> list[tuple[str, nn.Module, nn.Module]]:
    fn = "layerwise"
    _check_model(float_model, fn, "float_model")
    _check_model(quant_model, fn, "quant_model")
    if float_model is quant_model:
        raise ValueError(
            f"{fn}: quant_model: expected a separate quantized copy of float_model, got the same object"
        )
    fnames = dict(float_model.named_modules())
    qnames = dict(quant_model.named_modules())
    if fnames.keys() != qnames.keys():
        only_f = sorted(fnames.keys() - qnames.keys())[:5]
        only_q = sorted(qnames.keys() - fnames.keys())[:5]
        raise ValueError(
            f"{fn}: quant_model: expected the module names of float_model, got {only_f} only in "
            f"float_model and {only_q} only in quant_model"
        )
    pairs = []
    for name, qmod in qnames.items():
        # A quantized layer has dequantize() and integer feature counts; a whole model may have a
        # dequantize() of its own (transformers' PreTrainedModel does), which is not a layer.
        if not callable(getattr(qmod, "dequantize", None)) or not all(
            isinstance(getattr(qmod, a, None), int) for a in ("in_features", "out_features")
        ):
            continue
        fmod = fnames[name]
        w = getattr(fmod, "weight", None)
        if callable(getattr(fmod, "dequantize", None)) or not isinstance(w, Tensor) or w.dim() != 2:
            raise ValueError(
                f"{fn}: float_model: expected a float layer with a 2-D weight at {name!r}, got "
                f"{type(fmod).__name__}"
            )
        w_hat = qmod.dequantize()
        if tuple(w_hat.shape) != tuple(w.shape):
            raise ValueError(
                f"{fn}: quant_model: layer {name!r} expected dequantize() of shape "
                f"{tuple(w.shape)} (the float weight), got {tuple(w_hat.shape)}"
            )
        pairs.append((name, fmod, qmod))
    if not pairs:
        raise ValueError(
            f"{fn}: quant_model: expected at least one quantized layer (a module with dequantize(), "
            "in_features and out_features), got none"
        )
    return pairs


@torch.no_grad()
def layerwise(
    float_model: nn.Module, quant_model: nn.Module, inputs: Any, mode: str = "isolated"
) -> list[LayerReport]:
    """Compares every quantized layer of ``quant_model`` (a module with ``dequantize()``) with the
    layer of the same name in ``float_model``; returns one ``LayerReport`` per layer, in model order.

    ``mode="isolated"``: the float model runs on ``inputs`` and each quantized layer runs on the
    float input its twin received, so a report shows only that layer's own error.
    ``mode="propagated"``: both models run on ``inputs`` and each layer's outputs are compared as
    they occur, so a report shows the error accumulated up to and including that layer.

    ``inputs``: a Tensor or a tuple of positional arguments (one batch), or a list (any iterable)
    of batches, each a Tensor, a tuple or a dict of keyword arguments. Forward hooks are removed
    before returning, also on error.
    """
    if mode not in MODES:
        raise ValueError(f"layerwise: mode: expected one of {MODES}, got {mode!r}")
    pairs = _quantized_pairs(float_model, quant_model)
    acc = {name: _ErrorAcc() for name, _, _ in pairs}
    pending: dict[str, list[Tensor]] = {name: [] for name, _, _ in pairs}
    handles = []

    def float_hook(name: str, qmod: nn.Module):
        def hook(_mod, args, kwargs, out):
            x = _first_tensor(args, kwargs)
            if x is not None:
                acc[name].inputs.add(x)
            if mode == "isolated":
                acc[name].add(out, qmod(*args, **kwargs), name)
            else:
                pending[name].append(out.detach().clone())

        return hook

    def quant_hook(name: str):
        def hook(_mod, _args, _kwargs, out):
            if not pending[name]:
                raise ValueError(
                    f"layerwise: quant_model: layer {name!r} expected as many calls as in "
                    "float_model, got more"
                )
            acc[name].add(pending[name].pop(0), out, name)

        return hook

    try:
        for name, fmod, qmod in pairs:
            handles.append(fmod.register_forward_hook(float_hook(name, qmod), with_kwargs=True))
            if mode == "propagated":
                handles.append(qmod.register_forward_hook(quant_hook(name), with_kwargs=True))
        for args, kwargs in _batches(inputs, "layerwise"):
            float_model(*args, **kwargs)
            if mode == "propagated":
                quant_model(*args, **kwargs)
                left = [n for n, p in pending.items() if p]
                if left:
                    raise ValueError(
                        f"layerwise: quant_model: layers {left} expected as many calls as in "
                        "float_model, got fewer"
                    )
    finally:
        for h in handles:
            h.remove()

    reports = []
    for name, fmod, qmod in pairs:
        a = acc[name]
        w = fmod.weight.detach().float()
        w_hat = qmod.dequantize().detach().float().to(w.device)
        w2, e2 = (w.double() ** 2).sum().item(), ((w_hat.double() - w.double()) ** 2).sum().item()
        denom = math.sqrt(a.ref2 * a.quant2)
        reports.append(
            LayerReport(
                name=name,
                format=_format_name(qmod),
                calls=a.calls,
                sqnr_db=_sqnr_db(a.ref2, a.err2) if a.calls else math.nan,
                cosine=a.dot / denom if denom > 0 else (float(a.err2 == 0) if a.calls else math.nan),
                mse=a.err2 / a.count if a.count else (0.0 if a.calls else math.nan),
                weight_sqnr_db=_sqnr_db(w2, e2),
                weight_stats=_tensor_stats(w),
                input_stats=a.inputs.stats(),
                grid=_grid_use(w, w_hat, _group_size(qmod, w.shape[1]), _code_bits(qmod, w.numel())),
            )
        )
    return reports


# ---- sensitivity --------------------------------------------------------------------------------


def _check_configs(configs: Any, fn: str, arg: str, allow_none: bool) -> list[Any]:
    items = list(configs) if isinstance(configs, (list, tuple)) else [configs]
    if not items:
        raise ValueError(f"{fn}: {arg}: expected at least one config, got none")
    for i, c in enumerate(items):
        ok = (c is None and allow_none) or (is_dataclass(c) and hasattr(type(c), "module_cls"))
        if not ok:
            what = "a qkernels config such as Int8Config" + (" or None" if allow_none else "")
            where = f"{arg}[{i}]" if isinstance(configs, (list, tuple)) else arg
            raise TypeError(f"{fn}: {where}: expected {what}, got {c!r}")
    for i, c in enumerate(items):
        if c in items[:i]:
            raise ValueError(f"{fn}: {arg}: expected distinct entries, got {c!r} twice")
    return items


def _call_metric(metric: Metric, model: nn.Module, fn: str) -> float:
    value = metric(model)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: metric: expected a function returning a float, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{fn}: metric: expected a finite value, got {value}")
    return value


def _output_cosine_metric(float_model: nn.Module, inputs: Any, fn: str) -> Metric:
    """Mean per-row cosine similarity of the model's outputs with the float model's (float = 1)."""
    batches = list(_batches(inputs, fn))
    with torch.no_grad():
        refs = [float_model(*a, **k) for a, k in batches]
    if not all(isinstance(r, Tensor) for r in refs):
        got = next(type(r).__name__ for r in refs if not isinstance(r, Tensor))
        raise TypeError(
            f"{fn}: metric: expected a metric function, since the default compares Tensor outputs and "
            f"float_model returns {got}; got None"
        )

    def metric(model: nn.Module) -> float:
        sims = []
        for (a, k), ref in zip(batches, refs, strict=True):
            out = model(*a, **k)
            sims.append(F.cosine_similarity(out.float().flatten(0, -2), ref.float().flatten(0, -2), dim=-1))
        return torch.cat(sims).mean().item()

    return metric


@dataclass(frozen=True)
class LayerSensitivity:
    """The metric with only ``name`` quantized by ``config``; ``cost`` = float metric − metric."""

    name: str
    config: Any
    metric: float
    cost: float


@dataclass(frozen=True)
class Sensitivity:
    """``ranking``: one entry per (layer, config), most costly first (model order on ties)."""

    float_metric: float
    ranking: list[LayerSensitivity]

    def cost(self, name: str, config: Any) -> float:
        """The cost of quantizing layer ``name`` alone with ``config``."""
        for e in self.ranking:
            if e.name == name and e.config == config:
                return e.cost
        raise KeyError(f"Sensitivity.cost: expected a measured (layer, config), got ({name!r}, {config!r})")


def _stats(
    model: nn.Module, configs: list[Any], names: list[str], calibration: Any, inputs: Any, fn: str
) -> Calibration | None:
    """The calibration that GPTQ configs among ``configs`` need for ``names``: ``calibration`` (a
    Calibration, or inputs to calibrate on), else ``inputs``; None when no config needs one."""
    if not any(needs_calibration(c) for c in configs):
        return None
    if isinstance(calibration, Calibration):
        return calibration
    source = calibration if calibration is not None else inputs
    if source is None:
        raise ValueError(
            f"{fn}: calibration: expected a Calibration or sample inputs for the method='gptq' "
            "candidates (or inputs=...), got None"
        )
    return calibrate(model, source, layers=names, progress=False)


def _measure(
    float_model: nn.Module,
    configs: list[Any],
    names: list[str],
    metric: Metric,
    fn: str,
    progress: bool,
    stats: Calibration | None,
) -> Sensitivity:
    work = copy.deepcopy(float_model)
    with torch.no_grad():
        base = _call_metric(metric, work, fn)
        entries = []
        for name in tqdm(names, desc=f"{fn}: layers", disable=not progress):
            original = work.get_submodule(name)
            parent_name, _, child = name.rpartition(".")
            parent = work.get_submodule(parent_name)
            for cfg in configs:
                quantize_(
                    work,
                    cfg,
                    filter_fn=lambda _m, n, target=name: n == target,
                    progress=False,
                    calibration=stats,
                )
                try:
                    value = _call_metric(metric, work, fn)
                finally:
                    setattr(parent, child, original)
                entries.append(LayerSensitivity(name, cfg, value, base - value))
    order = sorted(range(len(entries)), key=lambda i: (-entries[i].cost, i))
    return Sensitivity(base, [entries[i] for i in order])


def _select_layers(model: nn.Module, layers: Any, fn: str) -> list[str]:
    return select_layers(_linear_names(model, fn, "float_model"), layers, fn, "float_model")


def sensitivity(
    float_model: nn.Module,
    config: Any,
    *,
    metric: Metric | None = None,
    layers: Sequence[str] | None = None,
    inputs: Any = None,
    calibration: Any = None,
    progress: bool = True,
) -> Sensitivity:
    """Quantizes one layer at a time (``quantize_`` on a deep copy of ``float_model``, the others
    kept float) and ranks the layers by ``cost = metric(float) − metric(one layer quantized)``.

    ``config``: a config or a list of configs (one measurement per layer and config).
    ``metric(model) -> float``: higher is better (accuracy, mean embedding cosine, ...). Without
    it, the metric is the mean per-row cosine similarity of the model's outputs on ``inputs`` with
    the float model's. ``layers``: names of nn.Linear layers (default: all). ``float_model`` is
    not modified. ``calibration``: for GPTQ configs, a ``Calibration`` of ``float_model`` or
    sample inputs to calibrate on (default: ``inputs``). A tqdm bar counts the layers unless
    ``progress=False``.
    """
    fn = "sensitivity"
    _check_model(float_model, fn, "float_model")
    configs = _check_configs(config, fn, "config", allow_none=False)
    names = _select_layers(float_model, layers, fn)
    if metric is None:
        metric = _output_cosine_metric(float_model, inputs, fn)
    elif not callable(metric):
        raise TypeError(f"{fn}: metric: expected a callable model -> float or None, got {metric!r}")
    stats = _stats(float_model, configs, names, calibration, inputs, fn)
    return _measure(float_model, configs, names, metric, fn, progress, stats)


# ---- allocation ---------------------------------------------------------------------------------


def _stored_bits(module: nn.Module) -> int:
    """Bits of every tensor a quantized layer stores (its state dict: non-persistent caches are not
    stored) except its bias, which every choice, float included, keeps float."""
    state = module.state_dict()
    return sum(
        t.numel() * t.element_size() * 8 for n, t in state.items() if n != "bias" and isinstance(t, Tensor)
    )


@dataclass(frozen=True)
class AllocationRow:
    name: str
    choice: str
    weights: int
    bits_per_weight: float
    cost: float


@dataclass(frozen=True)
class Allocation:
    """``mapping``: {layer name: config or None (float)} for every nn.Linear of the model, ready for
    ``quantize_``; ``table``: one row per layer in model order; ``bits_per_weight``: achieved."""

    mapping: dict[str, Any]
    table: list[AllocationRow]
    bits_per_weight: float
    budget_bits_per_weight: float
    cost: float

    def __str__(self) -> str:
        width = max(len("layer"), *(len(r.name) for r in self.table))
        lines = [f"{'layer':<{width}}  {'choice':<32} {'bits/w':>7} {'cost':>10}"]
        lines += [
            f"{r.name:<{width}}  {r.choice:<32} {r.bits_per_weight:7.3f} {r.cost:10.3g}" for r in self.table
        ]
        lines.append(
            f"achieved {self.bits_per_weight:.3f} bits/weight (budget {self.budget_bits_per_weight:g})"
        )
        return "\n".join(lines)


def proxy_costs(
    model: nn.Module, names: list[str], built: dict[tuple[str, int], nn.Module], inputs: Any
) -> dict[tuple[str, int], float]:
    """Relative output error of each (layer, candidate) on the float input of that layer:
    Σ (ŷ − y)² / Σ y² over the calibration inputs (absolute when the float output is all zero)."""
    sums: dict[tuple[str, int], list[float]] = {key: [0.0, 0.0] for key in built}
    handles = []

    def hook_for(name: str):
        def hook(_mod, args, kwargs, out):
            ref = out.detach().double()
            for key, mod in built.items():
                if key[0] == name:
                    diff = mod(*args, **kwargs).double() - ref
                    sums[key][0] += (diff * diff).sum().item()
                    sums[key][1] += (ref * ref).sum().item()

        return hook

    try:
        for name in names:
            handles.append(model.get_submodule(name).register_forward_hook(hook_for(name), with_kwargs=True))
        with torch.no_grad():
            for args, kwargs in _batches(inputs, "allocate"):
                model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return {key: err / ref if ref > 0 else err for key, (err, ref) in sums.items()}


def _pareto(options: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """Options (bits, cost, index) not beaten by one with fewer-or-equal bits and a lower-or-equal
    cost, by increasing bits (ties keep the earlier candidate)."""
    front = []
    for bits, cost, idx in sorted(options, key=lambda o: (o[0], o[1], o[2])):
        if not front or cost < front[-1][1]:
            front.append((bits, cost, idx))
    return front


def _hull(front: list[tuple[float, float, int]]) -> list[int]:
    """Positions in ``front`` on its lower convex hull (cost against bits)."""
    hull: list[int] = []
    for i, (b, c, _) in enumerate(front):
        while len(hull) >= 2:
            (b0, c0, _), (b1, c1, _) = front[hull[-2]], front[hull[-1]]
            # Drop the middle point when it lies on or above the segment from hull[-2] to i.
            if (c1 - c0) * (b - b0) >= (c - c0) * (b1 - b0):
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def _solve(fronts: list[list[tuple[float, float, int]]], budget: float) -> list[int]:
    """Multiple-choice knapsack: one option per layer, total bits <= ``budget``, least total cost.
    Returns the chosen position in each front.

    1. Lagrangian greedy: every layer starts at its fewest-bits option; the next step along a
       layer's lower convex hull that buys the largest cost drop per extra bit is taken while it
       fits (a layer whose step no longer fits stays where it is). Each solution on this path is
       optimal for the bits it uses.
    2. Exchange: the single move, or pair of moves in two layers (e.g. one down, one up), that
       lowers the total cost most while the total still fits is applied, until none does. This
       repairs the budget the greedy leaves unused when a step does not fit.
    """
    pick = [0] * len(fronts)
    spent = sum(f[0][0] for f in fronts)
    hulls = [_hull(f) for f in fronts]
    step = [0] * len(fronts)
    heap = []

    def push(layer: int) -> None:
        h = hulls[layer]
        if step[layer] + 1 < len(h):
            (b0, c0, _), (b1, c1, _) = fronts[layer][h[step[layer]]], fronts[layer][h[step[layer] + 1]]
            heapq.heappush(heap, (-(c0 - c1) / (b1 - b0), layer))

    for layer in range(len(fronts)):
        push(layer)
    while heap:
        _, layer = heapq.heappop(heap)
        nxt = hulls[layer][step[layer] + 1]
        extra = fronts[layer][nxt][0] - fronts[layer][pick[layer]][0]
        if spent + extra <= budget:
            spent += extra
            pick[layer], step[layer] = nxt, step[layer] + 1
            push(layer)
    return _exchange(fronts, pick, budget)


def _exchange(fronts: list[list[tuple[float, float, int]]], pick: list[int], budget: float) -> list[int]:
    width = max(len(f) for f in fronts)
    bits = torch.full((len(fronts), width), math.inf, dtype=torch.float64)
    cost = torch.full_like(bits, math.inf)
    for layer, front in enumerate(fronts):
        bits[layer, : len(front)] = torch.tensor([o[0] for o in front], dtype=torch.float64)
        cost[layer, : len(front)] = torch.tensor([o[1] for o in front], dtype=torch.float64)
    owner = torch.arange(len(fronts)).repeat_interleave(width)
    pick_t = torch.tensor(pick)
    # Moves are flattened (layer, option) pairs; pairs are scanned in row blocks to bound memory.
    block = max(1, (1 << 22) // bits.numel())
    while True:
        rows = torch.arange(len(fronts))
        dbits = (bits - bits[rows, pick_t].unsqueeze(1)).flatten()
        dcost = (cost - cost[rows, pick_t].unsqueeze(1)).flatten()
        slack = budget - bits[rows, pick_t].sum().item()
        # Stop on gains lost in rounding, so the loop cannot cycle.
        tol = 1e-12 * max(1.0, cost[rows, pick_t].abs().sum().item())
        single = torch.where(dbits <= slack, dcost, math.inf)
        best_gain, best = single.min().item(), (int(single.argmin()), None)
        for lo in range(0, dcost.numel(), block):
            hi = min(lo + block, dcost.numel())
            pair_cost = dcost[lo:hi, None] + dcost[None, :]
            ok = (dbits[lo:hi, None] + dbits[None, :] <= slack) & (owner[lo:hi, None] != owner[None, :])
            pair_cost = torch.where(ok, pair_cost, math.inf)
            value = pair_cost.min().item()
            if value < best_gain:
                flat = int(pair_cost.argmin())
                best_gain, best = value, (lo + flat // dcost.numel(), flat % dcost.numel())
        if not best_gain < -tol:
            return pick_t.tolist()
        for move in best:
            if move is not None:
                pick_t[move // width] = move % width


def _label(config: Any) -> str:
    return "float" if config is None else repr(config)


def allocate(
    model: nn.Module,
    candidates: Sequence[Any],
    budget_bits_per_weight: float,
    *,
    metric: Metric | None = None,
    inputs: Any = None,
    sensitivity: Sensitivity | None = None,
    calibration: Any = None,
    progress: bool = True,
) -> Allocation:
    """Chooses, per nn.Linear of ``model``, one of ``candidates`` (configs, or None = keep float) so
    that all Linear weights together take at most ``budget_bits_per_weight`` bits per weight at the
    lowest total estimated cost. ``model`` is not modified.

    Bits: a candidate's bits are those of every state-dict tensor of its module for the layer (as
    ``from_linear`` shapes them) but the bias (scales, zeros, codebooks included); float is the
    weight's own width (32, or 16 in bf16/fp16). Cost of (layer, candidate), the first that
    applies: ``sensitivity.cost`` (a ``Sensitivity`` covering every layer and non-None
    candidate); the cost measured now with ``metric`` (see ``sensitivity()``); else the relative
    output error of that layer alone on the calibration ``inputs``, Σ (ŷ − y)² / Σ y². Float
    costs 0. The choice is the greedy Lagrangian solution of the multiple-choice knapsack
    (docs/evaluation.md). GPTQ candidates, when quantized here, use ``calibration`` (a
    ``Calibration`` of ``model`` or sample inputs; default: ``inputs``).
    """
    fn = "allocate"
    _check_model(model, fn, "model")
    cands = _check_configs(candidates, fn, "candidates", allow_none=True)
    if isinstance(budget_bits_per_weight, bool) or not isinstance(budget_bits_per_weight, (int, float)):
        raise TypeError(
            f"{fn}: budget_bits_per_weight: expected a number, got {type(budget_bits_per_weight).__name__}"
        )
    if not (math.isfinite(budget_bits_per_weight) and budget_bits_per_weight > 0):
        raise ValueError(
            f"{fn}: budget_bits_per_weight: expected a positive finite number, got {budget_bits_per_weight!r}"
        )
    if sensitivity is not None and not isinstance(sensitivity, Sensitivity):
        raise TypeError(
            f"{fn}: sensitivity: expected the result of qkernels.eval.layerwise.sensitivity "
            f"or None, got {type(sensitivity).__name__}"
        )
    if metric is not None and not callable(metric):
        raise TypeError(f"{fn}: metric: expected a callable model -> float or None, got {metric!r}")
    names = _linear_names(model, fn)
    layers = {n: model.get_submodule(n) for n in names}
    quantized = [i for i, c in enumerate(cands) if c is not None]

    use_proxy = sensitivity is None and metric is None
    if use_proxy and inputs is None:
        raise ValueError(
            f"{fn}: inputs: expected calibration inputs when neither metric nor sensitivity is "
            "given, got None"
        )

    # Layers are quantized here only for the proxy or to measure costs (GPTQ ones calibrated).
    quantizes = use_proxy or sensitivity is None
    stats = _stats(model, cands, names, calibration, inputs, fn) if quantizes else None
    # The quantized modules are kept only for the proxy's calibration pass.
    built: dict[tuple[str, int], nn.Module] = {}
    bits: dict[tuple[str, int], float] = {}
    for name, lin in layers.items():
        for i, c in enumerate(cands):
            if c is None:
                bits[(name, i)] = float(lin.weight.element_size() * 8)
                continue
            if use_proxy:
                extra = {"hessian": stats.hessian(name, fn)} if needs_calibration(c) else {}
                mod = built[(name, i)] = c.module_cls.from_linear(lin, name=name, **asdict(c), **extra)
            else:
                # The stored tensors' shapes do not depend on the weights: an empty module counts.
                mod = c.module_cls._empty_like(lin, name, **asdict(c))
            bits[(name, i)] = _stored_bits(mod) / lin.weight.numel()

    if use_proxy:
        cost = proxy_costs(model, names, built, inputs)
        built.clear()
    else:
        if sensitivity is None:
            sensitivity = _measure(model, [cands[i] for i in quantized], names, metric, fn, progress, stats)
        measured = {(e.name, e.config): e.cost for e in sensitivity.ranking}
        missing = [(n, cands[i]) for n in names for i in quantized if (n, cands[i]) not in measured]
        if missing:
            raise ValueError(
                f"{fn}: sensitivity: expected a cost for every layer and candidate, got none for "
                f"{missing[:3]}"
            )
        cost = {(n, i): measured[(n, cands[i])] for n in names for i in quantized}
    cost.update({(n, i): 0.0 for n in names for i, c in enumerate(cands) if c is None})

    weights = [layers[n].weight.numel() for n in names]
    total = sum(weights)
    fronts = [
        _pareto([(bits[(n, i)] * w, cost[(n, i)], i) for i in range(len(cands))])
        for n, w in zip(names, weights, strict=True)
    ]
    smallest = sum(f[0][0] for f in fronts) / total
    budget = budget_bits_per_weight * total
    # Relative slack so that a budget equal to an achievable size is not lost to rounding.
    if smallest * total > budget * (1 + 1e-12):
        raise ValueError(
            f"{fn}: budget_bits_per_weight: expected >= {smallest:.4f} (every layer in its "
            f"smallest candidate), got {budget_bits_per_weight}"
        )
    pick = _solve(fronts, budget * (1 + 1e-12))

    mapping, table, used, total_cost = {}, [], 0.0, 0.0
    for name, w, front, pos in zip(names, weights, fronts, pick, strict=True):
        b, c, idx = front[pos]
        mapping[name] = cands[idx]
        table.append(AllocationRow(name, _label(cands[idx]), w, b / w, c))
        used, total_cost = used + b, total_cost + c
    return Allocation(mapping, table, used / total, float(budget_bits_per_weight), total_cost)
