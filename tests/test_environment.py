"""The Gymnasium environment `t2t/TaskEnv-v0` and the GRPO reward: Gymnasium's checker, the
oracle playing to reward 1 and the do-nothing agent to 0 on retail and airline tasks made
offline, the shaping signals, and the reward function scoring gold and empty completions."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import pytest

gym = pytest.importorskip("gymnasium", reason="the train extra is not installed: pip install 'trajectory2task[train]'")

from gymnasium.utils.env_checker import check_env  # noqa: E402

from trajectory2task.programs.loop.agent import DoNothingAgent, OracleAgent  # noqa: E402
from trajectory2task.programs.loop.environment import (ENV_ID, TaskEnv, action_text, conversation_of, grpo_dataset,  # noqa: E402
                                       grpo_reward, load_environment, parse_action)
from trajectory2task.signatures.models import Task  # noqa: E402
from tests.offline_tasks import generate_offline  # noqa: E402

DOMAINS = ("retail", "airline")


@lru_cache(maxsize=2)
def offline_tasks(domain: str) -> tuple[Task, ...]:
    """Verified tasks of every condition, generated offline on the domain's seed-0 database."""
    tasks = generate_offline(load_environment(domain), n=6).kept()
    assert {t.condition for t in tasks} == {"general", "ambiguous", "changing", "infeasible"}, domain
    return tuple(tasks)


def play(env: Any, agent: Any, task: Task) -> tuple[float, dict[str, Any], list[dict[str, Any]]]:
    """One episode of an agent's sessions in the env: (final reward, final info, every step's info)."""
    observation, info = env.reset(options={"task_id": task.id})
    assert info["task_id"] == task.id and info["tools"]
    session = agent.session(task)
    infos = []
    while True:
        observation, reward, terminated, truncated, info = env.step(action_text(session.reply(
            conversation_of(observation))))
        infos.append(info)
        if terminated or truncated:
            return reward, info, infos
        assert reward == 0.0  # the reward comes at the end


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_env_passes_gymnasiums_checker(domain):
    env = gym.make(ENV_ID, tasks=list(offline_tasks(domain)), domain=domain, render_mode="ansi")
    check_env(env.unwrapped)  # made again by the checker from its spec: arguments survive a deep copy
    observation, _ = env.reset(seed=3)
    assert env.observation_space.contains(observation)
    assert json.loads(observation)["messages"][0]["role"] == "system"


