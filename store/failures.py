"""Per-item records of generation runs: finished items (done or failed) and their reasons.

A generation run works through items 0..n-1; each item explores one trajectory and may
yield a general task and adapted tasks. When an item finishes, done or failed, one
``run_events`` row with status ``'item'`` and the item's ``GenerationItem`` JSON as details
is written in the SAME transaction as the item's trajectory, tasks, static verdicts and LM
calls (``add_generation_item``). So a killed run either has an item whole or not at all,
and ``--resume`` skips exactly the items that have a row (``generation_items``).

Failed items (an LM call failing beyond retries, output that never parsed, no valid
trajectory, a rejected scenario) are recorded here with a machine-readable reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from signatures.models import Task, Trajectory, Verdict

from .records import LMCall
from .taskstore import TaskStore

ITEM_EVENT = "item"

ItemReason = Literal[
    "lm_error",  # an LM call failed beyond the LM layer's retries, or its output never parsed
    "no_trajectory",  # exploration ended without a valid trajectory (no write, no replay, ...)
    "writer_rejected",  # the written scenario missed facts the agent must learn
]


class GenerationItem(BaseModel):
    """What became of one item of a generation run."""

    index: int
    seed: int
    status: Literal["done", "failed"]
    stage: Literal["explore", "write"] | None = None  # where a failed item stopped
    reason: ItemReason | None = None
    detail: str | None = None
    trajectory_id: str | None = None
    general_task_id: str | None = None
    tasks: dict[str, str] = Field(default_factory=dict)  # condition -> task id stored
    verified: dict[str, bool] = Field(default_factory=dict)  # condition -> static verdict passed
    rejected: dict[str, str] = Field(default_factory=dict)  # condition -> why no task
    proposals: int = 0
    dropped_calls: int = 0


def add_generation_item(store: TaskStore, run_id: str, item: GenerationItem,
                        trajectories: Sequence[Trajectory] = (), tasks: Sequence[Task] = (),
                        verdicts: Sequence[Verdict] = (), lm_calls: Sequence[LMCall] = ()) -> None:
    """Store one finished item and its record in one transaction."""
    with store.transaction("add_generation_item"):
        store.add_trajectories(run_id, list(trajectories))
        store.add_tasks(run_id, list(tasks))
        store.add_verdicts(run_id, list(verdicts), kind="static")
        store.add_lm_calls(run_id, list(lm_calls))
        store.add_run_event(run_id, ITEM_EVENT, item.model_dump(mode="json"))


def generation_items(store: TaskStore, run_id: str) -> list[GenerationItem]:
    """The finished items of a run, by index (the newest record of an index wins)."""
    _, rows = store.query("SELECT details FROM run_events WHERE run_id = ? AND status = ? ORDER BY created_at",
                          [run_id, ITEM_EVENT])
    by_index: dict[int, GenerationItem] = {}
    for (details,) in rows:
        item = GenerationItem.model_validate(json.loads(details) if isinstance(details, str) else details)
        by_index[item.index] = item
    return [by_index[i] for i in sorted(by_index)]


def run_config(store: TaskStore, run_id: str) -> tuple[str, dict[str, Any], int | None] | None:
    """(kind, config, seed) of a recorded run, or None when there is no such run."""
    _, rows = store.query("SELECT kind, config, seed FROM runs WHERE run_id = ? LIMIT 1", [run_id])
    if not rows:
        return None
    kind, config, seed = rows[0]
    return kind, json.loads(config) if isinstance(config, str) else (config or {}), seed
