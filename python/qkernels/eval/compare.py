"""``compare(float_model, quantized_model, inputs, task)``: one evaluation of a quantized model against
its float original, as a :class:`ComparisonResult` that :func:`qkernels.eval.report.write_report`
turns into JSON, Markdown and HTML.

Both models run on the same inputs. The result holds the task scores of each (against ``labels``),
how far the quantized outputs moved from the float ones, the size and speed of both, and the
layer-by-layer reports of :func:`qkernels.eval.layerwise.layerwise` (isolated and propagated).
Definitions of every number are in docs/evaluation.md ("Report").
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..calibration import Calibration, calibrate, needs_calibration
from ..quantize import FORMAT_CONFIGS, quantize_
from . import metrics as M
from .compare_tasks import ClassBreakdown, Score, TaskData, task_metrics
from .layerwise import LayerReport, _batches, _linear_names, layerwise
from .metrics import Latency

__all__ = [
    "TASKS",
    "ClassBreakdown",
    "ComparisonResult",
    "ModelStats",
    "Score",
    "compare",
    "compare_formats",
]

TASKS = ("classification", "embedding", "regression", "lm")
# Values kept for the plots: outputs per model, weights per layer (evenly strided subsets).
MAX_PLOT_VALUES = 1 << 20
MAX_WEIGHT_VALUES = 1 << 16

OutputFn = Callable[[Any], Tensor]


# ---- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelStats:
    """Size and speed of one model: :func:`~qkernels.eval.metrics.model_bytes`,
    :func:`~qkernels.eval.metrics.bits_per_weight`, and the latency of one call on the first batch
    (None when ``latency_repeats=0``)."""

    model_bytes: int
    bits_per_weight: float
    latency: Latency | None


@dataclass(frozen=True)
class ComparisonResult:
    """One quantized model against its float original on one data set.

    - ``rows``: compared output rows (samples; tokens for ``task="lm"``), over ``batches`` batches.
    - ``float_metrics`` / ``quant_metrics``: task scores of each model against the labels
      (accuracies as fractions in [0, 1]).
    - ``output_error``: quantized against float outputs (SQNR, PSNR, cosine, MSE, MAE, max error,
      relative error); ``agreement``: of the output distributions or rows (KL, top-k agreement,
      per-row cosine); ``deltas``: float minus quantized score, positive = quantization cost.
    - ``row_cosine``: float64 [rows], the cosine of each quantized output row to the float one.
    - ``losses`` (``losses_over`` "class" or "sample", described by ``losses_what``): the accuracy
      lost per class or per sample, in percentage points, for the histogram.
    - ``float_values`` / ``quant_values``: at most ``MAX_PLOT_VALUES`` output values (the same
      positions in both); ``weight_samples``: per quantized layer (float weight, ``dequantize()``).
    - ``layers_isolated`` / ``layers_propagated``: :func:`~qkernels.eval.layerwise.layerwise`.
    """

    name: str
    task: str
    rows: int
    batches: int
    score: Score
    float_stats: ModelStats
    quant_stats: ModelStats
    float_metrics: dict[str, float]
    quant_metrics: dict[str, float]
    output_error: dict[str, float]
    agreement: dict[str, float]
    deltas: dict[str, float]
    per_class: ClassBreakdown | None
    row_cosine: Tensor
    losses: Tensor
    losses_over: str
    losses_what: str
    float_values: Tensor
    quant_values: Tensor
    weight_samples: dict[str, tuple[Tensor, Tensor]]
    layers_isolated: list[LayerReport]
    layers_propagated: list[LayerReport]


# ---- inputs -------------------------------------------------------------------------------------


def _item(args: tuple, kwargs: dict) -> Any:
    """A batch in the form :func:`layerwise` takes: a tuple of arguments or a dict of keywords."""
    return dict(kwargs) if kwargs else tuple(args)


def _batch_rows(args: tuple, kwargs: dict) -> int:
    first = next((v for v in [*args, *kwargs.values()] if isinstance(v, Tensor)), None)
    if first is None and len(args) == 1 and isinstance(args[0], Mapping):  # e.g. sentence-transformers
        first = next((v for v in args[0].values() if isinstance(v, Tensor)), None)
    return 1 if first is None or first.dim() == 0 else first.shape[0]


def _default_output(out: Any, where: str) -> Tensor:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping):  # also transformers' ModelOutput
        for key in ("logits", "sentence_embedding"):
            if isinstance(out.get(key), Tensor):
                return out[key]
    raise TypeError(
        f"compare: {where}: expected a Tensor output or a dict with 'logits' or 'sentence_embedding', "
        f"got {type(out).__name__} (pass output_fn to pick the tensor)"
    )


@dataclass
class _Reference:
    """The float model's side, computed once and shared by every format of ``compare_formats``."""

    model: nn.Module
    task: str
    items: list[Any]
    batches: list[tuple[tuple, dict]]
    outputs: list[Tensor]
    output_fn: OutputFn | None
    labels: Tensor | list[Tensor] | None
    ignore_index: int | None
    class_names: list[str] | None
    stats: ModelStats
    latency_warmup: int
    latency_repeats: int


