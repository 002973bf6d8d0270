"""Adapt a task to a user condition: general, ambiguous, changing or infeasible.

One control flow (`adaptation_steps`) serves both programs: code proposes (the candidates of
an ambiguous request, a revised goal that replays cleanly, forbidden writes confirmed by
running them on a copy of the database), a wording step writes the scenario, and code checks
the result (``trajectory2task.programs.verification.conditions``) and runs the verifier's
static checks. Only the wording differs: :class:`BaselineAdaptation` (here) fills templates;
``adaptation.IntentAdaptation`` asks an LM. A rejected adaptation comes back with
``task=None`` and a machine-readable ``rejected_reason`` (see
``trajectory2task.programs.verification.conditions.RejectionReason``). This module imports
no DSPy, so an offline run (and a Ray worker's start) never loads it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from trajectory2task.domains import Environment, Episode
from trajectory2task.domains.common_tools import CALCULATOR_TOOL
from trajectory2task.domains.kit import AmbiguityProposal, Call, Claim, CompleteConditionKit
from trajectory2task.programs.generation.grounding import lm_kit
from trajectory2task.programs.generation.steps import Steps, run_steps
from trajectory2task.programs.verification.conditions import (
    ConditionCheck,
    as_action,
    as_call,
    check_ambiguous,
    check_changing,
    check_infeasible,
    check_policy,
    check_static,
    condition_kit,
    same_call,
    says_again,
)
from trajectory2task.programs.verification.verifier import Verifier, authenticated_user, execute_calls, reading_problem
from trajectory2task.signatures.adaptation_facts import (
    AmbiguityFacts,
    ChangeFacts,
    InfeasibilityFacts,
    InfeasibleCandidate,
)
from trajectory2task.signatures.models import CONDITIONS, Action, Reading, Task, TaskDescription, Trajectory, UserScenario

class AdaptationResult(BaseModel):
    """The adapted task, or why none was made."""

    task: Task | None
    rejected_reason: str | None = None
    detail: str | None = None  # what the checks found: the evidence, or the problem


# ---------------------------------------------------------------- shared context


@dataclass
class AdaptationContext:
    environment: Environment[Any]
    kit: CompleteConditionKit
    parent: Task
    trajectory: Trajectory
    rng: random.Random
    user_id: str | None
    identity: dict[str, Any] | None  # the look-up that authenticates the user, as a call
    prefer_write: str | None = None  # infeasible: forbid a write of this tool when one is refused

    @property
    def calls(self) -> list[dict[str, Any]]:
        return [as_call(a) for a in self.parent.gold_actions]

    def is_write(self, name: str) -> bool:
        spec = self.environment.tools.get(name)
        return spec is not None and spec.kind == "write"

    def state_before(self, index: int) -> Episode[Any]:
        episode = self.environment.episode()
        execute_calls(episode, self.parent.gold_actions[:index])
        return episode

    def identity_text(self) -> str | None:
        return self.kit.identity.identity_text(self.identity) if self.identity else None

    def adapted(self, condition: str, scenario: UserScenario, **fields: Any) -> Task:
        if scenario.domain is None:
            scenario = scenario.model_copy(update={"domain": self.parent.scenario.domain or self.parent.domain})
        update: dict[str, Any] = {"id": f"{self.parent.id}-{condition}", "condition": condition,
                                  "parent_task_id": self.parent.id, "scenario": scenario,
                                  "provenance": self.parent.provenance.model_copy(deep=True)}
        update.update(fields)
        return self.parent.model_copy(deep=True, update=update)


def _context(task: Task, trajectory: Trajectory, environment: Environment[Any], seed: int,
             condition: str) -> AdaptationContext:
    kit = condition_kit(environment)
    episode = environment.episode()
    identity_tools = {name for name, spec in environment.tools.items() if spec.authenticates is not None}
    identity = next((as_call(s.call) for s in trajectory.steps if s.call.name in identity_tools and not s.error), None)
    if identity is None:
        identity = next((as_call(a) for a in task.gold_actions if a.name in identity_tools), None)
    user_id = authenticated_user(environment, trajectory.steps)
    if user_id is None and identity is not None:
        user_id = authenticated_user(environment, execute_calls(environment.episode(), [as_action(identity)]))
    if user_id is None:
        user_id = next((kit.ownership.owner_of_call(episode, a.name, a.arguments) for a in task.gold_actions
                        if environment.tools.get(a.name) and environment.tools[a.name].kind == "write"), None)
    if user_id is None and trajectory.seed_entity and "/" in trajectory.seed_entity:
        table, _, key = trajectory.seed_entity.partition("/")
        user_id = environment.domain.owner_of(episode, table, key)
    if identity is None and user_id is not None:
        lookup = kit.identity.identity_lookup(episode, user_id)
        identity = None if lookup is None else lookup.model_dump()
    # a string seed hashes the same on every run and machine
    rng = random.Random(f"{seed}:{task.id}:{condition}")
    return AdaptationContext(environment, kit, task, trajectory, rng, user_id, identity)


def _call_claims(ctx: AdaptationContext, state: Episode[Any], call: dict[str, Any]) -> list[Claim]:
    """What the kit's words for a write assert (none when the kit makes no claims)."""
    claims = ctx.kit.wording.call_claims
    return [] if claims is None else list(claims(state, call["name"], call["arguments"], ctx.user_id))


