"""Benchmark orchestration: rollouts for every (task, agent, trial), stored, then scored.

Metrics, per agent model and task condition (and over all conditions):

- pass@1: the mean over tasks of c/n (n trials of the task, c of them passed);
- pass^k (tau-bench): the chance that k trials drawn without replacement from a task's n all
  pass, C(c, k) / C(n, k), averaged over the tasks with n >= k.

Scores are computed from the store's rows of the run, so a resumed run is scored on every
rollout it holds, from before and after the interruption.

Reference agents calibrate the task set: on a task that passes static verification, the
do-nothing agent must fail and the oracle must pass. `calibration_problems` names every
task that breaks either.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from math import comb
from typing import Any

from pydantic import BaseModel, Field

from programs.loop.agent import DO_NOTHING, ORACLE
from programs.loop.rollout import RolloutJob, rollout_id_for
from signatures.models import Task, Verdict

ALL_CONDITIONS = "all"


class BenchConfig(BaseModel):
    """What a bench run does; stored as the run's config, and read back by --resume."""

    domain: str
    db: str | None = None
    db_seed: int = 0
    db_users: int = 500
    tasks_source: str  # "store" (an SQL filter over tasks_latest) or "file"
    tasks: str  # the SQL filter or the file path
    task_ids: list[str]
    agents: list[str]
    user: str
    user_program: str | None = None  # compiled user-simulator state (t2t optimize --program user)
    trials: int
    max_turns: int
    require_clarification: bool = False  # ambiguous tasks also fail with no_clarification
    function_calling: bool | None = None
    api_base: str | None = None
    # what the agents were shown, kept for the fine-tuning export
    tool_schemas: list[dict[str, Any]] = Field(default_factory=list)


class RolloutRow(BaseModel):
    """One stored rollout with its verdict, as read back for scoring."""

    task_id: str
    condition: str | None
    agent_model: str
    trial: int
    passed: bool
    reasons: list[str] = Field(default_factory=list)
    # set when the rollout failed on the user simulator's or the LM transport's side: it says
    # nothing about the agent and is left out of its scores (counted in `not_scored`)
    not_agents: str | None = None


class CellScore(BaseModel):
    """Scores of one agent on one condition (or on all of them)."""

    agent_model: str
    condition: str
    tasks: int
    rollouts: int
    passed: int
    pass_at_1: float
    pass_hat_k: dict[int, float]  # k -> pass^k over the tasks with at least k trials
    failure_reasons: dict[str, int]  # reason -> failed rollouts carrying it
    not_scored: dict[str, int] = Field(default_factory=dict)  # 'user' / 'transport' -> rollouts left out

    def public(self) -> dict[str, Any]:
        return {"agent_model": self.agent_model, "condition": self.condition, "tasks": self.tasks,
                "rollouts": self.rollouts, "passed": self.passed, "pass@1": self.pass_at_1,
                "pass^k": {str(k): v for k, v in self.pass_hat_k.items()},
                "failure_reasons": self.failure_reasons, "not_scored": self.not_scored}


class CalibrationProblem(BaseModel):
    """A task a reference agent contradicts: do-nothing passes it, or the oracle fails it."""

    task_id: str
    agent: str
    verified: bool  # whether the task passes static verification (only then is it a breach)
    verify_reasons: list[str] = Field(default_factory=list)
    rollout_reasons: list[str] = Field(default_factory=list)

    def describe(self) -> str:
        what = "do-nothing passes" if self.agent == DO_NOTHING else \
            f"oracle fails ({', '.join(self.rollout_reasons) or 'no reason'})"
        status = "verified" if self.verified else f"not verified: {', '.join(self.verify_reasons) or '?'}"
        return f"{self.task_id}: {what} [{status}]"


# ============================================================================ metrics


