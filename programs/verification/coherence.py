"""Coherence of a task, by code that reads only the task and the tool specs (never a kit).

Classes (each finding names its class and a one-line detail):

- ``pointless_write``: a required write that a later one makes pointless: the same record
  written twice by the same tool (the second overwrites the first), or a record written and
  then cancelled by a later ``cancel*`` tool, where the later write runs and breaks no policy
  rule without the earlier one (tau2's "upgrade to business, then cancel" is kept: the
  upgrade is what the policy needs before the cancellation);
- ``repeated_entity``: a write argument that lists the same object twice (a passenger booked
  twice on one reservation);
- ``told_amount``: an amount the agent must tell (``communicate_info``) already stands in what
  the user is told, so saying it proves nothing;
- ``plural_seam``: a template plural such as "bag(s)" in what the user reads.

The record a write acts on is its first ``*_id`` argument that is not a payment or user id:
the same reading a grader makes of "modify order #W1" or "update reservation ABC123".
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel

from trajectory2task.domains import Environment, PolicyContext
from trajectory2task.programs.verification.verifier import authenticated_user, execute_calls
from trajectory2task.signatures.models import Action, Task

CoherenceClass = Literal["pointless_write", "repeated_entity", "told_amount", "plural_seam"]
COHERENCE_CLASSES: tuple[CoherenceClass, ...] = ("pointless_write", "repeated_entity", "told_amount", "plural_seam")

_NOT_A_RECORD = ("payment", "user", "item", "product", "certificate")
_PLURAL_SEAM = re.compile(r"\b[A-Za-z]+\(s\)|\b[A-Za-z]+\(es\)")
_NUMBER = re.compile(r"(?<![\d.])\d[\d,]*(?:\.\d+)?")


class CoherenceFinding(BaseModel):
    cls: CoherenceClass
    detail: str


def record_of(action: Action) -> str | None:
    """The id of the record ``action`` writes, or None when no argument names one."""
    for name, value in action.arguments.items():
        if name.endswith("_id") and isinstance(value, str) and not name.startswith(_NOT_A_RECORD):
            return value
    return None


def _same_record_pairs(gold: list[Action], write_tools: frozenset[str]) -> Iterator[tuple[int, int]]:
    """(i, j): gold[j] overwrites or cancels the record gold[i] wrote."""
    for i, first in enumerate(gold):
        record = record_of(first) if first.name in write_tools else None
        if record is None:
            continue
        for j in range(i + 1, len(gold)):
            later = gold[j]
            if later.name not in write_tools or record_of(later) != record:
                continue
            if later.name == first.name or (later.name.startswith("cancel") and not first.name.startswith("cancel")):
                yield i, j
                break


def _needed_for(environment: Environment[Any], gold: list[Action], i: int, j: int, user_id: str | None) -> bool:
    """Whether gold[j] fails a tool check or breaks a policy rule when gold[i] is left out."""
    episode = environment.episode()
    for k, action in enumerate(gold[:j]):
        if k != i:
            episode.call(action.name, action.arguments)
    later = gold[j]
    if episode.fork().call(later.name, later.arguments).error:
        return True
    return bool(environment.policy_violations(episode, later.name, later.arguments, PolicyContext(user_id=user_id)))


def _pointless_writes(environment: Environment[Any], gold: list[Action],
                      write_tools: frozenset[str]) -> Iterator[CoherenceFinding]:
    pairs = list(_same_record_pairs(gold, write_tools))
    cancels = [j for j, a in enumerate(gold) if a.name in write_tools and a.name.startswith("cancel") and record_of(a)]
    if not pairs and not cancels:
        return
    steps = execute_calls(environment.episode(), gold)
    for j in cancels:  # a record the gold itself creates, then cancels: both writes are for nothing
        record = record_of(gold[j])
        for k in range(j):
            seen_before = any(record in str(gold[m].arguments) or record in steps[m].observation for m in range(k))
            if seen_before:
                break
            if gold[k].name in write_tools and not steps[k].error and record in steps[k].observation:
                yield CoherenceFinding(cls="pointless_write", detail=f"{gold[k].name} creates {record}, then "
                                                                     f"{gold[j].name} cancels it")
                break
    user_id = authenticated_user(environment, steps)
    for i, j in pairs:
        if not _needed_for(environment, gold, i, j, user_id):
            how = "overwrites it" if gold[j].name == gold[i].name else "cancels it"
            yield CoherenceFinding(cls="pointless_write", detail=f"{gold[i].name} on {record_of(gold[i])}: a later "
                                                                 f"{gold[j].name} {how}, and needs no such write first")


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _canonical(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, str):
        return " ".join(value.lower().split())
    return value


def _repeated_entities(writes: list[Action]) -> Iterator[CoherenceFinding]:
    for action in writes:
        for name, value in action.arguments.items():
            if not isinstance(value, list):
                continue
            objects = [_canonical(v) for v in value if isinstance(v, Mapping)]
            if len(objects) != len(set(objects)):
                yield CoherenceFinding(cls="repeated_entity", detail=f"{action.name}: {name} lists one entry twice")


def _numbers(text: str) -> set[str]:
    """Each number in ``text`` in one form ("1,200.50" and "1200.5" alike); a date's or an id's
    digit groups count as numbers of their own, which is what a reader sees."""
    found = set()
    for match in _NUMBER.finditer(text):
        try:
            found.add(f"{float(match.group(0).replace(',', '')):g}")
        except ValueError:
            continue
    return found


def _told_amounts(task: Task, user_text: str) -> Iterator[CoherenceFinding]:
    said = _numbers(user_text)
    for info in task.communicate_info:
        amounts = _numbers(info)
        leaked = sorted(a for a in amounts if a in said and a != "0")
        if leaked:
            yield CoherenceFinding(cls="told_amount", detail=f"{info!r} is already in the user's text")


def user_text(task: Task) -> str:
    """Everything the simulated user reads, as one text."""
    s = task.scenario
    parts = [s.persona, s.reason_for_call, s.known_info, s.unknown_info, s.task_instructions, s.change_trigger,
             s.revised_request, *s.withheld_info]
    return "\n".join(p for p in parts if p)


def coherence_findings(environment: Environment[Any], task: Task) -> list[CoherenceFinding]:
    """Every coherence finding on ``task`` (replays on ``environment`` where a class needs it)."""
    write_tools = frozenset(n for n, spec in environment.tools.items() if spec.kind == "write")
    writes = [a for a in task.gold_actions if a.name in write_tools]
    text = user_text(task)
    findings = [*_pointless_writes(environment, list(task.gold_actions), write_tools), *_repeated_entities(writes),
                *_told_amounts(task, text)]
    for match in _PLURAL_SEAM.finditer(text):
        findings.append(CoherenceFinding(cls="plural_seam", detail=match.group(0)))
        break
    return findings