def _write_claims(ctx: AdaptationContext, calls: Sequence[dict[str, Any]]) -> list[Claim]:
    """Claims of every write of ``calls``, each from the state the parent's gold reaches
    before it (the calls keep the parent's positions)."""
    out: list[Claim] = []
    for index, call in enumerate(calls):
        if ctx.is_write(call["name"]):
            out += _call_claims(ctx, ctx.state_before(index), call)
    return _unique(out)


def _unique(claims: Sequence[Claim]) -> list[Claim]:
    seen: set[str] = set()
    out = []
    for claim in claims:
        key = claim.model_dump_json(exclude={"says"})
        if key not in seen:
            seen.add(key)
            out.append(claim)
    return out


def _rejected(check: ConditionCheck) -> AdaptationResult:
    return AdaptationResult(task=None, rejected_reason=check.reason, detail=check.detail)


def _finish(ctx: AdaptationContext, task: Task, check: ConditionCheck) -> AdaptationResult:
    if not check.passed:
        return _rejected(check)
    task = task.model_copy(update={"condition_evidence": check.detail})
    static = check_static(Verifier(ctx.environment, discriminative=True), task)
    if not static.passed:
        return _rejected(static)
    return AdaptationResult(task=task, detail=check.detail)


# ---------------------------------------------------------------- wording


class Wording(Protocol):
    """What differs between the LM adaptation and the baseline: the words."""

    # each also returns the claims its words make about the database beyond the kit's (the LM's own)
    def word_ambiguous(self, ctx: AdaptationContext, facts: AmbiguityFacts) -> tuple[UserScenario, list[str], list[Claim]]: ...

    def word_changing(self, ctx: AdaptationContext, facts: ChangeFacts) -> tuple[UserScenario, str, str, list[Claim]]: ...

    def word_infeasible(self, ctx: AdaptationContext, facts: InfeasibilityFacts) -> tuple[Action, UserScenario, str,
                                                                                 list[Claim]]: ...


@dataclass(frozen=True)
class WordingRequest:
    """What the control flow asks the wording step for: ``word_<condition>(ctx, facts)``."""

    condition: str
    ctx: AdaptationContext
    facts: Any


def worded(wording: Wording, request: WordingRequest) -> Any:
    if request.condition == "ambiguous":
        return wording.word_ambiguous(request.ctx, request.facts)
    if request.condition == "changing":
        return wording.word_changing(request.ctx, request.facts)
    return wording.word_infeasible(request.ctx, request.facts)


