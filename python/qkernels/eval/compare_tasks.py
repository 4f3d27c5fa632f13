"""Task metrics of :func:`qkernels.eval.compare.compare`: classification, embedding, regression and
language-model scores of the float and the quantized model, from their outputs and the labels."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import metrics as M

__all__ = ["ClassBreakdown", "Score", "TaskData", "task_metrics"]

TOP_K = 5


@dataclass(frozen=True)
class Score:
    """The headline number of the task, higher is better, in ``unit`` ("%" or ""): top-1 accuracy,
    next-token accuracy, R² or the mean cosine of the outputs to the float model's."""

    name: str
    unit: str
    float_value: float
    quant_value: float


@dataclass(frozen=True)
class ClassBreakdown:
    """Per class (``what``: "accuracy", or "centroid accuracy" for embeddings with groups):
    ``names`` of the C classes (their indices unless ``compare`` was given ``class_names``);
    ``support`` int64 [C]; the accuracy of each model on each class (its recall, NaN without
    samples) and the loss in percentage points, float64 [C]; confusion matrices int64 [C, C]
    (rows true, columns predicted)."""

    what: str
    names: list[str]
    support: Tensor
    float_accuracy: Tensor
    quant_accuracy: Tensor
    loss_pp: Tensor
    float_confusion: Tensor
    quant_confusion: Tensor


@dataclass(frozen=True)
class TaskData:
    """What the task metrics need besides the outputs: the labels as given to ``compare``, the
    batches (``(args, kwargs)``, where a language model's token ids come from), ``ignore_index`` and
    the ``class_names`` given to ``compare``."""

    labels: Tensor | list[Tensor] | None
    batches: list[tuple[tuple, dict]]
    ignore_index: int | None
    class_names: list[str] | None = None


# ---- task metrics -------------------------------------------------------------------------------


def _flat_labels(data: TaskData, rows: int, what: str) -> Tensor | None:
    if data.labels is None:
        return None
    t = data.labels if isinstance(data.labels, Tensor) else torch.cat([x.reshape(-1) for x in data.labels])
    t = t.reshape(-1)
    if t.numel() != rows:
        raise ValueError(
            f"compare: labels: expected {rows} values (one per {what} of the outputs), got {t.numel()}"
        )
    return t


def _class_labels(data: TaskData, rows: int, num_classes: int | None, what: str) -> Tensor | None:
    t = _flat_labels(data, rows, what)
    if t is None:
        return None
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"compare: labels: expected integer class indices, got {t.dtype}")
    lo, hi = int(t.min()), int(t.max())
    top = num_classes if num_classes is not None else math.inf
    if lo < 0 or hi >= top:
        rng = f"[0, {num_classes})" if num_classes is not None else "[0, inf)"
        raise ValueError(f"compare: labels: expected class indices in {rng}, got {lo if lo < 0 else hi}")
    return t.long()


def _names(data: TaskData, c: int) -> list[str]:
    if data.class_names is None:
        return [str(i) for i in range(c)]
    if len(data.class_names) != c:
        raise ValueError(
            f"compare: class_names: expected {c} names (one per class), got {len(data.class_names)}"
        )
    return list(data.class_names)


def _breakdown(what: str, fpred: Tensor, qpred: Tensor, target: Tensor, names: list[str]) -> ClassBreakdown:
    c = len(names)
    fcm, qcm = M.confusion_matrix(fpred, target, c), M.confusion_matrix(qpred, target, c)
    support = fcm.sum(1)
    nan = torch.full((c,), math.nan, dtype=torch.float64)
    acc = [torch.where(support > 0, cm.diagonal().double() / support.clamp(min=1), nan) for cm in (fcm, qcm)]
    loss = M.per_class_accuracy_loss_pp(fpred, qpred, target, c)
    return ClassBreakdown(what, names, support, acc[0], acc[1], loss, fcm, qcm)


