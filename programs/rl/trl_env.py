"""TRL's GRPO trainer on our tasks: an ``environment_factory`` class and its dataset.

    from trajectory2task.programs.rl.trl_env import trl_environment, trl_dataset
    env_class = trl_environment(environment, tasks)            # one class per task set
    trainer = GRPOTrainer(model, args=..., train_dataset=Dataset.from_list(trl_dataset(env_class)),
                          environment_factory=env_class, processing_class=tokenizer)

TRL makes one instance per rollout and calls ``reset(**row)`` with the dataset row
(``task_id`` picks the task; one task per episode). ``reset`` returns the simulated user's
opening, which TRL appends to the prompt's last (empty) user message; the prompt's system
message holds the policy. The public methods are the tools TRL shows the model: each domain
tool (its name, description, parameter types and descriptions; TRL reads them from the
signature and the Google-style docstring) and `SEND_MESSAGE`, the one way to talk to the
user, which returns the user's answer. The episode runs on `trajectory2task.programs.loop.episode`:
one call per tool invocation, the user's turns from the offline scripted user by default (an
LM user optional). When the model's generation ends (a reply with no tool call), TRL calls
``get_reward``: the episode closes as the agent's stop and the verifier's verdict is the
reward, 1.0 or 0.0; ``verdict`` keeps the failure reasons. Every call goes through the
core's one action reader: arguments nested too deep or a message too long are a malformed
turn whose result says ``Error: malformed action: ...``, never an exception. The final plain reply is not
heard by the user (TRL does not pass it to the environment): what must be communicated is
sent with `SEND_MESSAGE`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from trajectory2task.domains import Environment
from trajectory2task.programs.loop.episode import EPISODE_OVER, Episodes, TaskEpisode
from trajectory2task.programs.loop.rollout import DEFAULT_MAX_TURNS
from trajectory2task.programs.loop.user_sim import SimulatedUser
from trajectory2task.signatures.models import Task, Verdict

SEND_MESSAGE = "send_message_to_user"
# what the model is told beyond the policy: TRL ends the episode at its first reply without a tool call
MESSAGE_RULE = (f"Talk to the user only through the {SEND_MESSAGE} tool: it returns the user's answer. "
                "A reply without a tool call ends the conversation, and the user does not see it.")
_RESERVED = frozenset({"reset", "get_reward", SEND_MESSAGE})

_JSON_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool}


def python_type(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Any:
    """The type hint whose JSON schema (as transformers' ``get_json_schema`` writes it) is
    ``schema``: scalars, enums as ``Literal``, arrays of them, objects as ``dict``."""
    if "$ref" in schema:
        return python_type(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "enum" in schema:
        return Literal[tuple(schema["enum"])]
    if "anyOf" in schema:
        options = [python_type(s, defs) for s in schema["anyOf"] if s.get("type") != "null"]
        hint = options[0]
        for option in options[1:]:
            hint = hint | option
        return hint | None if any(s.get("type") == "null" for s in schema["anyOf"]) else hint
    kind = schema.get("type")
    if kind == "array":
        return list[python_type(schema["items"], defs)] if "items" in schema else list
    if kind == "object":
        return dict
    if kind in _JSON_TYPES:
        return _JSON_TYPES[kind]
    return str  # an untyped parameter: the model writes text


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _tool_method(schema: Mapping[str, Any], descriptions: Mapping[str, str]) -> Any:
    """A method named after the tool, whose signature and docstring describe it to TRL, and
    which plays the call as one agent turn."""
    function = schema["function"]
    name = function["name"]
    parameters = function.get("parameters") or {}
    defs = parameters.get("$defs", {})
    required = set(parameters.get("required", []))
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    annotations: dict[str, Any] = {}
    lines = []
    for arg, arg_schema in (parameters.get("properties") or {}).items():
        hint = python_type(arg_schema, defs)
        annotations[arg] = hint
        default = inspect.Parameter.empty if arg in required else arg_schema.get("default")
        params.append(inspect.Parameter(arg, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint))
        about = descriptions.get(arg) or arg_schema.get("description") or arg_schema.get("title") or arg
        lines.append(f"    {arg}: {_one_line(about)}")
    annotations["return"] = str

    def method(self: TRLTaskEnv, **arguments: Any) -> str:
        return self._call(name, arguments)

    method.__name__ = method.__qualname__ = name
    method.__signature__ = inspect.Signature(params, return_annotation=str)  # type: ignore[attr-defined]
    method.__annotations__ = annotations
    doc = function.get("description") or name
    method.__doc__ = doc + ("\n\nArgs:\n" + "\n".join(lines) if lines else "") + \
        "\n\nReturns:\n    The tool's result, or an error message."
    return method


class TRLTaskEnv:
    """Base of the classes `trl_environment` makes; ``_core`` is set on each."""

    _core: Episodes

    def __init__(self) -> None:
        self.episode: TaskEpisode | None = None
        self.verdict: Verdict | None = None

    def reset(self, **row: Any) -> str:
        """Start the row's task (its ``task_id``); returns the user's opening words."""
        if "task_id" not in row:
            raise ValueError("the dataset needs a task_id column (see trl_dataset)")
        self.episode = self._core.start(str(row["task_id"]))
        self.verdict = None
        return self.episode.opening

    def get_reward(self) -> float:
        """Close the episode (the model's generation ended) and score it: 1.0 when the
        verifier passes it, else 0.0; ``self.verdict`` keeps the reasons."""
        if self.episode is None:
            raise RuntimeError("get_reward before reset")
        self.verdict = self.episode.close("agent_stop")
        return self.episode.reward

    def send_message_to_user(self, message: str) -> str:
        """Send a message to the user and get the user's answer.

        Args:
            message: What to tell or ask the user.

        Returns:
            The user's answer.
        """
        episode = self._live()
        if isinstance(episode, str):
            return episode
        turn = episode.say(message)
        answer = " ".join(m.content or "" for m in turn.observations)
        return answer + (" (The conversation has ended.)" if turn.done else "")

    def _live(self) -> TaskEpisode | str:
        if self.episode is None:
            raise RuntimeError("a tool call before reset")
        if self.episode.done:
            return f"Error: {EPISODE_OVER}."
        return self.episode

    def _call(self, name: str, arguments: dict[str, Any]) -> str:
        episode = self._live()
        if isinstance(episode, str):
            return episode
        # defaults the model left out are not sent: the tool applies its own
        turn = episode.call(name, {k: v for k, v in arguments.items() if v is not None})
        result = turn.observations[0].content if turn.observations else ""
        return (result or "") + (" (The conversation has ended.)" if turn.done else "")


def trl_environment(environment: Environment[Any], tasks: Sequence[Task | Mapping[str, Any]], *,
                    user: SimulatedUser | None = None, max_turns: int = DEFAULT_MAX_TURNS,
                    require_clarification: bool = False) -> type[TRLTaskEnv]:
    """The ``environment_factory`` class for TRL's ``GRPOTrainer`` over these tasks: its
    public methods are the domain's tools and `SEND_MESSAGE` (see module doc)."""
    core = Episodes(environment, tasks, user=user, max_turns=max_turns, require_clarification=require_clarification)
    namespace: dict[str, Any] = {"_core": core, "__doc__": f"{environment.domain.name} tasks as a TRL environment."}
    for schema in core.tools:
        name = schema["function"]["name"]
        if name in _RESERVED or name.startswith("_"):
            raise ValueError(f"tool {name!r} clashes with the TRL environment's own methods")
        spec = environment.tools[name]
        namespace[name] = _tool_method(schema, spec.parameter_descriptions)
    title = "".join(part.capitalize() for part in environment.domain.name.replace("-", "_").split("_"))
    return type(f"{title}TaskEnv", (TRLTaskEnv,), namespace)


def trl_dataset(env_class: type[TRLTaskEnv], task_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per task (for ``datasets.Dataset.from_list``): ``prompt`` (the system message
    with the policy, and an empty user message that ``reset`` fills with the user's opening)
    and ``task_id``."""
    core = env_class._core
    ids = list(task_ids) if task_ids is not None else [t.id for t in core.tasks]
    for task_id in ids:
        core.task(task_id)  # an unknown id fails here, not inside the trainer
    system = f"{core.system}\n\n{MESSAGE_RULE}"
    return [{"prompt": [{"role": "system", "content": system}, {"role": "user", "content": ""}], "task_id": task_id}
            for task_id in ids]


def tool_schemas(env_class: type[TRLTaskEnv]) -> list[dict[str, Any]]:
    """The tool schemas TRL renders for this class (through transformers' ``get_json_schema``)."""
    from transformers.utils import get_json_schema

    instance = env_class()
    return [get_json_schema(getattr(instance, name)) for name, _ in
            inspect.getmembers(env_class, predicate=inspect.isfunction)
            if name not in ("reset", "get_reward") and not name.startswith("_")]

