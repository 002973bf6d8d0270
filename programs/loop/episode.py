"""One episode core: a task played one agent turn at a time, judged by the verifier.

Every reinforcement-learning adapter (Gymnasium's `t2t/TaskEnv-v0`, TRL's
``environment_factory``, the OpenEnv server, the ``verifiers`` environment) drives this core,
so the rules of an episode live here once:

- `Episodes` holds what episodes share: the domain environment, the tasks by id, the
  simulated user (the offline `ScriptedUser` by default; any `SimulatedUser`, e.g. an
  `LMUser`), the verifier, the turn limit, the agent's system prompt (policy) and tool schemas.
- `Episodes.start(task_id)` opens a `TaskEpisode` on a fresh copy-on-write episode of the
  database; the user speaks first (`TaskEpisode.opening`).
- `TaskEpisode.step(reply)` plays one agent turn, as in `RolloutEngine` (the same code runs
  the calls): a tool call runs (one per turn) and its result comes back; a message gets the
  user's answer; an empty turn ends the episode. It returns a `Turn`.
- The episode ends when the user stops, the agent hands over to a human or says nothing
  (terminated), at ``max_turns`` agent turns (truncated), or when the caller `close`s it
  (e.g. a trainer's generation ended). Then the verifier judges it: reward 1.0 when the
  verdict passes, else 0.0, with the verdict's failure reasons kept.

Actions in text form (what a model emits or a client sends) are read by `parse_action`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from trajectory2task.domains import Environment, PolicyContext
from trajectory2task.programs.lm.chat_format import parse_reply
from trajectory2task.programs.loop.agent import AgentReply, openai_messages, parse_arguments, system_prompt
from trajectory2task.programs.loop.rollout import DEFAULT_MAX_TURNS, RolloutEngine
from trajectory2task.programs.loop.user_sim import LMTurnError, ScriptedUser, SimulatedUser, UserSession
from trajectory2task.signatures.conversation import AgentToolCall, AgentTurn, ConversationTurn
from trajectory2task.signatures.models import Message, Rollout, Step, Task, Termination, Verdict
from trajectory2task.programs.verification.verifier import Verifier, authenticated_user

EPISODE_OVER = "the episode is over: start a new one"


class EpisodeOver(RuntimeError):
    """A step on an episode that has ended."""


class Signals(BaseModel):
    """Shaping signals of one turn, read on the state before its call ran."""

    tool_error: bool = False  # the turn's call failed (unknown tool, bad arguments, refused by the tool)
    forbidden_write: bool = False  # a write the task forbids, or one breaking an enumerated policy rule
    policy_violations: list[str] = Field(default_factory=list)


class Turn(BaseModel):
    """What one agent turn gave: the new messages the agent sees (tool results, or the user's
    answer), the signals, and at the end the termination, the verdict and the reward."""

    observations: list[Message]
    signals: Signals
    turn: int
    terminated: bool = False
    truncated: bool = False
    termination: Termination | None = None
    verdict: Verdict | None = None
    reward: float = 0.0

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


def reward_of(verdict: Verdict) -> float:
    """The episode reward: the verdict, as 1.0 or 0.0 (one home for every adapter)."""
    return 1.0 if verdict.passed else 0.0


# ============================================================================ actions as text


def _as_agent_call(name: Any, raw_arguments: Any, call_id: Any = None) -> AgentToolCall:
    arguments, error = parse_arguments(raw_arguments)
    return AgentToolCall(id=str(call_id) if call_id else None, name=str(name or ""), arguments=arguments,
                         arguments_error=error)


def parse_action(action: str) -> AgentReply:
    """An action text -> the agent's turn:

    - a JSON object ``{"content": "..."}``: a message to the user;
    - ``{"name": TOOL, "arguments": {...}}``: one tool call;
    - an OpenAI assistant message ``{"content": ..., "tool_calls": [...]}``;
    - anything else is model output (`parse_reply`): text, with ``<tool_call>{...}</tool_call>``
      blocks as calls. So a model's raw completion is an action."""
    text = action.strip()
    value: Any = None
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
    if isinstance(value, dict):
        if isinstance(value.get("tool_calls"), list):
            calls = []
            for raw in value["tool_calls"]:
                function = raw.get("function", raw) if isinstance(raw, dict) else {}
                calls.append(_as_agent_call(function.get("name"), function.get("arguments"),
                                            raw.get("id") if isinstance(raw, dict) else None))
            return AgentReply(content=(value.get("content") or None), tool_calls=calls)
        if "name" in value:
            return AgentReply(tool_calls=[_as_agent_call(value["name"], value.get("arguments", {}))])
        if "content" in value:
            return AgentReply(content=str(value["content"] or "").strip() or None)
    parsed = parse_reply(action)
    return AgentReply(content=parsed.content or None,
                      tool_calls=[_as_agent_call(c.name, c.arguments) for c in parsed.tool_calls])


