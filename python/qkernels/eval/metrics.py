"""Metrics for what quantization did to a model: output error, distributions, task scores, deltas,
size and speed.

``reference`` is always the float model's tensor and ``approx`` the quantized model's. Tensors go in
(any device); Python floats come out, or small tensors where a metric is per class or per row. Sums
and means run in float64 so that the metric adds no visible error of its own. Every function checks
its inputs first (non-empty, finite, matching shapes, labels and ``k`` in range) and raises an error
that names the argument, what was expected and what it got. Formulas, directions and edge cases are
listed in docs/evaluation.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "ClassScores",
    "Latency",
    "accuracy",
    "accuracy_loss_pp",
    "bits_per_weight",
    "confusion_matrix",
    "cosine_similarity",
    "cosine_similarity_rows",
    "embedding_cosine",
    "expected_calibration_error",
    "kl_divergence",
    "mae",
    "max_abs_error",
    "measure_latency",
    "model_bytes",
    "mse",
    "per_class_accuracy_loss_pp",
    "perplexity",
    "precision_recall_f1",
    "psnr_db",
    "relative_frobenius_error",
    "retrieval_recall_at_k",
    "sqnr_db",
    "top_k_accuracy",
    "topk_agreement",
]

# ---- input checks ------------------------------------------------------------------------------


def _check(fn: str, name: str, t: object, min_dim: int = 0) -> Tensor:
    """Checks that ``t`` is a non-empty, finite, real tensor with at least ``min_dim`` dimensions."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{fn}: {name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{fn}: {name}: expected a real floating or integer dtype, got {t.dtype}")
    if t.dim() < min_dim:
        raise ValueError(
            f"{fn}: {name}: expected at least {min_dim} dimension(s), got shape {tuple(t.shape)}"
        )
    if t.numel() == 0:
        raise ValueError(f"{fn}: {name}: expected a non-empty tensor, got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point:
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            where = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"{fn}: {name}: expected finite values, got {t[where].item()} at {list(where)} "
                f"({int(bad.sum())} non-finite in total)"
            )
    return t


def _values(fn: str, name: str, t: object, min_dim: int = 0) -> Tensor:
    """``t`` checked by :func:`_check`, as float64."""
    return _check(fn, name, t, min_dim).double()


def _pair(
    fn: str, reference: object, approx: object, names: tuple[str, str] = ("reference", "approx"), min_dim=0
) -> tuple[Tensor, Tensor]:
    """Both tensors checked, of the same shape, as float64 on ``reference``'s device."""
    x = _values(fn, names[0], reference, min_dim)
    if isinstance(approx, Tensor) and approx.shape != x.shape:
        raise ValueError(
            f"{fn}: {names[1]}: expected shape {tuple(x.shape)} ({names[0]}'s shape), "
            f"got {tuple(approx.shape)}"
        )
    return x, _values(fn, names[1], approx, min_dim).to(x.device)


