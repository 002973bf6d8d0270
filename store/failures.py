"""Per-item records of generation runs: finished items (done or failed) and their reasons.

A generation run works through items 0..n-1; each item explores one trajectory and may
yield a general task and adapted tasks. When an item finishes, done or failed, one
``run_events`` row with status ``'item'`` and the item's ``GenerationItem`` JSON as details
is written in the SAME transaction as the item's trajectory, tasks, static verdicts and LM
calls (``add_generation_item``). So a killed run either has an item whole or not at all,
and ``--resume`` skips exactly the items that have a row (``generation_items``).

Failed items (an LM call failing beyond retries, output that never parsed, no valid
trajectory, a rejected scenario, a function of the domain's kit raising: ``kit_error``) are
recorded here with a machine-readable reason and a one-line detail.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from trajectory2task.signatures.models import GenerationItem, Task, Trajectory, Verdict

from .records import LMCall
from .taskstore import TaskStore

ITEM_EVENT = "item"

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


class StoreSink:
    """The generation pipeline's sink (``trajectory2task.programs.generation.pipeline.ItemSink``) over a store:
    each finished item in one transaction, recorded items read back for resume."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store

    def recorded(self, run_id: str) -> list[GenerationItem]:
        return generation_items(self.store, run_id)

    def add(self, run_id: str, item: GenerationItem, trajectories: Sequence[Trajectory], tasks: Sequence[Task],
            verdicts: Sequence[Verdict], lm_calls: Sequence[LMCall]) -> None:
        add_generation_item(self.store, run_id, item, trajectories=trajectories, tasks=tasks, verdicts=verdicts,
                            lm_calls=lm_calls)

    def finish(self, run_id: str, status: str) -> None:
        self.store.finish_run(run_id, status)
