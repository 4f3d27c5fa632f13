"""The thread pools (torch's OpenMP team and the library's own) under concurrent callers, thread
counts and fork: results equal the serial ones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import qkernels as qk
import torch


@pytest.fixture(params=["openmp", "own"], autouse=True)
def pool(request):
    """Every test here runs on both pools."""
    before = qk.info()["thread_pool"]["pool"]
    qk.set_thread_pool(request.param)
    yield request.param
    qk.set_thread_pool(before)


def test_four_python_threads_match_serial():
    ops = torch.ops.qkernels
    w, s = ops.quantize_int8(torch.randn(300, 257))
    xs = [torch.randn(m, 257) for m in (1, 3, 17, 64) for _ in range(4)]
    jobs = [(op, x) for x in xs for op in (ops.linear_int8_w8a8, ops.linear_int8_w8a16)]
    serial = [op(x, w, s, None) for op, x in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            concurrent = list(pool.map(lambda job: job[0](job[1], w, s, None), jobs))
            for a, b in zip(serial, concurrent, strict=True):
                assert torch.equal(a, b)


def test_thread_count_follows_torch():
    ops = torch.ops.qkernels
    w, s = ops.quantize_int8(torch.randn(512, 512))
    x = torch.randn(64, 512)
    before = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(ops.linear_int8_w8a8(x, w, s, None))
        assert all(torch.equal(outs[0], o) for o in outs)
    finally:
        torch.set_num_threads(before)


def test_forked_child_still_computes():
    # The pool's threads do not survive fork(); a child must run the call on its own thread
    # instead of waiting for them. SIGALRM ends the child if it hangs.
    ops = torch.ops.qkernels
    w, s = ops.quantize_int8(torch.randn(256, 512))
    x = torch.randn(32, 512)
    expected = ops.linear_int8_w8a8(x, w, s, None)  # starts the pool in the parent
    pid = os.fork()
    if pid == 0:
        signal.alarm(60)
        code = 0 if torch.equal(ops.linear_int8_w8a8(x, w, s, None), expected) else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_pools_give_identical_results():
    w, s = torch.ops.qkernels.quantize_int8(torch.randn(700, 300))
    x = torch.randn(40, 300)
    outs = []
    for name in ("openmp", "own", "openmp"):
        qk.set_thread_pool(name)
        outs.append(qk.ops.linear_int8_w8a8(x, w, s, None))
        assert qk.info()["thread_pool"]["pool"] == name
    assert all(torch.equal(outs[0], o) for o in outs)


def test_default_pool_is_torchs_openmp_team(pool):
    r = subprocess.run(
        [sys.executable, "-c", "import qkernels as qk; print(qk.info()['thread_pool'])"],
        env={k: v for k, v in os.environ.items() if k != "QKERNELS_POOL"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "'pool': 'openmp'" in r.stdout and "gomp" in r.stdout, r.stdout


def test_pool_choice_errors(pool):
    with pytest.raises(ValueError, match=r"set_thread_pool: name: expected one of openmp, own, got 'tbb'"):
        qk.set_thread_pool("tbb")
    r = subprocess.run(
        [sys.executable, "-c", "import qkernels"],
        env=dict(os.environ, QKERNELS_POOL="tbb"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode != 0 and "QKERNELS_POOL: expected one of openmp, own, got 'tbb'" in r.stderr
