"""OpenEnv: our tasks behind an OpenEnv HTTP/WebSocket server, and its client.

    from trajectory2task.programs.rl.openenv_env import openenv_app, TaskEnvClient, TaskAction
    app = openenv_app(environment, tasks, max_sessions=8)      # a FastAPI app: uvicorn.run(app, ...)
    with TaskEnvClient(base_url="http://127.0.0.1:8000").sync() as client:
        first = client.reset(task_id=tasks[0].id)              # the user's opening, the tools, the policy
        result = client.step(TaskAction(tool_calls=[{"name": "TOOL_NAME", "arguments": {...}}]))
        result = client.step(TaskAction(content="Your order is cancelled."))
        state = client.state()                                  # the verdict once done

Each WebSocket session gets its own `TaskEnvironment` (concurrent sessions are isolated:
each episode runs on its own copy-on-write state) over one shared episode core,
`trajectory2task.programs.loop.episode`. ``reset(task_id=...)`` starts a task (without one, a
task is drawn with ``seed``). An action is a message to the user (``content``), tool calls
(``tool_calls``, OpenAI form; the first runs, as in every adapter), or a model's raw
completion (``text``, ``<tool_call>`` blocks as calls); an empty action ends the episode; a
malformed one (too long, too deep, ill-formed calls: see the core's `read_action`) is a turn
answered ``Error: malformed action: ...``, never a server error. The
observation carries the messages the agent sees next (tool results, the user's answer); at
the end ``reward`` is the verifier's verdict, 1.0 or 0.0, with ``verdict`` (passed, reasons,
details) in the observation and the state.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from trajectory2task.programs.rl import require_rl_extra

require_rl_extra("the OpenEnv server", ("openenv.core", "fastapi", "uvicorn"))

from openenv.core import EnvClient  # noqa: E402
from openenv.core.client_types import StepResult  # noqa: E402
from openenv.core.env_server import Action, Environment, Observation, State, create_fastapi_app  # noqa: E402
from starlette.types import ASGIApp, Receive, Scope, Send  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from trajectory2task.domains import Environment as DomainEnvironment  # noqa: E402
from trajectory2task.programs.loop.episode import Episodes, TaskEpisode, Turn  # noqa: E402
from trajectory2task.programs.loop.agent import openai_messages  # noqa: E402
from trajectory2task.programs.loop.rollout import DEFAULT_MAX_TURNS  # noqa: E402
from trajectory2task.programs.loop.user_sim import SimulatedUser  # noqa: E402
from trajectory2task.signatures.models import Task  # noqa: E402


class TaskAction(Action):
    """One agent turn: ``text`` (a raw completion) if given, else ``content`` and ``tool_calls``."""

    content: str = ""
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    text: str | None = None


class TaskObservation(Observation):
    """What the agent sees after a reset or a turn; at reset also the tools and the policy."""

    task_id: str = ""
    messages: list[dict[str, Any]] = Field(default_factory=list)
    tools: list[dict[str, Any]] = Field(default_factory=list)
    system: str = ""
    signals: dict[str, Any] = Field(default_factory=dict)
    termination: str | None = None
    verdict: dict[str, Any] | None = None


class TaskState(State):
    task_id: str | None = None
    condition: str | None = None
    turns: int = 0
    termination: str | None = None
    verdict: dict[str, Any] | None = None


def _verdict(turn_or_episode: Turn | TaskEpisode) -> dict[str, Any] | None:
    verdict = turn_or_episode.verdict
    return None if verdict is None else verdict.model_dump(include={"passed", "reasons", "details"})


class TaskEnvironment(Environment[TaskAction, TaskObservation, TaskState]):
    """One session's environment over a shared episode core (see module doc)."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self, core: Episodes) -> None:
        super().__init__()
        self.core = core
        self.episode: TaskEpisode | None = None
        self._state = TaskState()

    def reset(self, seed: int | None = None, episode_id: str | None = None, task_id: str | None = None,
              **kwargs: Any) -> TaskObservation:
        if task_id is None:
            task_id = random.Random(seed).choice(self.core.tasks).id
        self.episode = self.core.start(task_id)
        task = self.episode.task
        self._state = TaskState(episode_id=episode_id, step_count=0, task_id=task.id, condition=task.condition)
        return TaskObservation(task_id=task.id, messages=openai_messages(self.episode.messages[1:]),
                               tools=self.core.tools, system=self.core.system, done=self.episode.done,
                               reward=self.episode.reward if self.episode.done else None,
                               termination=self.episode.termination if self.episode.done else None,
                               verdict=_verdict(self.episode))

    def step(self, action: TaskAction, timeout_s: float | None = None, **kwargs: Any) -> TaskObservation:
        if self.episode is None:
            raise RuntimeError("step before reset")
        # read by the core's one reader: a malformed action is a turn answered with an error
        turn = self.episode.step(action.text) if action.text is not None else \
            self.episode.step_message({"content": action.content, "tool_calls": action.tool_calls})
        self._state.step_count = self.episode.turns
        self._state.turns = self.episode.turns
        self._state.termination = turn.termination
        self._state.verdict = _verdict(turn)
        return TaskObservation(task_id=self.episode.task.id, messages=openai_messages(turn.observations),
                               signals=turn.signals.model_dump(), done=turn.done,
                               reward=turn.reward if turn.done else 0.0, termination=turn.termination,
                               verdict=_verdict(turn))

    @property
    def state(self) -> TaskState:
        return self._state


def openenv_app(environment: DomainEnvironment[Any], tasks: Sequence[Task | Mapping[str, Any]], *,
                user: SimulatedUser | None = None, max_turns: int = DEFAULT_MAX_TURNS,
                require_clarification: bool = False, max_sessions: int = 8) -> Any:
    """The FastAPI app of an OpenEnv server over these tasks, with up to ``max_sessions``
    concurrent WebSocket sessions (serve it with uvicorn)."""
    core = Episodes(environment, tasks, user=user, max_turns=max_turns, require_clarification=require_clarification)

    def factory() -> TaskEnvironment:
        return TaskEnvironment(core)

    app = create_fastapi_app(factory, TaskAction, TaskObservation, max_concurrent_envs=max_sessions)
    app.add_middleware(_ClosedSessionsQuiet)
    return app


class _ClosedSessionsQuiet:
    """ASGI middleware: a WebSocket session the client has already closed ends quietly.

    OpenEnv's endpoint closes the socket when a session ends and ignores only a RuntimeError
    from that close; uvicorn's websockets-sansio protocol raises WebSocketDisconnect instead,
    which the server would log as an application error after every client's normal close."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except WebSocketDisconnect:
            if scope["type"] != "websocket":
                raise


class TaskEnvClient(EnvClient[TaskAction, TaskObservation, TaskState]):
    """The client of `openenv_app`'s server (a WebSocket session; ``.sync()`` for blocking calls)."""

    def _step_payload(self, action: TaskAction) -> dict[str, Any]:
        return action.model_dump(exclude={"metadata"})

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[TaskObservation]:
        observation = TaskObservation.model_validate({**payload.get("observation", {}),
                                                     "done": payload.get("done", False),
                                                     "reward": payload.get("reward")})
        return StepResult(observation=observation, reward=payload.get("reward"), done=payload.get("done", False))

    def _parse_state(self, payload: dict[str, Any]) -> TaskState:
        return TaskState.model_validate(payload)
