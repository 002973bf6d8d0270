"""Deterministic verification: gold replay, static task checks and rollout verdicts.

Nothing here asks an LM. A task passes static verification when its gold actions replay
without error (to its expected end state, when it names one), a do-nothing agent would
fail it, and, for infeasible tasks, every forbidden action is rejected by a tool or breaks
one of the domain's enumerated policy rules. A rollout passes when its end state equals
the gold replay's and the gated criteria of the task's reward basis hold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, Field

from trajectory2task.domains import Environment, Episode, PolicyContext
from trajectory2task.signatures.models import Action, FailureReason, Message, Reading, Step, Task, ToolCall, Verdict

class ActionError(BaseModel):
    action_id: str | None
    name: str
    error: str


class GoldReplay(BaseModel):
    """What replaying a task's gold actions on a fresh episode gave."""

    task_id: str
    errors: list[ActionError] = Field(default_factory=list)
    changed: dict[str, list[str]] = Field(default_factory=dict)
    end_state_hash: str
    user_id: str | None = None  # the user the gold trajectory authenticated, if any


def execute_calls(episode: Episode[Any], calls: Iterable[ToolCall]) -> list[Step]:
    """Run calls in order on an episode; failing calls are recorded and replay goes on."""
    steps = []
    for call in calls:
        result = episode.call(call.name, call.arguments)
        # the parts are typed already (a call's, a result's): built without validating them
        # again, which replays did for every call; the arguments are copied, as validation did
        steps.append(Step.model_construct(
            call=ToolCall.model_construct(name=call.name, arguments=dict(call.arguments), id=call.id),
            observation=result.output, error=result.error))
    return steps


def authenticated_user(environment: Environment[Any], steps: Sequence[Step]) -> str | None:
    """The user named by the first successful call of a tool that authenticates."""
    for step in steps:
        spec = environment.tools.get(step.call.name)
        if spec is not None and spec.authenticates is not None and not step.error:
            user_id = spec.authenticates(step.call.arguments, step.observation)
            if user_id:
                return user_id
    return None


class PolicyBreach(BaseModel):
    """A write that breaks a policy rule: its position in the calls, its tool, and the
    violation (``rule_id: message``)."""

    index: int
    tool: str
    violation: str

    @property
    def rule_id(self) -> str:
        return self.violation.split(":", 1)[0]

    def line(self) -> str:
        return f"{self.tool} (action {self.index}) breaks {self.violation}"


def policy_breaches(environment: Environment[Any], calls: Sequence[ToolCall]) -> list[PolicyBreach]:
    """The policy rules the writes of ``calls`` break, run in order on a fresh episode: each
    write is checked, on the state just before it, as the user the calls before it
    authenticated (the domain's enumerated rules and the ownership rule every domain has)."""
    episode = environment.episode()
    steps: list[Step] = []
    out: list[PolicyBreach] = []
    for index, call in enumerate(calls):
        spec = environment.tools.get(call.name)
        if spec is not None and spec.kind == "write":
            context = PolicyContext(user_id=authenticated_user(environment, steps))
            out += [PolicyBreach(index=index, tool=call.name, violation=v)
                    for v in environment.policy_violations(episode, call.name, call.arguments, context)]
        steps += execute_calls(episode, [call])
    return out


def reading_problem(environment: Environment[Any], gold: Sequence[ToolCall], reading: Reading) -> str | None:
    """Why a reading of an ambiguous opening is no reading a careful agent may act on (its write
    fails after the gold calls before it, or breaks a policy rule for the user they
    authenticated), or None when it is one."""
    calls = [*gold[:reading.action_index], reading.action]
    steps = execute_calls(environment.episode(), calls)
    if steps[-1].error:
        return f"the reading for {reading.candidate}: {reading.action.name} fails: {steps[-1].observation}"
    breach = next((b for b in policy_breaches(environment, calls) if b.index == reading.action_index), None)
    return None if breach is None else f"the reading for {reading.candidate}: {breach.line()}"


def _matches(call: ToolCall, expected: Action) -> bool:
    if call.name != expected.name:
        return False
    keys = expected.compare_args if expected.compare_args is not None else list(expected.arguments)
    return all(_canonical(call.arguments.get(k)) == _canonical(expected.arguments.get(k)) for k in keys)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _communicated(info: str, messages: Sequence[Message]) -> bool:
    wanted = info.lower().replace(",", "")
    return any(m.role == "assistant" and m.content and wanted in m.content.lower().replace(",", "")
               for m in messages)


def first_write_index(messages: Sequence[Message], write_tools: set[str]) -> int | None:
    """Index of the first assistant message that calls a write tool, if any."""
    for index, message in enumerate(messages):
        if message.role == "assistant" and message.tool_calls and any(c.name in write_tools for c in
                                                                      message.tool_calls):
            return index
    return None