def _labels(fn: str, name: str, t: object, num_classes: int | None = None, shape=None) -> Tensor:
    """A non-empty integer tensor of class indices in [0, num_classes) (only >= 0 if None)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{fn}: {name}: expected a torch.Tensor of class indices, got {type(t).__name__}")
    if t.dtype == torch.bool or t.dtype.is_floating_point or t.is_complex():
        raise TypeError(f"{fn}: {name}: expected an integer dtype (class indices), got {t.dtype}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{fn}: {name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")
    if shape is None and t.dim() != 1:
        raise ValueError(
            f"{fn}: {name}: expected a 1-D tensor [N] of class indices, got shape {tuple(t.shape)}"
        )
    if t.numel() == 0:
        raise ValueError(f"{fn}: {name}: expected a non-empty tensor, got shape {tuple(t.shape)}")
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        rng = "[0, inf)" if num_classes is None else f"[0, {num_classes})"
        raise ValueError(f"{fn}: {name}: expected class indices in {rng}, got {lo if lo < 0 else hi}")
    return t.long()


def _int(fn: str, name: str, v: object, lo: int, hi: int | None = None, what: str = "") -> int:
    """An int (not a bool) in [lo, hi]; ``what`` says where ``hi`` comes from."""
    rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]" + (f" ({what})" if what else "")
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        raise ValueError(f"{fn}: {name}: expected an int {rng}, got {v!r}")
    return v


def _num_classes(fn: str, num_classes: object, *labels: Tensor) -> int:
    """``num_classes`` checked, or 1 + the largest label seen."""
    if num_classes is None:
        return 1 + max(int(t.max()) for t in labels)
    return _int(fn, "num_classes", num_classes, 1)


def _predictions(
    fn: str, target: object, num_classes: object, **preds: object
) -> tuple[Tensor, list[Tensor], int]:
    """``target`` and each prediction ([N] class indices, same shape) checked against one class
    count: ``num_classes``, or 1 + the largest index seen."""
    t = _labels(fn, "target", target)
    ps = [_labels(fn, name, p, shape=t.shape).to(t.device) for name, p in preds.items()]
    c = _num_classes(fn, num_classes, t, *ps)
    for name, v in (("target", t), *zip(preds, ps, strict=True)):
        _labels(fn, name, v, c)
    return t, ps, c


def _confusion(pred: Tensor, target: Tensor, c: int) -> Tensor:
    return torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)


# ---- output error ------------------------------------------------------------------------------


def _db(num: float, den: float) -> float:
    """``10·log10(num / den)``: +inf when ``den`` is 0 (no error), -inf when only ``num`` is 0."""
    if den == 0:
        return math.inf
    if num == 0:
        return -math.inf
    return 10.0 * math.log10(num / den)


def mae(reference: Tensor, approx: Tensor) -> float:
    """Mean absolute error ``mean(|x − x̂|)``. Lower is better; 0 for identical tensors."""
    x, y = _pair("mae", reference, approx)
    return (x - y).abs().mean().item()


def mse(reference: Tensor, approx: Tensor) -> float:
    """Mean squared error ``mean((x − x̂)²)``. Lower is better; 0 for identical tensors."""
    x, y = _pair("mse", reference, approx)
    return (x - y).square().mean().item()


def max_abs_error(reference: Tensor, approx: Tensor) -> float:
    """Largest absolute error ``max(|x − x̂|)``. Lower is better; 0 for identical tensors."""
    x, y = _pair("max_abs_error", reference, approx)
    return (x - y).abs().max().item()


def sqnr_db(reference: Tensor, approx: Tensor) -> float:
    """Signal-to-quantization-noise ratio ``10·log10(mean(x²) / mean((x − x̂)²))`` in dB. Higher is
    better. Identical tensors (no noise) give +inf; an all-zero ``reference`` with nonzero error -inf.
    """
    x, y = _pair("sqnr_db", reference, approx)
    return _db(x.square().mean().item(), (x - y).square().mean().item())


def psnr_db(reference: Tensor, approx: Tensor) -> float:
    """Peak signal-to-noise ratio ``10·log10(peak² / mean((x − x̂)²))`` in dB, with
    ``peak = max|x|`` taken from ``reference`` (not a fixed range, since activations have none).
    Higher is better. Identical tensors give +inf; an all-zero ``reference`` with nonzero error -inf.
    """
    x, y = _pair("psnr_db", reference, approx)
    return _db(x.abs().max().item() ** 2, (x - y).square().mean().item())


def _cosine(x: Tensor, y: Tensor) -> Tensor:
    """Cosine along the last dimension: ``x·y / (‖x‖‖y‖)``, 1 if both vectors are zero, 0 if only
    one is (the angle is undefined; identical vectors should score 1), clamped to [-1, 1] against
    rounding."""
    dot = (x * y).sum(-1)
    nx, ny = torch.linalg.vector_norm(x, dim=-1), torch.linalg.vector_norm(y, dim=-1)
    denom = nx * ny
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    degenerate = ((nx == 0) & (ny == 0)).double()
    return torch.where(denom > 0, dot / safe, degenerate).clamp(-1.0, 1.0)


def cosine_similarity(reference: Tensor, approx: Tensor) -> float:
    """Cosine similarity of the flattened tensors, ``x·x̂ / (‖x‖·‖x̂‖)``. Higher is better (1 = same
    direction). Two all-zero tensors give 1; one all-zero tensor gives 0."""
    x, y = _pair("cosine_similarity", reference, approx)
    return _cosine(x.flatten(), y.flatten()).item()


def cosine_similarity_rows(reference: Tensor, approx: Tensor) -> Tensor:
    """Per-row cosine similarity along the last dimension (e.g. one value per embedding): a float64
    tensor of shape ``reference.shape[:-1]``. Zero rows follow :func:`cosine_similarity`."""
    x, y = _pair("cosine_similarity_rows", reference, approx, min_dim=1)
    return _cosine(x, y)


def relative_frobenius_error(reference: Tensor, approx: Tensor) -> float:
    """``‖x − x̂‖_F / ‖x‖_F``. Lower is better. An all-zero ``reference`` gives 0 if ``approx`` is
    also all zero, else +inf."""
    x, y = _pair("relative_frobenius_error", reference, approx)
    err, norm = torch.linalg.vector_norm(x - y).item(), torch.linalg.vector_norm(x).item()
    if norm == 0:
        return 0.0 if err == 0 else math.inf
    return err / norm


# ---- output distributions ----------------------------------------------------------------------


def kl_divergence(reference_logits: Tensor, approx_logits: Tensor) -> float:
    """``KL(P_float ‖ Q_quant)`` in nats, averaged over rows:
    ``mean_rows Σ_c p_c·(log p_c − log q_c)`` with ``p = softmax(reference_logits)`` and
    ``q = softmax(approx_logits)`` over the last dimension (log-probabilities from ``log_softmax``, so
    large logits do not overflow). Lower is better; 0 for identical distributions."""
    x, y = _pair("kl_divergence", reference_logits, approx_logits, ("reference_logits", "approx_logits"), 1)
    log_p, log_q = torch.log_softmax(x, -1), torch.log_softmax(y, -1)
    # Each row's KL is >= 0 exactly; rounding can leave -1e-17 when P == Q.
    return (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0.0).mean().item()


def topk_agreement(reference_logits: Tensor, approx_logits: Tensor, k: int = 1) -> float:
    """Overlap of the top-``k`` classes, ``mean_rows |T_k(P) ∩ T_k(Q)| / k`` over the last dimension
    (softmax keeps the order, so logits or probabilities give the same sets). Higher is better; for
    ``k = 1`` it is the fraction of rows whose argmax agrees. Ties are broken as ``torch.topk`` does.
    """
    fn = "topk_agreement"
    x, y = _pair(fn, reference_logits, approx_logits, ("reference_logits", "approx_logits"), 1)
    k = _int(fn, "k", k, 1, x.shape[-1], "the number of classes")
    in_ref = torch.zeros_like(x, dtype=torch.bool).scatter_(-1, x.topk(k, dim=-1).indices, True)
    hits = in_ref.gather(-1, y.topk(k, dim=-1).indices).sum(-1)
    return (hits.double() / k).mean().item()


# ---- task metrics ------------------------------------------------------------------------------


def accuracy(pred: Tensor, target: Tensor) -> float:
    """Fraction of predicted class indices equal to the target, ``mean(pred == target)``; [N] each."""
    t, (p,), _ = _predictions("accuracy", target, None, pred=pred)
    return (p == t).double().mean().item()


def top_k_accuracy(scores: Tensor, target: Tensor, k: int = 1) -> float:
    """Fraction of rows whose target class is among the ``k`` highest ``scores`` ([N, C] logits or
    probabilities; target [N]): a row counts when fewer than ``k`` classes score strictly higher than
    its target (ties count in the target's favour). Higher is better."""
    fn = "top_k_accuracy"
    s = _values(fn, "scores", scores)
    if s.dim() != 2:
        raise ValueError(f"{fn}: scores: expected shape [N, C], got {tuple(s.shape)}")
    t = _labels(fn, "target", target, s.shape[1], shape=s.shape[:1]).to(s.device)
    k = _int(fn, "k", k, 1, s.shape[1], "the number of classes")
    above = (s > s.gather(1, t.unsqueeze(1))).sum(1)
    return (above < k).double().mean().item()


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int | None = None) -> Tensor:
    """``C[i, j]`` = number of samples of true class ``i`` predicted as ``j`` (rows true, columns
    predicted, as scikit-learn). int64 ``[num_classes, num_classes]``; ``num_classes`` defaults to
    1 + the largest index in ``pred`` or ``target``."""
    t, (p,), c = _predictions("confusion_matrix", target, num_classes, pred=pred)
    return _confusion(p, t, c)


