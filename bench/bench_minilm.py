"""End-to-end speed of all-MiniLM-L6-v2 quantized with each format, in the process a user has.

Method: the demo's 600 sentences (CPython's pydoc topics) in batches of 64, sorted by token count;
each model runs one warm-up pass, then ``--repeats`` timed passes over all batches, in turns (one
pass of every model per round, so a slow spell of the machine hits them alike); the table gives the
median pass and its ratio to the fp32 and bf16 models and to torch's ``quantize_dynamic``
(``qdyn``), all timed in the same run. Start it as a user
would start a script: no ``OMP_WAIT_POLICY``, no ``QKERNELS_*`` variables (``QKERNELS_POOL=own``
measures the library's own thread pool instead of torch's OpenMP team).

    .venv/bin/python bench/bench_minilm.py [--repeats 5] [--formats int8,int4,...]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import qkernels as qk
import torch
from qkernels.demo_minilm import load_model, tokenized_batches
from qkernels.demo_sentences import load_sentences
from qkernels.eval.models import SentenceEmbedder

FORMATS = ("int8", "int8-w8a16", "int4", "nf4", "int3")


def _pass(model: torch.nn.Module, batches: list) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            model(**b)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed passes per model (default 5)")
    p.add_argument(
        "--formats", default=",".join(FORMATS), help=f"comma-separated (default {','.join(FORMATS)})"
    )
    p.add_argument("--sentences", type=int, default=600, help="sentences per pass (default 600)")
    args = p.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    unknown = [f for f in formats if f not in qk.FORMAT_CONFIGS or f in ("int4-gptq", "vq")]
    if unknown or args.repeats < 1 or args.sentences < 1:
        p.error(
            f"--formats: expected names from {', '.join(FORMATS)}, got {unknown}"
            if unknown
            else "expected >= 1"
        )

    st = load_model()
    batches, _ = tokenized_batches(st, load_sentences(args.sentences))
    models = {
        "fp32": SentenceEmbedder(st).eval(),
        "bf16": SentenceEmbedder(copy.deepcopy(st).to(torch.bfloat16)),
        # torch's own dynamic int8 (fbgemm / onednn), the peer of W8A8.
        "qdyn": torch.ao.quantization.quantize_dynamic(
            SentenceEmbedder(copy.deepcopy(st)).eval(), {torch.nn.Linear}, dtype=torch.qint8
        ),
    }
    for f in formats:
        models[f] = qk.quantize_(
            SentenceEmbedder(copy.deepcopy(st)).eval(), qk.FORMAT_CONFIGS[f], progress=False
        )
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        _pass(model, batches)
    for _ in range(args.repeats):
        for name, model in models.items():
            times[name].append(_pass(model, batches))

    info = qk.info()
    print(
        f"# all-MiniLM-L6-v2, {args.sentences} sentences in {len(batches)} batches, "
        f"{torch.get_num_threads()} threads, isa {info['isa']['active']}, "
        f"thread pool {info['thread_pool']['pool']}, median of {args.repeats} passes"
    )
    fp32, bf16 = (statistics.median(times[n]) for n in ("fp32", "bf16"))
    qdyn = statistics.median(times["qdyn"])
    print(f"{'model':<12} {'pass s':>7} {'x fp32':>7} {'x bf16':>7} {'x best dense':>12} {'x qdyn':>7}")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(
            f"{name:<12} {t:7.3f} {fp32 / t:7.2f} {bf16 / t:7.2f} {min(fp32, bf16) / t:12.2f} {qdyn / t:7.2f}"
        )


if __name__ == "__main__":
    main()
