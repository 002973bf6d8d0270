"""The ``verifiers`` library (its classic environment API, which prime-rl and SkyRL load):
our tasks as a multi-turn environment with our simulated user and a rubric that calls our
verifier.

    import verifiers as vf
    env = vf.load_environment("trajectory2task.programs.rl.verifiers_env",
                              tasks_file="tasks.jsonl", domain="retail")
    results = env.evaluate_sync(client=vf.ClientConfig(api_base_url=..., api_key_var=...), model=...)

One dataset row per task (``info.task_id``); the prompt is the agent's system message (the
policy), and the simulated user's opening is added when the rollout starts. The model sees
the domain's tools (``tool_defs``). Each model turn is one agent turn of the episode core
(`trajectory2task.programs.loop.episode`): a tool call runs (the first of the turn) and its
result comes back; a message gets the simulated user's answer (the offline scripted user by
default; an LM user optional, by passing ``user``); an empty turn ends the episode, and so
do the user's stop, a hand-off and the turn limit. A malformed turn (see the core's
`read_action`) is answered ``Error: malformed action: ...``, never an exception. The
rubric's one reward, ``t2t_verdict``, is the verifier's verdict, 1.0 or 0.0; the verdict
(passed, reasons, details) is kept in the rollout state under ``t2t_verdict``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from trajectory2task.programs.rl import require_rl_extra

require_rl_extra("the verifiers environment", ("verifiers", "datasets"))

import verifiers as vf  # noqa: E402
from datasets import Dataset  # noqa: E402

from trajectory2task.domains import Environment  # noqa: E402
from trajectory2task.programs.loop.domain_env import load_environment as domain_environment  # noqa: E402
from trajectory2task.programs.loop.episode import Episodes, TaskEpisode  # noqa: E402
from trajectory2task.programs.loop.rollout import DEFAULT_MAX_TURNS  # noqa: E402
from trajectory2task.programs.loop.user_sim import SimulatedUser  # noqa: E402
from trajectory2task.signatures.models import Task  # noqa: E402

EPISODE_KEY = "t2t_episode"
VERDICT_KEY = "t2t_verdict"


def _field(value: Any, key: str) -> Any:
    """A message field, whether verifiers hands the message over as a model or a dict."""
    return value.get(key) if isinstance(value, Mapping) else getattr(value, key, None)


def _assistant_dict(message: Any) -> dict[str, Any]:
    calls = []
    for call in _field(message, "tool_calls") or []:
        function = _field(call, "function")
        name = _field(call, "name") or (_field(function, "name") if function is not None else None)
        arguments = _field(call, "arguments")
        if arguments is None and function is not None:
            arguments = _field(function, "arguments")
        calls.append({"id": _field(call, "id"), "function": {"name": name, "arguments": arguments}})
    return {"content": _field(message, "content") or "", "tool_calls": calls}


class TaskMultiTurnEnv(vf.MultiTurnEnv):
    """One task per rollout, played on the episode core (see module doc)."""

    def __init__(self, core: Episodes, **kwargs: Any) -> None:
        self.core = core
        rows = [{"prompt": [{"role": "system", "content": core.system}], "info": {"task_id": t.id}}
                for t in core.tasks]
        dataset = Dataset.from_list(rows)
        tools = [vf.Tool(name=s["function"]["name"], description=s["function"].get("description") or "",
                         parameters=s["function"].get("parameters") or {"type": "object", "properties": {}})
                 for s in core.tools]
        rubric = vf.Rubric(funcs=[self.t2t_verdict], weights=[1.0])
        super().__init__(dataset=dataset, eval_dataset=dataset, rubric=rubric, tool_defs=tools,
                         max_turns=core.max_turns + 1, **kwargs)

    async def setup_state(self, state: vf.State) -> vf.State:
        info = state.get("info") or {}
        if isinstance(info, str):
            info = json.loads(info)
        episode = self.core.start(str(info["task_id"]))
        state[EPISODE_KEY] = episode
        # the user speaks first: the opening joins the prompt the model sees
        state["prompt"] = list(state["prompt"]) + [vf.UserMessage(role="user", content=episode.opening)]
        if episode.done:
            state["final_env_response"] = []
        return state

    async def env_response(self, messages: vf.Messages, state: vf.State, **kwargs: Any) -> vf.Messages:
        episode: TaskEpisode = state[EPISODE_KEY]
        assistant = _assistant_dict(messages[-1])
        turn = episode.step_message(assistant)
        out: list[Any] = []
        if turn.signals.malformed is not None:
            # the core answered the turn as a whole: every call the model made gets that error
            # (with no call to answer, it comes back as the next user message)
            error = turn.observations[0].content or ""
            out += [vf.ToolMessage(role="tool", content=error, tool_call_id=call["id"])
                    for call in assistant["tool_calls"]] or [vf.UserMessage(role="user", content=error)]
        elif assistant["tool_calls"]:
            # answer every call under the id the model gave it (the episode answers extra calls with an error)
            results = [m for m in turn.observations if m.role == "tool"]
            for call, result in zip(assistant["tool_calls"], results):
                out.append(vf.ToolMessage(role="tool", content=result.content or "", tool_call_id=call["id"]))
        else:
            out += [vf.UserMessage(role="user", content=m.content or "") for m in turn.observations if m.role == "user"]
        if turn.done:
            state["final_env_response"] = out
        return out

    async def t2t_verdict(self, state: vf.State, **kwargs: Any) -> float:
        """The verifier's verdict on the episode: 1.0 when it passes, else 0.0."""
        episode: TaskEpisode | None = state.get(EPISODE_KEY)
        if episode is None:  # the rollout failed before its episode started
            return 0.0
        stopped = state.get("stop_condition")
        verdict = episode.close("max_turns" if stopped == "max_turns_reached" else "agent_stop")
        state[VERDICT_KEY] = verdict.model_dump(include={"passed", "reasons", "details"})
        return episode.reward


def load_environment(domain: str = "retail", tasks_file: str | None = None,
                     tasks: Sequence[Task | Mapping[str, Any]] | None = None, db: str | None = None,
                     db_seed: int = 0, db_users: int = 500, user: SimulatedUser | None = None,
                     max_turns: int = DEFAULT_MAX_TURNS, require_clarification: bool = False,
                     environment: Environment[Any] | None = None, **kwargs: Any) -> TaskMultiTurnEnv:
    """The ``verifiers`` entry point: a task set (``tasks_file``: tau2 tasks.json or JSON lines
    of tasks; or ``tasks``) of a domain over a database file (``db``) or the generated one."""
    from trajectory2task.store.files import load_tasks

    if (tasks_file is None) == (tasks is None):
        raise ValueError("give the tasks as tasks_file or tasks (one of them)")
    if tasks_file is not None:
        tasks, _ = load_tasks(tasks_file, strict=True, domain=domain)
    environment = environment if environment is not None else domain_environment(domain, db, db_seed, db_users)
    core = Episodes(environment, list(tasks or []), user=user, max_turns=max_turns,
                    require_clarification=require_clarification)
    return TaskMultiTurnEnv(core, **kwargs)