@dataclass(frozen=True)
class ClassScores:
    """Macro precision, recall and F1 (floats) and the per-class values (float64 ``[C]``)."""

    precision: float
    recall: float
    f1: float
    per_class_precision: Tensor
    per_class_recall: Tensor
    per_class_f1: Tensor
    support: Tensor  # int64 [C]: samples of each class in target


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with 0 where ``den`` is 0 (scikit-learn's ``zero_division`` default)."""
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def precision_recall_f1(pred: Tensor, target: Tensor, num_classes: int | None = None) -> ClassScores:
    """Per class ``c``: precision ``TP/(TP+FP)``, recall ``TP/(TP+FN)``, F1 ``2PR/(P+R)``, each 0 where
    its denominator is 0. Macro values are the plain means over the classes that occur in ``pred`` or
    ``target`` (as scikit-learn's ``average="macro"``); macro F1 is the mean of per-class F1, not the F1
    of macro P and R. Higher is better."""
    t, (p,), c = _predictions("precision_recall_f1", target, num_classes, pred=pred)
    cm = _confusion(p, t, c).double()
    tp, predicted, actual = cm.diagonal(), cm.sum(0), cm.sum(1)
    prec, rec = _ratio(tp, predicted), _ratio(tp, actual)
    f1 = _ratio(2 * prec * rec, prec + rec)
    seen = (predicted + actual) > 0
    return ClassScores(
        precision=prec[seen].mean().item(),
        recall=rec[seen].mean().item(),
        f1=f1[seen].mean().item(),
        per_class_precision=prec,
        per_class_recall=rec,
        per_class_f1=f1,
        support=actual.long(),
    )


def expected_calibration_error(probs: Tensor, target: Tensor, n_bins: int = 15) -> float:
    """``ECE = Σ_b (|B_b| / N)·|acc(B_b) − conf(B_b)|`` over ``n_bins`` equal-width bins of the
    confidence ``max_c probs[n, c]``; bin ``b`` holds confidences in ``(b/M, (b+1)/M]`` (0 goes to the
    first), ``acc`` is the fraction whose argmax equals the target, ``conf`` the mean confidence.
    Empty bins add nothing. ``probs``: [N, C] probabilities (softmax the logits first), rows summing
    to 1 within 1e-3. Lower is better; 0 = perfectly calibrated."""
    fn = "expected_calibration_error"
    p = _values(fn, "probs", probs)
    if p.dim() != 2:
        raise ValueError(f"{fn}: probs: expected shape [N, C], got {tuple(p.shape)}")
    if bool(((p < 0) | (p > 1)).any()):
        raise ValueError(
            f"{fn}: probs: expected probabilities in [0, 1], got values in [{p.min()}, {p.max()}]"
        )
    row_sum = p.sum(1)
    if bool(((row_sum - 1).abs() > 1e-3).any()):
        worst = row_sum[(row_sum - 1).abs().argmax()].item()
        raise ValueError(
            f"{fn}: probs: expected rows summing to 1 (softmax the logits), got a row sum of {worst}"
        )
    t = _labels(fn, "target", target, p.shape[1], shape=p.shape[:1]).to(p.device)
    n_bins = _int(fn, "n_bins", n_bins, 1)
    conf, hit = p.max(1)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64, device=p.device)
    bins = torch.bucketize(conf, edges[1:-1], right=False)  # edges[b-1] < conf <= edges[b]
    # Σ_b (|B|/N)·|acc − conf| = Σ_b |Σ_B correct − Σ_B conf| / N: no division by empty bins.
    gap = torch.zeros(n_bins, dtype=torch.float64, device=p.device)
    gap.index_add_(0, bins, (hit == t).double() - conf)
    return (gap.abs().sum() / p.shape[0]).item()


