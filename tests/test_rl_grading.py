"""Grading outside this tool (docs/rl.md): a reward is never 1 for an agent `t2t verify` fails.

Wrong agents are derived from each task (do-nothing; the gold with a write dropped; for an
infeasible task, a forbidden write attempted after the required look-ups) and played through
the episode core, the Gymnasium env, the TRL environment class and the OpenEnv environment
(the class its server runs) on retail and airline tasks of every condition. Each adapter's
reward must be 1 exactly when `t2t verify --rollouts` passes the same calls and messages; and
the missing `rl` extra is reported in one line naming what to install."""

from __future__ import annotations

import importlib
import json
import sys

import pytest

from trajectory2task.programs.loop.domain_env import load_environment
from trajectory2task.programs.loop.episode import Episodes
from trajectory2task.programs.rl import RL_EXTRA_HINT, RLExtraMissing
from trajectory2task.signatures.models import Message
from tests.rl_cases import DOMAINS, Transcript, drive, offline_tasks, t2t_verify, wrong_agents

ENDED = "(The conversation has ended.)"


def core_player(core):
    def play(session, task, transcript_of):
        episode = core.start(task.id)
        transcript = transcript_of(episode.opening)

        def act(reply):
            turn = episode.step(reply)
            return turn.observations, turn.done

        drive(session, episode.opening, transcript.recording(act))
        episode.close()
        return episode.reward, transcript

    return play


def gym_player(environment, tasks):
    from trajectory2task.programs.loop.environment import TaskEnv
    from trajectory2task.programs.loop.episode import action_text

    env = TaskEnv(list(tasks), environment)

    def play(session, task, transcript_of):
        observation, _ = env.reset(options={"task_id": task.id})
        opening = json.loads(observation)["messages"][1]["content"]
        transcript = transcript_of(opening)
        final = {"reward": 0.0, "done": False}

        def act(reply):
            observation, reward, terminated, truncated, _ = env.step(action_text(reply))
            final.update(reward=reward, done=terminated or truncated)
            last = json.loads(observation)["messages"][-1]
            return [Message(role=last["role"], content=last.get("content"))], final["done"]

        drive(session, opening, transcript.recording(act))
        if not final["done"]:
            _, reward, *_ = env.step(json.dumps({"content": ""}))  # an empty turn ends the episode
            final["reward"] = reward
        return final["reward"], transcript

    return play


def trl_player(environment, tasks):
    from trajectory2task.programs.rl.trl_env import SEND_MESSAGE, trl_environment

    env = trl_environment(environment, tasks)()

    def play(session, task, transcript_of):
        opening = env.reset(task_id=task.id)
        transcript = transcript_of(opening)

        def act(reply):
            if reply.tool_calls:
                call = reply.tool_calls[0]
                text = getattr(env, call.name)(**call.arguments)
                return [Message(role="tool", content=text)], text.endswith(ENDED)
            text = getattr(env, SEND_MESSAGE)(message=reply.content)
            return [Message(role="user", content=text)], text.endswith(ENDED)

        drive(session, opening, transcript.recording(act))
        return env.get_reward(), transcript

    return play


def openenv_player(environment, tasks):
    pytest.importorskip("openenv.core", reason="the rl extra is not installed: pip install 'trajectory2task[rl]'")
    from trajectory2task.programs.rl.openenv_env import TaskAction, TaskEnvironment

    env = TaskEnvironment(Episodes(environment, tasks))

    def play(session, task, transcript_of):
        first = env.reset(task_id=task.id)
        opening = first.messages[0]["content"]
        transcript = transcript_of(opening)
        final = {"reward": 0.0, "done": False}

        def act(reply):
            calls = [{"id": c.id, "function": {"name": c.name, "arguments": c.arguments}} for c in reply.tool_calls]
            observation = env.step(TaskAction(content=reply.content or "", tool_calls=calls[:1]))
            final.update(reward=observation.reward, done=observation.done)
            return [Message(role=m["role"], content=m.get("content")) for m in observation.messages], observation.done

        drive(session, opening, transcript.recording(act))
        if not final["done"]:
            final["reward"] = env.step(TaskAction()).reward
        return final["reward"], transcript

    return play


@pytest.mark.parametrize("domain", DOMAINS)
def test_no_adapter_rewards_an_agent_t2t_verify_fails(domain, tmp_path):
    environment = load_environment(domain)
    tasks = list(offline_tasks(domain))
    players = {"core": core_player(Episodes(environment, tasks)), "gym": gym_player(environment, tasks),
               "trl": trl_player(environment, tasks), "openenv": openenv_player(environment, tasks)}
    played = []  # (adapter, agent, task, reward, transcript)
    for task in tasks:
        for adapter, play in players.items():
            for name, session in wrong_agents(domain, task):
                reward, transcript = play(session, task, lambda opening, t=task: Transcript(t.id, opening))
                played.append((adapter, name, task, reward, transcript))
    verified = t2t_verify(domain, tasks, [p[4] for p in played], tmp_path)
    failed = 0
    for (adapter, name, task, reward, _), theirs in zip(played, verified):
        assert reward == (1.0 if theirs["pass"] else 0.0), (adapter, name, task.id, theirs)
        failed += not theirs["pass"]
    kinds = {(p[1].split("[")[0], p[2].condition) for p in played}
    assert {("drop_write", c) for c in ("general", "ambiguous", "changing")} <= kinds
    assert ("forbidden_attempt", "infeasible") in kinds
    assert failed >= len(played) * 0.9  # the tasks discriminate: nearly every wrong agent fails


def test_a_missing_rl_extra_is_one_line_naming_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "verifiers", None)  # import verifiers -> ImportError
    monkeypatch.delitem(sys.modules, "trajectory2task.programs.rl.verifiers_env", raising=False)
    with pytest.raises(RLExtraMissing) as caught:
        importlib.import_module("trajectory2task.programs.rl.verifiers_env")
    message = str(caught.value)
    assert "\n" not in message and "verifiers" in message and message.endswith(RL_EXTRA_HINT)
    assert isinstance(caught.value, ImportError)  # an `except ImportError` still catches it
