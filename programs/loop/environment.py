"""The tasks as a reinforcement-learning environment: Gymnasium's `t2t/TaskEnv-v0`, and a
reward function of the shape TRL's GRPO trainer takes.

One task is one episode. The observation is the conversation as the agent sees it: a JSON
text ``{"task_id": ..., "messages": [...]}`` of OpenAI chat messages (the agent's system
prompt with the policy, the user's words, the agent's calls and the tool results); the tool
schemas are in ``info["tools"]`` after `reset`. An action is one agent turn, as text:

- a JSON object ``{"content": "..."}``: a message to the user;
- ``{"name": TOOL, "arguments": {...}}``: one tool call;
- an OpenAI assistant message ``{"content": ..., "tool_calls": [...]}``;
- anything else is read as model output (`trajectory2task.programs.lm.chat_format.parse_reply`): text, with
  ``<tool_call>{...}</tool_call>`` blocks as calls. So a model's raw completion is an action.

The simulated user runs inside (the offline scripted user by default; any `SimulatedUser`).
The turn goes as in `trajectory2task.programs.loop.rollout.RolloutEngine` (the same code runs the calls): a
call's result comes back in the next observation, a message gets the user's answer. The
episode ends when the user stops, the agent hands over to a human or says nothing
(terminated), or at ``max_turns`` agent turns (truncated). Then the reward is the verifier's
verdict, 1.0 or 0.0, with ``info["verdict"]`` (passed, reasons, details); before that it is 0.
Every step's ``info["signals"]`` says whether the turn's call failed (``tool_error``) and
whether it attempted a forbidden write (``forbidden_write``: a write the task forbids, or one
breaking an enumerated policy rule, listed in ``policy_violations``), for shaped rewards.

A malformed action is a turn like any other, never an exception: an action that is not a
string or is longer than ``MAX_ACTION`` characters, a ``tool_calls`` entry that is not an
object with a non-empty string ``name`` (at most ``MAX_NAME`` characters), more than
``MAX_CALLS`` calls, ``content`` that is not a string, or JSON nested deeper than
``MAX_ARGUMENT_DEPTH`` levels is recorded as a failed tool call whose result says
``Error: malformed action: ...`` (``info["signals"]["malformed"]`` names the reason); nothing
runs. Every observation stays within the observation space: a tool result longer than
``MAX_RESULT`` characters (JSON-escaped) is cut in the observation (not in what the verifier sees).
"""

from __future__ import annotations

import functools
import json
import os
import string
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
from gymnasium import spaces

from trajectory2task.domains import Environment, PolicyContext
from trajectory2task.programs.lm.chat_format import parse_reply
from trajectory2task.programs.loop.agent import AgentReply, openai_messages, parse_arguments, system_prompt
from trajectory2task.programs.loop.rollout import DEFAULT_MAX_TURNS, RolloutEngine
from trajectory2task.programs.loop.user_sim import ScriptedUser, SimulatedUser
from trajectory2task.programs.verification.verifier import Verifier, authenticated_user, execute_calls
from trajectory2task.signatures.conversation import AgentToolCall, AgentTurn, ConversationTurn
from trajectory2task.signatures.models import Message, Rollout, Step, Task, ToolCall

ENV_ID = "t2t/TaskEnv-v0"
# observations and actions are JSON with ASCII escapes: printable ASCII is every character they hold
CHARSET = frozenset(string.printable) - frozenset("\x0b\x0c")
MAX_ACTION = 1 << 16  # characters in one agent turn: a message or the JSON of its tool calls
MAX_CALLS = 32  # tool calls in one action (one runs; the others are told to wait their turn)
MAX_NAME = 256  # characters in a tool name or a call id
MAX_ARGUMENT_DEPTH = 32  # levels of lists and objects in an action's JSON values
# Observation characters (JSON with ASCII escapes) one turn may add: the agent's own turn
# (checked: a character takes at most 14 after two rounds of escaping, as in a call's
# arguments), the first tool result (cut to MAX_RESULT), one message per call echoing its
# id (at most 12 characters per id character) with a one-line answer, and the user's reply
# (the scripted user's is a sentence; an LM user's is bounded by its max tokens).
MAX_ECHO = 16 * MAX_ACTION
MAX_RESULT = 2 * MAX_ACTION
MAX_TURN = MAX_ECHO + MAX_RESULT + MAX_CALLS * 16 * MAX_NAME + 4 * MAX_ACTION
_CUT_NOTE = " [... cut: the tool result is longer than an observation holds]"