def clarified(task: Task, messages: Sequence[Message], write_tools: set[str]) -> bool:
    """Whether the user gave any withheld detail after the opening and before the agent's
    first write: the sign that the agent had to ask before it could act."""
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    if not users:
        return False
    stop = first_write_index(messages, write_tools)
    return any(reveals(messages[i].content, detail) for i in users[1:] if stop is None or i < stop
               for detail in task.scenario.withheld_info)


def reveals(text: str | None, detail: str) -> bool:
    """Whether `text` gives away a withheld detail: the detail verbatim, or one of its
    identifier-like tokens (with a digit, '#' or '@'), or, for a detail with none, all
    of its words of 4+ letters."""
    if not text:
        return False
    haystack = text.lower()
    detail_l = detail.lower().strip()
    if detail_l and detail_l in haystack:
        return True
    tokens = re.findall(r"[#@\w.\-]+", detail_l)
    identifiers = [t.strip(".") for t in tokens if re.search(r"[\d#@]", t) and len(t.strip(".")) >= 3]
    if identifiers:
        return any(i in haystack for i in identifiers)
    words = [w for w in (t.strip(".-") for t in tokens) if len(w) >= 4 and w.isalpha()]  # "khaki." -> khaki
    return bool(words) and all(re.search(rf"\b{re.escape(w)}\b", haystack) for w in words)