def adaptation_steps(task: Task, trajectory: Trajectory, condition: str, environment: Environment[Any],
           seed: int, prefer_write: str | None = None) -> Steps[AdaptationResult]:
    """The adaptation: yields one `WordingRequest`, receives the words, checks the result."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; conditions are {', '.join(CONDITIONS)}")
    if condition == "general":
        return AdaptationResult(task=task)
    ctx = _context(task, trajectory, environment, seed, condition)
    ctx.prefer_write = prefer_write
    if condition == "ambiguous":
        return (yield from _adapt_ambiguous(ctx))
    if condition == "changing":
        return (yield from _adapt_changing(ctx))
    return (yield from _adapt_infeasible(ctx))


def _no_candidates(detail: str) -> AdaptationResult:
    return AdaptationResult(task=None, rejected_reason="no_candidates", detail=detail)


def _adapt_ambiguous(ctx: AdaptationContext) -> Steps[AdaptationResult]:
    proposals = ctx.kit.ambiguity.ambiguity_proposals(ctx.environment.episode(), ctx.calls)
    if not proposals:
        return _no_candidates("no write of the task has an underspecified version that two entities fit")
    # a proposal whose every reading a careful agent may act on (the policy allows it); the
    # others are proposed only when none is, for the check to say why
    allowed = [p for p in proposals if not any(
        reading_problem(ctx.environment, ctx.parent.gold_actions, r) for r in _readings(ctx, p))]
    proposal = ctx.rng.choice(allowed or proposals)
    index = proposal.action_index
    state = ctx.state_before(index)
    call = ctx.calls[index]
    facts = AmbiguityFacts(
        kind=proposal.kind, open_question=proposal.open_question, action_index=index, stated=proposal.stated,
        target=proposal.target, candidates=proposal.candidates, withheld=proposal.withheld,
        withheld_sentences=proposal.withheld_sentences,
        open_request=ctx.kit.wording.describe_call(state, call["name"], call["arguments"], proposal.stated))
    scenario, withheld_info, said_claims = yield WordingRequest("ambiguous", ctx, facts)
    scenario = _asking(ctx, scenario.model_copy(update={"withheld_info": list(withheld_info)}),
                       ctx.parent.gold_actions)
    readings = _readings(ctx, proposal)
    purpose = (f"ambiguous: the opening request leaves open {proposal.open_question} "
               f"({len(proposal.candidates)} candidates fit); the agent must ask before "
               f"{ctx.kit.wording.action_label(call['name'], call['arguments'])}.")
    adapted = ctx.adapted("ambiguous", scenario, readings=readings, **_communication_of(ctx, ctx.parent.gold_actions),
                          claims=_unique(_write_claims(ctx, ctx.calls) + said_claims),
                          description=TaskDescription(purpose=purpose))
    return _finish(ctx, adapted, check_ambiguous(ctx.environment, ctx.parent, adapted, proposal.stated, index))


def _readings(ctx: AdaptationContext, proposal: AmbiguityProposal) -> list[Reading]:
    """The write the opening means for each candidate of an ambiguity proposal (where the kit says)."""
    reading_call = ctx.kit.ambiguity.reading_call
    call = ctx.calls[proposal.action_index]
    readings = []
    for candidate in proposal.candidates:
        meant = reading_call(proposal.stated, call, candidate.key) if reading_call is not None else None
        if meant is not None:
            readings.append(Reading(candidate=candidate.key, action_index=proposal.action_index,
                                    action=as_action(meant.model_dump()), target=candidate.key == proposal.target))
    return readings


# a change of mind said in the revised request itself: the scenario's fold already says it
_SAID_CHANGE_OF_MIND = re.compile(r"^\s*(?:(?:actually|so|okay|ok|sorry)[\s,]+)?(?:i|you)(?: have|'ve)? changed? "
                                  r"(?:my|your) mind\s*[:,;.!\u2013\u2014-]*\s*", re.IGNORECASE)


def plain_revision(text: str) -> str:
    """The revised request as what the user asks for, without a leading "I have changed my mind:"
    (``UserScenario.folded_instructions`` introduces it with "change your mind:" already)."""
    stripped = _SAID_CHANGE_OF_MIND.sub("", text)
    return stripped[:1].upper() + stripped[1:] if stripped else text


def _adapt_changing(ctx: AdaptationContext) -> Steps[AdaptationResult]:
    chosen = _revised_goal(ctx)
    if chosen is None:
        return _no_candidates("no write of the task has another version that replays cleanly to another end state")
    index, revised_call, end_hash, difference = chosen
    state = ctx.state_before(index)
    initial_call = ctx.calls[index]
    writes = [(i, c) for i, c in enumerate(ctx.calls) if ctx.is_write(c["name"])]
    facts = ChangeFacts(
        action_index=index, initial_action=ctx.parent.gold_actions[index],
        revised_action=ctx.parent.gold_actions[index].model_copy(update={"arguments": revised_call["arguments"]}),
        difference=difference,
        initial_request="; ".join(ctx.kit.wording.describe_call(ctx.state_before(i), c["name"], c["arguments"])
                                  for i, c in writes),
        revised_request=ctx.kit.wording.describe_call(state, revised_call["name"], revised_call["arguments"]),
        must_mention=ctx.kit.wording.change_mentions(state, initial_call, revised_call),
        action_label=ctx.kit.wording.action_label(initial_call["name"], initial_call["arguments"]))
    scenario, change_trigger, revised_request, said_claims = yield WordingRequest("changing", ctx, facts)
    scenario = scenario.model_copy(update={"change_trigger": change_trigger,
                                           "revised_request": plain_revision(revised_request)})
    gold = _recalculated(ctx, index, facts.revised_action)
    scenario = _asking(ctx, scenario, gold)
    # the first version of the changed write must not be carried out
    first_write = ctx.parent.gold_actions[index].model_copy(update={"action_id": None, "requestor": None})
    purpose = (f"changing: the user first asks for {facts.action_label}, then changes it before confirming "
               f"({facts.difference}); only the revised version may be carried out.")
    claims = _write_claims(ctx, ctx.calls) + _call_claims(ctx, state, revised_call) + said_claims
    adapted = ctx.adapted("changing", scenario, gold_actions=gold, expected_state_hash=end_hash, nl_assertions=None,
                          first_goal=[a.model_copy() for a in ctx.parent.gold_actions],
                          actions_should_not_take=[first_write], claims=_unique(claims),
                          description=TaskDescription(purpose=purpose), **_communication_of(ctx, gold))
    return _finish(ctx, adapted, check_changing(ctx.environment, adapted, ctx.parent.gold_actions))


def _amounts(ctx: AdaptationContext, gold: Sequence[Action]) -> tuple[list[str], list[str]]:
    """The amounts the domain's kit works out for the writes of ``gold`` (what the agent must
    tell), and the questions that ask for them."""
    grounding = lm_kit(ctx.environment)
    facts = grounding.describe(ctx.environment, execute_calls(ctx.environment.episode(), gold),
                               ctx.trajectory.seed_entity)
    return facts.all_communicate(), list(dict.fromkeys(q for r in facts.requests for q in r.questions))


def _recalculated(ctx: AdaptationContext, index: int, revised: Action) -> list[Action]:
    """The parent's gold with its write at ``index`` revised, and every sum the gold works
    out with `calculate` before a write redone on the revised goal's state: the first goal's
    sums (of the changed write, or of a later one it affects) are no step toward the revised goal."""
    gold = list(ctx.parent.gold_actions)
    gold[index] = revised
    kit = lm_kit(ctx.environment)
    if kit.calculations is None or not any(a.name == CALCULATOR_TOOL for a in gold):
        return gold
    episode = ctx.environment.episode()
    out: list[Action] = []
    pending: list[Action] = []
    for action in gold:
        if action.name == CALCULATOR_TOOL:
            pending.append(action)
            continue
        if pending:
            sums = kit.calculations(episode, Call(name=action.name, arguments=dict(action.arguments)))
            out += [old.model_copy(update={"arguments": c.call().arguments})
                    for old, c in zip(pending, sums)]
            pending = []
        out.append(action)
        episode.call(action.name, action.arguments)
    return out


def _communication_of(ctx: AdaptationContext, gold: list[Action]) -> dict[str, Any]:
    """What the agent must tell the user for an adapted goal: the amounts of *its* writes
    (a changing task's revised write, not the first goal's, whose amount would now be
    wrong), plus the parent's other strings (an LM writer's) that its replay still shows."""
    amounts, _ = _amounts(ctx, gold)
    parent_amounts, _ = _amounts(ctx, ctx.parent.gold_actions)
    observations = "\n".join(s.observation for s in execute_calls(ctx.environment.episode(), gold))
    others = [info for info in ctx.parent.communicate_info if info not in parent_amounts and info in observations]
    kept = list(dict.fromkeys(amounts + others))
    basis = [b for b in ctx.parent.reward_basis if b != "COMMUNICATE"] + (["COMMUNICATE"] if kept else [])
    return {"communicate_info": kept, "reward_basis": basis}


def _asking(ctx: AdaptationContext, scenario: UserScenario, gold: Sequence[Action]) -> UserScenario:
    """The scenario with the user's questions for the amounts of ``gold`` in its
    instructions: code's words, so that what the agent must tell is asked for, LM or not."""
    _, questions = _amounts(ctx, gold)
    asked = [q for q in questions if q not in (scenario.task_instructions or "")]
    if not asked:
        return scenario
    return scenario.model_copy(update={"task_instructions": " ".join(
        [t for t in (scenario.task_instructions or "",) if t] + asked)})