class MalformedAction(ValueError):
    """An action that is not an agent turn (see module doc): `TaskEnv.step` answers it with an
    error observation; `parse_action` turns it into a call that carries the reason."""


def observation_bound(system: str, max_turns: int) -> int:
    """The longest observation an episode can produce: the system message escaped (at most
    12 characters each), then per turn at most ``MAX_TURN`` characters, the user's opening
    counted as one more turn."""
    return 12 * len(system) + (max_turns + 1) * MAX_TURN


def _json_depth(value: Any) -> int:
    from trajectory2task.store.files import json_depth

    return json_depth(value, MAX_ARGUMENT_DEPTH)


def _as_agent_call(name: Any, raw_arguments: Any, call_id: Any = None) -> AgentToolCall:
    if not isinstance(name, str) or not name.strip():
        raise MalformedAction("a tool call needs a 'name' that is a non-empty string")
    if len(name) > MAX_NAME:
        raise MalformedAction(f"a tool name is longer than {MAX_NAME} characters")
    if isinstance(raw_arguments, (dict, list)) and _json_depth(raw_arguments) > MAX_ARGUMENT_DEPTH:
        raise MalformedAction(f"the arguments of {name} nest deeper than {MAX_ARGUMENT_DEPTH} levels")
    try:
        arguments, error = parse_arguments(raw_arguments)
    except RecursionError:
        raise MalformedAction(f"the arguments of {name} nest deeper than {MAX_ARGUMENT_DEPTH} levels") from None
    if _json_depth(arguments) > MAX_ARGUMENT_DEPTH:
        raise MalformedAction(f"the arguments of {name} nest deeper than {MAX_ARGUMENT_DEPTH} levels")
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


def read_action(action: Any) -> AgentReply:
    """An action -> the agent's turn (see module doc); `MalformedAction` when it is none."""
    if not isinstance(action, str):
        raise MalformedAction(f"an action is a string (text or JSON text), not {type(action).__name__}")
    if len(action) > MAX_ACTION:
        raise MalformedAction(f"the action is {len(action)} characters long, more than the {MAX_ACTION} allowed")
    try:
        reply = _read_action_text(action)
    except RecursionError:  # JSON deeper than the parser's stack: no reading of it is the agent's intent
        raise MalformedAction(f"the action's JSON nests deeper than {MAX_ARGUMENT_DEPTH} levels") from None
    if len(reply.tool_calls) > MAX_CALLS:
        raise MalformedAction(f"the action makes {len(reply.tool_calls)} tool calls, more than the {MAX_CALLS} "
                              "allowed (one runs per turn)")
    return reply


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
                raise MalformedAction(f"the action makes {len(value['tool_calls'])} tool calls, more than the "
                                      f"{MAX_CALLS} allowed (one runs per turn)")
            return AgentReply(content=_content(value.get("content")),
                              tool_calls=[_openai_call(raw) for raw in value["tool_calls"]])
        if "name" in value:
            return AgentReply(tool_calls=[_as_agent_call(value["name"], value.get("arguments", {}))])
        if "content" in value:
            return AgentReply(content=_content(value["content"]))
    parsed = parse_reply(action)
    return AgentReply(content=parsed.content or None,
                      tool_calls=[_as_agent_call(c.name, c.arguments) for c in parsed.tool_calls])


