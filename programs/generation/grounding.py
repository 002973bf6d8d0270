"""Argument grounding for exploration and the facts a task scenario must state.

The generic part lives here: ``Knowledge`` collects ids and records from observation JSON
by key names, ``missing_facts`` checks a scenario text against required facts, and
``trajectory_replays`` checks that a trajectory reproduces itself. What is specific to a
domain (which JSON keys hold ids, how to identify the customer, how to build a write from
what was observed, which facts a task must state) is one ``DomainGrounding`` value per
domain, registered in ``GROUNDINGS``; the retail one is ``programs.generation.retail_grounding``.
"""

from __future__ import annotations

import importlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from domains import Environment, Episode
from signatures.models import Step, ToolCall, Trajectory, UserScenario

GROUNDINGS: dict[str, str] = {"retail": "programs.generation.retail_grounding"}


class GroundingError(LookupError):
    """The domain has no grounding (no baseline exploration or fact checks for it)."""


@dataclass(frozen=True)
class GroundingHints:
    """Where ids sit in a domain's observation JSON.

    ``id_keys`` maps a JSON key to the kind of id its value holds: a string, a list of
    strings, or an object whose keys are ids (e.g. ``payment_methods``). ``entity_keys``
    says, in priority order, which key identifies a top-level observation object (an order
    carries both order_id and user_id: it is an order). ``string_outputs`` names tools whose
    plain-text output is an id of the given kind.
    """

    id_keys: Mapping[str, str]
    entity_keys: tuple[str, ...]
    string_outputs: Mapping[str, str] = field(default_factory=dict)


