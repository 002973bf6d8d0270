"""Premises: what a task says about the initial database, checked against that database.

A writer or intent adaptation that says "your pending order #W1" claims that order #W1 is pending
and belongs to the user. Each such statement travels with the task as a
``trajectory2task.domains.kit.Claim``; this module reads the record the claim names from a fresh episode's
plain JSON (not through any kit, writer or adaptation code) and compares.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from trajectory2task.domains import Environment
from trajectory2task.domains.kit import Claim

_MISSING = object()


def _step(value: Any, step: str | int) -> Any:
    if isinstance(step, int):
        return value[step] if isinstance(value, list) and -len(value) <= step < len(value) else _MISSING
    if isinstance(value, dict):
        return value.get(step, _MISSING)
    if isinstance(value, list):  # the element holding `step` as one of its values
        return next((e for e in value if isinstance(e, dict) and step in e.values()), _MISSING)
    return _MISSING


def value_at(value: Any, path: Sequence[str | int]) -> Any:
    """What ``path`` reaches inside ``value`` (see `Claim`), or ``None`` where it leads nowhere."""
    for step in path:
        if value is None or value is _MISSING:
            return None
        value = _step(value, step)
    return None if value is _MISSING else value


def resolve(environment: Environment[Any], claim: Claim) -> Any:
    """The value a claim is about in the initial database, or ``None`` when the record or
    the path does not exist."""
    return value_at(environment.episode().record(claim.table, claim.key), claim.path)


def matches(found: Any, claim: Claim) -> bool:
    """Whether ``found`` is what ``claim`` says it is (equal, not equal, or containing its value)."""
    if claim.op == "contains":
        return isinstance(found, (list, dict, str)) and claim.value in found
    if claim.op == "ne":
        return found is not None and found != claim.value
    return found is not None and found == claim.value


def holds(environment: Environment[Any], claim: Claim) -> bool:
    return matches(resolve(environment, claim), claim)


def describe(claim: Claim) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in claim.path)
    said = f" (said as {claim.says!r})" if claim.says else ""
    return f"{claim.table}/{claim.key}{path} {claim.op} {json.dumps(claim.value)}{said}"


def false_claims(environment: Environment[Any], claims: Iterable[Claim]) -> list[str]:
    """The claims that do not hold on the environment's initial database, described."""
    return [f"{describe(c)}, found {json.dumps(resolve(environment, c), default=str)}"
            for c in claims if not holds(environment, c)]