def _run(model: nn.Module, batches: list, output_fn: OutputFn | None, which: str, progress: bool) -> list:
    outs = []
    with torch.no_grad():
        for i, (args, kwargs) in enumerate(tqdm(batches, desc=f"running {which}", disable=not progress)):
            raw = model(*args, **kwargs)
            out = output_fn(raw) if output_fn is not None else _default_output(raw, which)
            if not isinstance(out, Tensor):
                raise TypeError(f"compare: output_fn: expected a Tensor, got {type(out).__name__}")
            if out.dim() == 0 or out.numel() == 0 or not out.dtype.is_floating_point:
                raise ValueError(
                    f"compare: {which}: expected a non-empty floating batch of outputs for inputs[{i}], got "
                    f"shape {tuple(out.shape)} of {out.dtype}"
                )
            bad = ~torch.isfinite(out)
            if bool(bad.any()):
                raise ValueError(
                    f"compare: {which}: expected finite outputs, got {int(bad.sum())} non-finite values "
                    f"(e.g. {out[bad][0].item()}) for inputs[{i}]"
                )
            outs.append(out.detach().float().cpu())
    return outs


def _latency(model: nn.Module, batch: tuple[tuple, dict], warmup: int, repeats: int) -> Latency | None:
    if repeats == 0:
        return None
    args, kwargs = batch

    def call() -> None:
        with torch.no_grad():
            model(*args, **kwargs)

    return M.measure_latency(call, warmup=warmup, repeats=repeats, items_per_call=_batch_rows(args, kwargs))


def _stats(model: nn.Module, batch: tuple[tuple, dict], warmup: int, repeats: int) -> ModelStats:
    return ModelStats(M.model_bytes(model), M.bits_per_weight(model), _latency(model, batch, warmup, repeats))


def _check_count(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"compare: {name}: expected an int >= {lo}, got {value!r}")
    return value


def _check_float(float_model: Any) -> None:
    if not isinstance(float_model, nn.Module):
        raise TypeError(f"compare: float_model: expected torch.nn.Module, got {type(float_model).__name__}")
    _linear_names(float_model, "compare", "float_model")


def _reference(
    float_model: Any,
    inputs: Any,
    task: Any,
    labels: Any,
    output_fn: Any,
    ignore_index: Any,
    class_names: Any,
    latency_warmup: Any,
    latency_repeats: Any,
    progress: bool,
) -> _Reference:
    _check_float(float_model)
    if task not in TASKS:
        raise ValueError(f"compare: task: expected one of {TASKS}, got {task!r}")
    if output_fn is not None and not callable(output_fn):
        raise TypeError(f"compare: output_fn: expected a callable or None, got {type(output_fn).__name__}")
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise TypeError(f"compare: ignore_index: expected an int or None, got {ignore_index!r}")
    if class_names is not None and (
        isinstance(class_names, str)
        or not isinstance(class_names, Sequence)
        or not all(isinstance(c, str) for c in class_names)
    ):
        raise TypeError(f"compare: class_names: expected a list of str or None, got {class_names!r}")
    warmup = _check_count("latency_warmup", latency_warmup, 0)
    repeats = _check_count("latency_repeats", latency_repeats, 0)
    batches = list(_batches(inputs, "compare"))
    for i, (args, kwargs) in enumerate(batches):
        empty = next((v for v in [*args, *kwargs.values()] if isinstance(v, Tensor) and v.numel() == 0), None)
        if empty is not None:
            raise ValueError(
                f"compare: inputs[{i}]: expected a non-empty batch, got shape {tuple(empty.shape)}"
            )
    outputs = _run(float_model, batches, output_fn, "float_model", progress)
    if labels is not None and not isinstance(labels, Tensor):
        if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
            raise TypeError(
                f"compare: labels: expected a Tensor, a list of Tensors (one per batch) or None, got "
                f"{type(labels).__name__}"
            )
        labels = list(labels)
        bad = next((i for i, t in enumerate(labels) if not isinstance(t, Tensor)), None)
        if bad is not None:
            raise TypeError(f"compare: labels[{bad}]: expected a Tensor, got {type(labels[bad]).__name__}")
    stats = _stats(float_model, batches[0], warmup, repeats)
    items = [_item(a, k) for a, k in batches]
    return _Reference(
        float_model,
        task,
        items,
        batches,
        outputs,
        output_fn,
        labels,
        ignore_index,
        None if class_names is None else list(class_names),
        stats,
        warmup,
        repeats,
    )


