"""Coverage-guided generation: which tool x condition cells the store is short of.

A cell is (write tool, condition). A task falls in a cell when the tool is one of its gold
write actions (general, ambiguous, changing) or, for an infeasible task, one of its
forbidden actions (`actions_should_not_take`): an infeasible task's gold holds only the
look-ups and explanations, so the write it refuses is what it covers. Only write tools
make cells: every task reads, and exploration is steered by the write it should reach.

`pick_targets` reads the counts by SQL from the store (the same counting as the
`tool_coverage` view, plus the domain filter and the forbidden writes) and returns the
cells with the fewest verified tasks. A cell that was targeted many times and never
produced a verified task (say, a write that no infeasible request can break on this
database) is tried last, so that it cannot starve every other cell: attempts are the
trajectories whose exploration goal named the cell (`target_goal` below).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel

from trajectory2task.signatures.models import CONDITIONS, Condition

if TYPE_CHECKING:
    from trajectory2task.store import TaskStore

# Verified tasks per cell, counted like the tool_coverage view (newest copy of each task,
# newest static verdict), with the infeasible tasks' forbidden writes as their tools.
COVERAGE_SQL = """
WITH cells AS (
    SELECT task_id, condition, verified, unnest(gold_tools) AS tool
    FROM tasks_latest WHERE domain = ? AND condition <> 'infeasible'
    UNION ALL
    SELECT task_id, condition, verified,
           unnest(json_extract_string(json, '$.actions_should_not_take[*].name')) AS tool
    FROM tasks_latest WHERE domain = ? AND condition = 'infeasible'
)
SELECT tool, condition,
       count(DISTINCT task_id) AS tasks,
       count(DISTINCT task_id) FILTER (WHERE verified) AS verified_tasks
FROM cells GROUP BY tool, condition
"""

# Trajectories explored with a coverage goal: the goal string starts with GOAL_PREFIX.
ATTEMPTS_SQL = """
SELECT goal, count(DISTINCT trajectory_id) FROM trajectories
WHERE domain = ? AND goal LIKE 'coverage:%' GROUP BY goal
"""
GOAL_PREFIX = "coverage:"

# A cell targeted this many times without a verified task goes to the back of the queue.
GIVE_UP_AFTER = 3


class CoverageTarget(BaseModel):
    """A tool x condition cell that the next batch should produce tasks for."""

    tool: str
    condition: Condition

    @property
    def goal(self) -> str:
        return target_goal(self.tool, self.condition)


class CoverageCell(BaseModel):
    tool: str
    condition: Condition
    tasks: int = 0
    verified_tasks: int = 0
    attempts: int = 0  # trajectories explored toward this cell

    @property
    def exhausted(self) -> bool:
        return self.verified_tasks == 0 and self.attempts >= GIVE_UP_AFTER


def target_goal(tool: str, condition: str) -> str:
    """The exploration goal string that marks a trajectory as aimed at a cell."""
    return f"{GOAL_PREFIX}{tool}/{condition}"


def parse_goal(goal: str | None) -> tuple[str, str] | None:
    """(tool, condition) of a coverage goal string, else None."""
    if not goal or not goal.startswith(GOAL_PREFIX):
        return None
    tool, _, condition = goal[len(GOAL_PREFIX):].partition("/")
    return (tool, condition) if tool and condition else None


def write_tools(domain) -> list[str]:
    """The domain's write tools, in the domain's order (`domain` is a domains.Domain)."""
    return [t.name for t in domain.tools if t.kind == "write"]


def coverage_cells(store: TaskStore, domain, conditions: Sequence[str] = CONDITIONS) -> list[CoverageCell]:
    """Every write tool x condition cell of a domain with its counts from the store."""
    counts: dict[tuple[str, str], tuple[int, int]] = {}
    _, rows = store.query(COVERAGE_SQL, [domain.name, domain.name])
    for tool, condition, tasks, verified in rows:
        counts[(tool, condition)] = (int(tasks), int(verified))
    attempts: dict[tuple[str, str], int] = {}
    _, rows = store.query(ATTEMPTS_SQL, [domain.name])
    for goal, n in rows:
        cell = parse_goal(goal)
        if cell is not None:
            attempts[cell] = attempts.get(cell, 0) + int(n)
    cells = []
    for condition in conditions:
        for tool in write_tools(domain):
            tasks, verified = counts.get((tool, condition), (0, 0))
            cells.append(CoverageCell(tool=tool, condition=condition, tasks=tasks, verified_tasks=verified,
                                      attempts=attempts.get((tool, condition), 0)))
    return cells


def pick_targets(store: TaskStore, domain, conditions: Sequence[str], k: int) -> list[CoverageTarget]:
    """The k cells with the fewest verified tasks (ties: fewer attempts first, then the
    conditions' order and the domain's tool order); exhausted cells come last."""
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}; conditions are {', '.join(CONDITIONS)}")
    cells = coverage_cells(store, domain, conditions)
    position = {(c.tool, c.condition): i for i, c in enumerate(cells)}
    ranked = sorted(cells, key=lambda c: (c.exhausted, c.verified_tasks, c.attempts, position[(c.tool, c.condition)]))
    return [CoverageTarget(tool=c.tool, condition=c.condition) for c in ranked[:max(0, k)]]


DEFAULT_BATCH_SIZE = 8


class GuidedTargets:
    """The coverage-guided plan of a generation run: item index -> the cell it aims at.

    Items go in batches of `batch_size`. When the first item of a batch asks, the batch's
    cells are picked from the store as it is then (`pick_targets`, k = batch size), so each
    batch sees the tasks every earlier batch stored (items run in order when the pipeline
    has one worker; with more, a batch may start before the previous one is fully stored
    and then picks from slightly older counts). Pass an instance as the pipeline's
    `targets`.
    """

    def __init__(self, store: TaskStore, domain, conditions: Sequence[str],
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.store = store
        self.domain = domain
        self.conditions = list(conditions)
        self.batch_size = batch_size
        self.picks: dict[int, list[CoverageTarget]] = {}  # batch -> its cells, in pick order
        self._lock = threading.Lock()

    def __call__(self, index: int) -> CoverageTarget | None:
        batch, position = divmod(index, self.batch_size)
        with self._lock:
            if batch not in self.picks:
                self.picks[batch] = pick_targets(self.store, self.domain, self.conditions, self.batch_size)
            cells = self.picks[batch]
        return cells[position % len(cells)] if cells else None
