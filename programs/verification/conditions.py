"""Code checks of adapted tasks: each condition holds by what the database says, not by an LM's word.

- ambiguous (:func:`check_ambiguous`): the gold actions are the parent's; under the stated
  constraints of the opening request at least two entities fit (computed from the state
  just before the open write), the gold write's target is one of them, and the values
  that single it out are in ``scenario.withheld_info`` and not in ``reason_for_call`` or
  ``known_info``.
- changing (:func:`check_changing`): the scenario says when (``change_trigger``) and to what
  (``revised_request``) the user changes course; the first goal's writes differ from the
  gold (revised) writes in at least one write or argument; the gold actions replay without
  error to ``expected_state_hash``; the first goal replays without error to a different end
  state; the revised request states every value that tells the revised write apart.
- infeasible (:func:`check_infeasible`): every forbidden action is a write; the required
  actions authenticate a user and replay without error; the gold actions change nothing;
  each forbidden write, run on a fork after the required actions, fails a tool check or
  breaks one of the domain's enumerated policy rules for the authenticated user; the
  scenario names the ids the user must give (the order id).
- policy (:func:`check_policy`, in each condition's check): every gold write (an infeasible
  task's required actions), and every reading of an ambiguous opening, breaks no rule of the
  domain, nor the ownership rule every domain has, as the authenticated user; a changing
  task's revised request says something its first request does not (:func:`says_again`).
- all (:func:`check_static`): the verifier's static verdict (``noop_passes``,
  ``invalid_gold``, ``not_infeasible``, ``invalid_task``, ``gold_breaks_policy``).

What a domain knows for these checks comes from the pieces of its kit's ``ConditionKit``
(``trajectory2task.domains.kit``); each piece a domain leaves out is the domain-general kit's
(``trajectory2task.domains.generic_kit``), which reads only tool specs, observations and forks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel

from trajectory2task.domains import Environment, Episode, PolicyContext
from trajectory2task.domains.kit import CompleteConditionKit
from trajectory2task.programs.verification.verifier import (
    Verifier,
    authenticated_user,
    execute_calls,
    policy_breaches,
    reading_problem,
)
from trajectory2task.signatures.models import Action, Task, ToolCall

RejectionReason = Literal[
    "no_candidates",  # code found nothing to adapt (no ambiguity, no revised goal, no forbidden write)
    # ambiguous
    "gold_changed",  # the adapted gold actions or end state differ from the parent's
    "too_few_candidates",  # fewer than two entities fit the stated constraints
    "target_not_candidate",  # the gold write does not act on one of the fitting entities
    "target_not_distinguishable",  # no value tells the target apart from the other candidates
    "withheld_info_missing",  # a value that singles out the target is not in withheld_info
    "withheld_info_leaked",  # a withheld value appears in the opening (reason_for_call / known_info)
    # changing
    "change_not_stated",  # no change_trigger or no revised_request
    "no_difference",  # the first goal's writes equal the revised goal's
    "revised_gold_invalid",  # the revised gold fails on replay or misses expected_state_hash
    "initial_goal_invalid",  # the first goal fails on replay
    "same_end_state",  # the first goal ends where the revised one does
    "revised_request_incomplete",  # the revised request does not state a value that tells it apart
    "revised_write_no_change",  # the revised write leaves its record as it was (the value already on file)
    # infeasible
    "forbidden_not_write",  # a forbidden action is missing or is not a write tool
    "missing_authentication",  # the required actions do not authenticate a user
    "required_action_fails",  # a required action fails on replay
    "gold_changes_state",  # the gold actions of an infeasible task change the database
    "forbidden_action_succeeds",  # the forbidden write passes every tool check and policy rule
    "target_not_in_scenario",  # the scenario does not give the id the forbidden write acts on
    "not_a_candidate",  # the LM's forbidden action is not one code proposed
    # the verifier's static verdict
    "noop_passes",
    "invalid_gold",
    "not_infeasible",
    "invalid_task",
    "mutant_passes",  # a wrong agent passes the task; the detail names the mutant
    "false_premise",  # the task claims something about the database that is not so
    "single_reading",  # an ambiguous opening with only one reading that runs
    # every condition: policy truth and clean text
    "gold_breaks_policy",  # a gold (or required) write breaks a policy rule for the authenticated user
    "reading_breaks_policy",  # a reading of an ambiguous opening breaks a policy rule (or a tool refuses it)
    "revised_request_same_words",  # a changing task's revised request says what its first request says
]


class ConditionCheck(BaseModel):
    """The outcome of a check: what it found (the evidence), or why it rejects."""

    passed: bool
    reason: RejectionReason | None = None
    detail: str = ""


def _reject(reason: RejectionReason, detail: str) -> ConditionCheck:
    return ConditionCheck(passed=False, reason=reason, detail=detail)


def condition_kit(environment: Environment[Any]) -> CompleteConditionKit:
    """The domain's condition pieces over the domain-general ones (each piece the domain's
    kit leaves out is the generic kit's)."""
    from trajectory2task.domains.generic_kit import generic_conditions

    generic = generic_conditions(environment)
    kit = environment.domain.kit
    return generic if kit is None or kit.conditions is None else kit.conditions.over(generic)


