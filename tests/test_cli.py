"""The `qkernels` command line: subcommands and option forwarding."""

from __future__ import annotations

import json
import subprocess
import sys


def _cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "qkernels.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def test_info_prints_json():
    r = _cli("info")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["isa"]["active"] in info["isa"]["available"]


def test_subcommand_options_reach_the_program():
    for args in (("demo", "--help"), ("bench", "int8", "--help")):
        r = _cli(*args)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("usage: qkernels " + " ".join(args[:-1]))


def test_unknown_option_to_info_is_an_error():
    r = _cli("info", "--bogus")
    assert r.returncode == 2 and "unrecognized arguments: --bogus" in r.stderr
