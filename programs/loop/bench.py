"""Benchmark orchestration: rollouts for every (task, agent, trial), stored, then scored.

The scores (pass@1 and pass^k per agent model and task condition) live with the other
metrics in `trajectory2task.optimize.metrics`. They are computed from the store's rows of the run, so a resumed run is scored on every
rollout it holds, from before and after the interruption.

Reference agents calibrate the task set: on a task that passes static verification, the
do-nothing agent must fail and the oracle must pass. `calibration_problems` names every
task that breaks either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, Field

from trajectory2task.optimize.metrics import RolloutRow
from trajectory2task.programs.loop.agent import DO_NOTHING, ORACLE
from trajectory2task.programs.loop.rollout import RolloutJob, rollout_id_for
from trajectory2task.signatures.models import Task, Verdict


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
    agent_program: str | None = None  # compiled agent state for the LM agents (t2t optimize --program agent)
    trials: int
    max_turns: int
    require_clarification: bool = False  # ambiguous tasks also fail with no_clarification
    function_calling: bool | None = None
    api_base: str | None = None
    # what the agents were shown, kept for the fine-tuning export
    tool_schemas: list[dict[str, Any]] = Field(default_factory=list)


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


def rollout_row(task_id: str, condition: str | None, agent_model: str, trial: int, passed: bool,
                reasons: list[str] | None, termination: str | None, error: str | None) -> RolloutRow:
    """A judged rollout as scoring reads it: one that failed on the user simulator's or the
    transport's side says nothing about the agent (``not_agents``)."""
    from trajectory2task.programs.loop.user_sim import failure_side

    side = failure_side(error) if termination == "lm_error" else None
    return RolloutRow(task_id=task_id, condition=condition, agent_model=agent_model, trial=int(trial),
                      passed=bool(passed), reasons=list(reasons or []),
                      not_agents=side if side in ("user", "transport") else None)


def stored_rows(store: Any, run_id: str) -> list[RolloutRow]:
    """The run's rollouts with their newest verdicts, from the store."""
    _, rows = store.query("SELECT task_id, condition, agent_model, trial, pass, reasons, termination, error "
                          "FROM rollouts_latest WHERE run_id = ? AND pass IS NOT NULL ORDER BY seq", [run_id])
    return [rollout_row(*row) for row in rows]


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