def action_text(reply: AgentReply) -> str:
    """An agent's turn as an action text (an OpenAI assistant message in JSON)."""
    calls = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
             for c in reply.tool_calls]
    return json.dumps({"content": reply.content or "", "tool_calls": calls}, ensure_ascii=True)


def reply_of_message(message: Mapping[str, Any]) -> AgentReply:
    """An OpenAI assistant message (``tool_calls`` with JSON-text or object arguments) -> the
    agent's turn; text content with ``<tool_call>`` blocks counts too."""
    if message.get("tool_calls"):
        return parse_action(json.dumps({"content": message.get("content") or "",
                                        "tool_calls": list(message["tool_calls"])}))
    return parse_action(str(message.get("content") or ""))


def _same_arguments(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# ============================================================================ the core


class Episodes:
    """What the episodes of one task set share (see module doc). Tasks are `Task`s or their dicts."""

    def __init__(self, environment: Environment[Any], tasks: Sequence[Task | Mapping[str, Any]], *,
                 user: SimulatedUser | None = None, max_turns: int = DEFAULT_MAX_TURNS,
                 require_clarification: bool = False) -> None:
        if not tasks:
            raise ValueError("an episode needs at least one task")
        if max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        self.environment = environment
        self.tasks = [t if isinstance(t, Task) else Task.model_validate(t) for t in tasks]
        self.by_id = {t.id: t for t in self.tasks}
        self.user = user or ScriptedUser(environment.domain.tools)
        self.verifier = Verifier(environment, require_clarification=require_clarification)
        # the rollout engine's own turn mechanics (ids, one call per turn, hand-overs)
        self.engine = RolloutEngine(environment, self.user, [], verifier=self.verifier, max_turns=max_turns)
        self.max_turns = max_turns
        self.tools = environment.tool_schemas()
        self.system = system_prompt(AgentTurn.instructions, environment.policy)

    def task(self, task_id: str) -> Task:
        if task_id not in self.by_id:
            raise KeyError(f"unknown task_id {task_id!r}")
        return self.by_id[task_id]

    def start(self, task_id: str) -> TaskEpisode:
        return TaskEpisode(self, self.task(task_id))


class TaskEpisode:
    """One task's episode (see module doc). Not thread-safe: one agent drives it."""

    def __init__(self, core: Episodes, task: Task) -> None:
        self.core = core
        self.task = task
        self.state = core.environment.episode()
        self.messages: list[Message] = [Message(role="system", content=core.system)]
        self.steps: list[Step] = []
        self.turns = 0
        self.termination: Termination = "max_turns"
        self.verdict: Verdict | None = None
        self._spoken: list[ConversationTurn] = []
        self._call_ids: set[str] = set()
        self._user: UserSession = core.user.session(task.scenario)
        self._user_failed: str | None = None
        said = self._user_says()
        self.opening = said
        if self.verdict is None and self._stopped:  # a scenario with nothing to ask: over before it starts
            self._end("user_stop")

    # ------------------------------------------------------------ playing

    @property
    def done(self) -> bool:
        return self.verdict is not None

    @property
    def reward(self) -> float:
        return reward_of(self.verdict) if self.verdict is not None else 0.0

    def step(self, reply: AgentReply | str) -> Turn:
        """One agent turn: a tool call (the first of the turn runs; further ones are answered
        with an error), a message to the user, or nothing (the agent ends the episode)."""
        if self.done:
            raise EpisodeOver(EPISODE_OVER)
        reply = parse_action(reply) if isinstance(reply, str) else reply
        signals = self._signals(reply)
        self.turns += 1
        before = len(self.messages)
        termination: Termination | None = None
        if reply.tool_calls:
            ran = len(self.steps)
            if self.core.engine._run_tool_calls(self.state, reply, self.messages, self.steps, self._call_ids):
                termination = "transfer"
            signals.tool_error = any(s.error for s in self.steps[ran:])
        elif not reply.content:
            termination = "agent_stop"
        else:
            self.messages.append(Message(role="assistant", content=reply.content))
            self._spoken.append(ConversationTurn(role="agent", content=reply.content))
            self._user_says()
            if self._user_failed is not None:
                termination = "lm_error"
            elif self._stopped:
                termination = "user_stop"
        truncated = termination is None and self.turns >= self.core.max_turns
        if truncated:
            termination = "max_turns"
        if termination is not None:
            self._end(termination)
        observations = [m for m in self.messages[before:] if m.role != "assistant"]
        return Turn(observations=observations, signals=signals, turn=self.turns,
                    terminated=termination is not None and not truncated, truncated=truncated,
                    termination=self.termination if self.done else None, verdict=self.verdict, reward=self.reward)

    def say(self, text: str) -> Turn:
        """A message to the user (a turn with no call)."""
        return self.step(AgentReply(content=text))

    def call(self, name: str, arguments: Mapping[str, Any], call_id: str | None = None) -> Turn:
        """One tool call as the turn."""
        arguments_checked, error = parse_arguments(dict(arguments))
        return self.step(AgentReply(tool_calls=[AgentToolCall(id=call_id, name=name, arguments=arguments_checked,
                                                               arguments_error=error)]))

    def close(self, termination: Termination = "agent_stop") -> Verdict:
        """End the episode now (the agent is done, e.g. its generation ended) and judge it;
        on an episode already over, its verdict."""
        if not self.done:
            self._end(termination)
        assert self.verdict is not None
        return self.verdict

    # ------------------------------------------------------------ views

    def observation(self) -> list[dict[str, Any]]:
        """The conversation as the agent sees it, as OpenAI chat messages (system prompt first)."""
        return openai_messages(self.messages)

    def rollout(self, rollout_id: str, agent_model: str = "rl") -> Rollout:
        """The episode as a stored-rollout record (for `TaskStore.add_rollouts`)."""
        return Rollout(id=rollout_id, task_id=self.task.id, agent_model=agent_model, user_model=self.core.user.name,
                       trial=0, messages=list(self.messages), steps=list(self.steps),
                       end_state_hash=self.state.state_hash(), termination=self.termination,
                       error=self._user_failed)

    # ------------------------------------------------------------ helpers

    def _user_says(self) -> str:
        try:
            said = self._user.reply(self._spoken)
        except LMTurnError as exc:  # the simulator failed: nothing in this episode judges the agent
            self._user_failed = str(exc)[:2000]
            self._stopped = True
            return ""
        self._stopped = said.stop
        self.messages.append(Message(role="user", content=said.text))
        self._spoken.append(ConversationTurn(role="user", content=said.text))
        return said.text

    def _end(self, termination: Termination) -> None:
        self.termination = termination
        verdict = self.core.verifier.judge(self.task, self.steps, self.messages,
                                           end_state_hash=self.state.state_hash(), termination=termination)
        if self._user_failed is not None:  # as the rollout engine does: not scored for the agent
            self.termination = "lm_error"
            verdict = verdict.model_copy(update={"passed": False, "reasons": ["lm_error"], "details": [
                f"not scored for the agent: the user simulator failed: {self._user_failed}"]})
        self.verdict = verdict

    def _signals(self, reply: AgentReply) -> Signals:
        out = Signals()
        if not reply.tool_calls:
            return out
        call = reply.tool_calls[0]  # the one call a turn may run
        environment = self.core.environment
        spec = environment.tools.get(call.name)
        if spec is None or spec.kind != "write" or call.arguments_error is not None:
            return out
        context = PolicyContext(user_id=authenticated_user(environment, self.steps))
        violations = environment.policy_violations(self.state, call.name, call.arguments, context)
        forbidden = any(a.name == call.name and _same_arguments(a.arguments, call.arguments)
                        for a in self.task.actions_should_not_take)
        out.policy_violations = list(violations)
        out.forbidden_write = bool(violations) or forbidden
        return out
