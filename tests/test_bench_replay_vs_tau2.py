"""benchmarks/bench_replay_vs_tau2.py says plainly, in one line, when tau2-bench is not there to compare with."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.cli import REPO

SCRIPT = REPO / "benchmarks" / "bench_replay_vs_tau2.py"


@pytest.mark.parametrize("args,fragment", [
    (["--tau2-python", "/no/such/python"], "no such file"),
    (["--tau2-python", sys.executable], "cannot import tau2-bench"),  # this environment has no tau2
])
def test_without_tau2_the_comparison_stops_with_one_line(args, fragment):
    if importlib.util.find_spec("tau2") is not None:
        pytest.skip("tau2-bench is installed here")
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench_replay_vs_tau2: error: --tau2-python") and fragment in lines[0]


def test_the_tau2_python_is_required():
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--tau2-python is required" in result.stderr
