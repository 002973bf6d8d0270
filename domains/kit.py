"""The domain contract for generation: what a domain may tell the generic pipeline.

A domain package's ``DOMAIN`` may carry a :class:`GenerationKit`. Its exploration half
(:class:`ExplorationKit`) says where ids sit in observations, which entity a walk starts
from, how each write's arguments are built from what was observed, and how a write is said
in a customer's words. Its condition half (:class:`ConditionKit`) proposes ambiguous,
changing and infeasible variants, in small pieces a domain gives as it needs (identity,
ownership, wording, ambiguity, change, infeasibility); the domain-general kit fills the
rest. Everything a kit returns is a pydantic model defined
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
from typing import Any, Literal, Protocol, TypeVar

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


# ---------------------------------------------------------------- the condition kit, piece by piece
#
# A domain gives the pieces it knows better than the domain-general kit
# (``trajectory2task.domains.generic_kit``), which fills every piece a domain leaves out. Each
# piece is a frozen dataclass of plain functions: module functions and bound methods both fit.
# Calls come in as ``{"name", "arguments"}``; every function reads an episode and returns
# pydantic models from this module or strings.


class IdentityLookup(Protocol):
    def __call__(self, episode: Episode[Any], user_id: str) -> Call | None: ...


class IdentityText(Protocol):
    def __call__(self, call: Mapping[str, Any]) -> str: ...


class ForgottenIdentity(Protocol):
    def __call__(self, call: Mapping[str, Any]) -> str | None: ...


@dataclass(frozen=True)
class IdentityKit:
    """Who the user is. ``identity_lookup``: the read call that authenticates ``user_id``;
    ``identity_text``: what the user knows about themselves, given that call;
    ``forgotten_identity``: what they do not remember (e.g. their email), or None for nothing."""

    identity_lookup: IdentityLookup
    identity_text: IdentityText
    forgotten_identity: ForgottenIdentity | None = None


class OwnerOfCall(Protocol):
    def __call__(self, episode: Episode[Any], name: str, arguments: Mapping[str, Any]) -> str | None: ...


class RelatedEntities(Protocol):
    def __call__(self, calls: Sequence[Mapping[str, Any]]) -> list[str]: ...


@dataclass(frozen=True)
class OwnershipKit:
    """Whom and what a write acts on. ``owner_of_call``: the user a write acts for;
    ``related_entities``: the entity keys the calls act on (a revised write on an entity
    another write of the goal touches is skipped; an infeasible request about one is related)."""

    owner_of_call: OwnerOfCall
    related_entities: RelatedEntities


class DescribeCall(Protocol):
    def __call__(self, episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                 stated: Mapping[str, Any] | None = None) -> str: ...


class ActionLabel(Protocol):
    def __call__(self, name: str, arguments: Mapping[str, Any]) -> str: ...


class UserStatedIds(Protocol):
    def __call__(self, name: str, arguments: Mapping[str, Any]) -> list[str]: ...


class ChangeMentions(Protocol):
    def __call__(self, episode: Episode[Any], initial: Mapping[str, Any], revised: Mapping[str, Any]) -> list[str]: ...


class CallClaims(Protocol):
    def __call__(self, episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                 user_id: str | None = None) -> list[Claim]: ...


@dataclass(frozen=True)
class WordingKit:
    """How a write is said in the customer's words.

    - ``describe_call``: the write as asked for ("cancel my order #W1 ..."); with ``stated``
      (what an :class:`AmbiguityKit`'s proposal states), only what the open request says;
    - ``action_label``: a short name for it ("the cancellation of order #W1");
    - ``user_stated_ids``: the ids the user must give for it (an order id);
    - ``change_mentions``: the values a revised request must state to tell it from the first;
    - ``call_claims``: what ``describe_call``'s words assert about the database, or None for
      words that assert nothing about records.
    """

    describe_call: DescribeCall
    action_label: ActionLabel
    user_stated_ids: UserStatedIds
    change_mentions: ChangeMentions
    call_claims: CallClaims | None = None


class AmbiguityProposals(Protocol):
    def __call__(self, episode: Episode[Any], calls: Sequence[Mapping[str, Any]]) -> list[AmbiguityProposal]: ...


class AmbiguityCandidates(Protocol):
    def __call__(self, episode: Episode[Any], stated: Mapping[str, Any]) -> list[EntityCandidate]: ...


class AmbiguityTarget(Protocol):
    def __call__(self, stated: Mapping[str, Any], call: Mapping[str, Any]) -> str | None: ...


class WithheldValues(Protocol):
    def __call__(self, episode: Episode[Any], stated: Mapping[str, Any], target: str,
                 candidates: Sequence[EntityCandidate]) -> list[str]: ...


class ReadingCall(Protocol):
    def __call__(self, stated: Mapping[str, Any], call: Mapping[str, Any], candidate: str) -> Call | None: ...


@dataclass(frozen=True)
class AmbiguityKit:
    """Writes said so that two or more entities fit. ``stated`` (what an open request says)
    is the kit's own shape, read back by every function here and by the
    :class:`WordingKit`'s ``describe_call``: a kit with this piece gives its wording too.

    - ``ambiguity_proposals``: the open versions of the given writes;
    - ``ambiguity_candidates``: every entity that fits what a request states;
    - ``ambiguity_target``: the candidate key a write acts on;
    - ``withheld_values``: the values that tell the target from the other candidates;
    - ``reading_call``: the write the open request means for another candidate, or None
      (then the other-reading mutants are not made).
    """

    ambiguity_proposals: AmbiguityProposals
    ambiguity_candidates: AmbiguityCandidates
    ambiguity_target: AmbiguityTarget
    withheld_values: WithheldValues
    reading_call: ReadingCall | None = None


class ChangeAlternatives(Protocol):
    def __call__(self, episode: Episode[Any], call: Mapping[str, Any]) -> list[ChangeAlternative]: ...


@dataclass(frozen=True)
class ChangeKit:
    """Revised goals. ``change_alternatives``: other arguments for a write, each a goal a
    user could change to (the programs replay it and keep those that end elsewhere)."""

    change_alternatives: ChangeAlternatives


class InfeasibleProposals(Protocol):
    def __call__(self, episode: Episode[Any], user_id: str,
                 calls: Sequence[Mapping[str, Any]]) -> list[InfeasibleProposal]: ...


class RequiredLookups(Protocol):
    def __call__(self, episode: Episode[Any], user_id: str, name: str, arguments: Mapping[str, Any]) -> list[Call]: ...


@dataclass(frozen=True)
class InfeasibilityKit:
    """Writes to refuse. ``infeasible_proposals``: writes for ``user_id`` that should be
    refused (those on entities the task's ``calls`` act on marked related);
    ``required_lookups``: the reads an agent needs before it can see that a write is refused."""

    infeasible_proposals: InfeasibleProposals
    required_lookups: RequiredLookups


@dataclass(frozen=True)
class ConditionKit:
    """What a domain knows about its intent conditions, one piece per concern; a piece left
    None is the domain-general kit's (:meth:`over`)."""

    identity: IdentityKit | None = None
    ownership: OwnershipKit | None = None
    wording: WordingKit | None = None
    ambiguity: AmbiguityKit | None = None
    change: ChangeKit | None = None
    infeasibility: InfeasibilityKit | None = None

    def __post_init__(self) -> None:
        if self.ambiguity is not None and self.wording is None:
            raise KitError("a ConditionKit with an AmbiguityKit needs its WordingKit too: describe_call words "
                           "what the ambiguity proposals state, in the kit's own shape")

    def over(self, generic: CompleteConditionKit) -> CompleteConditionKit:
        """This kit's pieces, ``generic``'s where this kit has none."""
        return CompleteConditionKit(
            identity=self.identity if self.identity is not None else generic.identity,
            ownership=self.ownership if self.ownership is not None else generic.ownership,
            wording=self.wording if self.wording is not None else generic.wording,
            ambiguity=self.ambiguity if self.ambiguity is not None else generic.ambiguity,
            change=self.change if self.change is not None else generic.change,
            infeasibility=self.infeasibility if self.infeasibility is not None else generic.infeasibility)


@dataclass(frozen=True)
class CompleteConditionKit:
    """Every piece present: what the programs read (a domain's :class:`ConditionKit` over
    the domain-general kit)."""

    identity: IdentityKit
    ownership: OwnershipKit
    wording: WordingKit
    ambiguity: AmbiguityKit
    change: ChangeKit
    infeasibility: InfeasibilityKit


@dataclass(frozen=True)
class GenerationKit:
    """A domain's optional help for generation: exploration grounding and condition facts."""

    exploration: ExplorationKit
    conditions: ConditionKit | None = None


# ---------------------------------------------------------------- containing a kit's faults


class _Guarded:
    """A kit function whose exception becomes a one-line :class:`KitFault` naming it."""

    def __init__(self, function: Callable[..., Any], where: str) -> None:
        functools.update_wrapper(self, function)
        self.function = function
        self.where = where

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.function(*args, **kwargs)
        except KitFault:
            raise
        except Exception as exc:  # noqa: BLE001 - a domain's code may raise anything; the item fails, not the run
            text = str(exc).strip().splitlines()
            raise KitFault(f"{self.where} raised {type(exc).__name__}: {text[0][:200] if text else ''}"
                           .rstrip(": ")) from exc


def _guarded(function: Any, where: str) -> Any:
    """``function`` with any exception it raises turned into a one-line :class:`KitFault`
    (once: a guarded function is returned as it is)."""
    return function if isinstance(function, _Guarded) else _Guarded(function, where)


_Piece = TypeVar("_Piece", IdentityKit, OwnershipKit, WordingKit, AmbiguityKit, ChangeKit, InfeasibilityKit)


def _guarded_piece(piece: _Piece | None) -> _Piece | None:
    """A condition piece with each of its functions guarded, named by its field."""
    if piece is None:
        return None
    # the piece's declared fields, each a function or an optional one left None
    functions = {f.name: getattr(piece, f.name) for f in dataclasses.fields(piece)}
    return dataclasses.replace(piece, **{name: None if function is None else _guarded(function, f"the kit's {name}")
                                         for name, function in functions.items()})


def guarded_kit(kit: GenerationKit) -> GenerationKit:
    """The same kit, each of its domain functions raising :class:`KitFault` (one line naming
    the function) instead of what the domain's code raised."""
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
    conditions = kit.conditions
    if conditions is not None:
        conditions = ConditionKit(
            identity=_guarded_piece(conditions.identity), ownership=_guarded_piece(conditions.ownership),
            wording=_guarded_piece(conditions.wording), ambiguity=_guarded_piece(conditions.ambiguity),
            change=_guarded_piece(conditions.change), infeasibility=_guarded_piece(conditions.infeasibility))
    return dataclasses.replace(kit, exploration=exploration, conditions=conditions)