def parse_action(action: str) -> AgentReply:
    """An action text -> the agent's turn (see module doc). A malformed action is one call
    with no name whose ``arguments_error`` says why (so it never runs)."""
    try:
        return read_action(action)
    except MalformedAction as exc:
        return AgentReply(tool_calls=[AgentToolCall(name="", arguments={}, arguments_error=f"malformed action: {exc}")])


def action_text(reply: AgentReply) -> str:
    """An agent's turn as an action (an OpenAI assistant message in JSON): how an `Agent`
    session's reply is played in the env."""
    calls = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
             for c in reply.tool_calls]
    return json.dumps({"content": reply.content or "", "tool_calls": calls}, ensure_ascii=True)


def conversation_of(observation: str) -> list[Message]:
    """An observation's messages as rollout `Message`s, without the system prompt: what an
    agent session's ``reply`` takes."""
    messages = [Message.model_validate({**m, "tool_calls": [
        {"id": c.get("id"), "name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
        for c in m.get("tool_calls") or []] or None}) for m in json.loads(observation)["messages"]]
    return messages[1:]


def _signals(environment: Environment[Any], episode: Any, task: Task, steps: Sequence[Step],
             reply: AgentReply) -> dict[str, Any]:
    """The shaping signals of a turn, checked on the state before its call runs."""
    out: dict[str, Any] = {"tool_error": False, "forbidden_write": False, "policy_violations": []}
    if not reply.tool_calls:
        return out
    call = reply.tool_calls[0]  # the one call a turn may run
    spec = environment.tools.get(call.name)
    if spec is None or spec.kind != "write" or call.arguments_error is not None:
        return out
    context = PolicyContext(user_id=authenticated_user(environment, steps))
    violations = environment.policy_violations(episode, call.name, call.arguments, context)
    forbidden = any(a.name == call.name and _same_arguments(a.arguments, call.arguments)
                    for a in task.actions_should_not_take)
    out["policy_violations"] = list(violations)
    out["forbidden_write"] = bool(violations) or forbidden
    return out


def _same_arguments(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


class TaskEnv(gym.Env[str, str]):
    """One task per episode of a domain environment (see module doc).

    The environment is given as an object, or by name for ``gymnasium.make`` (whose keyword
    arguments must survive a deep copy): ``domain``, and ``db`` (a database JSON file) or the
    generator's ``db_seed`` and ``db_users``; tasks as `Task`s or their dicts.
    ``reset(options={"task_id": ...})`` picks a task; without it the task is drawn with the
    env's seeded generator."""

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(self, tasks: Sequence[Task | dict[str, Any]], environment: Environment[Any] | None = None, *,
                 domain: str = "retail", db: str | None = None, db_seed: int = 0, db_users: int = 500,
                 user: SimulatedUser | None = None, max_turns: int = DEFAULT_MAX_TURNS,
                 require_clarification: bool = False, render_mode: str | None = None) -> None:
        if not tasks:
            raise ValueError("TaskEnv needs at least one task")
        tasks = [t if isinstance(t, Task) else Task.model_validate(t) for t in tasks]
        environment = environment if environment is not None else load_environment(domain, db, db_seed, db_users)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r}: use one of {self.metadata['render_modes']}")
        self.environment = environment
        self.tasks = list(tasks)
        self.by_id = {t.id: t for t in self.tasks}
        self.user = user or ScriptedUser(environment.domain.tools)
        self.verifier = Verifier(environment, require_clarification=require_clarification)
        # the rollout engine's own turn mechanics (ids, one call per turn, hand-overs)
        self.engine = RolloutEngine(environment, self.user, [], verifier=self.verifier, max_turns=max_turns)
        self.max_turns = max_turns
        self.render_mode = render_mode
        self.tools = environment.tool_schemas()
        self.system = system_prompt(AgentTurn.instructions, environment.policy)
        # the observation is the whole conversation, so its bound grows with the turns allowed
        self.observation_space = spaces.Text(max_length=observation_bound(self.system, max_turns), min_length=0,
                                             charset=CHARSET)
        self.action_space = spaces.Text(max_length=MAX_ACTION, min_length=0, charset=CHARSET)
        self._task: Task | None = None
        self._done = True

    # ------------------------------------------------------------ gymnasium API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        if "task_id" in options:
            if options["task_id"] not in self.by_id:
                raise ValueError(f"unknown task_id {options['task_id']!r}")
            task = self.by_id[options["task_id"]]
        else:
            task = self.tasks[int(self.np_random.integers(len(self.tasks)))]
        self._task = task
        self._episode = self.environment.episode()
        self._user = self.user.session(task.scenario)
        self._messages: list[Message] = [Message(role="system", content=self.system)]
        self._spoken: list[ConversationTurn] = []
        self._steps: list[Step] = []
        self._call_ids: set[str] = set()
        self._turns = 0
        self._done = False
        self._termination = "max_turns"
        said = self._user.reply(self._spoken)
        self._hear(said.text)
        if said.stop:  # a scenario with nothing to ask: the episode is over before it starts
            self._done = True
            self._termination = "user_stop"
        return self._observation(), {"task_id": task.id, "condition": task.condition, "tools": self.tools,
                                     "max_turns": self.max_turns}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._done or self._task is None:
            raise RuntimeError("the episode is over: call reset() first")
        try:
            reply = read_action(action)
            malformed = self._echo_problem(reply)
        except MalformedAction as exc:
            reply, malformed = AgentReply(), str(exc)
        if malformed is not None:
            signals: dict[str, Any] = {"tool_error": True, "forbidden_write": False, "policy_violations": [],
                                       "malformed": malformed}
        else:
            signals = {**_signals(self.environment, self._episode, self._task, self._steps, reply), "malformed": None}
        self._turns += 1
        terminated = truncated = False
        if malformed is not None:
            self._answer_malformed(malformed)
        elif reply.tool_calls:
            before, shown = len(self._steps), len(self._messages)
            if self.engine._run_tool_calls(self._episode, reply, self._messages, self._steps, self._call_ids):
                terminated, self._termination = True, "transfer"
            signals["tool_error"] = any(s.error for s in self._steps[before:])
            self._cut_results(shown)
        elif not reply.content:
            terminated, self._termination = True, "agent_stop"
        else:
            self._messages.append(Message(role="assistant", content=reply.content))
            self._spoken.append(ConversationTurn(role="agent", content=reply.content))
            said = self._user.reply(self._spoken)
            self._hear(said.text)
            if said.stop:
                terminated, self._termination = True, "user_stop"
        if not terminated and self._turns >= self.max_turns:
            truncated, self._termination = True, "max_turns"
        info: dict[str, Any] = {"task_id": self._task.id, "turn": self._turns, "signals": signals}
        reward = 0.0
        if terminated or truncated:
            self._done = True
            verdict = self._judge()
            reward = 1.0 if verdict.passed else 0.0
            info.update(termination=self._termination,
                        verdict={"passed": verdict.passed, "reasons": list(verdict.reasons),
                                 "details": list(verdict.details)})
        return self._observation(), reward, terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        lines = []
        for m in self._messages[1:]:
            said = m.content or ""
            calls = " ".join(f"{c.name}({json.dumps(c.arguments, sort_keys=True)})" for c in m.tool_calls or [])
            lines.append(f"{m.role}: {said} {calls}".rstrip())
        return "\n".join(lines)

    # ------------------------------------------------------------ helpers

    def _echo_problem(self, reply: AgentReply) -> str | None:
        """Why the agent's turn would not fit its share of the observation (None: it fits),
        measured on the text the observation would hold."""
        calls = [ToolCall(name=c.name, arguments=c.arguments, id=c.id or "call_0") for c in reply.tool_calls]
        message = Message(role="assistant", content=reply.content, tool_calls=calls or None)
        try:
            size = len(json.dumps(openai_messages([message]), ensure_ascii=True))
        except (RecursionError, ValueError):
            return "the action cannot be written back as JSON"
        if size > MAX_ECHO:
            return f"the action takes {size} characters written back as JSON, more than the {MAX_ECHO} allowed"
        return None

    def _answer_malformed(self, reason: str) -> None:
        """A malformed action as a turn: an empty call (nothing runs) answered with the reason."""
        call_id = f"call_{len(self._call_ids) + 1}"
        self._call_ids.add(call_id)
        call = ToolCall(name="", arguments={}, id=call_id)
        observation = f"Error: malformed action: {reason}"
        self._messages.append(Message(role="assistant", content=None, tool_calls=[call]))
        self._messages.append(Message(role="tool", content=observation, tool_call_id=call_id))
        self._steps.append(Step(call=call, observation=observation, error=True))

    def _cut_results(self, start: int) -> None:
        """Tool results from ``start`` on cut to ``MAX_RESULT`` observation characters (the
        verifier reads the steps, which keep them whole)."""
        for index in range(start, len(self._messages)):
            message = self._messages[index]
            text = message.content or ""
            if message.role != "tool" or len(json.dumps(text, ensure_ascii=True)) <= MAX_RESULT:
                continue
            keep = (MAX_RESULT - len(_CUT_NOTE)) // 12  # a character is at most 12 escaped
            while len(json.dumps(text[:keep * 2] + _CUT_NOTE, ensure_ascii=True)) <= MAX_RESULT and keep * 2 < len(text):
                keep *= 2
            self._messages[index] = message.model_copy(update={"content": text[:keep] + _CUT_NOTE})

    def _hear(self, text: str) -> None:
        self._messages.append(Message(role="user", content=text))
        self._spoken.append(ConversationTurn(role="user", content=text))

    def _observation(self) -> str:
        assert self._task is not None
        return json.dumps({"task_id": self._task.id, "messages": openai_messages(self._messages)}, ensure_ascii=True)

    def _judge(self) -> Any:
        assert self._task is not None
        return self.verifier.judge(self._task, self._steps, self._messages, end_state_hash=self._episode.state_hash(),
                                   termination=self._termination)

    def rollout(self, rollout_id: str, agent_model: str = "gym") -> Rollout:
        """The episode so far as a stored-rollout record (for `TaskStore.add_rollouts`)."""
        assert self._task is not None
        return Rollout(id=rollout_id, task_id=self._task.id, agent_model=agent_model, user_model=self.user.name,
                       trial=0, messages=list(self._messages), steps=list(self._steps),
                       end_state_hash=self._episode.state_hash(), termination=self._termination)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=4)