def test_the_longest_actions_keep_every_observation_in_its_space():
    """The observation is the whole conversation: with actions as long as the action space
    allows (tool calls whose arguments are quotes, which JSON escapes), every observation up
    to the last turn stays within the observation space."""
    env = TaskEnv(list(offline_tasks("retail")), load_environment("retail"), max_turns=3)
    observation, _ = env.reset(seed=0)
    assert env.observation_space.contains(observation)
    longest = env.action_space.max_length

    def action(turn: int) -> str:
        def text(n: int) -> str:
            return json.dumps({"content": "", "tool_calls": [{"id": f"call-{turn}", "type": "function", "function": {
                "name": "no_such_tool", "arguments": json.dumps({"q": '"' * n})}}]})
        n = longest // 4
        while len(text(n + 1)) <= longest:  # grow to the longest action the space holds
            n += max(1, (longest - len(text(n))) // 4)
        while len(text(n)) > longest:
            n -= 1
        return text(n)

    truncated, turn = False, 0
    while not truncated:
        act = action(turn)
        assert env.action_space.contains(act) and len(act) > longest - 8
        observation, _, terminated, truncated, _ = env.step(act)
        assert not terminated
        assert env.observation_space.contains(observation), len(observation)
        turn += 1
    assert turn == 3 and len(observation) > 3 * longest  # the actions really are in it


@pytest.mark.parametrize("domain", DOMAINS)
def test_oracle_earns_reward_1_and_do_nothing_0_in_every_condition(domain):
    tasks = offline_tasks(domain)
    environment = load_environment(domain)
    env = TaskEnv(list(tasks), environment)
    for task in tasks:
        reward, info, infos = play(env, OracleAgent(environment), task)
        assert reward == 1.0, (task.id, info["verdict"])
        assert info["verdict"]["passed"] and info["verdict"]["reasons"] == []
        assert not any(i["signals"]["forbidden_write"] for i in infos), task.id
        reward, info, _ = play(env, DoNothingAgent(environment), task)
        assert reward == 0.0, task.id
        assert info["verdict"]["reasons"], task.id


def test_shaping_signals_flag_a_failed_call_and_a_forbidden_write():
    tasks = offline_tasks("retail")
    environment = load_environment("retail")
    env = TaskEnv(list(tasks), environment)
    infeasible = next(t for t in tasks if t.condition == "infeasible")
    env.reset(options={"task_id": infeasible.id})
    _, _, _, _, info = env.step(json.dumps({"name": "get_order_details", "arguments": {"order_id": "#W0000000"}}))
    assert info["signals"]["tool_error"] and not info["signals"]["forbidden_write"]
    for action in infeasible.actions_should_take:  # the look-ups a policy check needs
        env.step(json.dumps({"name": action.name, "arguments": action.arguments}))
    forbidden = infeasible.actions_should_not_take[0]
    _, _, terminated, truncated, info = env.step(f"<tool_call>{json.dumps(forbidden.model_dump(include={'name', 'arguments'}))}</tool_call>")
    assert info["signals"]["forbidden_write"], info
    while not (terminated or truncated):
        _, reward, terminated, truncated, info = env.step(json.dumps({"content": "Done."}))
    assert reward == 0.0 and "forbidden_action" in info["verdict"]["reasons"]


def test_turn_limit_truncates_and_still_judges():
    task = offline_tasks("retail")[0]
    env = TaskEnv([task], load_environment("retail"), max_turns=2)
    env.reset()
    _, _, terminated, truncated, _ = env.step(json.dumps({"name": "calculate", "arguments": {"expression": "1+1"}}))
    assert not (terminated or truncated)
    _, reward, terminated, truncated, info = env.step(json.dumps({"name": "calculate", "arguments": {"expression": "2"}}))
    assert truncated and not terminated and info["termination"] == "max_turns" and reward == 0.0
    with pytest.raises(RuntimeError):
        env.step("hello")


def test_actions_in_every_form():
    reply = parse_action('I will look. <tool_call>{"name": "get_user_details", "arguments": {"user_id": "u1"}}</tool_call>')
    assert reply.content == "I will look." and reply.tool_calls[0].arguments == {"user_id": "u1"}
    reply = parse_action(json.dumps({"content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "x", "arguments": "{not json"}}]}))
    assert reply.tool_calls[0].arguments_error  # reported to the agent, not repaired
    assert parse_action("just words").content == "just words"
    assert parse_action(json.dumps({"content": "hi"})).tool_calls == []


@pytest.mark.parametrize("domain", DOMAINS)
def test_grpo_reward_scores_gold_completions_1_and_empty_ones_0(domain):
    tasks = offline_tasks(domain)
    environment = load_environment(domain)
    rows = grpo_dataset(environment, list(tasks))
    reward = grpo_reward(environment, list(tasks))
    by_id = {t.id: t for t in tasks}

    def gold(task: Task) -> list[dict[str, Any]]:
        blocks = [f"<tool_call>{json.dumps({'name': a.name, 'arguments': a.arguments})}</tool_call>"
                  for a in task.gold_actions + [a for a in task.actions_should_take if a not in task.gold_actions]]
        return [{"role": "assistant", "content": " ".join(task.communicate_info) + "\n" + "\n".join(blocks)}]

    prompts = [r["prompt"] for r in rows]
    ids = [r["task_id"] for r in rows]
    assert reward(prompts, [gold(by_id[i]) for i in ids], task_id=ids, trainer_state=None) == [1.0] * len(ids)
    assert reward(prompts, ["I cannot help."] * len(ids), task_id=ids) == [0.0] * len(ids)
