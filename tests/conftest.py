"""Shared fixtures: the tau2 reference data in ../shared (skipped where absent) and environments."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# DSPy's LM cache keys ignore the api_base: scripted servers of different tests would share answers.
# Off unless a test turns it on, and never the user's cache folder.
os.environ.setdefault("T2T_NO_CACHE", "1")
os.environ["DSPY_CACHEDIR"] = tempfile.mkdtemp(prefix="t2t-test-dspy-cache-")

REPO = Path(__file__).resolve().parents[1]
TAU2_DIR = REPO.parent / "shared" / "reference" / "tau2-retail"


def _require_tau2() -> Path:
    if not (TAU2_DIR / "db.json").is_file():
        pytest.skip(f"tau2 reference data not found at {TAU2_DIR} (the shared/ folder beside the repo)")
    return TAU2_DIR


@pytest.fixture(scope="session")
def tau2_dir() -> Path:
    return _require_tau2()


@pytest.fixture(scope="session")
def tau2_tasks_raw(tau2_dir: Path) -> list[dict]:
    return json.loads((tau2_dir / "tasks.json").read_text())


@pytest.fixture(scope="session")
def tau2_expected(tau2_dir: Path) -> dict[str, dict]:
    return {e["task_id"]: e for e in json.loads((tau2_dir / "expected.json").read_text())}


@pytest.fixture(scope="session")
def retail():
    from trajectory2task.domains import get_domain

    return get_domain("retail")


@pytest.fixture(scope="session")
def tau2_env(retail, tau2_dir: Path):
    return retail.environment(retail.load_db(str(tau2_dir / "db.json")))


@pytest.fixture(scope="session")
def tau2_tasks(tau2_dir: Path):
    from trajectory2task.store.files import load_tasks

    tasks, problems = load_tasks(tau2_dir / "tasks.json")
    assert not problems
    return tasks


@pytest.fixture(scope="session")
def dspy_cache_at_start():
    import dspy

    return dspy.cache


@pytest.fixture(autouse=True)
def dspy_default_adapter(dspy_cache_at_start):
    """An in-process `t2t` run installs its structured adapter globally (for its worker
    threads) and may reconfigure DSPy's cache; put both back so the next test starts from them."""
    import dspy

    adapter = dspy.settings.adapter
    # an in-process generate/optimize (a module fixture's too) may reconfigure DSPy's cache
    dspy.cache = dspy_cache_at_start
    yield
    dspy.settings.configure(adapter=adapter)
    dspy.cache = dspy_cache_at_start