# ---- models -------------------------------------------------------------------------------------


def _is_quantized_layer(m: nn.Module) -> bool:
    """A layer with ``dequantize()`` and integer ``in_features``/``out_features`` (transformers'
    models have a ``dequantize()`` of their own, which undoes their quantization)."""
    sizes = (getattr(m, "in_features", None), getattr(m, "out_features", None))
    return callable(getattr(m, "dequantize", None)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in sizes
    )


def _check_pair(float_model: nn.Module, quant: Any) -> list[str]:
    """Names of the quantized layers; raises unless ``quant`` is a quantized copy of ``float_model``."""
    if not isinstance(quant, nn.Module):
        raise TypeError(
            f"compare: quantized_model: expected torch.nn.Module, a format name, a config or a mapping, "
            f"got {type(quant).__name__}"
        )
    if quant is float_model:
        raise ValueError(
            "compare: quantized_model: expected a separate quantized copy of float_model, got the same object"
        )
    fmods, qmods = dict(float_model.named_modules()), dict(quant.named_modules())
    if fmods.keys() != qmods.keys():
        only_f, only_q = sorted(fmods.keys() - qmods.keys())[:5], sorted(qmods.keys() - fmods.keys())[:5]
        raise ValueError(
            f"compare: quantized_model: expected the module names of float_model (a quantized copy of "
            f"it), got {only_f} only in float_model and {only_q} only in quantized_model"
        )
    names = [n for n, m in qmods.items() if _is_quantized_layer(m)]
    if not names:
        raise ValueError(
            "compare: quantized_model: expected at least one quantized layer (a module with dequantize(), "
            "in_features and out_features, as qk.quantize_ makes), got none"
        )
    for n in names:
        f, q = fmods[n], qmods[n]
        if not isinstance(f, nn.Linear) or (f.in_features, f.out_features) != (q.in_features, q.out_features):
            got = (
                f"{type(f).__name__}"
                if not isinstance(f, nn.Linear)
                else f"nn.Linear({f.in_features}, {f.out_features})"
            )
            raise ValueError(
                f"compare: quantized_model: layer {n!r} ({q.in_features} -> {q.out_features}) expected an "
                f"nn.Linear of the same shape in float_model, got {got}"
            )
    return names


def _config_name(config: Any) -> str:
    return next((k for k, v in FORMAT_CONFIGS.items() if v == config), repr(config))


def _module_name(quant: nn.Module, names: list[str]) -> str:
    """The registry name of the config that every quantized layer matches; "mixed" if they differ or
    some nn.Linear layers stayed float."""
    found = {"fp32"} if any(isinstance(m, nn.Linear) for m in quant.modules()) else set()
    for n in names:
        m = quant.get_submodule(n)
        fields = m.config_fields() if callable(getattr(m, "config_fields", None)) else None
        found.add(
            next(
                (
                    k
                    for k, c in FORMAT_CONFIGS.items()
                    if is_dataclass(c) and type(m) is c.module_cls and asdict(c) == fields
                ),
                type(m).__name__,
            )
        )
    return found.pop() if len(found) == 1 else "mixed"


def _config_of(spec: Any) -> Any:
    """The config (or mapping) that a format spec stands for; None for a quantized model."""
    if isinstance(spec, str):
        if spec not in FORMAT_CONFIGS:
            raise ValueError(
                f"compare: quantized_model: expected a format name from {sorted(FORMAT_CONFIGS)}, got "
                f"{spec!r}"
            )
        return FORMAT_CONFIGS[spec]
    return None if isinstance(spec, nn.Module) else spec


def _calibrated(float_model: nn.Module, specs: list[Any], calibration: Any) -> Any:
    """``calibration`` as a Calibration of ``float_model`` when a spec quantizes with GPTQ (inputs
    are run once here, for every spec), else as given."""
    configs = [_config_of(s) for s in specs]
    configs = [v for c in configs for v in (c.values() if isinstance(c, Mapping) else [c])]
    if (
        calibration is None
        or isinstance(calibration, Calibration)
        or not any(map(needs_calibration, configs))
    ):
        return calibration
    return calibrate(float_model, calibration, progress=False)