def _revised_goal(ctx: AdaptationContext) -> tuple[int, dict[str, Any], str, str] | None:
    """A write of the task with other arguments, such that the whole goal still replays
    cleanly and ends elsewhere: (position, revised call, revised end state, difference)."""
    original_end = ctx.environment.episode()
    execute_calls(original_end, ctx.parent.gold_actions)
    positions = [i for i, c in enumerate(ctx.calls) if ctx.is_write(c["name"])]
    ctx.rng.shuffle(positions)
    for index in positions:
        alternatives = ctx.kit.change.change_alternatives(ctx.state_before(index), ctx.calls[index])
        ctx.rng.shuffle(alternatives)
        others = {e for i, c in enumerate(ctx.calls) if i != index and ctx.is_write(c["name"])
                  for e in ctx.kit.ownership.related_entities([c])}
        for alternative in alternatives:
            revised = {"name": ctx.calls[index]["name"], "arguments": alternative.arguments}
            if others & set(ctx.kit.ownership.related_entities([revised])):
                continue  # a record another write of the goal also writes: one of them would be pointless
            episode = ctx.environment.episode()
            calls = list(ctx.parent.gold_actions)
            calls[index] = as_action(revised)
            if any(s.error for s in execute_calls(episode, calls)):
                continue
            if not check_policy(ctx.environment, calls).passed:  # a revision the policy forbids is no goal
                continue
            state = ctx.state_before(index)
            first = ctx.calls[index]
            first_words = ctx.kit.wording.describe_call(state, first["name"], first["arguments"])
            if says_again(ctx.kit.wording.describe_call(state, revised["name"], revised["arguments"]), first_words):
                continue  # said like the first request: the user could not tell the agent what changed
            # another end state, and not the initial one (a do-nothing agent would pass that)
            if episode.state_hash() not in (original_end.state_hash(), ctx.environment.initial_hash()):
                return index, revised, episode.state_hash(), alternative.difference
    return None