class Knowledge:
    """What a trajectory has observed so far: ids by kind, and the newest record per id."""

    def __init__(self, hints: GroundingHints) -> None:
        self.hints = hints
        self.ids: dict[str, list[str]] = {}
        self.records: dict[str, dict[str, dict[str, Any]]] = {}

    def absorb(self, call: ToolCall, observation: str) -> None:
        kind = self.hints.string_outputs.get(call.name)
        if kind is not None:
            self._add(kind, observation.strip())
            return
        try:
            value = json.loads(observation)
        except ValueError:
            return
        if isinstance(value, dict):
            for key in self.hints.entity_keys:
                if isinstance(value.get(key), str):
                    self.records.setdefault(key, {})[value[key]] = value
                    break
        self._walk(value)

    def _walk(self, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                kind = self.hints.id_keys.get(key)
                if kind is not None:
                    if isinstance(inner, str):
                        self._add(kind, inner)
                    elif isinstance(inner, list):
                        for item in inner:
                            if isinstance(item, str):
                                self._add(kind, item)
                    elif isinstance(inner, dict):
                        for item in inner:
                            self._add(kind, item)
                self._walk(inner)
        elif isinstance(value, list):
            for inner in value:
                self._walk(inner)

    def _add(self, kind: str, value: str) -> None:
        known = self.ids.setdefault(kind, [])
        if value and value not in known:
            known.append(value)

    def known(self, kind: str) -> list[str]:
        return list(self.ids.get(kind, ()))

    def record(self, kind: str, key: str) -> dict[str, Any] | None:
        return self.records.get(kind, {}).get(key)

    def all_records(self, kind: str) -> list[dict[str, Any]]:
        return list(self.records.get(kind, {}).values())


# ---------------------------------------------------------------- facts


class RequiredFact(BaseModel):
    """A fact the agent must learn from the user; stated when any alternative appears."""

    label: str
    alternatives: list[str]

    def prompt_line(self) -> str:
        return f"{self.label}: {self.alternatives[0]}"


class RequestFacts(BaseModel):
    """One write of a trajectory as the user asks for it: a template sentence and its facts."""

    tool: str
    sentence: str
    facts: list[RequiredFact] = Field(default_factory=list)


class TrajectoryFacts(BaseModel):
    """What a task built from a trajectory must tell the agent, by code, from the trajectory."""

    known_info: str
    unknown_info: str | None = None
    identity: list[RequiredFact] = Field(default_factory=list)
    requests: list[RequestFacts] = Field(default_factory=list)

    def all_facts(self) -> list[RequiredFact]:
        return self.identity + [f for r in self.requests for f in r.facts]


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def scenario_text(scenario: UserScenario) -> str:
    """Everything the simulated user may say: the fields it reads its facts from."""
    parts = [scenario.persona, scenario.reason_for_call, scenario.known_info, scenario.unknown_info,
             scenario.task_instructions, *scenario.withheld_info, scenario.revised_request]
    return "\n".join(p for p in parts if p)


def missing_facts(text: str, facts: Sequence[RequiredFact]) -> list[RequiredFact]:
    """The facts none of whose alternatives appears in the text (case and spacing ignored)."""
    haystack = _normal(text)
    return [f for f in facts if not any(_normal(a) in haystack for a in f.alternatives if a.strip())]


# ---------------------------------------------------------------- replay


def trajectory_replays(env: Environment[Any], steps: Sequence[Step], end_state_hash: str) -> str | None:
    """None when the steps, replayed from the initial state, give the same observations and
    end state; else what differed."""
    episode = env.episode()
    for index, step in enumerate(steps):
        result = episode.call(step.call.name, step.call.arguments)
        if result.error or step.error:
            return f"step {index} ({step.call.name}) is an error on replay: {result.output[:120]}"
        if result.output != step.observation:
            return f"step {index} ({step.call.name}) gives a different observation on replay"
    if episode.state_hash() != end_state_hash:
        return "replay ends in a different state"
    return None


# ---------------------------------------------------------------- the domain hooks

WriteBuilder = Callable[[Knowledge, random.Random], "dict[str, Any] | None"]


@dataclass(frozen=True)
class DomainGrounding:
    """Everything exploration and task writing need to know about one domain.

    - ``seed_table``: the customers' table; ``seed_calls(record)`` identify one (e.g. by email),
      ``seed_description(record)`` is what the customer could tell an agent, for LM explorers.
    - ``seed_via``: other tables a seed entity may be drawn from (e.g. an order), each with
      the function giving the owning customer's key, the read calls that look the entity up
      first, and the sentence an LM explorer is told about it.
    - ``walk_reads``: the read tools the random walk may call with observed ids.
    - ``write_builders``: per write tool, arguments built from what was observed, or None.
    - ``describe(env, trajectory)``: the template sentences and required facts of a task.
    """

    hints: GroundingHints
    seed_table: str
    seed_calls: Callable[[dict[str, Any]], list[ToolCall]]
    seed_description: Callable[[dict[str, Any]], str]
    walk_reads: tuple[str, ...]
    write_builders: Mapping[str, WriteBuilder]
    describe: Callable[[Environment[Any], Trajectory], TrajectoryFacts]
    seed_via: Mapping[str, SeedVia] = field(default_factory=dict)
    seed_for_write: Mapping[str, SeedFilter] = field(default_factory=dict)

    def sample_seed(self, episode: Episode[Any], rng: random.Random, for_write: str | None = None) -> Seed:
        """A seed entity drawn with ``rng``: a customer, or an entity of a ``seed_via`` table.

        With ``for_write``, and a ``seed_for_write`` entry for that tool, the entity is drawn
        among those the write applies to (a walk meant to cancel starts from a pending order),
        so that the intended write is not lost for want of a fitting entity."""
        fit = self.seed_for_write.get(for_write) if for_write else None
        if fit is not None:
            table = fit.table
            keys = [k for k in sorted(episode.keys(table)) if fit.applies(episode.get(table, k))]
        else:
            table = rng.choice([self.seed_table, *sorted(self.seed_via)])
            keys = sorted(episode.keys(table))
        if not keys:
            raise GroundingError(f"table {table} is empty: nothing to explore from")
        key = rng.choice(keys)
        record = episode.record(table, key)
        assert record is not None
        if table == self.seed_table:
            return Seed(entity=f"{table}/{key}", customer=record, description=self.seed_description(record))
        via = self.seed_via[table]
        customer = episode.record(self.seed_table, via.customer_key(record))
        if customer is None:
            raise GroundingError(f"{table}/{key} has no customer in {self.seed_table}")
        return Seed(entity=f"{table}/{key}", customer=customer, first_reads=via.first_reads(record),
                    description=f"{self.seed_description(customer)} {via.describe(record)}")


@dataclass(frozen=True)
class SeedVia:
    """How a non-customer seed entity leads to its customer and what to look up first."""

    customer_key: Callable[[dict[str, Any]], str]
    first_reads: Callable[[dict[str, Any]], list[ToolCall]]
    describe: Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class SeedFilter:
    """The entities a write tool applies to: a table and a test on its (pydantic) records."""

    table: str
    applies: Callable[[Any], bool]


@dataclass(frozen=True)
class Seed:
    """Where an exploration starts: the entity drawn ('table/key') and its customer."""

    entity: str
    customer: dict[str, Any]
    description: str
    first_reads: list[ToolCall] = field(default_factory=list)


def grounding_for(domain_name: str) -> DomainGrounding:
    module_path = GROUNDINGS.get(domain_name)
    if module_path is None:
        raise GroundingError(f"no exploration grounding for domain '{domain_name}' "
                             f"(known: {', '.join(sorted(GROUNDINGS))}); add one to programs.generation.grounding.GROUNDINGS")
    return importlib.import_module(module_path).GROUNDING
