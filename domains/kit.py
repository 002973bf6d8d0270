"""The domain contract for generation: what a domain may tell the generic pipeline.

A domain package's ``DOMAIN`` may carry a :class:`GenerationKit`. Its exploration half
(:class:`ExplorationKit`) says where ids sit in observations, which entity a walk starts
from, how each write's arguments are built from what was observed, and how a write is said
in a customer's words. Its condition half (:class:`ConditionKit`) proposes ambiguous,
changing and infeasible variants. Everything a kit returns is a pydantic model defined
here; the programs check every proposal by running it on forks of the episode, so a kit
makes candidates and wording better but is never trusted for a condition. A generation run
calls a kit through :func:`guarded_kit`: whatever a kit function raises becomes a one-line
:class:`KitFault`, which fails the item it served, not the run.

Nothing here imports DSPy or the signature models: domains sit below them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from trajectory2task.domains.common_tools import CALCULATOR_TOOL, amount_text, calculator_arguments, evaluate
from trajectory2task.domains.runtime import Environment, Episode


class KitError(LookupError):
    """The domain has no generation kit, or its kit cannot serve a request."""


class KitFault(Exception):
    """A function of a domain's kit raised: the item it served fails (``kit_error``) and a
    run goes on. The message is one line: which function, and the exception's first line."""


class Call(BaseModel):
    """A tool call as plain data: a name and its arguments."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ObservedStep(Protocol):
    """A call with the environment's answer (``trajectory2task.signatures.models.Step`` is one)."""

    @property
    def call(self) -> Call: ...

    @property
    def observation(self) -> str: ...

    @property
    def error(self) -> bool: ...


# ---------------------------------------------------------------- observations


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
        # every absorbed call with its raw output: what is not an entity record (search
        # results, a flight's status as plain text) is still something a builder may use
        self.steps: list[tuple[Call, str]] = []

    def absorb(self, call: Call, observation: str) -> None:
        self.steps.append((call, observation))
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


# ---------------------------------------------------------------- premises


class Claim(BaseModel):
    """One thing a task's text asserts about the initial database, checkable by code.

    ``path`` walks into the record ``table``/``key``: a string step is an object key, or,
    inside a list, selects the element holding that string as one of its values (an order's
    item by its item id); an integer step is a list index. ``op`` says how the value found
    compares with ``value``: equal, not equal, or (for a list) containing it.
    """

    table: str
    key: str
    path: list[str | int] = Field(default_factory=list)
    op: Literal["eq", "ne", "contains"] = "eq"
    value: Any = None
    says: str = ""  # the words of the task that make the claim, e.g. "your pending order #W1"


# ---------------------------------------------------------------- what a task must state


class RequiredFact(BaseModel):
    """A fact the agent must learn from the user; stated when any alternative appears."""

    label: str
    alternatives: list[str]

    def prompt_line(self) -> str:
        return f"{self.label}: {self.alternatives[0]}"


class Calculation(BaseModel):
    """An amount the agent works out from numbers it read (a refund total, a fare
    difference) and must tell the user, who asks for it with ``question``."""

    expression: str  # as an agent would hand it to the `calculate` tool, e.g. "(129.5 + 40) * 2"
    question: str  # e.g. "Before you confirm, ask the agent how much the refund comes to in total."

    @property
    def result(self) -> str:
        """The amount, as `calculate` gives it (one home: ``trajectory2task.domains.common_tools``)."""
        return amount_text(evaluate(self.expression))

    def call(self) -> Call:
        """The calculator call that works this amount out."""
        return Call(name=CALCULATOR_TOOL, arguments=calculator_arguments(self.expression))


class RequestFacts(BaseModel):
    """One write of a trajectory as the user asks for it: a template sentence and its facts."""

    tool: str
    sentence: str
    facts: list[RequiredFact] = Field(default_factory=list)
    claims: list[Claim] = Field(default_factory=list)  # what the sentence asserts about the database
    # amounts the agent must tell the user, each asked for by its question at the end of the sentence
    calculations: list[Calculation] = Field(default_factory=list)

    @property
    def communicate(self) -> list[str]:
        return [c.result for c in self.calculations]

    @property
    def questions(self) -> list[str]:
        return [c.question for c in self.calculations]


