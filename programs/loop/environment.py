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
(terminated; so does an LM user that fails, unscored, as termination ``lm_error``), or at
``max_turns`` agent turns (truncated). Then the reward is the verifier's
verdict, 1.0 or 0.0, with ``info["verdict"]`` (passed, reasons, details); before that it is 0.
Every step's ``info["signals"]`` says whether the turn's call failed (``tool_error``) and
whether it attempted a forbidden write (``forbidden_write``: a write the task forbids, or one
breaking an enumerated policy rule, listed in ``policy_violations``), for shaped rewards.

The episode itself (reading actions, the turn, the user, the verdict) is the one episode
core every RL adapter shares, `trajectory2task.programs.loop.episode`; this module is its
Gymnasium shell (observation encoding, spaces and their bounds, rendering).

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

import json
import string
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
from gymnasium import spaces

from trajectory2task.domains import Environment
from trajectory2task.programs.loop.domain_env import load_environment, read_db
from trajectory2task.programs.loop.episode import (MAX_ACTION, MAX_ARGUMENT_DEPTH, MAX_CALLS, MAX_ECHO, MAX_NAME,
                                                   MAX_RESULT, Episodes, MalformedAction, TaskEpisode, action_text,
                                                   parse_action, read_action, read_message, reward_of)
from trajectory2task.programs.loop.rollout import DEFAULT_MAX_TURNS
from trajectory2task.programs.loop.user_sim import SimulatedUser
from trajectory2task.programs.verification.verifier import Verifier, execute_calls
from trajectory2task.signatures.models import Message, Rollout, Step, Task, ToolCall

# re-exported: this module is where Gymnasium users (and older code) find them
__all__ = ["CHARSET", "ENV_ID", "MAX_ACTION", "MAX_ARGUMENT_DEPTH", "MAX_CALLS", "MAX_ECHO", "MAX_NAME", "MAX_RESULT",
           "MAX_TURN", "MalformedAction", "TaskEnv", "action_text", "conversation_of", "grpo_dataset", "grpo_reward",
           "load_environment", "observation_bound", "parse_action", "read_action", "read_db", "register"]

ENV_ID = "t2t/TaskEnv-v0"
# observations and actions are JSON with ASCII escapes: printable ASCII is every character they hold
CHARSET = frozenset(string.printable) - frozenset("\x0b\x0c")
# Observation characters (JSON with ASCII escapes) one turn may add: the agent's own turn
# (at most MAX_ECHO: the core refuses a longer one), the first tool result (cut to
# MAX_RESULT), one message per call echoing its id (at most 12 characters per id character)
# with a one-line answer, and the user's reply (the scripted user's is a sentence; an LM
# user's is bounded by its max tokens).
MAX_TURN = MAX_ECHO + MAX_RESULT + MAX_CALLS * 16 * MAX_NAME + 4 * MAX_ACTION


def observation_bound(system: str, max_turns: int) -> int:
    """The longest observation an episode can produce: the system message escaped (at most
    12 characters each), then per turn at most ``MAX_TURN`` characters, the user's opening
    counted as one more turn."""
    return 12 * len(system) + (max_turns + 1) * MAX_TURN


def conversation_of(observation: str) -> list[Message]:
    """An observation's messages as rollout `Message`s, without the system prompt: what an
    agent session's ``reply`` takes."""
    messages = [Message.model_validate({**m, "tool_calls": [
        {"id": c.get("id"), "name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
        for c in m.get("tool_calls") or []] or None}) for m in json.loads(observation)["messages"]]
    return messages[1:]


class TaskEnv(gym.Env[str, str]):
    """One task per episode of a domain environment (see module doc), a Gymnasium shell over
    the episode core (`Episodes`; ``episode`` is the current `TaskEpisode`).

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
        environment = environment if environment is not None else load_environment(domain, db, db_seed, db_users)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r}: use one of {self.metadata['render_modes']}")
        self.core = Episodes(environment, tasks, user=user, max_turns=max_turns,
                             require_clarification=require_clarification)
        self.environment = environment
        self.tasks = self.core.tasks
        self.by_id = self.core.by_id
        self.user = self.core.user
        self.verifier = self.core.verifier
        self.max_turns = max_turns
        self.render_mode = render_mode
        self.tools = self.core.tools
        self.system = self.core.system
        # the observation is the whole conversation, so its bound grows with the turns allowed
        self.observation_space = spaces.Text(max_length=observation_bound(self.system, max_turns), min_length=0,
                                             charset=CHARSET)
        self.action_space = spaces.Text(max_length=MAX_ACTION, min_length=0, charset=CHARSET)
        self.episode: TaskEpisode | None = None

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
        # a scenario with nothing to ask is over before it starts: the next step raises
        self.episode = self.core.start(task.id)
        return self._observation(), {"task_id": task.id, "condition": task.condition, "tools": self.tools,
                                     "max_turns": self.max_turns}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.episode is None or self.episode.done:
            raise RuntimeError("the episode is over: call reset() first")
        turn = self.episode.step_text(action)  # the action space is text: anything else is malformed
        info: dict[str, Any] = {"task_id": self.episode.task.id, "turn": turn.turn,
                                "signals": turn.signals.model_dump()}
        if turn.done:
            assert turn.verdict is not None
            info.update(termination=turn.termination,
                        verdict=turn.verdict.model_dump(include={"passed", "reasons", "details"}))
        return self._observation(), turn.reward, turn.terminated, turn.truncated, info

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self.episode is None:
            return None
        lines = []
        for m in self.episode.messages[1:]:
            said = m.content or ""
            calls = " ".join(f"{c.name}({json.dumps(c.arguments, sort_keys=True)})" for c in m.tool_calls or [])
            lines.append(f"{m.role}: {said} {calls}".rstrip())
        return "\n".join(lines)

    def rollout(self, rollout_id: str, agent_model: str = "gym") -> Rollout:
        """The episode so far as a stored-rollout record (for `TaskStore.add_rollouts`)."""
        return self._current().rollout(rollout_id, agent_model)

    # ------------------------------------------------------------ helpers

    def _current(self) -> TaskEpisode:
        if self.episode is None:
            raise RuntimeError("no episode yet: call reset() first")
        return self.episode

    def _observation(self) -> str:
        episode = self._current()
        return json.dumps({"task_id": episode.task.id, "messages": episode.observation()}, ensure_ascii=True)

    # views of the current episode kept under their names from before the core
    @property
    def _episode(self) -> Any:
        """The current episode's database state."""
        return self._current().state

    @property
    def _steps(self) -> list[Step]:
        return self._current().steps

    @property
    def _turns(self) -> int:
        return self._current().turns


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
    its text), read as the episode core reads an action: a malformed one makes no call."""
    try:
        reply = read_message(message)
    except MalformedAction:
        return None, []
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
            scores.append(reward_of(verdict))
        return scores

    return reward


def grpo_dataset(environment: Environment[Any], tasks: Sequence[Task],
                 user: SimulatedUser | None = None) -> list[dict[str, Any]]:
    """One row per task: ``prompt`` (the opening the agent sees: system and the user's first
    words, as `TaskEnv.reset` shows them) and ``task_id``, for ``datasets.Dataset.from_list``."""
    core = Episodes(environment, tasks, user=user)
    return [{"prompt": core.start(task.id).observation(), "task_id": task.id} for task in tasks]