def _adapt_infeasible(ctx: AdaptationContext) -> Steps[AdaptationResult]:
    if ctx.user_id is None or ctx.identity is None:
        return _no_candidates("the task names no user to authenticate")
    candidates = _infeasible_candidates(ctx)
    if not candidates:
        return _no_candidates(f"no write for {ctx.user_id} is refused by a tool check or a policy rule")
    preferred = [c for c in candidates if c.action.name == ctx.prefer_write]
    candidates = preferred or candidates  # coverage steering asks for a forbidden write of one tool
    facts = InfeasibilityFacts(user_id=ctx.user_id, candidates=candidates)
    forbidden, scenario, explanation, said_claims = yield WordingRequest("infeasible", ctx, facts)
    chosen = next((c for c in candidates if same_call(forbidden, c.action)), None)
    required = _required_actions(ctx, forbidden, chosen.handoff if chosen else None)
    label = ctx.kit.wording.action_label(forbidden.name, forbidden.arguments)
    adapted = ctx.adapted(
        "infeasible", scenario, gold_actions=required, actions_should_take=[a.model_copy() for a in required],
        actions_should_not_take=[forbidden], expected_state_hash=ctx.environment.initial_hash(),
        communicate_info=[], reward_basis=["DB", "ACTION"], nl_assertions=None,
        claims=_unique((chosen.claims if chosen else []) + said_claims),
        description=TaskDescription(purpose=f"infeasible: the user asks for {label}, which must be refused"
                                            + (", then handed to a human agent" if chosen and chosen.handoff else "")
                                            + (f" ({chosen.rule})." if chosen else "."),
                                    relevant_policies=explanation))
    check = check_infeasible(ctx.environment, adapted)
    if check.passed and not any(same_call(forbidden, c.action) for c in candidates):
        check = ConditionCheck(passed=False, reason="not_a_candidate",
                               detail=f"{forbidden.name} {forbidden.arguments} is not one of the proposed writes")
    return _finish(ctx, adapted, check)


