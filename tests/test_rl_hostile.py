"""Hostile actions through every adapter of the one episode core (issue 28 item 4): the core,
the TRL environment class, the OpenEnv environment (directly and through a real server and its
client) and the verifiers environment read an action with the same reader the Gymnasium env
uses, so a JSON text 5,000 levels deep, a 10 MiB text, too many calls or arguments nested past
the cap are each a turn answered ``Error: malformed action: ...``: no exception, nothing run,
the database untouched, and the episode goes on."""

from __future__ import annotations

import asyncio
import json
from functools import lru_cache

import pytest

from trajectory2task.programs.loop.agent import AgentReply
from trajectory2task.programs.loop.domain_env import load_environment
from trajectory2task.programs.loop.episode import (MAX_ACTION, MAX_ARGUMENT_DEPTH, MAX_CALLS, Episodes, TaskEpisode,
                                                   Turn, parse_action)
from trajectory2task.signatures.models import Task
from tests.offline_tasks import generate_offline
from tests.rl_cases import BreakingUser

DEEP = 5000
MALFORMED = "Error: malformed action: "


def nested(depth: int) -> object:
    value: object = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


# (action text, a phrase of the reason the turn must give)
HOSTILE_TEXT = [
    ('{"a":' * DEEP + "1" + "}" * DEEP, "nest"),
    ("x" * (10 << 20), f"more than the {MAX_ACTION} allowed"),
    (json.dumps({"name": "get_user_details", "arguments": "[" * DEEP + "]" * DEEP}), "nest"),
    ("<tool_call>" + '{"a":' * DEEP + "1" + "}" * DEEP + "</tool_call>", "nest"),
    (json.dumps({"tool_calls": [{"name": "calculate", "arguments": {}}] * (MAX_CALLS + 1)}), "tool calls"),
    (json.dumps({"tool_calls": [{"function": "calculate"}]}), "'function' must be an object"),
    (json.dumps({"name": "x" * 300}), "longer than 256"),
    (json.dumps({"content": {"text": "hi"}}), "'content' must be a string"),
]
IDS = ["deep-json", "10MiB", "deep-arguments-text", "deep-tool-call-block", "too-many-calls", "function-not-object",
       "long-name", "content-not-text"]


@lru_cache(maxsize=1)
def core() -> Episodes:
    environment = load_environment("retail")
    tasks = generate_offline(environment, n=2).kept()
    return Episodes(environment, [next(t for t in tasks if t.condition == "general")], max_turns=6)


def task() -> Task:
    return core().tasks[0]


def assert_goes_on(episode: TaskEpisode) -> None:
    """The episode survived the malformed turn: it is not over and a message is still heard."""
    assert not episode.done
    heard = episode.say("Could you tell me your name?")
    assert heard.observations[-1].role == "user" and heard.observations[-1].content


def assert_malformed(turn: Turn, reason: str) -> None:
    assert turn.signals.malformed is not None and reason in turn.signals.malformed, turn.signals
    assert turn.signals.tool_error and not turn.done and turn.reward == 0.0
    assert [m.role for m in turn.observations] == ["tool"]
    assert turn.observations[0].content == MALFORMED + turn.signals.malformed


@pytest.mark.parametrize(("action", "reason"), HOSTILE_TEXT, ids=IDS)
def test_the_core_answers_a_hostile_action_as_a_malformed_turn(action, reason):
    episode = core().start(task().id)
    before = episode.state.state_hash()
    turn = episode.step(action)
    assert_malformed(turn, reason)
    assert episode.state.state_hash() == before and episode.steps[-1].error
    # parse_action's reading of it is the same malformed turn
    again = core().start(task().id).step(parse_action(action))
    assert again.signals.malformed == turn.signals.malformed
    assert_goes_on(episode)


