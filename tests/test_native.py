"""Builds the C ABI test (tests/c/test_capi.c) and the kernel-table test (tests/cpp/test_kernels.cpp)
with CMake and runs them through ctest, three ways:

- natively with QKERNELS_SANITIZE=ON (AddressSanitizer + UBSan): once with QKERNELS_ISA unset and
  once per path name, so each path this machine runs is also forced through the environment, and
  each one it cannot run must be refused by every kernel entry point (test_capi checks that) or is
  reported as skipped (test_kernels, exit code 77);
- as an installed package: ``cmake --install`` into a prefix, then the separate project
  tests/c/consumer finds it with ``find_package(qkernels)``, builds and runs;
- cross-compiled for AArch64 with cmake/aarch64-linux-gnu.cmake and run under qemu-aarch64 (the
  toolchain file's CMAKE_CROSSCOMPILING_EMULATOR), the generic and NEON paths.

Each build happens once per session, in a temporary directory, with two jobs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ("test_capi", "test_kernels")
ISA_NAMES = ("generic", "avx2", "avx512", "neon")
# The last line both programs print; ctest -V prefixes each line of a test's output with its number.
SUMMARY = re.compile(r"^(?:\d+: )?(\d+) passed, (\d+) failed$", re.MULTILINE)
SKIPPED = re.compile(r"^(?:\d+: )?skipped: (.*)$", re.MULTILINE)
SANITIZER_REPORT = re.compile(r"ERROR: \w+Sanitizer|runtime error:|SUMMARY: \w+Sanitizer")
CROSS_TOOLS = ("qemu-aarch64", "aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++")
CROSS_SYSROOT = Path("/usr/aarch64-linux-gnu/lib")
CROSS_PACKAGES = ("qemu-user", "g++-aarch64-linux-gnu", "libc6-dev-arm64-cross")


def _tool(name: str) -> str:
    """The venv's copy (cmake and ninja are pip packages) or else the one on PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    if found is None:
        pytest.fail(f"{name} not found in {Path(sys.executable).parent} or on PATH; pip install {name}")
    return found


def _run(cmd: list[str | Path], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Runs cmd and returns its output; fails the test with the output's tail if it exits nonzero."""
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        tail = "\n".join(out.splitlines()[-80:])
        pytest.fail(f"`{' '.join(map(str, cmd))}` exited with {proc.returncode}:\n{tail}")
    return out


def _build(source: Path, build: Path, *definitions: str) -> Path:
    _run(
        [
            _tool("cmake"),
            "-S",
            source,
            "-B",
            build,
            "-G",
            "Ninja",
            f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}",
            *definitions,
        ]
    )
    _run([_tool("cmake"), "--build", build, "-j2"])
    return build


def _ctest(build: Path, program: str, isa: str) -> str:
    """Runs one test program through ctest with QKERNELS_ISA=isa ("default": unset); returns its output."""
    env = {k: v for k, v in os.environ.items() if k != "QKERNELS_ISA"}
    if isa != "default":
        env["QKERNELS_ISA"] = isa
    # Stop at the first report, and report leaks too.
    env["ASAN_OPTIONS"] = "halt_on_error=1:detect_leaks=1"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    ctest = Path(_tool("cmake")).with_name("ctest")
    out = _run([ctest, "--test-dir", build, "-R", f"^{program}$", "-V", "--timeout", "300"], env=env)
    assert not SANITIZER_REPORT.search(out), out
    if skipped := SKIPPED.search(out):
        pytest.skip(skipped.group(1))
    counts = SUMMARY.findall(out)
    assert counts, f"no 'N passed, M failed' line in:\n{out}"
    passed, failed = map(int, counts[-1])
    assert failed == 0 and passed > 0, out
    return out


@pytest.fixture(scope="session")
def sanitized_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = _build(
        ROOT,
        tmp_path_factory.mktemp("sanitized"),
        "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
        "-DQKERNELS_TESTS=ON",
        "-DQKERNELS_SANITIZE=ON",
        "-DQKERNELS_CUDA=OFF",
    )
    # A test that passes without the sanitizers proves nothing about them: make sure both are in.
    for program in PROGRAMS:
        binary = (build / program).read_bytes()
        assert b"__asan_init" in binary and b"__ubsan_handle" in binary, f"{program} is not sanitized"
    return build


@pytest.fixture(scope="session")
def installed_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = _build(ROOT, tmp_path_factory.mktemp("release"), "-DQKERNELS_CUDA=OFF")
    prefix = tmp_path_factory.mktemp("prefix")
    _run([_tool("cmake"), "--install", build, "--prefix", prefix])
    return prefix


def _cross_tools_missing() -> list[str]:
    missing = [tool for tool in CROSS_TOOLS if shutil.which(tool) is None]
    return missing + ([] if CROSS_SYSROOT.is_dir() else [str(CROSS_SYSROOT)])


def _install_cross_tools() -> str:
    """Installs the cross compiler and qemu-user when missing; returns why that failed, or ""."""
    if not _cross_tools_missing():
        return ""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not running as root, so apt-get cannot install them"
    if shutil.which("apt-get") is None:
        return "apt-get not found"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *CROSS_PACKAGES]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
        if proc.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {(proc.stdout + proc.stderr).strip()[-500:]}"
    missing = _cross_tools_missing()
    return f"still missing after apt-get install: {', '.join(missing)}" if missing else ""


@pytest.fixture(scope="session")
def aarch64_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if why := _install_cross_tools():
        pytest.skip(
            f"AArch64 tests need {', '.join(CROSS_PACKAGES)} ({', '.join(_cross_tools_missing())}"
            f" missing): {why}"
        )
    return _build(
        ROOT,
        tmp_path_factory.mktemp("aarch64"),
        f"-DCMAKE_TOOLCHAIN_FILE={ROOT / 'cmake' / 'aarch64-linux-gnu.cmake'}",
        "-DQKERNELS_TESTS=ON",
        "-DQKERNELS_CUDA=OFF",
    )


@pytest.mark.parametrize("isa", ["default", *ISA_NAMES])
@pytest.mark.parametrize("program", PROGRAMS)
def test_sanitized(sanitized_build: Path, program: str, isa: str) -> None:
    _ctest(sanitized_build, program, isa)


def test_installed_package_from_consumer_project(installed_prefix: Path, tmp_path: Path) -> None:
    build = _build(ROOT / "tests" / "c" / "consumer", tmp_path, f"-DCMAKE_PREFIX_PATH={installed_prefix}")
    out = _run([build / "app"])
    assert out.rstrip().endswith(": ok"), out


@pytest.mark.parametrize("isa", ["default", "generic", "neon"])
@pytest.mark.parametrize("program", PROGRAMS)
def test_aarch64_under_qemu(aarch64_build: Path, program: str, isa: str) -> None:
    out = _ctest(aarch64_build, program, isa)
    if isa != "generic":
        assert "testing neon" in out, out