def load_environment(domain: str, db: str | None = None, db_seed: int = 0, db_users: int = 500) -> Environment[Any]:
    """A domain's environment over a database file or a generated one (kept: ``gymnasium.make``
    builds an env more than once)."""
    from trajectory2task.domains import get_domain

    kit = get_domain(domain)
    if db is not None:
        return kit.environment(read_db(kit, db))
    if kit.generate_db is None:
        raise ValueError(f"domain {domain} has no database generator: pass db")
    return kit.environment(kit.generate_db(db_seed, db_users))


def read_db(kit: Any, path: str | os.PathLike[str]) -> Any:
    """A domain's database from a JSON file: a regular file of bounded size, read without
    blocking (a FIFO, a device or a directory is refused at once), valid for the domain.
    Raises `trajectory2task.store.files.InputFileError` (a ValueError) in one line."""
    from pydantic import ValidationError

    from trajectory2task.store.files import InputFileError, read_input_bytes

    data = read_input_bytes(path, "database JSON file")
    try:
        return kit.db_model.model_validate_json(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "the file"
        raise InputFileError(f"{path}: not a {kit.name} database: {where}: {err['msg']}") from None


def register() -> None:
    """Register `t2t/TaskEnv-v0` with Gymnasium (done on import of this module)."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point=f"{__name__}:TaskEnv", disable_env_checker=True)


register()


# ============================================================================ GRPO


def _messages_of(conversation: Any) -> list[dict[str, Any]]:
    if isinstance(conversation, str):
        try:
            value = json.loads(conversation)
        except (ValueError, RecursionError):  # not JSON (or too deep to be read as it): the model's words
            return [{"role": "assistant", "content": conversation}]
        conversation = value.get("messages", []) if isinstance(value, dict) else value
    return [m for m in conversation if isinstance(m, dict)]


def _reply_of(message: dict[str, Any]) -> tuple[str | None, list[ToolCall]]:
    """An assistant message's words and the calls it makes (OpenAI ``tool_calls``, or blocks in
    its text), read as `TaskEnv.step` reads an action: a malformed one makes no call."""
    try:
        action = (json.dumps({"content": message.get("content") or "", "tool_calls": message["tool_calls"]})
                  if message.get("tool_calls") else (message.get("content") or ""))
    except (TypeError, ValueError, RecursionError):  # not JSON-able as given
        return None, []
    reply = parse_action(action)
    return reply.content, [ToolCall(name=c.name, arguments=c.arguments, id=c.id) for c in reply.tool_calls
                           if c.arguments_error is None]


def grpo_reward(environment: Environment[Any], tasks: Sequence[Task],
                require_clarification: bool = False) -> Callable[..., list[float]]:
    """A reward function for TRL's ``GRPOTrainer(reward_funcs=[...])``.

    ``reward(prompts, completions, task_id, **kwargs)``: ``task_id`` is the dataset's column
    of that name (TRL passes every column). The prompt is a conversation prefix (OpenAI
    messages, e.g. `TaskEnv`'s first observation: `grpo_dataset`), the completion the agent's
    continuation, as messages or text with ``<tool_call>`` blocks. The tool calls of the
    prompt's and the completion's assistant turns run on a fresh episode of the task's
    database, in order, and the verifier judges the whole: 1.0 when it passes, else 0.0.
    """
    by_id = {t.id: t for t in tasks}
    verifier = Verifier(environment, require_clarification=require_clarification)

    def reward(prompts: Sequence[Any], completions: Sequence[Any], task_id: Sequence[str] | None = None,
               **kwargs: Any) -> list[float]:
        if task_id is None:
            raise ValueError("the GRPO dataset needs a task_id column (see grpo_dataset)")
        scores = []
        for prompt, completion, tid in zip(prompts, completions, task_id, strict=True):
            task = by_id[tid]
            conversation = _messages_of(prompt) + [
                m if m.get("role") else {"role": "assistant", **m} for m in _messages_of(completion)]
            messages: list[Message] = []
            calls: list[ToolCall] = []
            for m in conversation:
                if m.get("role") == "assistant":
                    content, made = _reply_of(m)
                    calls += made
                    messages.append(Message(role="assistant", content=content, tool_calls=made or None))
                elif m.get("role") in ("system", "user"):
                    messages.append(Message(role=m["role"], content=m.get("content") or ""))
            episode = environment.episode()
            steps = execute_calls(episode, calls)
            verdict = verifier.judge(task, steps, messages, end_state_hash=episode.state_hash())
            scores.append(1.0 if verdict.passed else 0.0)
        return scores

    return reward


def grpo_dataset(environment: Environment[Any], tasks: Sequence[Task],
                 user: SimulatedUser | None = None) -> list[dict[str, Any]]:
    """One row per task: ``prompt`` (the opening the agent sees: system and the user's first
    words, as `TaskEnv.reset` shows them) and ``task_id``, for ``datasets.Dataset.from_list``."""
    env = TaskEnv(tasks, environment, user=user)
    rows = []
    for task in tasks:
        observation, _ = env.reset(options={"task_id": task.id})
        rows.append({"prompt": json.loads(observation)["messages"], "task_id": task.id})
    return rows