def test_the_gymnasium_env_gives_the_cores_answer_to_each_hostile_action():
    pytest.importorskip("gymnasium", reason="the train extra is not installed: pip install 'trajectory2task[train]'")
    from trajectory2task.programs.loop.environment import TaskEnv

    env = TaskEnv(core().tasks, core().environment, max_turns=6)
    for action, _ in HOSTILE_TEXT:
        env.reset(options={"task_id": task().id})
        observation, reward, terminated, truncated, info = env.step(action)
        turn = core().start(task().id).step(action)
        assert (reward, terminated, truncated) == (0.0, False, False)
        assert info["signals"] == turn.signals.model_dump()
        assert json.loads(observation)["messages"][-1]["content"] == turn.observations[0].content
    # its action space is text: a structured turn the core would take is malformed there
    env.reset(options={"task_id": task().id})
    _, _, _, _, info = env.step(AgentReply(content="hi"))  # type: ignore[arg-type]
    assert "not AgentReply" in info["signals"]["malformed"]


@pytest.mark.parametrize("message", [
    {"content": "", "tool_calls": [{"id": "c1", "function": {"name": "get_user_details",
                                                             "arguments": nested(MAX_ARGUMENT_DEPTH + 8)}}]},
    {"content": "", "tool_calls": [{"id": "c1", "function": {"name": "get_user_details",
                                                             "arguments": "[" * DEEP + "]" * DEEP}}]},
    {"content": 7, "tool_calls": [{"id": "c1", "function": {"name": "calculate", "arguments": "{}"}}]},
    {"content": ["not", "text"]},
    {"content": "", "tool_calls": [{"id": "c1", "function": {"name": "calculate", "arguments": nested(DEEP)}}]},
], ids=["deep-object", "deep-text", "content-number", "content-list", "unwritable"])
def test_the_core_answers_a_hostile_message_as_a_malformed_turn(message):
    episode = core().start(task().id)
    before = episode.state.state_hash()
    turn = episode.step_message(message)
    assert_malformed(turn, "")
    assert episode.state.state_hash() == before
    assert_goes_on(episode)