def as_call(action: ToolCall) -> dict[str, Any]:
    """A tool call as the plain data the domain's conditions module takes."""
    return {"name": action.name, "arguments": dict(action.arguments)}


def mentions(text: str, value: str) -> bool:
    """Whether a value occurs in a text as a whole word (case-insensitive); an id starting
    with '#' also counts without it."""
    forms = [value, value[1:]] if value.startswith("#") and len(value) > 1 else [value]
    return any(re.search(rf"(?<![\w#]){re.escape(form)}(?!\w)", text, re.IGNORECASE) for form in forms)


def _writes(environment: Environment[Any], actions: Iterable[ToolCall]) -> list[tuple[str, str]]:
    return [(a.name, json.dumps(a.arguments, sort_keys=True)) for a in actions
            if a.name in environment.tools and environment.tools[a.name].kind == "write"]


def _state_before(environment: Environment[Any], actions: Sequence[ToolCall], index: int) -> Episode[Any]:
    episode = environment.episode()
    execute_calls(episode, actions[:index])
    return episode


def _opening(task: Task) -> str:
    return "\n".join(t for t in (task.scenario.reason_for_call, task.scenario.known_info) if t)


def check_policy(environment: Environment[Any], calls: Sequence[ToolCall], what: str = "gold") -> ConditionCheck:
    """Whether every write of ``calls`` follows the domain's policy rules (and the ownership
    rule every domain has) as the user the calls authenticate; the first breach names its rule."""
    breaches = policy_breaches(environment, calls)
    if breaches:
        return _reject("gold_breaks_policy", f"{what}: {breaches[0].line()}")
    return ConditionCheck(passed=True)


# ---------------------------------------------------------------- ambiguous


def check_ambiguous(environment: Environment[Any], parent: Task, adapted: Task, stated: dict[str, Any],
                    action_index: int) -> ConditionCheck:
    """See the module docstring. ``stated`` and ``action_index`` come from code, not the LM."""
    kit = condition_kit(environment)
    if ([as_call(a) for a in adapted.gold_actions] != [as_call(a) for a in parent.gold_actions]
            or adapted.expected_state_hash != parent.expected_state_hash):
        return _reject("gold_changed", "an ambiguous task keeps the parent's gold actions and end state")
    if not 0 <= action_index < len(adapted.gold_actions):
        return _reject("target_not_candidate", f"no gold action at position {action_index}")
    policy = check_policy(environment, adapted.gold_actions)
    if not policy.passed:
        return policy
    for reading in adapted.readings:
        why = reading_problem(environment, adapted.gold_actions, reading)
        if why is not None:
            return _reject("reading_breaks_policy", why)
    state = _state_before(environment, adapted.gold_actions, action_index)
    candidates = kit.ambiguity.ambiguity_candidates(state, stated)
    keys = [c.key for c in candidates]
    if len(candidates) < 2:
        return _reject("too_few_candidates", f"{len(candidates)} entity fits {json.dumps(stated, sort_keys=True)}: "
                                             f"{', '.join(keys) or 'none'}")
    target = kit.ambiguity.ambiguity_target(stated, as_call(adapted.gold_actions[action_index]))
    if target not in keys:
        return _reject("target_not_candidate", f"the gold write acts on {target}, not one of {', '.join(keys)}")
    withheld = kit.ambiguity.withheld_values(state, stated, target, candidates)
    if not withheld:
        return _reject("target_not_distinguishable", f"nothing tells {target} apart from {', '.join(keys)}")
    said_when_asked = "\n".join(adapted.scenario.withheld_info)
    missing = [v for v in withheld if not mentions(said_when_asked, v)]
    if missing:
        return _reject("withheld_info_missing", f"withheld_info does not give {', '.join(missing)}")
    opening = _opening(adapted)
    leaked = [v for v in withheld if mentions(opening, v)]
    if leaked:
        return _reject("withheld_info_leaked", f"the opening already says {', '.join(leaked)}")
    return ConditionCheck(passed=True, detail=(
        f"{len(candidates)} candidates fit {json.dumps(stated, sort_keys=True)}: {', '.join(keys)}; "
        f"target {target}; withheld until asked: {', '.join(withheld)}"))