def _required_actions(ctx: AdaptationContext, forbidden: Action, handoff: Action | None = None) -> list[Action]:
    assert ctx.identity is not None and ctx.user_id is not None
    lookups = ctx.kit.infeasibility.required_lookups(ctx.environment.episode(), ctx.user_id, forbidden.name,
                                                     forbidden.arguments)
    calls = [ctx.identity, *(c.model_dump() for c in lookups)]
    required = [as_action(c, action_id=str(i)) for i, c in enumerate(calls)]
    if handoff is not None:
        required.append(handoff.model_copy(update={"action_id": str(len(required))}))
    return required


def _handoff_action(call: Any) -> Action:
    """A hand-off as a required action: any summary will do (tau2's compare_args = [])."""
    return Action(name=call.name, arguments=dict(call.arguments), compare_args=[])


def _infeasible_candidates(ctx: AdaptationContext) -> list[InfeasibleCandidate]:
    """Proposed forbidden writes that really are refused, each confirmed on a fork after
    the required actions; related ones (on the parent's orders) first, then by seed."""
    assert ctx.user_id is not None
    episode = ctx.environment.episode()
    confirmed: list[InfeasibleCandidate] = []
    for proposal in ctx.kit.infeasibility.infeasible_proposals(episode, ctx.user_id, ctx.calls):
        action = as_action(proposal.action.model_dump())
        probe = Task(id="probe", domain=ctx.parent.domain, condition="infeasible",
                     scenario=UserScenario(reason_for_call=" ".join(
                         ctx.kit.wording.user_stated_ids(action.name, action.arguments))),
                     gold_actions=_required_actions(ctx, action), actions_should_take=_required_actions(ctx, action),
                     actions_should_not_take=[action], expected_state_hash=ctx.environment.initial_hash())
        check = check_infeasible(ctx.environment, probe)
        if check.passed:
            confirmed.append(InfeasibleCandidate(
                rule=proposal.rule, action=action, fact=proposal.fact, finding=check.detail,
                request=proposal.request or ctx.kit.wording.describe_call(episode, action.name, action.arguments),
                related=proposal.related,
                claims=proposal.claims or _call_claims(ctx, episode, as_call(action)),
                handoff=_handoff_action(proposal.handoff) if proposal.handoff else None))
    ctx.rng.shuffle(confirmed)
    confirmed.sort(key=lambda c: not c.related)  # stable: related first, seeded order within
    return confirmed


