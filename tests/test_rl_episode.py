"""The one episode core (`trajectory2task.programs.loop.episode`): the oracle scores 1 and
do-nothing 0 on retail and airline tasks of every condition; the same actions give the
Gymnasium env's reward, termination and verdict; a failing LM user ends the episode
unscored; a closed episode takes no more turns."""

from __future__ import annotations

import json

import pytest

from trajectory2task.programs.loop.agent import DoNothingAgent, OracleAgent
from trajectory2task.programs.loop.domain_env import load_environment
from trajectory2task.programs.loop.episode import EpisodeOver, Episodes, action_text, parse_action
from tests.rl_cases import DOMAINS, BreakingUser, drive, offline_tasks


def play(core: Episodes, agent, task):
    episode = core.start(task.id)
    turns = []

    def act(reply):
        turn = episode.step(reply)
        turns.append(turn)
        return turn.observations, turn.done

    drive(agent.session(task), episode.opening, act)
    verdict = episode.close()  # an agent that stopped speaking ends it
    return episode, verdict, turns


@pytest.mark.parametrize("domain", DOMAINS)
def test_oracle_scores_1_and_do_nothing_0_in_every_condition(domain):
    environment = load_environment(domain)
    tasks = offline_tasks(domain)
    core = Episodes(environment, list(tasks))
    for task in tasks:
        episode, verdict, turns = play(core, OracleAgent(environment), task)
        assert verdict.passed and episode.reward == 1.0, (task.id, verdict)
        assert turns[-1].done and turns[-1].reward == 1.0  # the user ended it: the last turn carries the reward
        assert all(t.reward == 0.0 for t in turns[:-1])
        assert not any(t.signals.forbidden_write for t in turns), task.id
        episode, verdict, turns = play(core, DoNothingAgent(environment), task)
        assert not verdict.passed and episode.reward == 0.0 and verdict.reasons, task.id
        assert episode.steps == [] and episode.termination == "user_stop"  # declined until the user left


def test_the_core_and_the_gymnasium_env_agree_turn_by_turn():
    pytest.importorskip("gymnasium", reason="the train extra is not installed: pip install 'trajectory2task[train]'")
    from trajectory2task.programs.loop.environment import TaskEnv

    environment = load_environment("retail")
    tasks = list(offline_tasks("retail"))
    core = Episodes(environment, tasks)
    env = TaskEnv(tasks, environment)
    for task in tasks:
        observation, _ = env.reset(options={"task_id": task.id})
        episode = core.start(task.id)
        assert json.loads(observation)["messages"] == episode.observation()
        session = OracleAgent(environment).session(task)
        while True:
            from trajectory2task.programs.loop.environment import conversation_of

            action = action_text(session.reply(conversation_of(observation)))
            observation, reward, terminated, truncated, info = env.step(action)
            turn = episode.step(action)
            assert json.loads(observation)["messages"] == episode.observation()
            assert (reward, terminated, truncated) == (turn.reward, turn.terminated, turn.truncated)
            assert info["signals"] == turn.signals.model_dump()
            if terminated or truncated:
                assert info["termination"] == turn.termination
                assert info["verdict"] == turn.verdict.model_dump(include={"passed", "reasons", "details"})
                break


def test_turn_limit_truncates_and_an_ended_episode_takes_no_turn():
    environment = load_environment("airline")
    task = offline_tasks("airline")[0]
    episode = Episodes(environment, [task], max_turns=2).start(task.id)
    first = episode.call("calculate", {"expression": "1+1"})
    assert not first.done and first.observations[0].role == "tool" and first.observations[0].content == "2.0"
    second = episode.step(parse_action('<tool_call>{"name": "calculate", "arguments": {"expression": "2"}}</tool_call>'))
    assert second.truncated and not second.terminated and second.termination == "max_turns"
    assert "max_turns" in second.verdict.reasons and second.reward == 0.0
    with pytest.raises(EpisodeOver):
        episode.say("hello?")
    assert episode.close() == second.verdict


def test_a_failing_lm_user_ends_the_episode_unscored():
    environment = load_environment("retail")
    task = offline_tasks("retail")[0]

    episode = Episodes(environment, [task], user=BreakingUser()).start(task.id)
    assert episode.opening == "Hello, I need help."
    turn = episode.say("How can I help?")
    assert turn.terminated and turn.termination == "lm_error"
    assert turn.verdict.reasons == ["lm_error"] and turn.reward == 0.0
