"""The domain-general generation kit: what every domain gets without writing one.

It knows nothing of any domain. Everything comes from tool specs (roles, parameters and
their JSON types), from observations (every string value an observation shows is an
entity, labelled by the JSON keys it appears under), and from running calls on forks:

- an *alternative* for one argument of a write is another observed value with a label in
  common with the current one (another order id that the user's record lists), or another
  member of the parameter's ``enum``; it counts only when the write with it succeeds on a
  fork and ends in another state;
- *ambiguous*: the opening leaves one argument of a gold write open, and at least one
  alternative gives a write that succeeds and ends elsewhere;
- *changing*: the revised goal replaces one write by such an alternative;
- *infeasible*: a write with an alternative that a tool check refuses (``ToolError``, not a
  malformed call) or that breaks an enumerated policy rule.

Ambiguous readings and changing revisions stay with the user the task serves: an alternative
that names a record of another user (by the domain's ``owner_of``), or that breaks a policy
rule for that user, is never proposed.

A domain's ``ConditionKit`` (``trajectory2task.domains.kit``) gives better candidates and words
for the pieces it has; :func:`generic_conditions` gives every piece, and fills the others.
The programs check every proposal the same way whichever kit made it.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from trajectory2task.domains.kit import (
    AmbiguityKit,
    AmbiguityProposal,
    Call,
    ChangeAlternative,
    ChangeKit,
    CompleteConditionKit,
    EntityCandidate,
    ExplorationKit,
    GroundingHints,
    IdentityKit,
    InfeasibilityKit,
    InfeasibleProposal,
    OwnershipKit,
    WordingKit,
    ObservedStep,
    RequestFacts,
    RequiredFact,
    TrajectoryFacts,
)
from trajectory2task.domains.runtime import Environment, Episode, PolicyContext, ToolSpec, argument_owners

MAX_ALTERNATIVES_PER_ARGUMENT = 6
MAX_SEED_DESCRIPTION = 400


def _words(name: str) -> str:
    return name.replace("_", " ")


def _compact(value: Any, limit: int) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- observed values


def _labelled_strings(value: Any, label: str | None = None) -> Iterator[tuple[str, str]]:
    """(string, label) for every string in a JSON value: the key it sits under, the key of
    the list holding it, or, for an object's keys, the key of that object."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if label is not None and isinstance(inner, dict):
                yield key, label  # {"payment_methods": {"paypal_1": {...}}}: paypal_1 is a payment_methods
            yield from _labelled_strings(inner, key)
    elif isinstance(value, list):
        for inner in value:
            yield from _labelled_strings(inner, label)
    elif isinstance(value, str) and label is not None:
        yield value, label


class ObservedValues:
    """Every string value seen in observations, with the labels it was seen under."""

    def __init__(self, under: ObservedValues | None = None) -> None:
        self.under = under  # values seen before these (the initial database), consulted too
        self.labels: dict[str, set[str]] = {}
        self.by_label: dict[str, dict[str, None]] = {}  # label -> values, in first-seen order

    def add(self, text: str, label: str) -> None:
        self.labels.setdefault(text, set()).add(label)
        self.by_label.setdefault(label, {})[text] = None

    def absorb(self, observation: str) -> None:
        try:
            value = json.loads(observation)
        except ValueError:
            text = observation.strip()
            if text and " " not in text:
                self.add(text, "")  # a bare id as the whole output
            return
        for text, label in _labelled_strings(value):
            self.add(text, label)

    def _labels_of(self, value: str) -> set[str]:
        below = self.under._labels_of(value) if self.under is not None else set()
        return below | self.labels.get(value, set())

    def _values_of(self, label: str, into: dict[str, None]) -> None:
        if self.under is not None:
            self.under._values_of(label, into)
        into.update(self.by_label.get(label, {}))

    def alike(self, value: str) -> list[str]:
        """Other observed values sharing a label with ``value``, in first-seen order per label."""
        out: dict[str, None] = {}
        for label in sorted(self._labels_of(value)):
            self._values_of(label, out)
        out.pop(value, None)
        return list(out)


def _observe(episode: Episode[Any], calls: Sequence[Mapping[str, Any]]) -> ObservedValues:
    seen = ObservedValues()
    for call in calls:
        seen.absorb(episode.call(call["name"], call["arguments"]).output)
    return seen


# ---------------------------------------------------------------- exploration


