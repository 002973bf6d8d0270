"""One episode core: a task played one agent turn at a time, judged by the verifier.

Every reinforcement-learning adapter (Gymnasium's `t2t/TaskEnv-v0`, TRL's
``environment_factory``, the OpenEnv server, the ``verifiers`` environment) drives this core,
so the rules of an episode live here once:

- `Episodes` holds what episodes share: the domain environment, the tasks by id, the
  simulated user (the offline `ScriptedUser` by default; any `SimulatedUser`, e.g. an
  `LMUser`), the verifier, the turn limit, the agent's system prompt (policy) and tool schemas.
- `Episodes.start(task_id)` opens a `TaskEpisode` on a fresh copy-on-write episode of the
  database; the user speaks first (`TaskEpisode.opening`).
- `TaskEpisode.step(action)` plays one agent turn, as in `RolloutEngine` (the same code runs
  the calls): a tool call runs (one per turn) and its result comes back (cut to
  ``MAX_RESULT`` characters in what the agent sees, whole for the verifier); a message gets
  the user's answer; an empty turn ends the episode. It returns a `Turn`.
- The episode ends when the user stops, the agent hands over to a human or says nothing
  (terminated), at ``max_turns`` agent turns (truncated), or when the caller `close`s it
  (e.g. a trainer's generation ended). Then the verifier judges it: reward 1.0 when the
  verdict passes, else 0.0, with the verdict's failure reasons kept.

Every action, whichever adapter it comes through (text, an OpenAI assistant message, a
structured `AgentReply`, a TRL tool method's arguments), is read here, by `read_action`
(text) and `check_reply` (structured turns), to the same bounds: ``MAX_ACTION`` characters,
``MAX_CALLS`` calls, ``MAX_NAME``-character names and ids, JSON at most
``MAX_ARGUMENT_DEPTH`` deep. A malformed action is a turn like any other, never an
exception: a failed call that runs nothing, answered ``Error: malformed action: ...``, with
the reason in the turn's ``signals.malformed``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from trajectory2task.domains import Environment, PolicyContext
from trajectory2task.programs.lm.chat_format import parse_reply
from trajectory2task.programs.loop.agent import AgentReply, openai_messages, parse_arguments, system_prompt
from trajectory2task.programs.loop.rollout import DEFAULT_MAX_TURNS, RolloutEngine
from trajectory2task.programs.loop.user_sim import LMTurnError, ScriptedUser, SimulatedUser, UserSession
from trajectory2task.signatures.conversation import AgentToolCall, AgentTurn, ConversationTurn
from trajectory2task.signatures.models import Message, Rollout, Step, Task, Termination, ToolCall, Verdict
from trajectory2task.programs.verification.verifier import Verifier, authenticated_user

EPISODE_OVER = "the episode is over: start a new one"


class EpisodeOver(RuntimeError):
    """A step on an episode that has ended."""


class Signals(BaseModel):
    """Shaping signals of one turn, read on the state before its call ran."""

    tool_error: bool = False  # the turn's call failed (unknown tool, bad arguments, refused by the tool)
    forbidden_write: bool = False  # a write the task forbids, or one breaking an enumerated policy rule
    policy_violations: list[str] = Field(default_factory=list)
    malformed: str | None = None  # why the action was no agent turn (see `read_action`); nothing ran


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

MAX_ACTION = 1 << 16  # characters in one agent turn: a message or the JSON of its tool calls
MAX_CALLS = 32  # tool calls in one action (one runs; the others are told to wait their turn)
MAX_NAME = 256  # characters in a tool name or a call id
MAX_ARGUMENT_DEPTH = 32  # levels of lists and objects in an action's JSON values
# characters the agent's own turn may take written back as JSON with ASCII escapes (a
# character takes at most 14 after two rounds of escaping, as in a call's arguments)
MAX_ECHO = 16 * MAX_ACTION
MAX_RESULT = 2 * MAX_ACTION  # characters (JSON with ASCII escapes) of a tool result the agent is shown
CUT_NOTE = " [... cut: the tool result is longer than an observation holds]"
MALFORMED = "malformed action: "


class MalformedAction(ValueError):
    """An action that is not an agent turn (see module doc): `TaskEpisode.step` answers it
    with an error observation; `parse_action` turns it into a call that carries the reason."""


def _json_depth(value: Any) -> int:
    from trajectory2task.store.files import json_depth

    return json_depth(value, MAX_ARGUMENT_DEPTH)


def _too_deep(name: str) -> MalformedAction:
    return MalformedAction(f"the arguments of {name} nest deeper than {MAX_ARGUMENT_DEPTH} levels")


def _as_agent_call(name: Any, raw_arguments: Any, call_id: Any = None) -> AgentToolCall:
    if not isinstance(name, str) or not name.strip():
        raise MalformedAction("a tool call needs a 'name' that is a non-empty string")
    if len(name) > MAX_NAME:
        raise MalformedAction(f"a tool name is longer than {MAX_NAME} characters")
    if isinstance(raw_arguments, (dict, list)) and _json_depth(raw_arguments) > MAX_ARGUMENT_DEPTH:
        raise _too_deep(name)
    try:
        arguments, error = parse_arguments(raw_arguments)
    except RecursionError:
        raise _too_deep(name) from None
    if _json_depth(arguments) > MAX_ARGUMENT_DEPTH:
        raise _too_deep(name)
    # an id must be short text to be echoed back with the result; anything else gets a fresh one
    usable_id = call_id if isinstance(call_id, str) and 0 < len(call_id) <= MAX_NAME else None
    return AgentToolCall(id=usable_id, name=name, arguments=arguments, arguments_error=error)


def _openai_call(raw: Any) -> AgentToolCall:
    """One entry of an OpenAI ``tool_calls`` list: ``{"id", "type", "function": {...}}`` or the
    function object itself."""
    if not isinstance(raw, dict):
        raise MalformedAction("each entry of 'tool_calls' must be an object")
    function = raw.get("function", raw)
    if not isinstance(function, dict):
        raise MalformedAction("a tool call's 'function' must be an object with a 'name' and 'arguments'")
    return _as_agent_call(function.get("name"), function.get("arguments"), raw.get("id"))


def _content(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise MalformedAction(f"'content' must be a string, not {type(value).__name__}")
    return (value or "").strip() or None


def _too_many(count: int) -> MalformedAction:
    return MalformedAction(f"the action makes {count} tool calls, more than the {MAX_CALLS} allowed "
                           "(one runs per turn)")


def read_action(action: Any) -> AgentReply:
    """An action -> the agent's turn; `MalformedAction` when it is none.

    Text (what a model emits or a client sends) is read as:

    - a JSON object ``{"content": "..."}``: a message to the user;
    - ``{"name": TOOL, "arguments": {...}}``: one tool call;
    - an OpenAI assistant message ``{"content": ..., "tool_calls": [...]}``;
    - anything else is model output (`parse_reply`): text, with ``<tool_call>{...}</tool_call>``
      blocks as calls. So a model's raw completion is an action.

    It is malformed when longer than ``MAX_ACTION`` characters, when a ``tool_calls`` entry is
    not an object with a non-empty string ``name`` (at most ``MAX_NAME`` characters), with more
    than ``MAX_CALLS`` calls, ``content`` that is not a string, JSON nested deeper than
    ``MAX_ARGUMENT_DEPTH`` levels, or a turn that would take more than ``MAX_ECHO`` characters
    written back as JSON; anything but a string is malformed (`check_reply` holds a structured
    turn to the same bounds)."""
    if not isinstance(action, str):
        raise MalformedAction(f"an action is a string (text or JSON text), not {type(action).__name__}")
    if len(action) > MAX_ACTION:
        raise MalformedAction(f"the action is {len(action)} characters long, more than the {MAX_ACTION} allowed")
    try:
        reply = _read_action_text(action)
    except RecursionError:  # JSON deeper than the parser's stack: no reading of it is the agent's intent
        raise MalformedAction(f"the action's JSON nests deeper than {MAX_ARGUMENT_DEPTH} levels") from None
    if len(reply.tool_calls) > MAX_CALLS:
        raise _too_many(len(reply.tool_calls))
    _check_echo(reply)
    return reply


def read_message(message: Mapping[str, Any]) -> AgentReply:
    """An OpenAI assistant message (``tool_calls`` with JSON-text or object arguments) -> the
    agent's turn, read as the same action text would be (text content with ``<tool_call>``
    blocks counts too); `MalformedAction` when it is none."""
    if not isinstance(message, Mapping):
        raise MalformedAction(f"an assistant message is an object, not {type(message).__name__}")
    if message.get("tool_calls"):
        try:
            text = json.dumps({"content": message.get("content") or "", "tool_calls": message["tool_calls"]},
                              ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):  # not JSON as given (too deep, circular, not data)
            raise MalformedAction("the message cannot be written as JSON") from None
        return read_action(text)
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise MalformedAction(f"'content' must be a string, not {type(content).__name__}")
    return read_action(content or "")


def _read_action_text(action: str) -> AgentReply:
    text = action.strip()
    value: Any = None
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
    if isinstance(value, dict):
        if "tool_calls" in value:
            if not isinstance(value["tool_calls"], list):
                raise MalformedAction("'tool_calls' must be a list of calls")
            if len(value["tool_calls"]) > MAX_CALLS:
                raise _too_many(len(value["tool_calls"]))
            return AgentReply(content=_content(value.get("content")),
                              tool_calls=[_openai_call(raw) for raw in value["tool_calls"]])
        if "name" in value:
            return AgentReply(tool_calls=[_as_agent_call(value["name"], value.get("arguments", {}))])
        if "content" in value:
            return AgentReply(content=_content(value["content"]))
    parsed = parse_reply(action)
    return AgentReply(content=parsed.content or None,
                      tool_calls=[_as_agent_call(c.name, c.arguments) for c in parsed.tool_calls])


def check_reply(reply: AgentReply) -> AgentReply:
    """A structured turn (an adapter's `AgentReply`) held to the bounds text is read with (see
    `read_action`): the turn, with unusable call ids dropped; `MalformedAction` when it is none."""
    for call in reply.tool_calls:  # a turn `parse_action` found malformed stays malformed, for the same reason
        if not call.name and (call.arguments_error or "").startswith(MALFORMED):
            raise MalformedAction(call.arguments_error[len(MALFORMED):])  # type: ignore[index]
    if len(reply.tool_calls) > MAX_CALLS:
        raise _too_many(len(reply.tool_calls))
    calls = []
    for call in reply.tool_calls:
        checked = _as_agent_call(call.name, call.arguments, call.id)
        if call.arguments_error is not None:  # reported to the agent as it stands
            checked = checked.model_copy(update={"arguments_error": call.arguments_error})
        calls.append(checked)
    try:  # its size as text: the words and each call's compact JSON
        size = len(reply.content or "") + sum(
            len(c.name) + len(json.dumps(c.arguments, ensure_ascii=False, separators=(",", ":"))) for c in calls)
    except (TypeError, ValueError, RecursionError):
        raise MalformedAction("the action cannot be written as JSON") from None
    if size > MAX_ACTION:
        raise MalformedAction(f"the action is {size} characters long, more than the {MAX_ACTION} allowed")
    checked = AgentReply(content=(reply.content or "").strip() or None, tool_calls=calls)
    _check_echo(checked)
    return checked


def _check_echo(reply: AgentReply) -> None:
    """`MalformedAction` when the agent's turn would take more than ``MAX_ECHO`` characters in
    the conversation (measured on the text an observation would hold)."""
    calls = [ToolCall(name=c.name, arguments=c.arguments, id=c.id or "call_0") for c in reply.tool_calls]
    message = Message(role="assistant", content=reply.content, tool_calls=calls or None)
    try:
        size = len(json.dumps(openai_messages([message]), ensure_ascii=True))
    except (RecursionError, ValueError, TypeError):
        raise MalformedAction("the action cannot be written back as JSON") from None
    if size > MAX_ECHO:
        raise MalformedAction(f"the action takes {size} characters written back as JSON, more than the "
                              f"{MAX_ECHO} allowed")


def parse_action(action: Any) -> AgentReply:
    """An action -> the agent's turn (see `read_action`), never an exception: a malformed
    action is one call with no name whose ``arguments_error`` says why (so it never runs;
    `TaskEpisode.step` answers it as a malformed turn)."""
    try:
        return read_action(action)
    except MalformedAction as exc:
        return AgentReply(tool_calls=[AgentToolCall(name="", arguments={}, arguments_error=f"{MALFORMED}{exc}")])


def action_text(reply: AgentReply) -> str:
    """An agent's turn as an action text (an OpenAI assistant message in JSON): how an `Agent`
    session's reply is played as an action."""
    calls = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
             for c in reply.tool_calls]
    return json.dumps({"content": reply.content or "", "tool_calls": calls}, ensure_ascii=True)


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

    def step(self, action: AgentReply | str) -> Turn:
        """One agent turn (text read by `read_action`, or an `AgentReply` held to the same
        bounds by `check_reply`): a tool call (the first of the turn runs; further ones are
        answered with an error), a message to the user, or nothing (the agent ends the
        episode). A malformed action is a turn too: a failed call that runs nothing, answered
        ``Error: malformed action: ...``."""
        return self._play(lambda: check_reply(action) if isinstance(action, AgentReply) else read_action(action))

    def step_text(self, action: Any) -> Turn:
        """One agent turn that must be text (anything else is a malformed turn): the
        Gymnasium env's action space."""
        return self._play(lambda: read_action(action))

    def step_message(self, message: Mapping[str, Any]) -> Turn:
        """One agent turn given as an OpenAI assistant message (see `read_message`)."""
        return self._play(lambda: read_message(message))

    def say(self, text: str) -> Turn:
        """A message to the user (a turn with no call)."""
        return self._play(lambda: check_reply(AgentReply(content=_content(text))))

    def call(self, name: str, arguments: Mapping[str, Any], call_id: str | None = None) -> Turn:
        """One tool call as the turn."""
        return self._play(lambda: check_reply(AgentReply(tool_calls=[_as_agent_call(
            name, dict(arguments) if isinstance(arguments, Mapping) else arguments, call_id)])))

    def _play(self, read: Callable[[], AgentReply]) -> Turn:
        if self.done:
            raise EpisodeOver(EPISODE_OVER)
        try:
            reply, malformed = read(), None
        except MalformedAction as exc:
            reply, malformed = AgentReply(), str(exc)
        signals = Signals(tool_error=True, malformed=malformed) if malformed is not None else self._signals(reply)
        self.turns += 1
        before = len(self.messages)
        termination: Termination | None = None
        if malformed is not None:
            self._answer_malformed(malformed)
        elif reply.tool_calls:
            ran = len(self.steps)
            if self.core.engine.run_tool_calls(self.state, reply, self.messages, self.steps, self._call_ids):
                termination = "transfer"
            signals.tool_error = any(s.error for s in self.steps[ran:])
            self._cut_results(before)
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

    def _answer_malformed(self, reason: str) -> None:
        """A malformed action as a turn: an empty call (nothing runs) answered with the reason."""
        call_id = f"call_{len(self._call_ids) + 1}"
        self._call_ids.add(call_id)
        call = ToolCall(name="", arguments={}, id=call_id)
        observation = f"Error: {MALFORMED}{reason}"
        self.messages.append(Message(role="assistant", content=None, tool_calls=[call]))
        self.messages.append(Message(role="tool", content=observation, tool_call_id=call_id))
        self.steps.append(Step(call=call, observation=observation, error=True))

    def _cut_results(self, start: int) -> None:
        """Tool results from message ``start`` on cut to ``MAX_RESULT`` characters as JSON with
        ASCII escapes, in what the agent sees (the verifier reads the steps, which keep them whole)."""
        for index in range(start, len(self.messages)):
            message = self.messages[index]
            text = message.content or ""
            if message.role != "tool" or len(json.dumps(text, ensure_ascii=True)) <= MAX_RESULT:
                continue
            keep = (MAX_RESULT - len(CUT_NOTE)) // 12  # a character is at most 12 escaped
            while len(json.dumps(text[:keep * 2] + CUT_NOTE, ensure_ascii=True)) <= MAX_RESULT and keep * 2 < len(text):
                keep *= 2
            self.messages[index] = message.model_copy(update={"content": text[:keep] + CUT_NOTE})

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
