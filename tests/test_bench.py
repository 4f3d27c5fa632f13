"""Smoke tests of ``qkernels bench int8``: it runs end to end on a tiny shape and writes the JSON that
bench/README.md documents. Nothing here asserts on speed: timings on a shared machine mean nothing."""

from __future__ import annotations

import json

import pytest
from qkernels.benchmarks import run_bench, subbyte
from qkernels.benchmarks.int8 import BASELINES, METHODS
from qkernels.benchmarks.roofline import TimingOpts, pool_copies, time_calls

# One tiny shape, one or two calls per row, tiny peak measurements: a few seconds, mostly torch's
# one-time set-up of the first custom-op call.
TINY = [
    "--shapes", "128x256", "--batches", "1,3", "--pool-mib", "1", "--min-reps", "1", "--min-time", "0",
    "--max-reps", "2", "--warmup", "0", "--stream-mib", "4", "--peak-gemms", "64",
]  # fmt: skip
ROW_KEYS = {
    "shape", "N", "K", "M", "method", "us", "gbps", "gflops", "pct_roofline",
    "speedup_vs_fp32", "speedup_vs_bf16", "speedup_vs_qdyn",
}  # fmt: skip


def _run(tmp_path, *extra: str) -> dict:
    path = tmp_path / "int8.json"
    assert run_bench("int8", [*TINY, *extra, "--json", str(path)]) == 0
    return json.loads(path.read_text())


def test_int8_bench_writes_every_row_and_the_machine(tmp_path, capsys):
    doc = _run(tmp_path)

    assert doc["schema"] == 1
    machine = doc["machine"]
    assert machine["bandwidth_source"] == "measured"
    for key in ("bandwidth_gbps", "fp32_gflops", "int8_gops"):
        assert machine[key] > 0, key
    assert machine["isa"]["active"] in machine["isa"]["available"]
    assert machine["threads"] >= 1
    assert machine["torch"]
    rows = doc["rows"]
    assert [(r["M"], r["method"]) for r in rows] == [(m, name) for m in (1, 3) for name in METHODS]
    for r in rows:
        assert r.keys() >= ROW_KEYS
        assert (r["shape"], r["N"], r["K"]) == ("128x256", 128, 256)
        for key in ("us", "gbps", "gflops", "pct_roofline", *(f"speedup_vs_{b}" for b in BASELINES)):
            assert r[key] > 0, (r["method"], key)
        if r["method"] in BASELINES:
            assert r[f"speedup_vs_{r['method']}"] == 1.0
    out = capsys.readouterr().out
    assert "N x K = 128x256" in out
    assert "## Summary" in out


def test_int8_bench_bandwidth_override_and_method_subset(tmp_path):
    doc = _run(tmp_path, "--bandwidth", "12.5", "--methods", "w8a8,fp32", "--batches", "2")

    assert doc["machine"]["bandwidth_gbps"] == 12.5
    assert doc["machine"]["bandwidth_source"] == "--bandwidth"
    rows = doc["rows"]
    assert [(r["M"], r["method"]) for r in rows] == [(2, "w8a8"), (2, "fp32")]
    # Baselines that did not run give no ratio rather than a made-up one.
    assert all(r["speedup_vs_bf16"] is None and r["speedup_vs_qdyn"] is None for r in rows)


def test_run_bench_rejects_an_unknown_format():
    with pytest.raises(ValueError, match="fmt: expected one of int8, int4, int3, nf4, vq, got 'int5'"):
        run_bench("int5", [])


@pytest.mark.parametrize("argv", [["--shapes", "4096"], ["--batches", "0"], ["--methods", "fp64"]], ids=str)
def test_int8_bench_rejects_bad_options(argv, capsys):
    with pytest.raises(SystemExit):
        run_bench("int8", argv)
    assert argv[0] in capsys.readouterr().err


def test_pool_copies_exceed_the_pool_size():
    assert pool_copies(100, 256) == 3
    assert pool_copies(128, 256) == 3  # exactly 256 would not exceed it
    assert pool_copies(1000, 256) == 1


def test_time_calls_rotates_through_the_pool_and_counts_reps():
    seen = []
    timing = time_calls(seen.append, TimingOpts(min_reps=4, min_time=0, max_reps=4, warmup=0))
    assert timing.reps == 4
    assert seen == list(range(5))  # one warm-up call, then four timed ones with the next indices
    assert 0 <= timing.best_s <= timing.median_s


@pytest.mark.parametrize("fmt", ["int4", "int3", "nf4", "vq"])
def test_subbyte_bench_writes_every_row(fmt, tmp_path, capsys):
    path = tmp_path / f"{fmt}.json"
    assert run_bench(fmt, [*TINY, "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    methods = list(subbyte.DEFAULT_METHODS[fmt])
    assert doc["config"]["format"] == fmt
    assert [(r["M"], r["method"]) for r in doc["rows"]] == [(m, name) for m in (1, 3) for name in methods]
    for r in doc["rows"]:
        assert r["us"] > 0 and r["gbps"] > 0 and r["speedup_vs_fp32"] > 0, r
        # The sub-byte modules stream fewer bytes than 1 per weight, except 1x16 VQ on this tiny
        # layer: its 65536-entry codebook (1 MiB in fp16) outweighs 32768 weights.
        if subbyte.METHODS[r["method"]].is_qkernels and r["method"] != "vq1x16":
            assert r["weight_bytes"] < 128 * 256, r
    assert "## Summary" in capsys.readouterr().out