def perplexity(logits: Tensor, target: Tensor, ignore_index: int | None = None, shift: bool = True) -> float:
    """``exp(mean_t −log softmax(logits_t)[target_t])`` over the counted tokens. ``logits``: [..., T, V],
    ``target``: [..., T] token ids. With ``shift`` (language models) position ``t`` predicts token
    ``t + 1``: logits ``[..., :-1, :]`` are scored against ``target[..., 1:]``. Tokens equal to
    ``ignore_index`` are not counted. Lower is better; 1 is a perfect model.

    log-softmax runs in float32 (float64 inputs stay float64), not float64 like the other metrics,
    because ``[tokens, vocab]`` is the largest tensor an evaluation holds; the mean is float64."""
    fn = "perplexity"
    _check(fn, "logits", logits, 2)
    if not logits.dtype.is_floating_point:
        raise TypeError(f"{fn}: logits: expected a floating dtype, got {logits.dtype}")
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise TypeError(f"{fn}: ignore_index: expected an int or None, got {ignore_index!r}")
    if not isinstance(shift, bool):
        raise TypeError(f"{fn}: shift: expected a bool, got {shift!r}")
    if not isinstance(target, Tensor) or target.dtype.is_floating_point or target.dtype == torch.bool:
        got = target.dtype if isinstance(target, Tensor) else type(target).__name__
        raise TypeError(f"{fn}: target: expected an integer tensor of token ids, got {got}")
    if tuple(target.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"{fn}: target: expected shape {tuple(logits.shape[:-1])} (logits without the vocabulary "
            f"dimension), got {tuple(target.shape)}"
        )
    if shift:
        if logits.shape[-2] < 2:
            raise ValueError(
                f"{fn}: logits: expected >= 2 positions (dim -2) with shift, got {logits.shape[-2]}"
            )
        logits, target = logits[..., :-1, :], target[..., 1:]
    target = target.to(logits.device).long()
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    if not bool(keep.any()):
        raise ValueError(
            f"{fn}: target: expected a scored token other than ignore_index={ignore_index}, got none"
        )
    vocab, counted = logits.shape[-1], target[keep]
    if bool(((counted < 0) | (counted >= vocab)).any()):
        bad = counted[(counted < 0) | (counted >= vocab)][0].item()
        raise ValueError(f"{fn}: target: expected token ids in [0, {vocab}) or ignore_index, got {bad}")
    log_probs = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)
    nll = -log_probs.gather(-1, torch.where(keep, target, 0).unsqueeze(-1)).squeeze(-1)
    return math.exp((nll.double() * keep).sum().item() / int(keep.sum()))


