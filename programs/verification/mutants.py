"""Mutants: the wrong agents a careless or over-eager agent would be, judged like rollouts.

A task discriminates when its gold passes and every plausible wrong agent fails. The
mutants of a task are derived from the task alone (its gold actions, and the fields the
adaptation records for its condition), replayed on a fresh episode and judged by
:meth:`Verifier.judge` exactly as a recorded rollout would be:

- ``do_nothing``: no call, no message;
- ``drop_write``: the gold with one write (or hand-off) left out, once per write: every
  write must be necessary;
- changing: ``first_goal`` (the user's first request carried out, the change ignored) and
  ``first_then_revised`` (the first write made, then the revised one);
- ambiguous: ``other_reading``, once per other reading of the opening request that runs
  without a tool error (an agent that guessed instead of asking); a reading counts as one
  only when it also breaks no policy rule (``executable_readings``);
- infeasible: ``forbidden_attempt``, the required reads followed by an attempt of each
  forbidden write, refused by the tool or not.

Apart from ``do_nothing``, a mutant says everything the gold says (the task's
``communicate_info``), so it fails only through what it did.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from trajectory2task.domains import Environment
from trajectory2task.programs.verification.verifier import Verifier, execute_calls, reading_problem
from trajectory2task.signatures.models import FailureReason, Message, Task, ToolCall

MutantKind = Literal["do_nothing", "drop_write", "first_goal", "first_then_revised", "other_reading",
                     "forbidden_attempt"]


class Mutant(BaseModel):
    """One wrong agent: the calls it makes and whether it says what the gold says."""

    name: str
    kind: MutantKind
    calls: list[ToolCall]
    speaks: bool = True


class MutantOutcome(BaseModel):
    name: str
    kind: MutantKind
    passed: bool
    reasons: list[FailureReason] = Field(default_factory=list)


class MutantReport(BaseModel):
    """Whether a task's gold passes as a rollout, and which mutants pass too."""

    task_id: str
    gold_passed: bool
    gold_reasons: list[FailureReason] = Field(default_factory=list)
    outcomes: list[MutantOutcome] = Field(default_factory=list)
    executable_readings: int | None = None  # ambiguous tasks with recorded readings: how many run cleanly

    @property
    def passing(self) -> list[str]:
        return [o.name for o in self.outcomes if o.passed]

    @property
    def discriminative(self) -> bool:
        return self.gold_passed and not self.passing


def _acts(environment: Environment[Any], name: str) -> bool:
    """Whether leaving a call out should matter: a write, or a hand-off to a human."""
    spec = environment.tools.get(name)
    return spec is not None and (spec.kind == "write" or spec.ends_conversation)


def _calls(actions: Sequence[ToolCall]) -> list[ToolCall]:
    return [ToolCall(name=a.name, arguments=dict(a.arguments)) for a in actions]


def _same(a: ToolCall, b: ToolCall) -> bool:
    return a.name == b.name and json.dumps(a.arguments, sort_keys=True) == json.dumps(b.arguments, sort_keys=True)


def derive_mutants(environment: Environment[Any], task: Task) -> list[Mutant]:
    """Every mutant of a task (see the module docstring), in a fixed order."""
    gold = _calls(task.gold_actions)
    out = [Mutant(name="do_nothing", kind="do_nothing", calls=[], speaks=False)]
    if task.condition == "infeasible":
        required = _calls(task.actions_should_take or task.gold_actions)
        for index, forbidden in enumerate(task.actions_should_not_take):
            out.append(Mutant(name=f"forbidden_attempt[{index}]:{forbidden.name}", kind="forbidden_attempt",
                              calls=required + _calls([forbidden])))
        for index, call in enumerate(required):
            if _acts(environment, call.name):
                out.append(Mutant(name=f"drop_write[{index}]:{call.name}", kind="drop_write",
                                  calls=required[:index] + required[index + 1:]))
        return out
    for index, call in enumerate(gold):
        if _acts(environment, call.name):
            out.append(Mutant(name=f"drop_write[{index}]:{call.name}", kind="drop_write",
                              calls=gold[:index] + gold[index + 1:]))
    if task.condition == "changing" and task.first_goal:
        first = _calls(task.first_goal)
        out.append(Mutant(name="first_goal", kind="first_goal", calls=first))
        # the first goal's differing writes made, each right before its revised version
        pending = [c for c in first if _acts(environment, c.name) and not any(_same(c, g) for g in gold)]
        mixed: list[ToolCall] = []
        for call in gold:
            if pending and _acts(environment, call.name) and not any(_same(call, f) for f in first):
                mixed.append(pending.pop(0))
            mixed.append(call)
        out.append(Mutant(name="first_then_revised", kind="first_then_revised", calls=mixed))
    if task.condition == "ambiguous":
        for reading in task.readings:
            if reading.target or not 0 <= reading.action_index < len(gold):
                continue
            calls = list(gold)
            calls[reading.action_index] = ToolCall(name=reading.action.name, arguments=dict(reading.action.arguments))
            out.append(Mutant(name=f"other_reading:{reading.candidate}", kind="other_reading", calls=calls))
    return out


def _said(task: Task) -> list[Message]:
    """What a mutant that speaks tells the user: everything the gold must communicate."""
    if not task.communicate_info:
        return []
    return [Message(role="assistant", content="; ".join(task.communicate_info))]


def run_mutants(verifier: Verifier, task: Task) -> MutantReport:
    """Judge the gold and every mutant of ``task`` as rollouts on ``verifier``'s environment."""
    environment = verifier.environment
    said = _said(task)
    gold_episode = environment.episode()
    gold_steps = execute_calls(gold_episode, _calls(task.gold_actions))
    gold = verifier.judge(task, gold_steps, said, end_state_hash=gold_episode.state_hash())
    gold_reasons = list(gold.reasons)
    if any(s.error for s in gold_steps):  # a gold call a tool refuses is not a gold anyone can follow
        gold_reasons.insert(0, "invalid_gold")
    outcomes = []
    for mutant in derive_mutants(environment, task):
        episode = environment.episode()
        steps = execute_calls(episode, mutant.calls)
        verdict = verifier.judge(task, steps, said if mutant.speaks else [], end_state_hash=episode.state_hash())
        outcomes.append(MutantOutcome(name=mutant.name, kind=mutant.kind, passed=verdict.passed,
                                      reasons=verdict.reasons))
    readings = None
    if task.condition == "ambiguous" and task.readings:
        readings = sum(1 for r in task.readings
                       if r.target or reading_problem(environment, task.gold_actions, r) is None)
    return MutantReport(task_id=task.id, gold_passed=not gold_reasons, gold_reasons=gold_reasons, outcomes=outcomes,
                        executable_readings=readings)