class TrajectoryFacts(BaseModel):
    """What a task built from a trajectory must tell the agent, by code, from the trajectory."""

    known_info: str
    unknown_info: str | None = None
    identity: list[RequiredFact] = Field(default_factory=list)
    requests: list[RequestFacts] = Field(default_factory=list)

    def all_facts(self) -> list[RequiredFact]:
        return self.identity + [f for r in self.requests for f in r.facts]

    def all_claims(self) -> list[Claim]:
        return [c for r in self.requests for c in r.claims]

    def all_communicate(self) -> list[str]:
        return list(dict.fromkeys(c for r in self.requests for c in r.communicate))


# ---------------------------------------------------------------- exploration

WriteBuilder = Callable[[Knowledge, random.Random], "dict[str, Any] | None"]


@dataclass(frozen=True)
class ExplorationKit:
    """Everything exploration and task writing need to know about one domain.

    - ``seed_table``: the customers' table; ``seed_calls(record)`` identify one (e.g. by email),
      ``seed_description(record)`` is what the customer could tell an agent, for LM explorers.
    - ``seed_via``: other tables a seed entity may be drawn from (e.g. an order), each with
      the function giving the owning customer's key, the read calls that look the entity up
      first, and the sentence an LM explorer is told about it.
    - ``walk_reads``: the read tools the random walk may call with observed ids.
    - ``write_builders``: per write tool, arguments built from what was observed, or None.
    - ``describe(env, steps, seed_entity)``: the template sentences and required facts of a task.
    """

    hints: GroundingHints
    seed_table: str
    seed_calls: Callable[[dict[str, Any]], list[Call]]
    seed_description: Callable[[dict[str, Any]], str]
    walk_reads: tuple[str, ...]
    write_builders: Mapping[str, WriteBuilder]
    describe: Callable[[Environment[Any], Sequence[ObservedStep], str | None], TrajectoryFacts]
    seed_via: Mapping[str, SeedVia] = field(default_factory=dict)
    seed_for_write: Mapping[str, SeedFilter] = field(default_factory=dict)
    # id kinds (values of ``hints.id_keys``) a customer knows and may say (an order number);
    # the others (payment-method, item, user ids) a customer's text must not contain
    customer_id_kinds: tuple[str, ...] = ()
    # the amounts an agent works out before a write (the state just before it), which the
    # task asks it to tell; the baseline explorer runs about half of them through `calculate`
    calculations: Callable[[Episode[Any], Call], list[Calculation]] | None = None

    def sample_seed(self, episode: Episode[Any], rng: random.Random, for_write: str | None = None) -> Seed:
        """A seed entity drawn with ``rng``: a customer, or an entity of a ``seed_via`` table.

        With ``for_write``, and a ``seed_for_write`` entry for that tool, the entity is drawn
        among those the write applies to (a walk meant to cancel starts from a pending order),
        so that the intended write is not lost for want of a fitting entity."""
        fit = self.seed_for_write.get(for_write) if for_write else None
        if fit is not None:
            table = fit.table
            keys = [k for k in sorted(episode.keys(table)) if fit.test(episode, episode.get(table, k))]
        else:
            table = rng.choice([self.seed_table, *sorted(self.seed_via)])
            keys = sorted(episode.keys(table))
        if not keys:
            raise KitError(f"table {table} is empty: nothing to explore from")
        key = rng.choice(keys)
        record = episode.record(table, key)
        assert record is not None
        if table == self.seed_table:
            return Seed(entity=f"{table}/{key}", customer=record, description=self.seed_description(record))
        via = self.seed_via[table]
        customer = episode.record(self.seed_table, via.customer_key(record))
        if customer is None:
            raise KitError(f"{table}/{key} has no customer in {self.seed_table}")
        return Seed(entity=f"{table}/{key}", customer=customer, first_reads=via.first_reads(record),
                    description=f"{self.seed_description(customer)} {via.describe(record)}")