def embedding_cosine(reference: Tensor, approx: Tensor) -> float:
    """Mean per-row cosine similarity of two embedding matrices ``[N, D]`` (the float and quantized
    model's embeddings of the same inputs), ``mean_n cos(x_n, x̂_n)``. Higher is better."""
    x, y = _pair("embedding_cosine", reference, approx, min_dim=2)
    return _cosine(x, y).mean().item()


def retrieval_recall_at_k(queries: Tensor, corpus: Tensor, relevant: Tensor, k: int = 1) -> float:
    """Fraction of queries whose relevant corpus item ranks in the top ``k`` by cosine similarity:
    ``queries`` [Q, D], ``corpus`` [N, D], ``relevant`` [Q] (an index into ``corpus`` per query). A
    query counts when fewer than ``k`` corpus items are strictly more similar than its relevant one
    (ties count in its favour). Rows must be nonzero (cosine is undefined otherwise). Higher is better.
    """
    fn = "retrieval_recall_at_k"
    q, c = _values(fn, "queries", queries), _values(fn, "corpus", corpus)
    for name, t in (("queries", q), ("corpus", c)):
        if t.dim() != 2:
            raise ValueError(f"{fn}: {name}: expected shape [rows, D], got {tuple(t.shape)}")
        zero = (t == 0).all(1)
        if bool(zero.any()):
            raise ValueError(
                f"{fn}: {name}: expected nonzero rows (cosine), got a zero row at {int(zero.nonzero()[0])}"
            )
    if c.shape[1] != q.shape[1]:
        raise ValueError(f"{fn}: corpus: expected dimension D = {q.shape[1]} (queries'), got {c.shape[1]}")
    rel = _labels(fn, "relevant", relevant, c.shape[0], shape=q.shape[:1]).to(q.device)
    k = _int(fn, "k", k, 1, c.shape[0], "the corpus size")
    c = c.to(q.device)
    sim = (q / torch.linalg.vector_norm(q, dim=1, keepdim=True)) @ (
        c / torch.linalg.vector_norm(c, dim=1, keepdim=True)
    ).T
    above = (sim > sim.gather(1, rel.unsqueeze(1))).sum(1)
    return (above < k).double().mean().item()


