"""Shared fixtures: every test that takes ``isa`` runs once per CPU path this machine can execute."""

from __future__ import annotations

import os

import pytest
import qkernels as qk
import torch
from hypothesis import settings

# Hypothesis draws the same examples on every machine and every run (CI cannot fail on an example
# no developer saw); HYPOTHESIS_PROFILE=explore draws new random ones and remembers failures.
settings.register_profile("derandomized", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "derandomized"))

AVAILABLE = qk.info()["isa"]["available"]
ALL = qk.info()["isa"]["all"]
# Paths compiled for another architecture are covered elsewhere (NEON under qemu in test_native.py).
WHY_NOT = {
    "avx512": "this CPU (or its OS) does not expose AVX-512F/BW/VL",
    "avx2": "this CPU does not have AVX2+FMA",
    "neon": "NEON is AArch64-only; tests/test_native.py runs it under qemu-aarch64",
}


def _isa_params():
    for name in ALL:
        marks = [] if name in AVAILABLE else [pytest.mark.skip(reason=f"{name}: {WHY_NOT.get(name, '')}")]
        yield pytest.param(name, marks=marks, id=name)


@pytest.fixture(params=list(_isa_params()))
def isa(request):
    """Forces one CPU kernel path for the duration of the test."""
    before = qk.info()["isa"]["active"]
    qk.set_isa(request.param)
    yield request.param
    qk.set_isa(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