def _classification(data: TaskData, fo: Tensor, qo: Tensor) -> dict[str, Any]:
    c = fo.shape[-1]
    f, q = fo.reshape(-1, c), qo.reshape(-1, c)
    k = min(TOP_K, c)
    agreement = {
        "kl_divergence": M.kl_divergence(f, q),
        "top1_agreement": M.topk_agreement(f, q, 1),
        f"top{k}_agreement": M.topk_agreement(f, q, k),
    }
    target = _class_labels(data, f.shape[0], c, "row")
    if target is None:
        return {
            "agreement": agreement,
            "score": Score("top-1 agreement with fp32", "%", 100.0, 100.0 * agreement["top1_agreement"]),
        }
    scores = {}
    for which, logits in (("float", f), ("quant", q)):
        prf = M.precision_recall_f1(logits.argmax(1), target, c)
        scores[which] = {
            "top1_accuracy": M.top_k_accuracy(logits, target, 1),
            f"top{k}_accuracy": M.top_k_accuracy(logits, target, k),
            "macro_precision": prf.precision,
            "macro_recall": prf.recall,
            "macro_f1": prf.f1,
            "ece": M.expected_calibration_error(torch.softmax(logits.double(), 1), target),
        }
    fs, qs = scores["float"], scores["quant"]
    per_class = _breakdown("accuracy", f.argmax(1), q.argmax(1), target, _names(data, c))
    return {
        "agreement": agreement,
        "float_metrics": fs,
        "quant_metrics": qs,
        "deltas": {
            "top1_loss_pp": M.accuracy_loss_pp(f.argmax(1), q.argmax(1), target),
            f"top{k}_loss_pp": 100.0 * (fs[f"top{k}_accuracy"] - qs[f"top{k}_accuracy"]),
            "macro_f1_loss_pp": 100.0 * (fs["macro_f1"] - qs["macro_f1"]),
            "ece_increase": qs["ece"] - fs["ece"],
        },
        "score": Score("top-1 accuracy", "%", 100.0 * fs["top1_accuracy"], 100.0 * qs["top1_accuracy"]),
        "per_class": per_class,
        "losses": per_class.loss_pp[~per_class.loss_pp.isnan()],
        "losses_over": "class",
        "losses_what": "accuracy loss per class (pp)",
    }


def _embedding(data: TaskData, fo: Tensor, qo: Tensor) -> dict[str, Any]:
    f, q = fo.reshape(-1, fo.shape[-1]), qo.reshape(-1, qo.shape[-1])
    cos = M.cosine_similarity_rows(f, q)
    mean = M.embedding_cosine(f, q)
    out: dict[str, Any] = {
        "agreement": {"mean_cosine": mean, "min_cosine": cos.min().item()},
        "score": Score("mean cosine to fp32", "", 1.0, mean),
    }
    groups = _class_labels(data, f.shape[0], None, "row")
    if groups is not None:
        # Centroids of the float embeddings of each group: each model's embedding of a sample should
        # stay nearest to its own group's centroid.
        names = _names(data, len(data.class_names) if data.class_names is not None else int(groups.max()) + 1)
        if int(groups.max()) >= len(names):
            raise ValueError(
                f"compare: labels: expected groups in [0, {len(names)}), got {int(groups.max())}"
            )
        g = len(names)
        centroids = torch.zeros(g, f.shape[1], dtype=torch.float64).index_add_(
            0, groups, F.normalize(f.double(), dim=1)
        )
        centroids = F.normalize(centroids, dim=1)
        fpred = (F.normalize(f.double(), dim=1) @ centroids.T).argmax(1)
        qpred = (F.normalize(q.double(), dim=1) @ centroids.T).argmax(1)
        fa, qa = M.accuracy(fpred, groups), M.accuracy(qpred, groups)
        per_class = _breakdown("centroid accuracy", fpred, qpred, groups, names)
        out.update(
            float_metrics={"centroid_accuracy": fa},
            quant_metrics={"centroid_accuracy": qa},
            deltas={"centroid_accuracy_loss_pp": M.accuracy_loss_pp(fpred, qpred, groups)},
            per_class=per_class,
            losses=per_class.loss_pp[~per_class.loss_pp.isnan()],
            losses_over="class",
            losses_what="centroid accuracy loss per group (pp)",
        )
    out["deltas"] = {**out.get("deltas", {}), "cosine_loss": 1.0 - mean}
    return out