def pass_hat_k(n: int, c: int, k: int) -> float:
    """C(c, k) / C(n, k): the chance that k of the n trials, drawn without replacement, all pass."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass^k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    return comb(c, k) / comb(n, k)


def score_cells(rows: Iterable[RolloutRow], max_k: int) -> list[CellScore]:
    """Scores per (agent, condition) and per (agent, 'all'), sorted by agent then condition.
    Rollouts that failed on the user's or the transport's side are counted in `not_scored`
    only; a task none of whose rollouts is scored has no pass@1 (0 tasks in the cell)."""
    per_task: dict[tuple[str, str], dict[str, list[RolloutRow]]] = defaultdict(lambda: defaultdict(list))
    left_out: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        condition = row.condition or "unknown"
        for cell in ((row.agent_model, condition), (row.agent_model, ALL_CONDITIONS)):
            if row.not_agents:
                left_out[cell][row.not_agents] += 1
                per_task[cell]  # the cell exists even when nothing in it is scored
            else:
                per_task[cell][row.task_id].append(row)
    cells = []
    for (agent, condition), tasks in per_task.items():
        counts = [(len(trials), sum(r.passed for r in trials)) for trials in tasks.values()]
        hat = {}
        for k in range(1, max_k + 1):
            eligible = [pass_hat_k(n, c, k) for n, c in counts if n >= k]
            if eligible:
                hat[k] = sum(eligible) / len(eligible)
        reasons: dict[str, int] = defaultdict(int)
        for trials in tasks.values():
            for row in trials:
                if not row.passed:
                    for reason in row.reasons or ["unknown"]:
                        reasons[reason] += 1
        cells.append(CellScore(agent_model=agent, condition=condition, tasks=len(tasks),
                               rollouts=sum(n for n, _ in counts), passed=sum(c for _, c in counts),
                               pass_at_1=sum(c / n for n, c in counts) / len(counts) if counts else 0.0,
                               pass_hat_k=hat,
                               failure_reasons=dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
                               not_scored=dict(sorted(left_out[(agent, condition)].items()))))
    order = {c: i for i, c in enumerate(("general", "ambiguous", "changing", "infeasible"))}
    cells.sort(key=lambda c: (c.agent_model, c.condition == ALL_CONDITIONS, order.get(c.condition, 9), c.condition))
    return cells


def stored_rows(store: Any, run_id: str) -> list[RolloutRow]:
    """The run's rollouts with their newest verdicts, from the store."""
    from programs.loop.user_sim import failure_side

    _, rows = store.query("SELECT task_id, condition, agent_model, trial, pass, reasons, termination, error "
                          "FROM rollouts_latest WHERE run_id = ? AND pass IS NOT NULL ORDER BY seq", [run_id])
    out = []
    for t, c, a, k, p, r, termination, error in rows:
        side = failure_side(error) if termination == "lm_error" else None
        out.append(RolloutRow(task_id=t, condition=c, agent_model=a, trial=int(k), passed=bool(p),
                              reasons=list(r or []), not_agents=side if side in ("user", "transport") else None))
    return out


# ============================================================================ jobs and calibration


def plan_jobs(run_id: str, task_ids: Sequence[str], agents: Sequence[str], trials: int,
              done: set[tuple[str, str, int]]) -> list[RolloutJob]:
    """Every (task, agent, trial) the run has not stored yet; trials interleaved so that an
    interrupted run holds whole first trials before second ones."""
    jobs = []
    for trial in range(trials):
        for agent in agents:
            for task_id in task_ids:
                if (task_id, agent, trial) not in done:
                    jobs.append(RolloutJob(task_id=task_id, agent=agent, trial=trial,
                                           rollout_id=rollout_id_for(run_id, task_id, agent, trial)))
    return jobs


def calibration_problems(rows: Iterable[RolloutRow], static: dict[str, Verdict]) -> list[CalibrationProblem]:
    """Tasks on which the do-nothing agent passed a trial or the oracle failed one."""
    problems: dict[tuple[str, str], CalibrationProblem] = {}
    for row in rows:
        broken = (row.agent_model == DO_NOTHING and row.passed) or (row.agent_model == ORACLE and not row.passed)
        if not broken or (row.task_id, row.agent_model) in problems:
            continue
        verdict = static.get(row.task_id)
        problems[(row.task_id, row.agent_model)] = CalibrationProblem(
            task_id=row.task_id, agent=row.agent_model, verified=bool(verdict and verdict.passed),
            verify_reasons=list(verdict.reasons) if verdict else [], rollout_reasons=row.reasons)
    return sorted(problems.values(), key=lambda p: (not p.verified, p.agent, p.task_id))


def tasks_by_id(tasks: Sequence[Task]) -> dict[str, Task]:
    out: dict[str, Task] = {}
    for task in tasks:
        out[task.id] = task  # the later copy wins, as in the store's tasks_latest
    return out
