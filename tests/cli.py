"""Run the real `t2t` entry point in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_t2t(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", COLUMNS="200")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "trajectory2task.cli", *args], cwd=cwd or REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
