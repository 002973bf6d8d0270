"""tau2-bench's airline reference data in ../shared (tests skip where it is absent)."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
AIRLINE_DIR = REPO.parent / "shared" / "reference" / "tau2-airline"

# The 24 tasks whose gold actions leave the database as it was (tau2's expected.json).
UNCHANGED_END_STATE = ["0", "1", "2", "3", "4", "5", "6", "9", "10", "13", "26", "27", "28", "31", "34", "36", "38",
                       "41", "43", "45", "46", "47", "48", "49"]


def require_airline() -> Path:
    if not (AIRLINE_DIR / "db.json").is_file():
        pytest.skip(f"tau2 airline reference data not found at {AIRLINE_DIR} (the shared/ folder beside the repo)")
    return AIRLINE_DIR


@lru_cache(maxsize=1)
def raw_tasks() -> list[dict[str, Any]]:
    return json.loads((require_airline() / "tasks.json").read_text())


@lru_cache(maxsize=1)
def expected() -> dict[str, dict[str, Any]]:
    return {e["task_id"]: e for e in json.loads((require_airline() / "expected.json").read_text())}


def task_user(raw: dict[str, Any]) -> str:
    """The user id the task's simulated user gives (stated in its known info)."""
    found = re.search(r"user id is:?\s*'?([a-z]+_[a-z]+_\d+)", raw["user_scenario"]["instructions"]["known_info"])
    assert found, raw["id"]
    return found.group(1)


def close(a: Any, b: Any) -> bool:
    """Equal JSON values, numbers within 1e-6."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-6
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    return a == b