def _r2(pred: Tensor, target: Tensor) -> float:
    t = target.double()
    total = (t - t.mean()).square().sum().item()
    residual = (pred.double() - t).square().sum().item()
    return 1.0 - residual / total if total > 0 else (1.0 if residual == 0 else -math.inf)


def _regression(data: TaskData, fo: Tensor, qo: Tensor) -> dict[str, Any]:
    # Per sample: how far the quantized output row moved, in % of the float outputs' RMS.
    rms = fo.double().square().mean().sqrt().item() or 1.0
    out: dict[str, Any] = {
        "losses": 100.0
        * torch.linalg.vector_norm((qo - fo).double(), dim=1)
        / (rms * math.sqrt(fo.shape[1])),
        "losses_over": "sample",
        "losses_what": "output deviation per sample, % of the float outputs' RMS",
    }
    target = _flat_labels(data, fo.numel(), "value")
    if target is None:
        return {**out, "score": Score("output cosine to fp32", "", 1.0, M.cosine_similarity(fo, qo))}
    target = target.double().reshape(fo.shape)
    if not bool(torch.isfinite(target).all()):
        raise ValueError(
            f"compare: labels: expected finite targets, got {target[~torch.isfinite(target)][0]}"
        )
    scores = {
        which: {"mse": M.mse(target, o), "mae": M.mae(target, o), "r2": _r2(o, target)}
        for which, o in (("float", fo), ("quant", qo))
    }
    fs, qs = scores["float"], scores["quant"]
    return {
        **out,
        "float_metrics": fs,
        "quant_metrics": qs,
        "deltas": {"mse_increase": qs["mse"] - fs["mse"], "r2_loss_pp": 100.0 * (fs["r2"] - qs["r2"])},
        "score": Score("R²", "%", 100.0 * fs["r2"], 100.0 * qs["r2"]),
    }


def _lm_targets(data: TaskData, outputs: list[Tensor]) -> list[Tensor]:
    if data.labels is None:
        targets = []
        for i, (args, kwargs) in enumerate(data.batches):
            ids = kwargs.get("input_ids", next((a for a in args if isinstance(a, Tensor)), None))
            if ids is None or ids.dtype.is_floating_point:
                raise ValueError(
                    f"compare: labels: expected token ids (labels, or integer input_ids in inputs[{i}]), "
                    "got none"
                )
            targets.append(ids)
    elif isinstance(data.labels, Tensor):
        targets = list(data.labels.split([o.shape[0] for o in outputs]))
    else:
        targets = data.labels
    if len(targets) != len(outputs):
        raise ValueError(
            f"compare: labels: expected one tensor per batch ({len(outputs)}), got {len(targets)}"
        )
    for i, (t, o) in enumerate(zip(targets, outputs, strict=True)):
        if tuple(t.shape) != tuple(o.shape[:-1]):
            raise ValueError(
                f"compare: labels[{i}]: expected token ids of shape {tuple(o.shape[:-1])}, got "
                f"{tuple(t.shape)}"
            )
    return [t.cpu() for t in targets]