def _quantized(float_model: nn.Module, spec: Any, calibration: Any = None) -> tuple[nn.Module, str | None]:
    """``spec`` as a model: a module as is; a format name, config or mapping quantizes a deep copy
    (GPTQ layers with ``calibration``)."""
    config = _config_of(spec)
    if config is None:
        return spec, None

    def quantize(c: Any) -> nn.Module:
        return quantize_(copy.deepcopy(float_model), c, progress=False, calibration=calibration)

    if isinstance(spec, str):
        return quantize(config), spec
    if isinstance(spec, Mapping):
        return quantize(spec), "mixed"
    if is_dataclass(spec) and hasattr(type(spec), "module_cls"):
        return quantize(spec), _config_name(spec)
    raise TypeError(
        f"compare: quantized_model: expected torch.nn.Module, a format name, a config or a mapping, got "
        f"{type(spec).__name__}"
    )


def _strided(x: Tensor, cap: int) -> Tensor:
    flat = x.reshape(-1)
    return flat[:: max(1, -(-flat.numel() // cap))].clone()


# ---- comparison ---------------------------------------------------------------------------------


def _weight_samples(float_model: nn.Module, quant: nn.Module, names: list[str]) -> dict:
    out = {}
    with torch.no_grad():
        for n in names:
            w = float_model.get_submodule(n).weight.detach().float().cpu()
            w_hat = quant.get_submodule(n).dequantize().detach().float().cpu()
            out[n] = (_strided(w, MAX_WEIGHT_VALUES), _strided(w_hat, MAX_WEIGHT_VALUES))
    return out


def _compare(ref: _Reference, quant: nn.Module, name: str, layers: bool, progress: bool) -> ComparisonResult:
    names = _check_pair(ref.model, quant)
    qouts = _run(quant, ref.batches, ref.output_fn, "quantized_model", progress)
    for i, (f, q) in enumerate(zip(ref.outputs, qouts, strict=True)):
        if f.shape != q.shape:
            raise ValueError(
                f"compare: quantized_model: expected an output of shape {tuple(f.shape)} (float_model's) for "
                f"inputs[{i}], got {tuple(q.shape)}"
            )
    task = task_metrics(
        ref.task, TaskData(ref.labels, ref.batches, ref.ignore_index, ref.class_names), ref.outputs, qouts
    )
    fo, qo, row_cosine = task["float_values"], task["quant_values"], task["row_cosine"]
    output_error = {
        "sqnr_db": M.sqnr_db(fo, qo),
        "psnr_db": M.psnr_db(fo, qo),
        "cosine": M.cosine_similarity(fo, qo),
        "mse": M.mse(fo, qo),
        "mae": M.mae(fo, qo),
        "max_abs_error": M.max_abs_error(fo, qo),
        "relative_error": M.relative_frobenius_error(fo, qo),
    }
    agreement = {**task.get("agreement", {}), "mean_row_cosine": row_cosine.mean().item()}
    isolated, propagated = [], []
    if layers:
        isolated = layerwise(ref.model, quant, ref.items, "isolated")
        propagated = layerwise(ref.model, quant, ref.items, "propagated")
    return ComparisonResult(
        name=name,
        task=ref.task,
        rows=row_cosine.numel(),
        batches=len(ref.batches),
        score=task["score"],
        float_stats=ref.stats,
        quant_stats=_stats(quant, ref.batches[0], ref.latency_warmup, ref.latency_repeats),
        float_metrics=task.get("float_metrics", {}),
        quant_metrics=task.get("quant_metrics", {}),
        output_error=output_error,
        agreement=agreement,
        deltas=task.get("deltas", {}),
        per_class=task.get("per_class"),
        row_cosine=row_cosine,
        losses=task["losses"].double(),
        losses_over=task["losses_over"],
        losses_what=task["losses_what"],
        float_values=_strided(fo, MAX_PLOT_VALUES),
        quant_values=_strided(qo, MAX_PLOT_VALUES),
        weight_samples=_weight_samples(ref.model, quant, names),
        layers_isolated=isolated,
        layers_propagated=propagated,
    )


def compare(
    float_model: nn.Module,
    quantized_model: Any,
    inputs: Any,
    task: str = "classification",
    labels: Tensor | Sequence[Tensor] | None = None,
    *,
    name: str | None = None,
    output_fn: OutputFn | None = None,
    ignore_index: int | None = None,
    class_names: Sequence[str] | None = None,
    latency_warmup: int = 2,
    latency_repeats: int = 10,
    layers: bool = True,
    calibration: Any = None,
    progress: bool = False,
) -> ComparisonResult:
    """Runs ``float_model`` and ``quantized_model`` on ``inputs`` and compares them (module docstring).

    ``quantized_model``: a quantized copy of ``float_model`` (same module names, e.g. from
    ``qk.quantize_(copy.deepcopy(float_model), config)``), or a format name of ``FORMAT_CONFIGS``
    ("int8", ...), a config, or a ``{layer name or regex: config or None}`` mapping, which quantize
    a deep copy here. ``inputs``: a Tensor or tuple (one batch) or a list of batches (Tensor, tuple
    of arguments, or dict of keyword arguments). ``task`` and ``labels``:

    - "classification": outputs are logits ``[..., C]``; ``labels`` the class of each row.
    - "embedding": outputs are embeddings ``[..., D]``; optional ``labels`` group the rows (e.g.
      the topic of a sentence) for the centroid accuracy per group.
    - "regression": ``labels`` the target of each output value.
    - "lm": outputs are logits ``[B, T, V]``; ``labels`` token ids ``[B, T]`` per batch (default:
      the batch's integer ``input_ids``), scored with a shift of one, ``ignore_index`` not scored.

    ``labels`` is one tensor over all rows or a list with one tensor per batch; ``class_names``
    optionally name the classes (or groups) in the per-class tables and plots. ``output_fn`` picks
    the tensor from a model's output (default: the output itself, or its "logits" or
    "sentence_embedding" entry). Latency: ``latency_warmup`` untimed then ``latency_repeats``
    timed calls on the first batch (0 skips it). ``layers=False`` skips the per-layer reports.
    ``name`` labels the result (default: the format name). ``calibration``: sample inputs or a
    ``qkernels.Calibration`` for formats with ``method="gptq"`` (keep them apart from ``inputs``
    for an honest score). The models run as they are (call ``.eval()`` first).
    """
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"compare: name: expected a non-empty string or None, got {name!r}")
    _check_float(float_model)
    quant, spec_name = _quantized(float_model, quantized_model, calibration)
    label = name or spec_name or _module_name(quant, _check_pair(float_model, quant))
    ref = _reference(
        float_model,
        inputs,
        task,
        labels,
        output_fn,
        ignore_index,
        class_names,
        latency_warmup,
        latency_repeats,
        progress,
    )
    return _compare(ref, quant, label, layers, progress)


def compare_formats(
    float_model: nn.Module,
    formats: Sequence[str] | Mapping[str, Any],
    inputs: Any,
    task: str = "classification",
    labels: Tensor | Sequence[Tensor] | None = None,
    *,
    output_fn: OutputFn | None = None,
    ignore_index: int | None = None,
    class_names: Sequence[str] | None = None,
    latency_warmup: int = 2,
    latency_repeats: int = 10,
    layers: bool = True,
    calibration: Any = None,
    progress: bool = True,
) -> list[ComparisonResult]:
    """:func:`compare` for several formats, the float model run once: ``formats`` is a list of
    names of ``FORMAT_CONFIGS`` or a dict {result name: format name, config, mapping or quantized
    model}; GPTQ formats are calibrated once, on ``calibration``. tqdm bars count the formats
    quantized and evaluated unless ``progress=False``."""
    if isinstance(formats, str) or not isinstance(formats, (Sequence, Mapping)) or not formats:
        raise ValueError(
            f"compare_formats: formats: expected a non-empty list or dict of formats, got {formats!r}"
        )
    specs = dict(formats) if isinstance(formats, Mapping) else {f: f for f in formats}
    unknown = [s for s in specs.values() if isinstance(s, str) and s not in FORMAT_CONFIGS]
    if unknown:
        raise ValueError(
            f"compare_formats: formats: expected format names from {sorted(FORMAT_CONFIGS)}, got {unknown}"
        )
    _check_float(float_model)
    calibration = _calibrated(float_model, list(specs.values()), calibration)
    models = {}
    for label, spec in tqdm(specs.items(), desc="quantizing", unit="format", disable=not progress):
        models[label] = _quantized(float_model, spec, calibration)[0]
    ref = _reference(
        float_model,
        inputs,
        task,
        labels,
        output_fn,
        ignore_index,
        class_names,
        latency_warmup,
        latency_repeats,
        False,
    )
    return [
        _compare(ref, models[label], label, layers, False)
        for label in tqdm(models, desc="evaluating", unit="format", disable=not progress)
    ]
