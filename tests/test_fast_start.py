"""Commands that need no store, no LM and no training import none of them (a fast start):
`t2t domains`, `t2t domain show`, `t2t replay`, `t2t verify`. Nor do they import the modules
of the other commands, which `t2t` loads only when one of them is asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import TAU2_DIR

HEAVY = ("duckdb", "pyarrow", "numpy", "dspy", "litellm", "torch", "transformers",
         # the other commands' modules (t2t/cli.py builds them on first need)
         "trajectory2task.cmd_store", "trajectory2task.cmd_generate", "trajectory2task.cmd_bench",
         "trajectory2task.cmd_optimize", "trajectory2task.cmd_audit", "trajectory2task.cmd_finetune",
         "trajectory2task.lm_options", "trajectory2task.usecases")
PROBE = """
import contextlib, io, sys
from trajectory2task.cli import main
sys.argv = ["t2t", *{args!r}]
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, exc.code
print(",".join(m for m in {heavy!r} if m in sys.modules))
"""


def _imported(args: list[str], tmp_path) -> str:
    result = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("args", [["domains"], ["domain", "show", "retail"], ["domain", "show", "airline"]],
                         ids=lambda a: " ".join(a))
def test_domain_commands_import_no_store_lm_or_training_library(args, tmp_path):
    assert _imported(args, tmp_path) == ""


@pytest.mark.parametrize("command", ["replay", "verify"])
def test_replay_and_verify_import_no_store_lm_or_training_library(command, tmp_path):
    if not (TAU2_DIR / "db.json").is_file():
        pytest.skip(f"tau2 reference data not found at {TAU2_DIR}")
    args = [command, "--domain", "retail", "--db", str(TAU2_DIR / "db.json"), str(TAU2_DIR / "tasks.json"), "--json"]
    assert _imported(args, tmp_path) == ""