def describe_steps(env: Environment[Any], steps: Sequence[ObservedStep], seed_entity: str | None) -> TrajectoryFacts:
    """Each write said with its arguments; identity from the first authenticating call."""
    identity: list[RequiredFact] = []
    known_info = ""
    requests: list[RequestFacts] = []
    for step in steps:
        spec = env.tools.get(step.call.name)
        if spec is None or step.error:
            continue
        if spec.authenticates is not None and not identity:
            identity = [RequiredFact(label=_words(k), alternatives=[str(v)]) for k, v in step.call.arguments.items()]
            known_info = "You can identify yourself with " + ", ".join(
                f"{f.label} {f.alternatives[0]}" for f in identity) + "."
        if spec.kind == "write":
            facts = [RequiredFact(label=_words(k), alternatives=[_value_text(v)]) for k, v in step.call.arguments.items()]
            requests.append(RequestFacts(tool=spec.name, sentence=f"You want to {describe_write(spec, step.call.arguments)}.",
                                         facts=facts))
    return TrajectoryFacts(known_info=known_info, identity=identity, requests=requests)


def _value_text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def describe_write(spec: ToolSpec, arguments: Mapping[str, Any], only: Sequence[str] | None = None) -> str:
    """``<tool in words> with <argument in words> <value>, ...`` (only the named arguments)."""
    shown = [(k, v) for k, v in arguments.items() if only is None or k in only]
    details = ", ".join(f"{_words(k)} {_value_text(v)}" for k, v in shown)
    return f"{_words(spec.name)}" + (f" with {details}" if details else "")


def generic_exploration(env: Environment[Any]) -> ExplorationKit:
    """Exploration without a kit: the seed is a record of the database's first table, shown
    to the LM as compact JSON; no write builders, so only the LM explorer can use it."""
    first_table = next(iter(env.base.tables))
    return ExplorationKit(
        hints=GroundingHints(id_keys={}, entity_keys=()),
        seed_table=first_table,
        seed_calls=lambda record: [],
        seed_description=lambda record: f"A {first_table} record: {_compact(record, MAX_SEED_DESCRIPTION)}",
        walk_reads=tuple(name for name, spec in env.tools.items() if spec.kind == "read"),
        write_builders={},
        describe=describe_steps,
    )


# ---------------------------------------------------------------- conditions


def open_reading(stated: Mapping[str, Any], call: Mapping[str, Any], candidate: str) -> Call | None:
    """The write an underspecified request (``stated``, this kit's shape) means for
    ``candidate``: the call with its open argument set to that value."""
    argument = stated.get("open")
    if not isinstance(argument, str):
        return None
    value = next((v for v in stated.get("values") or [] if str(v) == candidate), candidate)
    return Call(name=call["name"], arguments={**call["arguments"], argument: value})


def generic_conditions(environment: Environment[Any]) -> CompleteConditionKit:
    """Every condition piece for any domain, from tool specs, observations and forks (the
    pieces a domain's ``ConditionKit`` leaves out come from here)."""
    kit = GenericConditions(environment)
    return CompleteConditionKit(
        identity=IdentityKit(identity_lookup=kit.identity_lookup, identity_text=kit.identity_text),
        ownership=OwnershipKit(owner_of_call=kit.owner_of_call, related_entities=kit.related_entities),
        # the generic words state arguments only, nothing about records: no call_claims
        wording=WordingKit(describe_call=kit.describe_call, action_label=kit.action_label,
                           user_stated_ids=kit.user_stated_ids, change_mentions=kit.change_mentions),
        ambiguity=AmbiguityKit(ambiguity_proposals=kit.ambiguity_proposals,
                               ambiguity_candidates=kit.ambiguity_candidates, ambiguity_target=kit.ambiguity_target,
                               withheld_values=kit.withheld_values, reading_call=open_reading),
        change=ChangeKit(change_alternatives=kit.change_alternatives),
        infeasibility=InfeasibilityKit(infeasible_proposals=kit.infeasible_proposals,
                                       required_lookups=kit.required_lookups))