def _lm(data: TaskData, fouts: list[Tensor], qouts: list[Tensor]) -> dict[str, Any]:
    for i, o in enumerate(fouts):
        if o.dim() != 3:
            raise ValueError(
                f"compare: float_model: expected logits [batch, tokens, vocab] for inputs[{i}], got "
                f"shape {tuple(o.shape)}"
            )
    targets = _lm_targets(data, fouts)
    nll = {"float": 0.0, "quant": 0.0}
    hits = {"float": 0, "quant": 0}
    count, seq_loss = 0, []
    for f, q, t in zip(fouts, qouts, targets, strict=True):
        tgt = t[:, 1:].long()
        keep = (
            torch.ones_like(tgt, dtype=torch.bool) if data.ignore_index is None else tgt != data.ignore_index
        )
        n = int(keep.sum())
        if n == 0:
            continue
        count += n
        per_seq = []
        for which, logits in (("float", f), ("quant", q)):
            nll[which] += n * math.log(M.perplexity(logits, t, ignore_index=data.ignore_index))
            right = (logits[:, :-1].argmax(-1) == tgt) & keep
            hits[which] += int(right.sum())
            per_seq.append(right.sum(1).double() / keep.sum(1).clamp(min=1))
        has = keep.any(1)
        seq_loss.append(100.0 * (per_seq[0] - per_seq[1])[has])
    if count == 0:
        raise ValueError(
            f"compare: labels: expected a scored token other than ignore_index={data.ignore_index}"
        )
    scores = {
        w: {"perplexity": math.exp(nll[w] / count), "next_token_accuracy": hits[w] / count} for w in nll
    }
    fs, qs = scores["float"], scores["quant"]
    v = fouts[0].shape[-1]
    f2, q2 = torch.cat([o.reshape(-1, v) for o in fouts]), torch.cat([o.reshape(-1, v) for o in qouts])
    k = min(TOP_K, v)
    return {
        "agreement": {
            "kl_divergence": M.kl_divergence(f2, q2),
            "top1_agreement": M.topk_agreement(f2, q2, 1),
            f"top{k}_agreement": M.topk_agreement(f2, q2, k),
        },
        "float_metrics": fs,
        "quant_metrics": qs,
        "deltas": {
            "perplexity_increase": qs["perplexity"] - fs["perplexity"],
            "perplexity_ratio": qs["perplexity"] / fs["perplexity"],
            "next_token_accuracy_loss_pp": 100.0 * (fs["next_token_accuracy"] - qs["next_token_accuracy"]),
        },
        "score": Score(
            "next-token accuracy", "%", 100.0 * fs["next_token_accuracy"], 100.0 * qs["next_token_accuracy"]
        ),
        "losses": torch.cat(seq_loss),
        "losses_over": "sample",
        "losses_what": "next-token accuracy loss per sequence (pp)",
    }


def _rows(task: str, outputs: list[Tensor]) -> list[Tensor]:
    """Each batch's output as rows ``[rows, width]``: one row per sample (per token for "lm" and
    for leading dimensions beyond the batch), all of one width."""
    if task == "regression":
        rows = [o.reshape(o.shape[0], -1) for o in outputs]
    else:
        if any(o.dim() < 2 for o in outputs):
            raise ValueError(
                f"compare: float_model: expected outputs [batch, ..., features] for task={task!r}, got "
                f"shape {tuple(next(o for o in outputs if o.dim() < 2).shape)}"
            )
        rows = [o.reshape(-1, o.shape[-1]) for o in outputs]
    widths = sorted({r.shape[1] for r in rows})
    if len(widths) > 1:
        raise ValueError(f"compare: float_model: expected one output width over all batches, got {widths}")
    return rows


def task_metrics(task: str, data: TaskData, fouts: list[Tensor], qouts: list[Tensor]) -> dict[str, Any]:
    """Scores of both models for ``task`` from their outputs (one tensor per batch, the same shapes):
    ``score``, ``agreement``, ``losses``/``losses_over``/``losses_what`` and, where labels allow,
    ``float_metrics``, ``quant_metrics``, ``deltas`` and ``per_class``; also the flattened outputs
    ``float_values``/``quant_values`` and the cosine of each output row, ``row_cosine``."""
    rows_f, rows_q = _rows(task, fouts), _rows(task, qouts)
    fo, qo = torch.cat(rows_f), torch.cat(rows_q)
    if task == "lm":
        out = _lm(data, fouts, qouts)
    else:
        out = {"classification": _classification, "embedding": _embedding, "regression": _regression}[task](
            data, fo, qo
        )
    out["row_cosine"] = M.cosine_similarity_rows(fo, qo).double()
    if "losses" not in out:
        out.update(
            losses=100.0 * (1.0 - out["row_cosine"]),
            losses_over="sample",
            losses_what="cosine loss per sample, 100·(1 − cos) (pp)",
        )
    out["float_values"], out["quant_values"] = fo.reshape(-1), qo.reshape(-1)
    return out
