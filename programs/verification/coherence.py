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
- ``plural_seam``: a template plural such as "bag(s)" in what the user reads;
- ``policy_breaking_gold``: a gold write that breaks one of the domain's enumerated policy
  rules for the user the gold authenticates (checked on the state just before the write);
- ``words_fit_several``: outside ambiguous tasks, the words of a claim group (what the task
  says about one record, e.g. "your visa card ending in 5851") fit more than one record
  of its kind in the initial database, so the words do not say which one is meant;
- ``questions_vs_values``: the agent must tell more values than the user asks questions.

The record a write acts on is its first ``*_id`` argument that is not a payment or user id:
the same reading a grader makes of "modify order #W1" or "update reservation ABC123".
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from trajectory2task.domains import Environment, PolicyContext
from trajectory2task.programs.verification.premises import matches, value_at
from trajectory2task.programs.verification.verifier import authenticated_user, execute_calls, policy_breaches
from trajectory2task.signatures.models import Action, Task, ToolCall

CoherenceClass = Literal["pointless_write", "repeated_entity", "told_amount", "plural_seam", "policy_breaking_gold",
                         "words_fit_several", "questions_vs_values"]
COHERENCE_CLASSES: tuple[CoherenceClass, ...] = ("pointless_write", "repeated_entity", "told_amount", "plural_seam",
                                                 "policy_breaking_gold", "words_fit_several", "questions_vs_values")
