"""report.html in a real browser: headless Chromium loads the page, every embedded plot decodes, and
the page renders to a screenshot that is not blank."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess

import numpy as np
import pytest
import qkernels as qk
import torch
from qkernels.eval.compare import compare_formats
from qkernels.eval.report import write_report
from torch import nn

pytest.importorskip("matplotlib", reason="the report's plots need pip install 'qkernels[plot]'")

INSTALL = "install it with `apt-get install -y chromium` (Debian/Ubuntu; .ci/run does this)"


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(f"headless Chromium is needed to check report.html and was not found: {INSTALL}")
    return path


def _run(profile, *args: str) -> subprocess.CompletedProcess:
    # A profile of its own, so that parallel runs never share (or lock) ~/.config/chromium.
    cmd = [_chromium(), "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    gen = torch.Generator().manual_seed(5)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    batches = [torch.randn(32, 64, generator=gen) for _ in range(2)]
    labels = torch.randint(0, 10, (64,), generator=gen)
    quantized = {
        name: qk.quantize_(copy.deepcopy(model), qk.FORMAT_CONFIGS[name], progress=False)
        for name in ("int8", "int4")
    }
    results = compare_formats(model, quantized, batches, labels=labels, latency_repeats=2, progress=False)
    files = write_report(results, tmp_path_factory.mktemp("report"), generated_at="fixed")
    return files.html


def test_every_image_loads(page, tmp_path):
    r = _run(tmp_path, "--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", r.stdout)
    assert body is not None, r.stdout[:2000]
    # Set by the page's script on the load event: images that decoded (naturalWidth > 0) and not.
    attrs = dict(re.findall(r'(data-images-\w+)="(\d+)"', body.group(1)))
    assert attrs == {"data-images-loaded": "10", "data-images-broken": "0"}


def test_screenshot_is_not_blank(page, tmp_path):
    from PIL import Image

    shot = tmp_path / "page.png"
    r = _run(
        tmp_path / "profile",
        "--hide-scrollbars",
        "--window-size=1280,2000",
        f"--screenshot={shot}",
        page.as_uri(),
    )
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    with Image.open(shot) as im:
        rgb = im.convert("RGB")
        assert rgb.size == (1280, 2000)
        pixels = np.asarray(rgb).reshape(-1, 3).astype(np.int64)
    # A blank (or unstyled white) page has one colour; this one has the dark header, tables and plots.
    not_white = float((pixels < 245).any(1).mean())
    colours = np.unique((pixels[:, 0] << 16) | (pixels[:, 1] << 8) | pixels[:, 2]).size
    assert not_white > 0.05 and colours > 100