# ---------------------------------------------------------------- changing


def check_changing(environment: Environment[Any], adapted: Task, initial_actions: Sequence[ToolCall]) -> ConditionCheck:
    """See the module docstring. ``initial_actions`` is the first goal, as code built it."""
    kit = condition_kit(environment)
    first, revised = _writes(environment, initial_actions), _writes(environment, adapted.gold_actions)
    if first == revised:
        return _reject("no_difference", "the first goal and the revised goal make the same writes")
    gold = environment.episode()
    gold_steps = execute_calls(gold, adapted.gold_actions)
    failed = [s for s in gold_steps if s.error]
    if failed:
        return _reject("revised_gold_invalid", f"{failed[0].call.name} fails: {failed[0].observation}")
    if adapted.expected_state_hash != gold.state_hash():
        return _reject("revised_gold_invalid", "the revised gold does not end at the task's expected state")
    policy = check_policy(environment, adapted.gold_actions, "revised gold")
    if not policy.passed:
        return policy
    initial = environment.episode()
    failed = [s for s in execute_calls(initial, initial_actions) if s.error]
    if failed:
        return _reject("initial_goal_invalid", f"{failed[0].call.name} fails: {failed[0].observation}")
    if initial.state_hash() == gold.state_hash():
        return _reject("same_end_state", "an agent that ignores the change would reach the revised end state")
    scenario = adapted.scenario
    if not (scenario.change_trigger or "").strip() or not (scenario.revised_request or "").strip():
        return _reject("change_not_stated", "the scenario must say when the user changes course and to what")
    if says_again(scenario.revised_request or "", scenario.reason_for_call):
        return _reject("revised_request_same_words", f"the revised request \"{scenario.revised_request}\" says "
                                                     "nothing the first request does not")
    differing = _differing_writes(environment, initial_actions, adapted.gold_actions)
    for index, _, after in differing:
        before = _state_before(environment, adapted.gold_actions, index)
        changed = before.fork()
        changed.call(after.name, after.arguments)
        if changed.state_hash() == before.state_hash():
            return _reject("revised_write_no_change", f"{after.name} {json.dumps(after.arguments, sort_keys=True)} "
                                                      "leaves the database as it was just before it")
    needed: list[str] = []
    for index, before, after in differing:
        state = _state_before(environment, adapted.gold_actions, index)
        needed += kit.wording.change_mentions(state, as_call(before), as_call(after))
    missing = [v for v in dict.fromkeys(needed) if not mentions(scenario.revised_request or "", v)]
    if missing:
        return _reject("revised_request_incomplete", f"the revised request does not state {', '.join(missing)}")
    changes = "; ".join(f"{after.name} {json.dumps(_changed_arguments(before, after), sort_keys=True)}"
                        for _, before, after in differing)
    return ConditionCheck(passed=True, detail=(
        f"revised goal differs in {changes}; first goal ends at {initial.state_hash()}, "
        f"revised at {gold.state_hash()}; user states {', '.join(dict.fromkeys(needed))}"))


# what a revised request may open with before it says what it wants ("Instead, you want to ...")
_CHANGE_LEAD = re.compile(r"^(?:(?:actually|sorry|wait|no|so|instead|rather|on second thought|i have|i've|you have|"
                          r"you've|changed? (?:my|your) mind|i|you|want to|would like to|'d like to|d like to)\b[\s,:;.!-]*)+")


def request_words(text: str) -> str:
    """A request as plain lower-case words, without its lead-in (a change of mind, 'instead',
    'you want to'), for comparing what two requests ask for."""
    words = " ".join(re.findall(r"[\w#@'.:-]+", text.lower()))
    words = " ".join(w.strip(".:,;") for w in words.split())
    return re.sub(r"\s+instead$", "", _CHANGE_LEAD.sub("", words).strip())


