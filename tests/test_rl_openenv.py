"""OpenEnv (`trajectory2task.programs.rl.openenv_env`): a real server on 127.0.0.1 (a free port),
oracle and do-nothing episodes played concurrently through the OpenEnv client on retail and
airline tasks of every condition, the rewards 1 and 0, and every verdict equal to what
`t2t verify --rollouts` says of the same calls and messages."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("openenv.core", reason="the rl extra is not installed: pip install 'trajectory2task[rl]'")
uvicorn = pytest.importorskip("uvicorn", reason="the rl extra is not installed: pip install 'trajectory2task[rl]'")

from trajectory2task.programs.loop.agent import DoNothingAgent, OracleAgent  # noqa: E402
from trajectory2task.programs.loop.domain_env import load_environment  # noqa: E402
from trajectory2task.programs.rl.openenv_env import TaskAction, TaskEnvClient, openenv_app  # noqa: E402
from trajectory2task.signatures.models import Message  # noqa: E402
from tests.rl_cases import DOMAINS, Transcript, drive, offline_tasks, t2t_verify  # noqa: E402


class Server:
    """uvicorn serving an app on a socket bound here to 127.0.0.1:0, in a thread."""

    def __init__(self, app) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws_max_size=64 << 20))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.socket])),
                                       daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()


def play(url: str, agent, task) -> tuple[float, dict, Transcript, dict]:
    """One episode through the OpenEnv client: (reward, verdict, transcript, final state)."""
    with TaskEnvClient(base_url=url).sync() as client:
        first = client.reset(task_id=task.id)
        assert first.observation.task_id == task.id and first.observation.tools and not first.done
        opening = first.observation.messages[0]["content"]
        transcript = Transcript(task.id, opening)
        results = []

        def act(reply):
            if reply.tool_calls:
                call = reply.tool_calls[0]
                action = TaskAction(content=reply.content or "", tool_calls=[
                    {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}])
            else:
                action = TaskAction(content=reply.content or "")
            result = client.step(action)
            results.append(result)
            seen = [Message(role=m["role"], content=m.get("content")) for m in result.observation.messages]
            return seen, result.done

        drive(agent.session(task), opening, transcript.recording(act))
        if not results or not results[-1].done:  # the agent stopped talking: an empty turn ends the episode
            results.append(client.step(TaskAction()))
        last = results[-1]
        assert last.done and all(r.reward == 0.0 for r in results[:-1])
        state = client.state()
        return last.reward, last.observation.verdict, transcript, state.model_dump()


@pytest.mark.parametrize("domain", DOMAINS)
def test_oracle_1_and_do_nothing_0_through_the_openenv_client_as_t2t_verify_judges(domain, tmp_path):
    environment = load_environment(domain)
    tasks = list(offline_tasks(domain))
    app = openenv_app(environment, tasks, max_sessions=4)
    jobs = [(agent, task) for task in tasks for agent in (OracleAgent(environment), DoNothingAgent(environment))]
    with Server(app) as server, ThreadPoolExecutor(4) as pool:  # four sessions at once, interleaved
        played = list(pool.map(lambda job: play(server.url, *job), jobs))
    verified = t2t_verify(domain, tasks, [transcript for _, _, transcript, _ in played], tmp_path)
    for (agent, task), (reward, verdict, _, state), theirs in zip(jobs, played, verified):
        expected = 1.0 if agent.name == "oracle" else 0.0
        assert reward == expected, (agent.name, task.id, verdict)
        assert verdict["passed"] == theirs["pass"] and verdict["reasons"] == theirs["reasons"], (task.id, theirs)
        assert state["verdict"] == verdict and state["task_id"] == task.id and state["condition"] == task.condition
