"""Audit classes only a domain's policy defines, and what their checks share.

``t2t audit`` (``trajectory2task.programs.verification.audit``) reports every class it knows
on any task file. Most classes read only the task and the tool specs; the three here need
what a policy says, so a domain supplies their checks (``Domain.audit_checks``), each written
from the domain's own policy rules, never from its generator:

- ``compensation_off_policy``: a task grants a compensation at an amount the policy does not
  set, or forbids one where the policy sets one (an agent that offers the policy's remedy
  would fail it);
- ``handoff_not_required``: a task grades a hand-off to a human as required where the policy
  has the request refused instead (it is one of the agent's own actions);
- ``same_variant_request``: a change asks for what the customer already holds, worded as if it
  were something else, or names an option by its value alone ("one with S").

A domain whose policy has no such case (retail sets no compensation) supplies no check for
that class; the audit then shows the class as not applicable (``None`` in ``--json``'s
counts, "n/a" in the table), never as a clean 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from trajectory2task.domains.runtime import Environment, Episode

if TYPE_CHECKING:
    from trajectory2task.signatures.models import Action, Task

DomainAuditClass = Literal["compensation_off_policy", "handoff_not_required", "same_variant_request"]
DOMAIN_AUDIT_CLASSES: tuple[DomainAuditClass, ...] = ("compensation_off_policy", "handoff_not_required",
                                                      "same_variant_request")


@dataclass(frozen=True)
class AuditCheck:
    """A domain's check of one audit class: ``check(task, environment)`` gives one line per
    finding (empty: none)."""

    cls: DomainAuditClass
    description: str
    check: Callable[[Task, Environment[Any]], list[str]]


@dataclass(frozen=True)
class GoldStep:
    """A gold action with the state just before it."""

    before: Episode[Any]
    action: Action


def gold_walk(environment: Environment[Any], actions: list[Action]) -> tuple[list[GoldStep], Episode[Any]]:
    """Each action with the state just before it (a fork), and the state after the last one.
    Failing calls leave no trace, as in any replay."""
    episode = environment.episode()
    steps = []
    for action in actions:
        steps.append(GoldStep(before=episode.fork(), action=action))
        episode.call(action.name, action.arguments)
    return steps, episode


def required_handoffs(environment: Environment[Any], task: Task) -> list[Action]:
    """The hand-offs (tools that end the conversation) the task requires: in its gold or in the
    actions a correct agent must take."""
    return [a for a in [*task.gold_actions, *task.actions_should_take]
            if (spec := environment.tools.get(a.name)) is not None and spec.ends_conversation]


def handoff_findings(environment: Environment[Any], task: Task,
                     transfer_required: Callable[[Episode[Any], Action], bool]) -> list[str]:
    """The ``handoff_not_required`` findings of a domain whose policy sends a refused write to a
    human only where ``transfer_required(state, write)`` says so: a required hand-off in a task
    whose forbidden writes are the agent's own actions and none of them one the policy transfers."""
    handoffs = required_handoffs(environment, task)
    refused = [a for a in task.actions_should_not_take
               if (spec := environment.tools.get(a.name)) is not None and spec.kind == "write"]
    if not handoffs or not refused:
        return []  # a hand-off for a request no tool serves: code cannot judge the words
    _, end = gold_walk(environment, task.gold_actions)
    if any(transfer_required(end, write) for write in refused):
        return []
    names = ", ".join(dict.fromkeys(a.name for a in refused))
    return [f"{handoffs[0].name} is required, yet the refused {names} is one of the agent's own actions: "
            "the policy has it denied, not handed off"]


def writes_with_state(environment: Environment[Any], task: Task) -> Iterator[tuple[str, Episode[Any], Action]]:
    """Every write a task names, with where it stands (gold, first goal, reading, forbidden) and
    the state it would run on: a gold or first-goal write after the calls before it, a reading
    after the gold calls before its position, a forbidden write after the whole gold. The
    states are shared: read them, and fork one before calling a tool on it."""

    def writes(actions: list[Action]) -> bool:
        return any((spec := environment.tools.get(a.name)) is not None and spec.kind == "write" for a in actions)

    gold, end = gold_walk(environment, task.gold_actions)
    sources = [("gold", gold)]
    if writes(task.first_goal):
        sources.append(("first goal", gold_walk(environment, task.first_goal)[0]))
    for where, steps in sources:
        for step in steps:
            if writes([step.action]):
                yield where, step.before, step.action
    for reading in task.readings:
        if 0 <= reading.action_index < len(gold):
            yield "reading", gold[reading.action_index].before, reading.action
    for action in task.actions_should_not_take:
        if writes([action]):
            yield "forbidden", end, action