def says_again(revised: str, first: str) -> bool:
    """Whether a revised request asks, word for word, for something the first request already
    asks for (two flights said alike, a value said that was there before): an agent told both
    cannot tell what changed."""
    core = request_words(revised)
    return not core or f" {core} " in f" {request_words(first)} "


def _differing_writes(environment: Environment[Any], first: Sequence[ToolCall],
                      revised: Sequence[ToolCall]) -> list[tuple[int, ToolCall, ToolCall]]:
    """(position in the revised gold, first write, revised write) for each write that differs."""
    def writes(actions: Sequence[ToolCall]) -> list[tuple[int, ToolCall]]:
        return [(i, a) for i, a in enumerate(actions) if environment.tools.get(a.name) is not None
                and environment.tools[a.name].kind == "write"]

    out = []
    for (_, before), (index, after) in zip(writes(first), writes(revised)):
        if before.name != after.name or as_call(before) != as_call(after):
            out.append((index, before, after))
    return out


def _changed_arguments(before: ToolCall, after: ToolCall) -> dict[str, Any]:
    return {k: v for k, v in after.arguments.items() if before.arguments.get(k) != v}


# ---------------------------------------------------------------- infeasible


def check_infeasible(environment: Environment[Any], adapted: Task) -> ConditionCheck:
    """See the module docstring."""
    kit = condition_kit(environment)
    forbidden = adapted.actions_should_not_take
    if not forbidden or any(environment.tools.get(a.name) is None or environment.tools[a.name].kind != "write"
                            for a in forbidden):
        return _reject("forbidden_not_write", "an infeasible task forbids at least one write, and only writes")
    episode = environment.episode()
    steps = execute_calls(episode, adapted.actions_should_take)
    failed = [s for s in steps if s.error]
    if failed:
        return _reject("required_action_fails", f"{failed[0].call.name} fails: {failed[0].observation}")
    user_id = authenticated_user(environment, steps)
    if user_id is None:
        return _reject("missing_authentication", "the required actions do not authenticate the user")
    policy = check_policy(environment, adapted.actions_should_take, "required actions")
    if not policy.passed:
        return policy
    gold = environment.episode()
    gold_failed = [s for s in execute_calls(gold, adapted.gold_actions) if s.error]
    if gold_failed or gold.changed() or adapted.expected_state_hash != environment.initial_hash():
        return _reject("gold_changes_state", "an infeasible task's gold actions leave the database as it was")
    findings = []
    for action in forbidden:
        outcome = episode.fork().call(action.name, action.arguments)
        if outcome.error:
            findings.append(f"{action.name} is rejected by the tool: {outcome.error_message}")
            continue
        violations = environment.policy_violations(episode, action.name, action.arguments,
                                                   PolicyContext(user_id=user_id))
        if not violations:
            return _reject("forbidden_action_succeeds",
                           f"{action.name} {json.dumps(action.arguments, sort_keys=True)} succeeds for {user_id} "
                           "and breaks no enumerated policy rule")
        findings.append(f"{action.name} breaks policy: {'; '.join(violations)}")
    scenario_text = "\n".join(t for t in (adapted.scenario.reason_for_call, adapted.scenario.known_info,
                                          adapted.scenario.task_instructions) if t)
    for action in forbidden:
        stated_ids = kit.wording.user_stated_ids(action.name, action.arguments)
        missing = [i for i in stated_ids if not mentions(scenario_text, i)]
        if missing:
            return _reject("target_not_in_scenario", f"the scenario never gives {', '.join(missing)}")
    return ConditionCheck(passed=True, detail="; ".join(findings) + f" (authenticated user {user_id})")


# ---------------------------------------------------------------- all conditions


def check_static(verifier: Verifier, task: Task) -> ConditionCheck:
    """The verifier's static verdict, as a check (first failure reason)."""
    verdict = verifier.verify_task(task)
    if verdict.passed:
        return ConditionCheck(passed=True, detail="; ".join(verdict.details))
    return _reject(verdict.reasons[0], "; ".join(verdict.details))


def same_call(a: ToolCall, b: ToolCall) -> bool:
    return a.name == b.name and json.dumps(a.arguments, sort_keys=True) == json.dumps(b.arguments, sort_keys=True)


def as_action(call: dict[str, Any], action_id: str | None = None) -> Action:
    return Action(name=call["name"], arguments=dict(call["arguments"]), action_id=action_id)