def test_the_trl_environment_answers_hostile_calls_and_messages_as_malformed_turns():
    pytest.importorskip("trl", reason="the rl extra is not installed: pip install 'trajectory2task[rl]'")
    from trajectory2task.programs.rl.trl_env import trl_environment

    env = trl_environment(core().environment, core().tasks, max_turns=8)()
    env.reset(task_id=task().id)
    before = env.episode.state.state_hash()
    answers = [env.get_user_details(user_id=nested(MAX_ARGUMENT_DEPTH + 1)),
               env.send_message_to_user(message="x" * (10 << 20)),
               env.send_message_to_user(message={"text": "hi"}),
               env.calculate(expression="1+1" * (MAX_ACTION // 3 + 1))]
    reasons = ["nest deeper", f"more than the {MAX_ACTION} allowed", "'content' must be a string",
               f"more than the {MAX_ACTION} allowed"]
    for answer, reason in zip(answers, reasons, strict=True):
        assert answer.startswith(MALFORMED) and reason in answer, answer
    assert env.episode.state.state_hash() == before and env.episode.turns == len(answers)
    assert not env.send_message_to_user(message="Could you tell me your name?").startswith("Error")
    assert env.calculate(expression="1+1") == "2.0"  # a well-formed call still runs
    assert env.get_reward() == 0.0 and env.verdict is not None and env.verdict.reasons


def _openenv_actions():
    from trajectory2task.programs.rl.openenv_env import TaskAction

    return [
        (TaskAction(text='{"a":' * DEEP + "1" + "}" * DEEP), "nest"),
        (TaskAction(text="x" * (10 << 20)), f"more than the {MAX_ACTION} allowed"),
        (TaskAction(tool_calls=[{"function": {"name": "get_user_details", "arguments": "[" * DEEP + "]" * DEEP}}]),
         "nest"),
        (TaskAction(tool_calls=[{"function": {"name": "calculate", "arguments": "{}"}}] * (MAX_CALLS + 1)),
         "tool calls"),
        (TaskAction(tool_calls=[{"function": {"name": ["calculate"], "arguments": "{}"}}]), "non-empty string"),
    ]


def test_the_openenv_environment_answers_hostile_actions_as_malformed_turns():
    pytest.importorskip("openenv.core", reason="the rl extra is not installed: pip install 'trajectory2task[rl]'")
    from trajectory2task.programs.rl.openenv_env import TaskEnvironment

    env = TaskEnvironment(core())
    env.reset(task_id=task().id)
    before = env.episode.state.state_hash()
    for action, reason in _openenv_actions():
        observation = env.step(action)
        assert not observation.done and observation.reward == 0.0
        assert reason in observation.signals["malformed"], observation.signals
        assert [m["role"] for m in observation.messages] == ["tool"]
        assert observation.messages[0]["content"].startswith(MALFORMED)
    assert env.episode.state.state_hash() == before and env.state.turns == len(_openenv_actions())
    assert_goes_on(env.episode)


def test_hostile_actions_through_a_real_openenv_server_are_malformed_turns_not_errors():
    pytest.importorskip("openenv.core", reason="the rl extra is not installed: pip install 'trajectory2task[rl]'")
    pytest.importorskip("uvicorn", reason="the rl extra is not installed: pip install 'trajectory2task[rl]'")
    from trajectory2task.programs.rl.openenv_env import TaskAction, TaskEnvClient, openenv_app
    from tests.test_rl_openenv import Server

    with Server(openenv_app(core().environment, core().tasks, max_turns=8)) as server, \
            TaskEnvClient(base_url=server.url).sync() as client:
        client.reset(task_id=task().id)
        for action, reason in _openenv_actions()[:3]:
            result = client.step(action)
            assert not result.done and reason in result.observation.signals["malformed"]
            assert result.observation.messages[0]["content"].startswith(MALFORMED)
        result = client.step(TaskAction(content="Could you tell me your name?"))
        assert result.observation.messages[-1]["role"] == "user" and not result.done
        assert client.state().turns == 4


def test_the_verifiers_environment_answers_hostile_turns_with_an_error_for_the_model():
    vf = pytest.importorskip("verifiers", reason="the rl extra is not installed: pip install 'trajectory2task[rl]'")
    from trajectory2task.programs.rl.verifiers_env import EPISODE_KEY, TaskMultiTurnEnv

    env = TaskMultiTurnEnv(core())
    state = asyncio.run(env.setup_state(vf.State(info={"task_id": task().id},
                                                 prompt=[{"role": "system", "content": core().system}])))
    episode = state[EPISODE_KEY]
    before = episode.state.state_hash()
    deep_call = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c7", "type": "function",
         "function": {"name": "get_user_details", "arguments": "[" * DEEP + "]" * DEEP}}]}
    out = asyncio.run(env.env_response([deep_call], state))
    assert len(out) == 1 and out[0]["role"] == "tool" and out[0]["tool_call_id"] == "c7"
    assert out[0]["content"].startswith(MALFORMED) and "nest" in out[0]["content"]
    huge = {"role": "assistant", "content": "x" * (10 << 20)}
    out = asyncio.run(env.env_response([huge], state))
    assert len(out) == 1 and out[0]["role"] == "user" and out[0]["content"].startswith(MALFORMED)
    assert episode.state.state_hash() == before and episode.turns == 2 and not episode.done


def test_the_core_and_the_rl_adapters_load_without_gymnasium():
    """The RL extra does not bring Gymnasium: the core, the domain loader and the adapters
    (verifiers' ``load_environment`` included) import with it blocked."""
    import subprocess
    import sys

    pytest.importorskip("verifiers", reason="the rl extra is not installed: pip install 'trajectory2task[rl]'")
    code = ("import sys; sys.modules['gymnasium'] = None\n"
            "import trajectory2task.programs.loop.episode, trajectory2task.programs.loop.domain_env\n"
            "import trajectory2task.programs.rl.verifiers_env as v\n"
            "assert v.domain_environment.__module__ == 'trajectory2task.programs.loop.domain_env'\n"
            "assert 'trajectory2task.programs.loop.environment' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_failing_lm_user_ends_the_gymnasium_episode_unscored_as_in_the_core():
    """Through the core the Gym env no longer raises when an LM user fails mid-episode."""
    pytest.importorskip("gymnasium", reason="the train extra is not installed: pip install 'trajectory2task[train]'")
    from trajectory2task.programs.loop.environment import TaskEnv

    env = TaskEnv(core().tasks, core().environment, user=BreakingUser())
    env.reset(options={"task_id": task().id})
    _, reward, terminated, truncated, info = env.step('{"content": "How can I help?"}')
    assert terminated and not truncated and reward == 0.0
    assert info["termination"] == "lm_error" and info["verdict"]["reasons"] == ["lm_error"]
    with pytest.raises(RuntimeError):
        env.step('{"content": "Hello?"}')
