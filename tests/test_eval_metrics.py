"""qkernels.eval.metrics against independent oracles: numpy for error metrics, KL and perplexity,
scikit-learn for classification scores, hand-worked examples for ECE and retrieval."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pytest
import qkernels as qk
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from qkernels.eval import metrics as M
from sklearn import metrics as skm
from torch import nn

# float64 against float64 with another summation order: a few ulps of the result.
RTOL = 1e-12

# ---- numpy oracles -----------------------------------------------------------------------------


def _np_error_metrics(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    d = x - y
    mse = np.mean(d**2)
    return {
        "mae": np.mean(np.abs(d)),
        "mse": mse,
        "max_abs_error": np.max(np.abs(d)),
        "sqnr_db": 10 * np.log10(np.mean(x**2) / mse),
        "psnr_db": 10 * np.log10(np.max(np.abs(x)) ** 2 / mse),
        "cosine_similarity": np.dot(x.ravel(), y.ravel()) / (np.linalg.norm(x) * np.linalg.norm(y)),
        "relative_frobenius_error": np.linalg.norm(d) / np.linalg.norm(x),
    }


def _np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    lp, lq = _np_log_softmax(p_logits), _np_log_softmax(q_logits)
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=-1)))


def _np_perplexity(logits: np.ndarray, target: np.ndarray, ignore_index=None, shift=True) -> float:
    if shift:
        logits, target = logits[..., :-1, :], target[..., 1:]
    logits, target = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
    keep = np.ones_like(target, dtype=bool) if ignore_index is None else target != ignore_index
    ce = -_np_log_softmax(logits[keep])[np.arange(keep.sum()), target[keep]]
    return float(np.exp(ce.mean()))


# ---- output error ------------------------------------------------------------------------------

ERROR_FNS = [
    "mae",
    "mse",
    "max_abs_error",
    "sqnr_db",
    "psnr_db",
    "cosine_similarity",
    "relative_frobenius_error",
]


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (2, 3, 17)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_error_metrics_match_numpy(shape, dtype):
    x = torch.randn(shape).to(dtype)
    y = (x.float() + 0.05 * torch.randn(shape)).to(dtype)
    expected = _np_error_metrics(x.double().numpy(), y.double().numpy())
    for name in ERROR_FNS:
        got = getattr(M, name)(x, y)
        assert isinstance(got, float), name
        assert got == pytest.approx(expected[name], rel=RTOL, abs=1e-300), name


finite32 = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    arrays("float32", st.tuples(st.integers(1, 4), st.integers(1, 40)), elements=finite32),
    arrays("float32", st.tuples(st.integers(1, 4), st.integers(1, 40)), elements=finite32),
)
def test_error_metrics_match_numpy_on_arbitrary_values(a, b):
    b = np.resize(b, a.shape)
    x, y = torch.from_numpy(a), torch.from_numpy(b)
    x64, y64 = a.astype(np.float64), b.astype(np.float64)
    d = x64 - y64
    assert M.mae(x, y) == pytest.approx(np.mean(np.abs(d)), rel=RTOL, abs=0)
    assert M.max_abs_error(x, y) == np.max(np.abs(d))
    signal, noise = np.mean(x64**2), np.mean(d**2)
    if noise > 0 and signal > 0:
        assert M.sqnr_db(x, y) == pytest.approx(10 * np.log10(signal / noise), rel=RTOL, abs=1e-9)
    assert -1.0 <= M.cosine_similarity(x, y) <= 1.0
    # SQNR is scale-free: multiplying both tensors by a power of two changes nothing.
    assert M.sqnr_db(x * 0.25, y * 0.25) == M.sqnr_db(x, y)


def test_identical_tensors():
    x = torch.randn(4, 9)
    assert M.sqnr_db(x, x.clone()) == math.inf
    assert M.psnr_db(x, x.clone()) == math.inf
    assert M.mae(x, x) == M.mse(x, x) == M.max_abs_error(x, x) == 0.0
    assert M.relative_frobenius_error(x, x) == 0.0
    assert M.cosine_similarity(x, x) == pytest.approx(1.0, rel=RTOL)
    assert M.cosine_similarity(x, x) <= 1.0


def test_all_zero_tensors():
    zero, y = torch.zeros(3, 4), torch.randn(3, 4)
    # Both zero: no error at all.
    assert M.sqnr_db(zero, zero) == M.psnr_db(zero, zero) == math.inf
    assert M.cosine_similarity(zero, zero) == 1.0
    assert M.relative_frobenius_error(zero, zero) == 0.0
    # Zero reference, nonzero error: no signal.
    assert M.sqnr_db(zero, y) == M.psnr_db(zero, y) == -math.inf
    assert M.relative_frobenius_error(zero, y) == math.inf
    assert M.cosine_similarity(zero, y) == M.cosine_similarity(y, zero) == 0.0
    # Zero approximation: all signal is noise, 0 dB.
    assert M.sqnr_db(y, zero) == pytest.approx(0.0, abs=1e-12)
    assert M.relative_frobenius_error(y, zero) == pytest.approx(1.0, rel=RTOL)


def test_single_element():
    x, y = torch.tensor([2.0]), torch.tensor([1.5])
    assert M.mse(x, y) == 0.25
    assert M.sqnr_db(x, y) == pytest.approx(10 * math.log10(4.0 / 0.25), rel=RTOL)
    assert M.cosine_similarity(x, -y) == -1.0


def test_cosine_rows_and_embedding_cosine_match_numpy():
    x = torch.randn(2, 6, 16)
    y = x + 0.3 * torch.randn(2, 6, 16)
    y[1, 2] = 0  # one zero row: cosine 0 by definition
    x[0, 4] = y[0, 4] = 0  # both zero: cosine 1
    rows = M.cosine_similarity_rows(x, y)
    assert rows.shape == (2, 6) and rows.dtype == torch.float64
    a, b = x.double().numpy(), y.double().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    expected[1, 2], expected[0, 4] = 0.0, 1.0
    np.testing.assert_allclose(rows.numpy(), expected, rtol=RTOL)
    emb_x, emb_y = x[0], y[0]
    assert M.embedding_cosine(emb_x, emb_y) == pytest.approx(expected[0].mean(), rel=RTOL)


# ---- distributions -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(10,), (1, 5), (8, 12), (3, 4, 50)])
def test_kl_matches_numpy_in_the_stated_direction(shape):
    p, q = torch.randn(shape) * 3, torch.randn(shape) * 3
    pn, qn = p.double().numpy(), q.double().numpy()
    assert M.kl_divergence(p, q) == pytest.approx(_np_kl(pn, qn), rel=1e-10)
    assert M.kl_divergence(q, p) == pytest.approx(_np_kl(qn, pn), rel=1e-10)
    assert M.kl_divergence(p, p) == 0.0


def test_kl_is_stable_for_large_logits():
    p, q = torch.randn(6, 30), torch.randn(6, 30)
    expected = _np_kl(p.double().numpy(), q.double().numpy())
    # A naive softmax overflows at exp(5000); log_softmax shifts each row first.
    assert M.kl_divergence(p.double() + 5000, q.double() - 5000) == pytest.approx(expected, rel=1e-10)


@settings(max_examples=40, deadline=None)
@given(arrays("float64", st.tuples(st.integers(1, 5), st.integers(1, 20)), elements=st.floats(-50, 50)))
def test_kl_is_nonnegative_and_zero_on_itself(logits):
    p = torch.from_numpy(logits)
    q = torch.from_numpy(np.flip(logits, axis=-1).copy())
    assert M.kl_divergence(p, q) >= 0.0
    assert M.kl_divergence(p, p + 3.0) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_topk_agreement_matches_numpy_set_overlap(k):
    p, q = torch.randn(40, 9), torch.randn(40, 9)
    q[:20] = p[:20] + 0.1 * torch.randn(20, 9)
    pn, qn = p.numpy(), q.numpy()
    overlap = [
        len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k for a, b in zip(pn, qn, strict=True)
    ]
    assert M.topk_agreement(p, q, k) == pytest.approx(np.mean(overlap), rel=RTOL)
    assert M.topk_agreement(p, p, k) == 1.0
    assert M.topk_agreement(p, q, 9) == 1.0  # every class in both sets


# ---- classification ----------------------------------------------------------------------------


def _labels(n, c, noise=0.3):
    target = torch.randint(0, c, (n,))
    pred = torch.where(torch.rand(n) < noise, torch.randint(0, c, (n,)), target)
    return pred, target


@pytest.mark.parametrize(("n", "c"), [(1, 3), (50, 4), (300, 10)])
def test_accuracy_confusion_and_macro_scores_match_sklearn(n, c):
    pred, target = _labels(n, c)
    p, t = pred.numpy(), target.numpy()
    classes = int(max(p.max(), t.max())) + 1
    assert M.accuracy(pred, target) == pytest.approx(skm.accuracy_score(t, p), rel=RTOL)
    cm = M.confusion_matrix(pred, target)
    assert cm.dtype == torch.int64
    np.testing.assert_array_equal(cm.numpy(), skm.confusion_matrix(t, p, labels=np.arange(classes)))
    scores = M.precision_recall_f1(pred, target)
    prec, rec, f1, _ = skm.precision_recall_fscore_support(t, p, average="macro", zero_division=0)
    assert (scores.precision, scores.recall, scores.f1) == pytest.approx((prec, rec, f1), rel=RTOL)
    per = skm.precision_recall_fscore_support(t, p, labels=np.arange(classes), zero_division=0)
    for got, want in zip(
        (scores.per_class_precision, scores.per_class_recall, scores.per_class_f1, scores.support),
        per,
        strict=True,
    ):
        np.testing.assert_allclose(got.numpy(), want, rtol=RTOL)


def test_macro_average_skips_classes_that_never_occur():
    # Class 2 appears nowhere; class 3 only in pred. num_classes=5 adds class 4, also absent.
    pred = torch.tensor([0, 1, 1, 3, 0, 0])
    target = torch.tensor([0, 1, 0, 1, 0, 1])
    scores = M.precision_recall_f1(pred, target, num_classes=5)
    p, t = pred.numpy(), target.numpy()
    prec, rec, f1, _ = skm.precision_recall_fscore_support(t, p, average="macro", zero_division=0)
    assert (scores.precision, scores.recall, scores.f1) == pytest.approx((prec, rec, f1), rel=RTOL)
    assert scores.per_class_f1.shape == (5,) and scores.support.tolist() == [3, 3, 0, 0, 0]
    assert M.confusion_matrix(pred, target, num_classes=5).shape == (5, 5)


@pytest.mark.parametrize(("n", "c", "k"), [(1, 4, 1), (60, 5, 1), (200, 12, 5), (30, 6, 4)])
def test_top_k_accuracy_matches_sklearn(n, c, k):
    scores, target = torch.randn(n, c), torch.randint(0, c, (n,))
    scores[: n // 2].scatter_(1, target[: n // 2, None], 3.0)  # half of them right at top-1
    expected = skm.top_k_accuracy_score(target.numpy(), scores.numpy(), k=k, labels=np.arange(c))
    assert M.top_k_accuracy(scores, target, k) == pytest.approx(expected, rel=RTOL)


def test_ece_hand_worked_example():
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.3, 0.7], [0.55, 0.45]], dtype=torch.float64)
    target = torch.tensor([0, 0, 1, 0])
    # 15 bins of width 1/15: 0.9 twice in (13/15, 14/15] (one right, one wrong), 0.7 alone in
    # (10/15, 11/15] (right), 0.55 alone in (8/15, 9/15] (right).
    expected = 2 / 4 * abs(0.5 - 0.9) + 1 / 4 * abs(1 - 0.7) + 1 / 4 * abs(1 - 0.55)
    assert M.expected_calibration_error(probs, target) == pytest.approx(expected, rel=RTOL)


def test_ece_bins_are_closed_on_the_right():
    # Two bins, (0, 0.5] and (0.5, 1]: confidence 0.5 joins 0.4 in the first bin.
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.4, 0.35, 0.25]], dtype=torch.float64)
    target = torch.tensor([1, 0])
    together = abs(0.5 - (0.5 + 0.4) / 2)
    assert M.expected_calibration_error(probs, target, n_bins=2) == pytest.approx(together, rel=RTOL)


def test_ece_single_sample_and_perfect_confidence():
    assert M.expected_calibration_error(torch.tensor([[1.0, 0.0]]), torch.tensor([0])) == 0.0
    assert M.expected_calibration_error(torch.tensor([[0.0, 1.0]]), torch.tensor([0])) == 1.0


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_matches_numpy_binning(n_bins):
    logits, target = torch.randn(500, 10) * 2, torch.randint(0, 10, (500,))
    target[:300] = logits[:300].argmax(1)
    probs = torch.softmax(logits.double(), 1)
    p = probs.numpy()
    conf, correct = p.max(1), (p.argmax(1) == target.numpy())
    edges = np.linspace(0, 1, n_bins + 1)
    expected = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            expected += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    assert M.expected_calibration_error(probs, target, n_bins) == pytest.approx(expected, rel=1e-10)


# ---- perplexity --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 30), (2, 7, 30), (3, 2, 4, 11)])
@pytest.mark.parametrize("ignore_index", [None, -100, 0])
@pytest.mark.parametrize("shift", [True, False])
def test_perplexity_matches_numpy_cross_entropy(shape, ignore_index, shift):
    logits = torch.randn(shape, dtype=torch.float64) * 2
    target = torch.randint(0, shape[-1], shape[:-1])
    if ignore_index is not None:
        target.view(-1)[::3] = ignore_index
        target.view(-1)[-1] = 1  # at least one scored token either way
    expected = _np_perplexity(logits.numpy(), target.numpy(), ignore_index, shift)
    assert M.perplexity(logits, target, ignore_index, shift) == pytest.approx(expected, rel=RTOL)


def test_perplexity_float32_within_twice_the_float32_oracle_error():
    logits, target = torch.randn(4, 64, 500) * 3, torch.randint(0, 500, (4, 64))
    exact = _np_perplexity(logits.double().numpy(), target.numpy())
    oracle32 = _np_perplexity(logits.numpy(), target.numpy())  # numpy in float32 throughout
    got = M.perplexity(logits, target)
    assert abs(got - exact) <= 2 * abs(oracle32 - exact) + np.finfo(np.float32).eps * exact


def test_perplexity_of_uniform_logits_is_the_vocabulary_size():
    logits = torch.zeros(2, 9, 37, dtype=torch.float64)
    assert M.perplexity(logits, torch.randint(0, 37, (2, 9))) == pytest.approx(37, rel=RTOL)


# ---- retrieval ---------------------------------------------------------------------------------


def test_recall_at_k_constructed():
    corpus = torch.eye(4)  # cosine to document d is the query's d-th component over its norm
    queries = torch.tensor([[4.0, 3, 2, 1], [4.0, 3, 2, 1], [1.0, 2, 3, 4]])
    relevant = torch.tensor([0, 2, 0])  # ranks 0, 2 and 3
    got = [M.retrieval_recall_at_k(queries, corpus, relevant, k) for k in (1, 2, 3, 4)]
    assert got == pytest.approx([1 / 3, 1 / 3, 2 / 3, 1.0], rel=RTOL)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_recall_at_k_matches_numpy_brute_force(k):
    corpus = torch.randn(50, 24)
    relevant = torch.randint(0, 50, (30,))
    queries = corpus[relevant] + 1.2 * torch.randn(30, 24)
    q, c = queries.double().numpy(), corpus.double().numpy()
    sim = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (c / np.linalg.norm(c, axis=1, keepdims=True)).T
    ranked = np.argsort(-sim, axis=1)[:, :k]
    expected = np.mean([r in row for r, row in zip(relevant.numpy(), ranked, strict=True)])
    assert M.retrieval_recall_at_k(queries, corpus, relevant, k) == pytest.approx(expected, rel=RTOL)


# ---- deltas ------------------------------------------------------------------------------------


def test_accuracy_loss_in_percentage_points_overall_and_per_class():
    ref_pred, target = _labels(400, 6, noise=0.1)
    approx_pred, _ = _labels(400, 6, noise=0.4)
    approx_pred = torch.where(torch.rand(400) < 0.5, ref_pred, approx_pred)
    target[target == 4] = 3  # class 4 has no samples: NaN
    t, r, a = target.numpy(), ref_pred.numpy(), approx_pred.numpy()
    expected = 100 * (skm.accuracy_score(t, r) - skm.accuracy_score(t, a))
    assert M.accuracy_loss_pp(ref_pred, approx_pred, target) == pytest.approx(expected, rel=RTOL)
    per = M.per_class_accuracy_loss_pp(ref_pred, approx_pred, target, num_classes=7)
    assert per.shape == (7,)
    for c in range(7):
        rows = t == c
        if rows.any():
            want = 100 * (np.mean(r[rows] == c) - np.mean(a[rows] == c))
            assert per[c].item() == pytest.approx(want, rel=RTOL, abs=1e-12), c
        else:
            assert math.isnan(per[c].item()), c


def test_no_loss_for_identical_predictions():
    pred, target = _labels(30, 3)
    assert M.accuracy_loss_pp(pred, pred, target) == 0.0


# ---- size --------------------------------------------------------------------------------------


def test_model_bytes_counts_every_tensor_once():
    model = nn.Sequential(
        nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 8, bias=False), nn.BatchNorm1d(8)
    )
    model.append(nn.Linear(8, 32))
    model[4].weight = model[0].weight  # tied: stored once
    floats = (16 * 32 + 32) + (32 + 32) + 32 * 8 + (8 + 8 + 8 + 8) + 32
    assert M.model_bytes(model) == 4 * floats + 8  # + BatchNorm's int64 num_batches_tracked


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bits_per_weight_of_a_float_model_is_its_dtype_width(dtype):
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).to(dtype)
    assert M.bits_per_weight(model) == 8 * torch.finfo(dtype).bits // 8


def test_bits_per_weight_of_int8_layers_includes_their_scales():
    model = nn.Sequential(nn.Linear(40, 24), nn.GELU(), nn.Linear(24, 16), nn.LayerNorm(16))
    qk.quantize_(model, qk.Int8Config())
    # One int8 code per weight plus one fp32 scale per output row.
    code_bytes, scale_bytes = 40 * 24 + 24 * 16, 4 * (24 + 16)
    assert M.bits_per_weight(model) == pytest.approx(8 * (code_bytes + scale_bytes) / (40 * 24 + 24 * 16))
    assert M.model_bytes(model) == code_bytes + scale_bytes + 4 * (24 + 16) + 4 * (16 + 16)


class _PackedLinear(nn.Module):
    """A stand-in for a sub-byte layer: two 4-bit codes per byte, fp16 scale and zero per group."""

    def __init__(self, k, n, group):
        super().__init__()
        self.in_features, self.out_features = k, n
        self.register_buffer("qweight", torch.zeros(n, k // 2, dtype=torch.uint8))
        self.register_buffer("scales", torch.ones(n, k // group, dtype=torch.float16))
        self.register_buffer("zeros", torch.zeros(n, k // group, dtype=torch.float16))
        self.register_buffer("bias", torch.zeros(n))


class _Adapter(nn.Module):
    """A wrapper that also advertises in_features/out_features around an inner layer."""

    def __init__(self, inner):
        super().__init__()
        self.in_features, self.out_features = inner.in_features, inner.out_features
        self.inner = inner


def test_bits_per_weight_is_format_agnostic_and_counts_nested_layers_once():
    model = nn.Sequential(_PackedLinear(128, 64, 32), _Adapter(_PackedLinear(64, 32, 32)))
    # 4 bits per code + two fp16 values per group of 32 = 4 + 32/32 bits; the bias is not weight storage.
    assert M.bits_per_weight(model) == pytest.approx(4 + 2 * 16 / 32)


def test_size_counts_the_state_dict_not_caches_rebuilt_at_load():
    mod = qk.nn.VQLinear.from_linear(nn.Linear(64, 32), **asdict(qk.VQConfig()))
    # VQLinear keeps an fp32 copy of its fp16 codebooks for the kernel: a buffer, but not stored.
    assert "codebooks_f32" in dict(mod.named_buffers()) and "codebooks_f32" not in mod.state_dict()
    state = {k: t for k, t in mod.state_dict().items() if isinstance(t, torch.Tensor)}
    stored = {k: t.numel() * t.element_size() for k, t in state.items()}
    weight_bytes = sum(b for k, b in stored.items() if k != "bias")
    assert M.bits_per_weight(mod) == 8 * weight_bytes / (64 * 32)
    assert M.model_bytes(mod) == sum(stored.values())
    shared = nn.Sequential(mod, nn.ReLU(), mod)  # one layer under two names: stored once
    assert M.model_bytes(shared) == M.model_bytes(mod)
    assert M.bits_per_weight(shared) == M.bits_per_weight(mod)


# ---- latency -----------------------------------------------------------------------------------


def test_latency_statistics_from_a_fake_clock(monkeypatch):
    durations = [0.5, 0.5, 5.0, 1.0, 3.0, 2.0, 4.0, 9.0, 1.5, 2.5, 6.0, 0.25]  # 2 warmup calls first
    clock = {"now": 0.0, "calls": 0, "syncs": 0}

    def fn():
        clock["now"] += durations[clock["calls"]]
        clock["calls"] += 1

    def sync():
        clock["syncs"] += 1

    monkeypatch.setattr(M, "time", SimpleNamespace(perf_counter=lambda: clock["now"]))
    lat = M.measure_latency(fn, warmup=2, repeats=10, items_per_call=32, sync=sync)
    timed = np.array(durations[2:])
    assert clock["calls"] == 12 and clock["syncs"] == 20
    assert lat.median_s == pytest.approx(np.median(timed), rel=RTOL)
    assert lat.p90_s == pytest.approx(np.percentile(timed, 90), rel=RTOL)
    assert lat.throughput == pytest.approx(32 / np.median(timed), rel=RTOL)
    assert (lat.repeats, lat.warmup) == (10, 2)


def test_latency_of_a_real_callable_is_positive():
    x = torch.randn(64, 64)
    lat = M.measure_latency(lambda: x @ x, warmup=1, repeats=5)
    assert 0 < lat.median_s <= lat.p90_s and lat.throughput > 0


# ---- validation --------------------------------------------------------------------------------

X = torch.randn(4, 5)
LABELS = torch.tensor([0, 1, 2, 1])
NAN = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
PROBS = torch.softmax(X, 1)

BAD_INPUTS = [
    (
        M.sqnr_db,
        (X, torch.randn(4, 6)),
        ValueError,
        r"sqnr_db: approx: expected shape \(4, 5\) \(reference's shape\), got \(4, 6\)",
    ),
    (
        M.mae,
        (torch.empty(0, 5), torch.empty(0, 5)),
        ValueError,
        r"mae: reference: expected a non-empty tensor, got shape \(0, 5\)",
    ),
    (
        M.mse,
        (X[:2, :2], NAN),
        ValueError,
        r"mse: approx: expected finite values, got nan at \[0, 1\] \(1 non-finite",
    ),
    (M.psnr_db, (X, X.numpy()), TypeError, r"psnr_db: approx: expected a torch.Tensor, got ndarray"),
    (
        M.cosine_similarity,
        (X, X.bool()),
        TypeError,
        r"approx: expected a real floating or integer dtype, got torch.bool",
    ),
    (
        M.cosine_similarity_rows,
        (torch.tensor(1.0), torch.tensor(1.0)),
        ValueError,
        r"reference: expected at least 1 dimension",
    ),
    (
        M.kl_divergence,
        (X, X[:, :4]),
        ValueError,
        r"approx_logits: expected shape \(4, 5\) \(reference_logits's shape\)",
    ),
    (
        M.kl_divergence,
        (torch.full((2, 3), float("inf")), X[:2, :3]),
        ValueError,
        r"reference_logits: expected finite values, got inf",
    ),
    (
        M.topk_agreement,
        (X, X, 0),
        ValueError,
        r"k: expected an int in \[1, 5\] \(the number of classes\), got 0",
    ),
    (
        M.topk_agreement,
        (X, X, 6),
        ValueError,
        r"k: expected an int in \[1, 5\] \(the number of classes\), got 6",
    ),
    (M.topk_agreement, (X, X, True), ValueError, r"k: expected an int in \[1, 5\].*got True"),
    (M.top_k_accuracy, (X, LABELS, 9), ValueError, r"top_k_accuracy: k: expected an int in \[1, 5\]"),
    (
        M.top_k_accuracy,
        (X, torch.tensor([0, 1, 5, 1])),
        ValueError,
        r"target: expected class indices in \[0, 5\), got 5",
    ),
    (M.top_k_accuracy, (X, LABELS[:3]), ValueError, r"target: expected shape \(4,\), got \(3,\)"),
    (M.top_k_accuracy, (X[0], LABELS[:1]), ValueError, r"scores: expected shape \[N, C\], got \(5,\)"),
    (
        M.accuracy,
        (LABELS.float(), LABELS),
        TypeError,
        r"accuracy: pred: expected an integer dtype \(class indices\), got torch.float32",
    ),
    (
        M.accuracy,
        (LABELS, torch.tensor([0, -1, 0, 0])),
        ValueError,
        r"target: expected class indices in \[0, inf\), got -1",
    ),
    (
        M.accuracy,
        (LABELS, torch.tensor([], dtype=torch.long)),
        ValueError,
        r"target: expected a non-empty tensor",
    ),
    (
        M.confusion_matrix,
        (LABELS, LABELS, 2),
        ValueError,
        r"confusion_matrix: target: expected class indices in \[0, 2\), got 2",
    ),
    (M.confusion_matrix, (LABELS, LABELS, 0), ValueError, r"num_classes: expected an int >= 1, got 0"),
    (
        M.confusion_matrix,
        (LABELS, LABELS[None]),
        ValueError,
        r"target: expected a 1-D tensor \[N\] of class indices, got shape \(1, 4\)",
    ),
    (
        M.precision_recall_f1,
        (torch.tensor([0, 1, 3, 1]), LABELS, 3),
        ValueError,
        r"precision_recall_f1: pred: expected class indices in \[0, 3\), got 3",
    ),
    (M.expected_calibration_error, (X, LABELS), ValueError, r"probs: expected probabilities in \[0, 1\]"),
    (
        M.expected_calibration_error,
        (torch.full((4, 5), 0.1), LABELS),
        ValueError,
        r"probs: expected rows summing to 1 \(softmax the logits\), got a row sum of 0.5",
    ),
    (M.expected_calibration_error, (PROBS, LABELS, 0), ValueError, r"n_bins: expected an int >= 1, got 0"),
    (
        M.expected_calibration_error,
        (PROBS, torch.tensor([0, 1, 2, 7])),
        ValueError,
        r"target: expected class indices in \[0, 5\), got 7",
    ),
    (
        M.perplexity,
        (X[None], LABELS[None, :3]),
        ValueError,
        r"perplexity: target: expected shape \(1, 4\) \(logits without the vocabulary dimension\), "
        r"got \(1, 3\)",
    ),
    (
        M.perplexity,
        (X, torch.tensor([0, 1, 2, 5])),
        ValueError,
        r"target: expected token ids in \[0, 5\) or ignore_index, got 5",
    ),
    (
        M.perplexity,
        (X, torch.tensor([0, -100, -100, -100]), -100),
        ValueError,
        r"target: expected a scored token other than ignore_index=-100, got none",
    ),
    (
        M.perplexity,
        (X[:1], LABELS[:1]),
        ValueError,
        r"logits: expected >= 2 positions \(dim -2\) with shift, got 1",
    ),
    (
        M.perplexity,
        (X, LABELS.float()),
        TypeError,
        r"target: expected an integer tensor of token ids, got torch.float32",
    ),
    (M.perplexity, (X, LABELS, 1.5), TypeError, r"ignore_index: expected an int or None, got 1.5"),
    (M.perplexity, (NAN, LABELS[:2]), ValueError, r"logits: expected finite values, got nan at \[0, 1\]"),
    (
        M.embedding_cosine,
        (X[0], X[0]),
        ValueError,
        r"embedding_cosine: reference: expected at least 2 dimension",
    ),
    (
        M.retrieval_recall_at_k,
        (X, X[:, :3], LABELS),
        ValueError,
        r"corpus: expected dimension D = 5 \(queries'\), got 3",
    ),
    (
        M.retrieval_recall_at_k,
        (X, X, torch.tensor([0, 1, 2, 3]), 5),
        ValueError,
        r"k: expected an int in \[1, 4\] \(the corpus size\), got 5",
    ),
    (
        M.retrieval_recall_at_k,
        (X, X, torch.tensor([0, 1, 2, 4])),
        ValueError,
        r"relevant: expected class indices in \[0, 4\), got 4",
    ),
    (
        M.retrieval_recall_at_k,
        (X, torch.zeros(3, 5), LABELS),
        ValueError,
        r"corpus: expected nonzero rows \(cosine\), got a zero row at 0",
    ),
    (
        M.accuracy_loss_pp,
        (LABELS, LABELS[:2], LABELS),
        ValueError,
        r"accuracy_loss_pp: approx_pred: expected shape \(4,\), got \(2,\)",
    ),
    (
        M.per_class_accuracy_loss_pp,
        (LABELS, LABELS, LABELS, 2),
        ValueError,
        r"per_class_accuracy_loss_pp: target: expected class indices in \[0, 2\), got 2",
    ),
    (
        M.model_bytes,
        (nn.Sequential(nn.LazyLinear(4)),),
        ValueError,
        r"model_bytes: model: 0.weight: expected a materialised tensor",
    ),
    (M.model_bytes, ("model",), TypeError, r"model_bytes: model: expected torch.nn.Module, got str"),
    (
        M.bits_per_weight,
        (nn.Sequential(nn.ReLU()),),
        ValueError,
        r"bits_per_weight: model: expected at least one linear layer",
    ),
    (
        M.bits_per_weight,
        (nn.Sequential(nn.LazyLinear(4)),),
        ValueError,
        r"bits_per_weight: model: 0.weight: expected a materialised tensor, got a lazy one",
    ),
    (
        M.measure_latency,
        (None,),
        TypeError,
        r"measure_latency: fn: expected a callable taking no arguments, got NoneType",
    ),
]


@pytest.mark.parametrize(
    ("fn", "args", "exc", "message"), BAD_INPUTS, ids=lambda v: getattr(v, "__name__", None)
)
def test_bad_inputs_name_the_argument_expected_and_got(fn, args, exc, message):
    with pytest.raises(exc, match=message):
        fn(*args)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repeats": 0}, r"repeats: expected an int >= 1, got 0"),
        ({"warmup": -1}, r"warmup: expected an int >= 0, got -1"),
        ({"items_per_call": 0}, r"items_per_call: expected a positive number, got 0"),
    ],
)
def test_bad_latency_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        M.measure_latency(lambda: None, **kwargs)
