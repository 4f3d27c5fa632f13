"""QKERNELS_ISA and qk.set_isa: forcing a path, and errors for paths that cannot run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import qkernels as qk


def _run(env_isa: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, QKERNELS_ISA=env_isa)
    code = "import qkernels as qk; print(qk.info()['isa']['active'])"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("name", qk.info()["isa"]["available"])
def test_env_forces_an_available_path(name):
    r = _run(name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == name


def test_env_with_unknown_name_fails_clearly():
    r = _run("sse9")
    assert r.returncode != 0
    assert "QKERNELS_ISA: expected one of generic, avx2, avx512, neon, got 'sse9'" in r.stderr


def test_env_with_unrunnable_path_fails_clearly():
    missing = [n for n in qk.info()["isa"]["all"] if n not in qk.info()["isa"]["available"]]
    assert missing, "every path runs here; nothing to check"  # x86 lacks neon, arm lacks avx*
    r = _run(missing[0])
    assert r.returncode != 0
    assert f"QKERNELS_ISA: '{missing[0]}' cannot run on this CPU or build; available: " in r.stderr


def test_set_isa_rejects_unknown_and_unrunnable():
    with pytest.raises(
        ValueError, match=r"set_isa: name: expected one of generic, avx2, avx512, neon, got 'x'"
    ):
        qk.set_isa("x")
    missing = [n for n in qk.info()["isa"]["all"] if n not in qk.info()["isa"]["available"]]
    with pytest.raises(RuntimeError, match="cannot run on this CPU or build"):
        qk.set_isa(missing[0])


def _cpu_has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and flag in line.split() for line in f)
    except OSError:
        return False


def test_info_names_the_engine_of_each_path(isa):
    """qk.info() says which integer engine the active path runs (bench headers print it)."""
    expected = {
        "generic": "scalar",
        "avx2": "vpmaddubsw (AVX2)",
        "avx512": "vpdpbusd (AVX-512 VNNI)" if _cpu_has("avx512_vnni") else "vpmaddubsw (AVX-512BW",
        "neon": "vmull_s8 (NEON)",
    }[isa]
    assert qk.info()["isa"]["engine"].startswith(expected)