# ---- deltas ------------------------------------------------------------------------------------


def accuracy_loss_pp(reference_pred: Tensor, approx_pred: Tensor, target: Tensor) -> float:
    """Accuracy lost to quantization in percentage points, ``100·(acc(reference_pred) −
    acc(approx_pred))`` against the same ``target``. Positive = the quantized model is worse."""
    t, (r, a), _ = _predictions(
        "accuracy_loss_pp", target, None, reference_pred=reference_pred, approx_pred=approx_pred
    )
    return 100.0 * ((r == t).double().mean() - (a == t).double().mean()).item()


def per_class_accuracy_loss_pp(
    reference_pred: Tensor, approx_pred: Tensor, target: Tensor, num_classes: int | None = None
) -> Tensor:
    """Per-class accuracy loss in percentage points, a float64 tensor indexed by class:
    ``100·(acc_c(reference_pred) − acc_c(approx_pred))`` where ``acc_c`` is the fraction of the samples
    of true class ``c`` predicted as ``c`` (the class's recall). NaN for classes absent from ``target``.
    Positive = the quantized model is worse on that class."""
    t, (r, a), c = _predictions(
        "per_class_accuracy_loss_pp",
        target,
        num_classes,
        reference_pred=reference_pred,
        approx_pred=approx_pred,
    )
    ref_cm, approx_cm = _confusion(r, t, c).double(), _confusion(a, t, c).double()
    support = ref_cm.sum(1)
    delta = 100.0 * (ref_cm.diagonal() - approx_cm.diagonal()) / support
    return torch.where(support > 0, delta, torch.full_like(delta, math.nan))


# ---- size and speed ----------------------------------------------------------------------------


def _nbytes(fn: str, name: str, t: Tensor) -> int:
    if isinstance(t, nn.parameter.UninitializedTensorMixin):
        raise ValueError(
            f"{fn}: model: {name}: expected a materialised tensor, got a lazy one (run forward first)"
        )
    return t.numel() * t.element_size()


def _is_linear(m: nn.Module) -> bool:
    """``nn.Linear`` and every qkernels quantized layer carry integer ``in_features``/``out_features``."""
    return all(isinstance(getattr(m, a, None), int) for a in ("in_features", "out_features"))