class Verifier:
    """Verifies tasks and rollouts against one environment; caches gold replays per task."""

    def __init__(self, environment: Environment[Any], require_clarification: bool = False,
                 discriminative: bool = False) -> None:
        """``require_clarification``: an ambiguous task's rollout also fails (``no_clarification``)
        when the user gave no withheld detail before the agent's first write. Agents that know
        the gold (the oracle) act without asking, so calibration runs leave it off.

        ``discriminative``: static verification also judges the task's mutants
        (``trajectory2task.programs.verification.mutants``) and its claims about the database
        (``trajectory2task.programs.verification.premises``); a passing mutant fails the task
        (``mutant_passes``), and so does a false claim (``false_premise``)."""
        self.environment = environment
        self.require_clarification = require_clarification
        self.discriminative = discriminative
        self._write_tools = {name for name, spec in environment.tools.items() if spec.kind == "write"}
        self._gold: dict[str, GoldReplay] = {}

    # ------------------------------------------------------------ gold

    def replay_gold(self, task: Task) -> GoldReplay:
        cached = self._gold.get(task.id)
        if cached is not None:
            return cached
        episode = self.environment.episode()
        steps = execute_calls(episode, task.gold_actions)
        errors = [ActionError(action_id=a.action_id, name=a.name, error=s.observation.removeprefix("Error: "))
                  for a, s in zip(task.gold_actions, steps) if s.error]
        replay = GoldReplay(task_id=task.id, errors=errors, changed=episode.changed(),
                            end_state_hash=episode.state_hash(), user_id=authenticated_user(self.environment, steps))
        self._gold[task.id] = replay
        return replay

    # ------------------------------------------------------------ static

    def verify_task(self, task: Task) -> Verdict:
        reasons: list[FailureReason] = []
        details: list[str] = []
        if task.initial_state_hash and task.initial_state_hash != self.environment.initial_hash():
            return Verdict(task_id=task.id, passed=False, reasons=["invalid_task"],
                           details=["the task was made for a different database (initial state hash differs)"])
        unknown = sorted({a.name for a in task.gold_actions + task.actions_should_take + task.actions_should_not_take
                          if a.name not in self.environment.tools})
        if unknown:
            return Verdict(task_id=task.id, passed=False, reasons=["invalid_task"],
                           details=[f"unknown tool(s): {', '.join(unknown)}"])
        gold = self.replay_gold(task)
        if gold.errors:
            reasons.append("invalid_gold")
            details += [f"gold action {e.action_id or e.name} failed: {e.error}" for e in gold.errors]
        if task.expected_state_hash and task.expected_state_hash != gold.end_state_hash:
            if "invalid_gold" not in reasons:
                reasons.append("invalid_gold")
            details.append("gold replay does not reach the task's expected end state")
        # every write a careful agent is asked to make follows the policy, whatever the condition
        breaches = policy_breaches(self.environment, task.gold_actions)
        if task.condition == "infeasible":  # the required actions are its gold; checked even where they differ
            breaches += policy_breaches(self.environment, task.actions_should_take)
        if breaches:
            reasons.append("gold_breaks_policy")
            details += list(dict.fromkeys(f"gold breaks policy: {b.line()}" for b in breaches))
        if task.condition == "infeasible":
            reasons_inf, details_inf = self._check_infeasible(task)
            reasons += reasons_inf
            details += details_inf
        noop = self.judge(task, steps=[], messages=[])
        if noop.passed:
            reasons.append("noop_passes")
            details.append("a do-nothing agent passes this task")
        if self.discriminative and not reasons:
            reasons_d, details_d = self._check_discriminative(task)
            reasons += reasons_d
            details += details_d
        if task.nl_assertions and "NL_ASSERTION" in task.reward_basis:
            details.append(f"{len(task.nl_assertions)} natural-language assertion(s) need an LM judge; not gated")
        return Verdict(task_id=task.id, passed=not reasons, reasons=reasons, details=details)

    def _check_discriminative(self, task: Task) -> tuple[list[FailureReason], list[str]]:
        from trajectory2task.programs.verification.mutants import run_mutants
        from trajectory2task.programs.verification.premises import false_claims

        reasons: list[FailureReason] = []
        details: list[str] = []
        report = run_mutants(self, task)
        if not report.gold_passed:
            reasons.append("invalid_gold")
            details.append(f"the gold, run as a rollout, fails: {', '.join(report.gold_reasons)}")
        passing = [n for n in report.passing if n != "do_nothing"]  # do_nothing is noop_passes
        if passing:
            reasons.append("mutant_passes")
            details.append(f"mutant(s) pass: {', '.join(passing)}")
        if report.executable_readings is not None and report.executable_readings < 2:
            reasons.append("single_reading")
            details.append(f"only {report.executable_readings} reading of the opening request runs")
        false = false_claims(self.environment, task.claims)
        if false:
            reasons.append("false_premise")
            details += [f"false claim: {f}" for f in false]
        return reasons, details

    def _check_infeasible(self, task: Task) -> tuple[list[FailureReason], list[str]]:
        if not task.actions_should_not_take:
            return ["invalid_task"], ["an infeasible task must name at least one action that should not be taken"]
        if not task.actions_should_take:
            return ["invalid_task"], ["an infeasible task must name the actions a correct agent takes"]
        episode = self.environment.episode()
        steps = execute_calls(episode, task.actions_should_take)
        failed = [s for s in steps if s.error]
        if failed:
            return ["invalid_gold"], [f"required action {s.call.name} fails: {s.observation}" for s in failed]
        context = PolicyContext(user_id=authenticated_user(self.environment, steps) or self.replay_gold(task).user_id)
        reasons: list[FailureReason] = []
        details = []
        for action in task.actions_should_not_take:
            violations = self.environment.policy_violations(episode, action.name, action.arguments, context)
            outcome = episode.fork().call(action.name, action.arguments)
            if outcome.error:
                details.append(f"forbidden {action.name} is rejected by the tool: {outcome.output}")
            elif violations:
                details.append(f"forbidden {action.name} breaks policy: {'; '.join(violations)}")
            else:
                reasons.append("not_infeasible")
                details.append(f"forbidden {action.name} succeeds and breaks no enumerated policy rule")
        return reasons, details

    # ------------------------------------------------------------ rollouts

    def judge(self, task: Task, steps: Sequence[Step], messages: Sequence[Message] = (),
              end_state_hash: str | None = None, rollout_id: str | None = None,
              termination: str | None = None) -> Verdict:
        """Verdict for a rollout given its tool calls (replayed if no end-state hash is given)."""
        reasons: list[FailureReason] = []
        details: list[str] = []
        gold = self.replay_gold(task)
        end_episode: Episode[Any] | None = None
        if end_state_hash is None:
            end_episode = self.environment.episode()
            execute_calls(end_episode, [s.call for s in steps])
            end_state_hash = end_episode.state_hash()
        if "DB" in task.reward_basis or task.condition == "infeasible":
            if end_state_hash != gold.end_state_hash:
                reasons.append("wrong_end_state")
                if end_episode is not None:
                    gold_episode = self.environment.episode()
                    execute_calls(gold_episode, task.gold_actions)
                    details.append(f"records differing from gold: {json.dumps(end_episode.diff(gold_episode))}")
        calls = [s.call for s in steps]
        for forbidden in task.actions_should_not_take:
            if any(_matches(c, forbidden) for c in calls):
                reasons.append("forbidden_action")
                details.append(f"forbidden action taken: {forbidden.name}")
                break
        for required in task.actions_should_take:
            if not any(_matches(c, required) for c in calls):
                reasons.append("missing_required_action")
                details.append(f"required action not taken: {required.name} {_canonical(required.arguments)}")
                break
        if "COMMUNICATE" in task.reward_basis:
            missing = [info for info in task.communicate_info if not _communicated(info, messages)]
            if missing:
                reasons.append("missing_communication")
                details.append(f"not communicated: {', '.join(missing)}")
        if (self.require_clarification and task.condition == "ambiguous" and task.scenario.withheld_info
                and not clarified(task, messages, self._write_tools)):
            reasons.append("no_clarification")
            details.append("the agent acted before the user gave any withheld detail")
        if termination == "max_turns":
            reasons.append("max_turns")
        elif termination == "lm_error":
            reasons.append("lm_error")
        return Verdict(task_id=task.id, rollout_id=rollout_id, passed=not reasons, reasons=reasons, details=details)