class GenericConditions:
    """The domain-general condition functions, sharing one environment; assembled into
    pieces by :func:`generic_conditions`.

    ``stated`` (what an underspecified request states) is ``{"call": name, "open": argument,
    "arguments": the other arguments, "values": the values that fit}``; each fitting value
    is re-checked on a fork by :meth:`ambiguity_candidates`.
    """

    def __init__(self, environment: Environment[Any]) -> None:
        self.environment = environment

    # --- identity
    def identity_lookup(self, episode: Episode[Any], user_id: str) -> Call | None:
        for spec in self.environment.tools.values():
            required = spec.parameters.get("required", [])
            if spec.authenticates is None or len(required) != 1:
                continue
            arguments = {required[0]: user_id}
            result = episode.fork().call(spec.name, arguments)
            if not result.error and spec.authenticates(arguments, result.output) == user_id:
                return Call(name=spec.name, arguments=arguments)
        return None

    def identity_text(self, call: Mapping[str, Any]) -> str:
        return "You can identify yourself with " + ", ".join(
            f"{_words(k)} {v}" for k, v in call["arguments"].items()) + "."

    def owner_of_call(self, episode: Episode[Any], name: str, arguments: Mapping[str, Any]) -> str | None:
        """The one user whose records the call names, if there is exactly one."""
        owners = set(self._owners(episode, arguments).values())
        return owners.pop() if len(owners) == 1 else None

    def _owners(self, episode: Episode[Any], arguments: Mapping[str, Any]) -> dict[str, str]:
        return argument_owners(episode, self.environment.domain.owner_of, arguments)

    def _serves_user(self, episode: Episode[Any], name: str, original: Mapping[str, Any],
                     arguments: Mapping[str, Any], user_id: str | None) -> bool:
        """Whether ``arguments`` (an alternative to ``original``) name no record of a user that
        ``original`` does not, and break no policy rule for the user the task serves (the
        authenticated user, else the one owner of ``original``'s records)."""
        owners = set(self._owners(episode, original).values())
        if not set(self._owners(episode, arguments).values()) <= owners:
            return False
        user = user_id or (next(iter(owners)) if len(owners) == 1 else None)
        return not self.environment.policy_violations(episode, name, arguments, PolicyContext(user_id=user))

    # --- words
    def describe_call(self, episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                      stated: Mapping[str, Any] | None = None) -> str:
        spec = self.environment.tools[name]
        if stated is None:
            return describe_write(spec, arguments)
        return describe_write(spec, arguments, only=list(stated.get("arguments", {})))

    def action_label(self, name: str, arguments: Mapping[str, Any]) -> str:
        return f"the {_words(name)} request"

    def related_entities(self, calls: Sequence[Mapping[str, Any]]) -> list[str]:
        return sorted({v for c in calls for v in c["arguments"].values() if isinstance(v, str)})

    def user_stated_ids(self, name: str, arguments: Mapping[str, Any]) -> list[str]:
        return [v for v in arguments.values() if isinstance(v, str) and v and " " not in v]

    # --- alternatives
    def _alternatives(self, episode: Episode[Any], seen: ObservedValues, call: Mapping[str, Any]
                      ) -> Iterator[tuple[str, Any, Any]]:
        """(argument, current value, other value) for each argument of a call."""
        spec = self.environment.tools[call["name"]]
        properties = spec.parameters.get("properties", {})
        for argument, current in call["arguments"].items():
            options: list[Any] = [v for v in properties.get(argument, {}).get("enum", []) if v != current]
            if isinstance(current, str):
                options += [v for v in seen.alike(current) if v not in options]
            for option in options[:MAX_ALTERNATIVES_PER_ARGUMENT]:
                yield argument, current, option

    def _ends_elsewhere(self, episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                        baseline_hash: str) -> bool:
        fork = episode.fork()
        return not fork.call(name, arguments).error and fork.state_hash() not in (baseline_hash,
                                                                                  episode.state_hash())

    def ambiguity_proposals(self, episode: Episode[Any], calls: Sequence[Mapping[str, Any]]) -> list[AmbiguityProposal]:
        out: list[AmbiguityProposal] = []
        state = episode.fork()
        seen = ObservedValues()
        user_id: str | None = None  # the user the calls authenticate, once they have
        for index, call in enumerate(calls):
            spec = self.environment.tools.get(call["name"])
            if spec is not None and spec.kind == "write":
                options: dict[str, list[Any]] = {}
                for argument, current, option in self._alternatives(state, seen, call):
                    if isinstance(current, str):
                        options.setdefault(argument, [current]).append(option)
                for argument, values in options.items():
                    current = values[0]
                    others = {k: v for k, v in call["arguments"].items() if k != argument}
                    stated = {"call": call["name"], "open": argument, "arguments": others, "values": values,
                              "original": dict(call["arguments"]), "user": user_id}
                    candidates = self.ambiguity_candidates(state, stated)
                    if len(candidates) >= 2 and any(c.key == current for c in candidates):
                        out.append(AmbiguityProposal(
                            kind=f"which_{argument}", open_question=f"which {_words(argument)} you mean",
                            action_index=index, stated=stated, target=current, candidates=candidates,
                            withheld=[current], withheld_sentences=[f"The {_words(argument)} is {current}."]))
                        break  # one open argument per write
            result = state.call(call["name"], call["arguments"])
            seen.absorb(result.output)
            if user_id is None and spec is not None and spec.authenticates is not None and not result.error:
                user_id = spec.authenticates(call["arguments"], result.output)
        return out

    def ambiguity_candidates(self, episode: Episode[Any], stated: Mapping[str, Any]) -> list[EntityCandidate]:
        name, argument = stated.get("call"), stated.get("open")
        if name not in self.environment.tools or not isinstance(argument, str):
            return []
        others = dict(stated.get("arguments") or {})
        values = list(stated.get("values") or [])
        original = stated.get("original") or ({**others, argument: values[0]} if values else others)
        user = stated.get("user") if isinstance(stated.get("user"), str) else None
        out = []
        for value in values:
            arguments = {**others, argument: value}
            fork = episode.fork()
            if not fork.call(name, arguments).error and fork.state_hash() != episode.state_hash() and \
                    self._serves_user(episode, name, original, arguments, user):
                out.append(EntityCandidate(key=str(value), description=f"{_words(argument)} {value}"))
        return out

    def ambiguity_target(self, stated: Mapping[str, Any], call: Mapping[str, Any]) -> str | None:
        value = call["arguments"].get(str(stated.get("open")))
        return None if value is None else str(value)

    def withheld_values(self, episode: Episode[Any], stated: Mapping[str, Any], target: str,
                        candidates: Sequence[EntityCandidate]) -> list[str]:
        return [target] if any(c.key == target for c in candidates) else []

    def change_alternatives(self, episode: Episode[Any], call: Mapping[str, Any]) -> list[ChangeAlternative]:
        seen = _observed_so_far(episode)
        out = []
        for argument, current, option in self._alternatives(episode, seen, call):
            arguments = {**call["arguments"], argument: option}
            fork = episode.fork()
            if not fork.call(call["name"], arguments).error and \
                    self._serves_user(episode, call["name"], call["arguments"], arguments, None):
                out.append(ChangeAlternative(arguments=arguments,
                                             difference=f"{argument}: {json.dumps(current)} -> {json.dumps(option)}"))
        return out

    def change_mentions(self, episode: Episode[Any], initial: Mapping[str, Any], revised: Mapping[str, Any]) -> list[str]:
        return [_value_text(v) for k, v in revised["arguments"].items() if initial["arguments"].get(k) != v]

    # --- infeasible
    def required_lookups(self, episode: Episode[Any], user_id: str, name: str,
                         arguments: Mapping[str, Any]) -> list[Call]:
        """Each read whose required parameters the write's arguments fill by name."""
        out = []
        for spec in self.environment.tools.values():
            required = spec.parameters.get("required", [])
            if spec.kind == "read" and spec.authenticates is None and required and \
                    all(r in arguments for r in required):
                out.append(Call(name=spec.name, arguments={r: arguments[r] for r in required}))
        return out

    def infeasible_proposals(self, episode: Episode[Any], user_id: str,
                             calls: Sequence[Mapping[str, Any]]) -> list[InfeasibleProposal]:
        """The task's writes with one argument swapped for an observed alternative, kept when
        a tool refuses it on a fork or an enumerated policy rule forbids it."""
        state = episode.fork()
        seen = ObservedValues()
        context = PolicyContext(user_id=user_id)
        out: list[InfeasibleProposal] = []
        for call in calls:
            spec = self.environment.tools.get(call["name"])
            if spec is not None and spec.kind == "write":
                for argument, _, option in self._alternatives(state, seen, call):
                    arguments = {**call["arguments"], argument: option}
                    result = episode.fork().call(call["name"], arguments)
                    violations = [] if result.error else self.environment.policy_violations(
                        episode, call["name"], arguments, context)
                    if result.error_kind == "refused":
                        fact = result.error_message
                    elif violations:
                        fact = violations[0]
                    else:
                        continue
                    out.append(InfeasibleProposal(rule=f"{call['name']}:{argument}",
                                                  action=Call(name=call["name"], arguments=arguments),
                                                  fact=fact, related=True))
            seen.absorb(state.call(call["name"], call["arguments"]).output)
        return out


_BASE_VALUES: weakref.WeakKeyDictionary[Any, ObservedValues] = weakref.WeakKeyDictionary()


def _observed_so_far(episode: Episode[Any]) -> ObservedValues:
    """Values the database shows, as an agent could read them: every record of the initial
    database (computed once per loaded database) and the records the episode changed."""
    base = episode.environment.base
    seen = _BASE_VALUES.get(base)
    if seen is None:
        seen = ObservedValues()
        for table, records in base.tables.items():
            for key, record in records.items():
                seen.absorb(json.dumps({table: {key: record.model_dump(mode="json")}}))
        _BASE_VALUES[base] = seen
    changed = episode.changed()
    if not changed:
        return seen
    merged = ObservedValues(under=seen)
    for table, keys in changed.items():
        for key in keys:
            merged.absorb(json.dumps({table: {key: episode.record(table, key)}}))
    return merged