@dataclass(frozen=True)
class SeedVia:
    """How a non-customer seed entity leads to its customer and what to look up first."""

    customer_key: Callable[[dict[str, Any]], str]
    first_reads: Callable[[dict[str, Any]], list[Call]]
    describe: Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class SeedFilter:
    """The entities a write tool applies to: a table and a test on its (pydantic) records.

    ``applies_in`` is the same test for facts that live in other tables (whether an airline
    reservation's flight was cancelled is in the flights table): called with the episode
    and the record, and used instead of ``applies`` when given."""

    table: str
    applies: Callable[[Any], bool] = lambda record: True
    applies_in: Callable[[Episode[Any], Any], bool] | None = None

    def test(self, episode: Episode[Any], record: Any) -> bool:
        return self.applies_in(episode, record) if self.applies_in is not None else self.applies(record)


@dataclass(frozen=True)
class Seed:
    """Where an exploration starts: the entity drawn ('table/key') and its customer."""

    entity: str
    customer: dict[str, Any]
    description: str
    first_reads: list[Call] = field(default_factory=list)


# ---------------------------------------------------------------- condition proposals


class EntityCandidate(BaseModel):
    """One entity that fits an underspecified request."""

    key: str
    description: str


class AmbiguityProposal(BaseModel):
    """A write of the task said so that two or more entities fit it."""

    kind: str  # what the request leaves open, e.g. "which_order"
    open_question: str  # the same, in words: "which order you mean"
    action_index: int  # position of the write, in the given actions, that the request leaves open
    stated: dict[str, Any]  # what the opening request does say (the kit's own shape)
    target: str  # the candidate key the gold write acts on
    candidates: list[EntityCandidate]
    withheld: list[str]  # the values that single out the target; the user keeps them back
    withheld_sentences: list[str]  # one sentence per withheld value, as the user says it when asked


class ChangeAlternative(BaseModel):
    """Other arguments for one write of the task: the revised goal of a changing task."""

    arguments: dict[str, Any]
    difference: str  # e.g. "reason: 'no longer needed' -> 'ordered by mistake'"


class InfeasibleProposal(BaseModel):
    """A write the user may ask for that a tool check or a policy rule refuses."""

    rule: str  # which real rule the request runs into, e.g. "cancel_non_pending"
    action: Call  # the forbidden write
    fact: str  # why it cannot be done, in words
    related: bool  # acts on an entity the parent task touches
    request: str | None = None  # how the user asks for it, where describe_call's words would not fit
    handoff: Call | None = None  # the hand-off the policy requires after the refusal, if any
    claims: list[Claim] = Field(default_factory=list)  # what the request asserts about the database


class ConditionKit(Protocol):
    """What a domain knows about its intent conditions. Every method reads an episode
    and returns pydantic models or strings; calls come in as ``{"name", "arguments"}``."""

    def identity_lookup(self, episode: Episode[Any], user_id: str) -> Call | None:
        """The read call that authenticates ``user_id``."""

    def identity_text(self, call: Mapping[str, Any]) -> str:
        """What the user knows about themselves, given the authenticating call."""

    def forgotten_identity(self, call: Mapping[str, Any]) -> str | None:
        """What the user does not remember (e.g. their email), given the authenticating call."""

    def owner_of_call(self, episode: Episode[Any], name: str, arguments: Mapping[str, Any]) -> str | None:
        """The user a write acts for."""

    def describe_call(self, episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                      stated: Mapping[str, Any] | None = None) -> str:
        """A write in the customer's words ("cancel my order #W1 ..."); with ``stated``,
        only what an underspecified request says."""

    def call_claims(self, episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                    user_id: str | None = None) -> list[Claim]:
        """What ``describe_call``'s words assert about the database, as claims (optional: a
        kit without it makes no claims)."""

    def reading_call(self, stated: Mapping[str, Any], call: Mapping[str, Any], candidate: str) -> Call | None:
        """The write an ambiguous request means for another candidate (optional)."""

    def action_label(self, name: str, arguments: Mapping[str, Any]) -> str:
        """A short name for a write ("the cancellation of order #W1")."""

    def related_entities(self, calls: Sequence[Mapping[str, Any]]) -> list[str]:
        """Entity keys the given calls act on (an infeasible request about one is related)."""

    def ambiguity_proposals(self, episode: Episode[Any], calls: Sequence[Mapping[str, Any]]) -> list[AmbiguityProposal]: ...

    def ambiguity_candidates(self, episode: Episode[Any], stated: Mapping[str, Any]) -> list[EntityCandidate]:
        """Every entity that fits what an underspecified request states."""

    def ambiguity_target(self, stated: Mapping[str, Any], call: Mapping[str, Any]) -> str | None:
        """The candidate key a write acts on."""

    def withheld_values(self, episode: Episode[Any], stated: Mapping[str, Any], target: str,
                        candidates: Sequence[EntityCandidate]) -> list[str]:
        """The values that tell the target apart from the other candidates."""

    def change_alternatives(self, episode: Episode[Any], call: Mapping[str, Any]) -> list[ChangeAlternative]: ...

    def change_mentions(self, episode: Episode[Any], initial: Mapping[str, Any], revised: Mapping[str, Any]) -> list[str]:
        """The values a revised request must state to tell it from the first one."""

    def user_stated_ids(self, name: str, arguments: Mapping[str, Any]) -> list[str]:
        """The ids the user must give for a write (an order id)."""

    def required_lookups(self, episode: Episode[Any], user_id: str, name: str,
                         arguments: Mapping[str, Any]) -> list[Call]:
        """The reads an agent needs before it can see that a write is refused."""

    def infeasible_proposals(self, episode: Episode[Any], user_id: str,
                             calls: Sequence[Mapping[str, Any]]) -> list[InfeasibleProposal]:
        """Writes for ``user_id`` that should be refused; those on entities the task's
        ``calls`` act on are marked related."""