def _storage_key(t: Tensor) -> object:
    """Equal keys mean one stored tensor (tied weights, a layer shared under two names): the same view
    of the same memory, which ``qk.save`` also writes once."""
    ptr = t.untyped_storage().data_ptr()
    if ptr == 0:  # meta and empty tensors have no memory to compare; an empty one adds 0 bytes anyway
        return id(t)
    return (t.device, ptr, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


def _stored_bytes(fn: str, state: Iterable[tuple[str, object]]) -> int:
    """Bytes of the tensors among the state-dict items ``state`` (extra states are not tensors), each
    stored tensor once."""
    sizes = {}
    for name, t in state:
        if isinstance(t, Tensor):
            size = _nbytes(fn, name, t)  # rejects a lazy tensor before its storage is looked at
            sizes[_storage_key(t)] = size
    return sum(sizes.values())


def model_bytes(model: nn.Module) -> int:
    """Bytes of what ``model`` stores: the tensors of its state dict (packed weights, scales, zeros,
    codebooks, biases, norms, embeddings...), ``Σ numel·element_size``, each shared tensor once.
    Non-persistent buffers (caches rebuilt at load time, such as VQLinear's fp32 codebooks) are not
    stored, so they do not count."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model_bytes: model: expected torch.nn.Module, got {type(model).__name__}")
    # keep_vars: the module's own tensors, not detached copies, so a lazy one can be named as such.
    return _stored_bytes("model_bytes", model.state_dict(keep_vars=True).items())


def bits_per_weight(model: nn.Module) -> float:
    """``8·(bytes stored by the linear layers) / (number of linear weights)``.

    A linear layer is a module with integer ``in_features`` and ``out_features`` (``nn.Linear`` and
    the qkernels quantized layers) that holds no such module inside it; it has ``in·out`` weights,
    and its storage is every tensor of its state dict except its ``bias`` (packed codes, scales,
    zeros, codebooks; shared tensors once; non-persistent caches are not stored), as ``allocate``
    counts it. So an fp32 ``nn.Linear`` gives 32 and int8 with one fp32 scale per row gives
    ``8 + 32/in_features``. Nothing here knows a format."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"bits_per_weight: model: expected torch.nn.Module, got {type(model).__name__}")
    linears = [
        (name, m)
        for name, m in model.named_modules()
        if _is_linear(m) and not any(_is_linear(c) for c in m.modules() if c is not m)
    ]
    state = (
        (f"{name}.{n}" if name else n, t)
        for name, m in linears
        for n, t in m.state_dict(keep_vars=True).items()
        if n != "bias"
    )
    stored = _stored_bytes("bits_per_weight", state)
    weights = sum(m.in_features * m.out_features for _, m in linears)
    if weights == 0:
        raise ValueError(
            "bits_per_weight: model: expected at least one linear layer (a module with in_features and "
            "out_features > 0), got none"
        )
    return 8.0 * stored / weights


@dataclass(frozen=True)
class Latency:
    """Wall-clock time of one call (median and 90th percentile, linear interpolation between the
    sorted samples) and ``throughput = items_per_call / median_s`` (items per second)."""

    median_s: float
    p90_s: float
    throughput: float
    repeats: int
    warmup: int


def measure_latency(
    fn: Callable[[], object],
    *,
    warmup: int = 3,
    repeats: int = 20,
    items_per_call: float = 1,
    sync: Callable[[], object] | None = None,
) -> Latency:
    """Calls ``fn()`` ``warmup`` times untimed (caches, lazy init, autotuning), then times ``repeats``
    calls one by one with ``time.perf_counter``. ``sync`` runs before the clock starts and before it
    stops, so that asynchronous work (CUDA kernels) is inside the timing; by default it is
    ``torch.cuda.synchronize`` once CUDA is initialised, else nothing. ``items_per_call`` (e.g. the
    batch size or tokens per call) scales the throughput."""
    name = "measure_latency"
    if not callable(fn):
        raise TypeError(f"{name}: fn: expected a callable taking no arguments, got {type(fn).__name__}")
    warmup = _int(name, "warmup", warmup, 0)
    repeats = _int(name, "repeats", repeats, 1)
    if (
        isinstance(items_per_call, bool)
        or not isinstance(items_per_call, (int, float))
        or not items_per_call > 0
    ):
        raise ValueError(f"{name}: items_per_call: expected a positive number, got {items_per_call!r}")
    if sync is None:
        sync = torch.cuda.synchronize if torch.cuda.is_initialized() else (lambda: None)
    elif not callable(sync):
        raise TypeError(f"{name}: sync: expected a callable or None, got {type(sync).__name__}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    median, p90 = (
        torch.tensor(times, dtype=torch.float64)
        .quantile(torch.tensor([0.5, 0.9], dtype=torch.float64))
        .tolist()
    )
    throughput = items_per_call / median if median > 0 else math.inf
    return Latency(median_s=median, p90_s=p90, throughput=throughput, repeats=repeats, warmup=warmup)
