"""The library's thread pool under concurrent callers: results equal the serial ones."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor

import torch


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