@dataclass(frozen=True)
class GenerationKit:
    """A domain's optional help for generation: exploration grounding and condition facts."""

    exploration: ExplorationKit
    conditions: ConditionKit | None = None


# ---------------------------------------------------------------- containing a kit's faults


def _guarded(function: Callable[..., Any], where: str) -> Callable[..., Any]:
    """``function`` with any exception it raises turned into a one-line :class:`KitFault`."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except KitFault:
            raise
        except Exception as exc:  # noqa: BLE001 - a domain's code may raise anything; the item fails, not the run
            text = str(exc).strip().splitlines()
            raise KitFault(f"{where} raised {type(exc).__name__}: {text[0][:200] if text else ''}".rstrip(": ")) \
                from exc

    return call


class _GuardedConditions:
    """A domain's ``ConditionKit`` whose every method raises :class:`KitFault` instead of
    whatever the domain's code raised; a method the kit lacks stays missing (``getattr``
    with a default still works)."""

    def __init__(self, conditions: Any) -> None:
        self._conditions = conditions

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._conditions, name)
        return _guarded(value, f"the kit's {name}") if callable(value) else value


def guarded_kit(kit: GenerationKit) -> GenerationKit:
    """The same kit, each of its domain functions raising :class:`KitFault` (one line naming
    the function) instead of what the domain's code raised."""
    if isinstance(kit.conditions, _GuardedConditions):
        return kit
    ex = kit.exploration
    exploration = dataclasses.replace(
        ex,
        seed_calls=_guarded(ex.seed_calls, "the kit's seed_calls"),
        seed_description=_guarded(ex.seed_description, "the kit's seed_description"),
        write_builders={name: _guarded(build, f"the kit's write builder for {name}")
                        for name, build in ex.write_builders.items()},
        describe=_guarded(ex.describe, "the kit's describe"),
        seed_via={table: SeedVia(customer_key=_guarded(via.customer_key, f"the kit's seed_via[{table}]"),
                                 first_reads=_guarded(via.first_reads, f"the kit's seed_via[{table}]"),
                                 describe=_guarded(via.describe, f"the kit's seed_via[{table}]"))
                  for table, via in ex.seed_via.items()},
        seed_for_write={name: dataclasses.replace(
            fit, applies=_guarded(fit.applies, f"the kit's seed_for_write[{name}]"),
            applies_in=None if fit.applies_in is None else _guarded(fit.applies_in, f"the kit's seed_for_write[{name}]"))
            for name, fit in ex.seed_for_write.items()},
        calculations=None if ex.calculations is None else _guarded(ex.calculations, "the kit's calculations"),
    )
    conditions = None if kit.conditions is None else _GuardedConditions(kit.conditions)
    return dataclasses.replace(kit, exploration=exploration, conditions=conditions)