# ---------------------------------------------------------------- the offline baseline


class BaselineAdaptation:
    """Adapts tasks with templates: no LM, deterministic for a seed."""

    def adapt(self, task: Task, trajectory: Trajectory, condition: str, env: Environment[Any],
              seed: int, prefer_write: str | None = None) -> AdaptationResult:
        """``prefer_write``: for an infeasible task, forbid a write of this tool when one is
        refused for the user (coverage steering); otherwise any refused write."""
        return run_steps(adaptation_steps(task, trajectory, condition, env, seed, prefer_write),
                         lambda request: worded(self, request))

    @staticmethod
    def _requests(ctx: AdaptationContext, replace: dict[int, str]) -> str:
        parts = []
        for index, call in enumerate(ctx.calls):
            if ctx.is_write(call["name"]):
                parts.append(replace.get(index) or ctx.kit.wording.describe_call(
                    ctx.state_before(index), call["name"], call["arguments"]))
        return "You want to " + "; then ".join(parts) + "."

    @staticmethod
    def _unknown_info(ctx: AdaptationContext) -> str | None:
        forgotten = ctx.kit.identity.forgotten_identity
        return forgotten(ctx.identity) if forgotten is not None and ctx.identity else None

    def word_ambiguous(self, ctx: AdaptationContext, facts: AmbiguityFacts) -> tuple[UserScenario, list[str], list[Claim]]:
        what = facts.open_question
        withheld = list(facts.withheld_sentences)
        scenario = UserScenario(
            persona=ctx.parent.scenario.persona,
            reason_for_call=self._requests(ctx, {facts.action_index: facts.open_request}),
            known_info=ctx.identity_text(), unknown_info=self._unknown_info(ctx),
            task_instructions=(f"Open with your request as stated, without saying {what}. Give those details "
                               "only when the agent asks for them, then confirm the action once the agent lists "
                               "the details you want."))
        return scenario, withheld, []

    def word_changing(self, ctx: AdaptationContext, facts: ChangeFacts) -> tuple[UserScenario, str, str, list[Claim]]:
        trigger = (f"the agent has listed the details of {facts.action_label} and asks you to confirm it, "
                   "before you say yes")
        request = facts.revised_request.rstrip(". ")
        # the fold says it is a change of mind; a request that already says "instead" says it once
        revised = f"You want to {request}." if request.endswith(" instead") else f"You want to {request} instead."
        scenario = UserScenario(
            persona=ctx.parent.scenario.persona,
            reason_for_call=self._requests(ctx, {}),
            known_info=ctx.identity_text(), unknown_info=self._unknown_info(ctx),
            task_instructions=("Open with the request above. At the point given below, do not confirm: ask for the "
                               "revised version instead, and confirm only that one."))
        return scenario, trigger, revised, []

    def word_infeasible(self, ctx: AdaptationContext, facts: InfeasibilityFacts) -> tuple[Action, UserScenario, str,
                                                                                 list[Claim]]:
        candidates = facts.candidates
        rule = ctx.rng.choice(sorted({c.rule for c in candidates}))
        # related candidates come first: take the first of the chosen rule
        chosen = next(c for c in candidates if c.rule == rule)
        request = chosen.request
        scenario = UserScenario(
            persona=ctx.parent.scenario.persona,
            reason_for_call=f"You want to {request}.",
            known_info=ctx.identity_text(), unknown_info=self._unknown_info(ctx),
            task_instructions=("Ask for exactly this. If the agent refuses and explains why, insist once, then "
                               + ("accept being transferred to a human agent. " if chosen.handoff else
                                  "accept and end the conversation. ") + "Do not ask for anything else."))
        then = " The agent then transfers the user to a human agent." if chosen.handoff else ""
        return chosen.action, scenario, f"This cannot be done: {chosen.fact}.{then}", []