_QUESTION = re.compile(r"\bask\b|\bwant to know\b|\bfind out\b|\bhow (?:much|many)\b|\?", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")

_NOT_A_RECORD = ("payment", "user", "item", "product", "certificate")
_PLURAL_SEAM = re.compile(r"\b[A-Za-z]+\(s\)|\b[A-Za-z]+\(es\)")
_AMOUNT = re.compile(r"\$?\d[\d,]*(?:\.\d+)?")


class CoherenceFinding(BaseModel):
    cls: CoherenceClass
    detail: str


class Call(Protocol):
    """A tool call as the checks read it (an `Action` or a `ToolCall`)."""

    name: str
    arguments: dict[str, Any]


def record_of(call: Call) -> str | None:
    """The id of the record ``call`` writes, or None when no argument names one."""
    for name, value in call.arguments.items():
        if name.endswith("_id") and isinstance(value, str) and not name.startswith(_NOT_A_RECORD):
            return value
    return None


def _same_record_pairs(calls: Sequence[Call], write_tools: frozenset[str]) -> Iterator[tuple[int, int]]:
    """(i, j): calls[j] overwrites or cancels the record calls[i] wrote."""
    for i, first in enumerate(calls):
        record = record_of(first) if first.name in write_tools else None
        if record is None:
            continue
        for j in range(i + 1, len(calls)):
            later = calls[j]
            if later.name not in write_tools or record_of(later) != record:
                continue
            if later.name == first.name or (later.name.startswith("cancel") and not first.name.startswith("cancel")):
                yield i, j
                break


def _needed_for(environment: Environment[Any], calls: Sequence[Call], i: int, j: int, user_id: str | None) -> bool:
    """Whether calls[j] fails a tool check or breaks a policy rule when calls[i] is left out."""
    episode = environment.episode()
    for k, call in enumerate(calls[:j]):
        if k != i:
            episode.call(call.name, call.arguments)
    later = calls[j]
    if episode.fork().call(later.name, later.arguments).error:
        return True
    return bool(environment.policy_violations(episode, later.name, later.arguments, PolicyContext(user_id=user_id)))


def pointless_pairs(environment: Environment[Any], calls: Sequence[Call]) -> list[tuple[int, int, str]]:
    """(i, j, why) for each write calls[i] that the later write calls[j] makes pointless (see
    the module docstring), in the order of j."""
    write_tools = frozenset(n for n, spec in environment.tools.items() if spec.kind == "write")
    pairs = list(_same_record_pairs(calls, write_tools))
    cancels = [j for j, c in enumerate(calls) if c.name in write_tools and c.name.startswith("cancel") and record_of(c)]
    if not pairs and not cancels:
        return []
    found: list[tuple[int, int, str]] = []
    steps = execute_calls(environment.episode(), [ToolCall(name=c.name, arguments=c.arguments) for c in calls])
    for j in cancels:  # a record the calls themselves create, then cancel: both writes are for nothing
        record = record_of(calls[j])
        for k in range(j):
            if any(record in str(calls[m].arguments) or record in steps[m].observation for m in range(k)):
                break
            if calls[k].name in write_tools and not steps[k].error and record in steps[k].observation:
                found.append((k, j, f"{calls[k].name} creates {record}, then {calls[j].name} cancels it"))
                break
    user_id = authenticated_user(environment, steps)
    for i, j in pairs:
        if not _needed_for(environment, calls, i, j, user_id):
            how = "overwrites it" if calls[j].name == calls[i].name else "cancels it"
            found.append((i, j, f"{calls[i].name} on {record_of(calls[i])}: a later {calls[j].name} {how}, "
                                "and needs no such write first"))
    return sorted(found, key=lambda pair: pair[1])


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
    """Each amount in ``text`` in one form ("$1,200.50" and "1200.5" alike); dates, times and
    ids ("2024-05-12", "06:00", "HAT271", "#W1") are not amounts."""
    found = set()
    for token in text.split():
        token = token.strip(".,;:!?()\"'")
        if _AMOUNT.fullmatch(token):
            found.add(f"{float(token.lstrip('$').replace(',', '')):g}")
    return found


def _told_amounts(task: Task, user_text: str) -> Iterator[CoherenceFinding]:
    said = _numbers(user_text)
    for info in task.communicate_info:
        amounts = _numbers(info)
        leaked = sorted(a for a in amounts if a in said and a != "0")
        if leaked:
            yield CoherenceFinding(cls="told_amount", detail=f"{info!r} is already in the user's text")


def _policy_breaking(environment: Environment[Any], gold: Sequence[Call]) -> Iterator[CoherenceFinding]:
    for breach in policy_breaches(environment, [ToolCall(name=c.name, arguments=c.arguments) for c in gold]):
        yield CoherenceFinding(cls="policy_breaking_gold", detail=breach.line())


def _ends_with_said_digits(identifier: str, says: str) -> bool:
    """Whether the words give the identifier's last digits ("ending in 1237")."""
    return any(identifier.endswith(run) for run in re.findall(r"\d{4,}", says))


def _words_fit_several(environment: Environment[Any], task: Task) -> Iterator[CoherenceFinding]:
    """Claim groups whose words do not name their entity and fit more than one entity of its
    kind: a record of the table, or a member of one of its collections (a user's payment
    methods), with every claim of the group read inside each candidate."""
    episode = environment.episode()
    groups: dict[tuple[str, str, tuple[Any, ...]], list[tuple[Any, list[Any]]]] = {}
    for claim in task.claims:
        if not claim.path:
            continue
        record = episode.record(claim.table, claim.key) or {}
        member = len(claim.path) >= 3 and isinstance(record.get(str(claim.path[0])), (dict, list))
        entity, inner = (tuple(claim.path[:2]), list(claim.path[2:])) if member else ((), list(claim.path))
        groups.setdefault((claim.table, claim.key, entity), []).append((claim, inner))
    text = user_text(task)
    for (table, key, entity), members in groups.items():
        claims = [claim for claim, _ in members]
        says = " ".join(dict.fromkeys(c.says for c in claims))
        named = str(entity[-1]) if entity else key
        if len(claims) < 2 or not says or named in text or _ends_with_said_digits(named, says):
            continue  # a premise about an entity named otherwise, or words that name it
        if entity:
            collection = (episode.record(table, key) or {}).get(str(entity[0]))
            candidates = list(collection.values()) if isinstance(collection, dict) else list(collection)
        else:
            candidates = [episode.record(table, k) for k in episode.keys(table)]
        fitting = [c for c in candidates if all(matches(value_at(c, inner), claim) for claim, inner in members)]
        if len(fitting) > 1:
            yield CoherenceFinding(cls="words_fit_several", detail=f"{says[:120]!r} fits {len(fitting)} of "
                                                                   f"{'the ' + str(entity[0]) if entity else table}")


def _questions_vs_values(task: Task, text: str) -> Iterator[CoherenceFinding]:
    """Sentences that ask something (ask, want to know, how much, a question mark) against
    the values to tell: each value answers a question of its own."""
    values = len(task.communicate_info)
    asked = sum(1 for sentence in _SENTENCE.split(text) if _QUESTION.search(sentence))
    if values > asked:
        yield CoherenceFinding(cls="questions_vs_values", detail=f"{values} value(s) to tell for {asked} question(s)")


def user_text(task: Task) -> str:
    """Everything the simulated user reads, as one text."""
    return task.scenario.read_text()


def coherence_findings(environment: Environment[Any], task: Task) -> list[CoherenceFinding]:
    """Every coherence finding on ``task`` (replays on ``environment`` where a class needs it)."""
    write_tools = frozenset(n for n, spec in environment.tools.items() if spec.kind == "write")
    writes = [a for a in task.gold_actions if a.name in write_tools]
    text = user_text(task)
    findings = [CoherenceFinding(cls="pointless_write", detail=why)
                for _, _, why in pointless_pairs(environment, task.gold_actions)]
    findings += [*_repeated_entities(writes), *_told_amounts(task, text),
                 *_policy_breaking(environment, task.gold_actions), *_questions_vs_values(task, text)]
    if task.condition != "ambiguous":
        findings += _words_fit_several(environment, task)
    for match in _PLURAL_SEAM.finditer(text):
        findings.append(CoherenceFinding(cls="plural_seam", detail=match.group(0)))
        break
    return findings
