"""What quantization did to a model: metrics, layer-by-layer comparison, plots and reports.

Usage::

    from qkernels import eval as qe

    results = qe.compare_formats(model, ["int8", "int4", "nf4"], batches, labels=labels)
    qe.write_report(results, "qkernels-report")  # report.json, report.md, report.html, plots/

``qkernels.eval.plots`` imports matplotlib only when a plot is drawn.
"""

from . import plots
from .compare import TASKS, ClassBreakdown, ComparisonResult, ModelStats, Score, compare, compare_formats
from .layerwise import (
    Allocation,
    AllocationRow,
    GridUse,
    LayerReport,
    LayerSensitivity,
    Sensitivity,
    TensorStats,
    allocate,
    layerwise,
    sensitivity,
)
from .metrics import (
    ClassScores,
    Latency,
    accuracy,
    accuracy_loss_pp,
    bits_per_weight,
    confusion_matrix,
    cosine_similarity,
    cosine_similarity_rows,
    embedding_cosine,
    expected_calibration_error,
    kl_divergence,
    mae,
    max_abs_error,
    measure_latency,
    model_bytes,
    mse,
    per_class_accuracy_loss_pp,
    perplexity,
    precision_recall_f1,
    psnr_db,
    relative_frobenius_error,
    retrieval_recall_at_k,
    sqnr_db,
    top_k_accuracy,
    topk_agreement,
)
from .report import SCHEMA_VERSION, ReportFiles, format_summary, write_report

__all__ = [
    "SCHEMA_VERSION",
    "TASKS",
    "Allocation",
    "AllocationRow",
    "ClassBreakdown",
    "ClassScores",
    "ComparisonResult",
    "GridUse",
    "Latency",
    "LayerReport",
    "LayerSensitivity",
    "ModelStats",
    "ReportFiles",
    "Score",
    "Sensitivity",
    "TensorStats",
    "accuracy",
    "accuracy_loss_pp",
    "allocate",
    "bits_per_weight",
    "compare",
    "compare_formats",
    "confusion_matrix",
    "cosine_similarity",
    "cosine_similarity_rows",
    "embedding_cosine",
    "expected_calibration_error",
    "format_summary",
    "kl_divergence",
    "layerwise",
    "mae",
    "max_abs_error",
    "measure_latency",
    "model_bytes",
    "mse",
    "per_class_accuracy_loss_pp",
    "perplexity",
    "plots",
    "precision_recall_f1",
    "psnr_db",
    "relative_frobenius_error",
    "retrieval_recall_at_k",
    "sensitivity",
    "sqnr_db",
    "top_k_accuracy",
    "topk_agreement",
    "write_report",
]
