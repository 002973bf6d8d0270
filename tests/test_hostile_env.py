"""Hostile actions and database files for the Gymnasium environment (issue 29): a malformed
action is a turn answered with an error observation, never an exception; no action, however
long or deep, takes an observation out of the observation space; a database that is a FIFO,
a device or too large is refused at once."""

from __future__ import annotations

import json
import os
import threading
from functools import lru_cache
from pathlib import Path

import pytest

pytest.importorskip("gymnasium", reason="the train extra is not installed: pip install 'trajectory2task[train]'")

from trajectory2task.domains.runtime import ToolResult  # noqa: E402
from trajectory2task.programs.loop.environment import (MAX_ACTION, MAX_CALLS, MAX_RESULT, TaskEnv,  # noqa: E402
                                                       load_environment, read_db)
from trajectory2task.signatures.models import Task  # noqa: E402
from trajectory2task.store.files import MAX_INPUT_BYTES, InputFileError  # noqa: E402
from tests.offline_tasks import generate_offline  # noqa: E402

DEEP = 5000


@lru_cache(maxsize=1)
def retail_tasks() -> tuple[Task, ...]:
    return tuple(generate_offline(load_environment("retail"), n=2).kept())


def fresh_env(max_turns: int = 4) -> TaskEnv:
    env = TaskEnv(list(retail_tasks()), load_environment("retail"), max_turns=max_turns)
    env.reset(seed=0)
    return env


def last_message(observation: str) -> dict:
    return json.loads(observation)["messages"][-1]


def assert_malformed_turn(env: TaskEnv, action: object, reason: str) -> None:
    """The action is answered as a failed turn that runs nothing, and the episode goes on."""
    before = env._episode.state_hash()
    observation, reward, terminated, truncated, info = env.step(action)  # type: ignore[arg-type]
    assert env.observation_space.contains(observation)
    assert reward == 0.0 and not terminated and not truncated
    assert reason in info["signals"]["malformed"] and info["signals"]["tool_error"]
    message = last_message(observation)
    assert message["role"] == "tool" and message["content"].startswith("Error: malformed action:")
    assert reason in message["content"]
    assert env._episode.state_hash() == before, "a malformed action changed the database"
    # the episode continues: a plain message is still heard
    observation, *_ = env.step('{"content": "Could you tell me your name?"}')
    assert last_message(observation)["role"] == "user"


@pytest.mark.parametrize(("action", "reason"), [
    ('{"tool_calls":[{"function":"x"}]}', "'function' must be an object"),
    ('{"tool_calls":[7]}', "each entry of 'tool_calls' must be an object"),
    ('{"tool_calls":{"name":"x"}}', "'tool_calls' must be a list"),
    ('{"tool_calls":[{"function":{"arguments":"{}"}}]}', "non-empty string"),
    ('{"name": ["get_user_details"], "arguments": {}}', "non-empty string"),
    ('{"content": {"text": "hi"}}', "'content' must be a string"),
    ('{"content": "", "tool_calls": [' + ", ".join(['{"name": "a"}'] * (MAX_CALLS + 1)) + "]}", "tool calls"),
    (json.dumps({"name": "x" * 300}), "longer than 256"),
    (b"bytes are not text", "not bytes"),
])
def test_a_malformed_action_is_an_error_observation_not_an_exception(action, reason):
    assert_malformed_turn(fresh_env(), action, reason)


@pytest.mark.parametrize("action", [
    '{"a":' * DEEP + "1" + "}" * DEEP,
    json.dumps({"name": "get_user_details", "arguments": "[" * DEEP + "]" * DEEP}),
    '{"name": "get_user_details", "arguments": ' + '{"a":' * DEEP + "1" + "}" * DEEP + "}",
    "<tool_call>" + '{"a":' * DEEP + "1" + "}" * DEEP + "</tool_call>",
    json.dumps({"tool_calls": [{"function": {"name": "get_user_details", "arguments": json.dumps(
        {"user_id": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]})}}]}),
])
def test_json_nested_thousands_deep_is_a_malformed_action_not_a_recursion_error(action):
    assert_malformed_turn(fresh_env(), action, "nest")


def test_deep_brackets_that_are_no_json_object_are_words_to_the_user():
    env = fresh_env()
    observation, *_ = env.step("[" * DEEP)
    messages = json.loads(observation)["messages"]
    assert messages[-2] == {"role": "assistant", "content": "[" * DEEP} and messages[-1]["role"] == "user"


@pytest.mark.parametrize("length", [MAX_ACTION + 1, 10 << 20])
def test_an_action_over_the_size_cap_is_refused_whole_and_not_echoed(length):
    env = fresh_env()
    action = json.dumps({"content": "é" * length})[:length]
    before = len(env._observation())
    assert_malformed_turn(env, action, f"more than the {MAX_ACTION} allowed")
    assert len(env._observation()) - before < 4096, "the refused action was echoed into the observation"


@pytest.mark.parametrize("shape", ["content", "arguments", "name_and_id"])
def test_the_costliest_actions_under_the_cap_keep_every_observation_in_its_space(shape):
    """Characters JSON escapes the most (astral ones: 12 characters each, 14 inside a call's
    arguments) at full action length on every turn up to the last."""
    env = fresh_env(max_turns=3)
    astral = "\U0001F600"

    def action(turn: int) -> str:
        if shape == "content":
            return json.dumps({"content": astral * (MAX_ACTION - 20)}, ensure_ascii=False)
        if shape == "arguments":
            arguments = json.dumps({"q": astral * (MAX_ACTION - 100)}, ensure_ascii=False)
            return json.dumps({"name": "no_such_tool", "arguments": arguments}, ensure_ascii=False)
        calls = [{"id": astral * 200 + str(i), "function": {"name": astral * 250, "arguments": "{}"}}
                 for i in range(MAX_CALLS)]
        return json.dumps({"content": astral * 40000, "tool_calls": calls}, ensure_ascii=False)

    done = False
    while not done:  # to the turn limit, or until the scripted user has heard enough
        act = action(env._turns)
        assert len(act) <= MAX_ACTION, len(act)
        observation, _, terminated, truncated, info = env.step(act)
        assert info["signals"]["malformed"] is None
        assert env.observation_space.contains(observation), len(observation)
        done = terminated or truncated
    assert len(observation) > 12 * 40000  # the escaped actions really are in it


def test_a_tool_result_too_long_for_the_observation_is_cut_there_and_whole_for_the_verifier(monkeypatch):
    env = fresh_env(max_turns=2)
    huge = "\U0001F600" * (MAX_RESULT // 2)
    monkeypatch.setattr(env._episode, "call", lambda name, arguments: ToolResult(output=huge))
    observation, _, _, _, info = env.step(json.dumps({"name": "get_user_details", "arguments": {"user_id": "u"}}))
    assert env.observation_space.contains(observation)
    shown = last_message(observation)["content"]
    assert shown.endswith("longer than an observation holds]") and len(json.dumps(shown)) <= MAX_RESULT
    assert shown.startswith("\U0001F600" * 100)
    assert env._steps[-1].observation == huge  # the verifier judges what the tool really said


def _refused_in_time(target) -> BaseException:
    """Run ``target`` in a thread; it must raise within seconds (a FIFO would block a plain open)."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "reading the database blocked"
    assert outcome, "the database was accepted"
    return outcome[0]


def test_a_fifo_as_db_is_refused_at_once(tmp_path):
    fifo = tmp_path / "db.json"
    os.mkfifo(fifo)
    error = _refused_in_time(lambda: TaskEnv(list(retail_tasks()), domain="retail", db=str(fifo)))
    assert isinstance(error, InputFileError) and "not a regular file" in str(error)


def test_dev_zero_as_db_is_refused_at_once():
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    error = _refused_in_time(lambda: TaskEnv(list(retail_tasks()), domain="retail", db="/dev/zero"))
    assert isinstance(error, InputFileError) and "not a regular file" in str(error)


def test_a_database_over_the_input_cap_is_refused_before_it_is_read(tmp_path):
    huge = tmp_path / "db.json"
    with huge.open("wb") as fh:
        fh.truncate(MAX_INPUT_BYTES + 1)  # sparse: no disk used, nothing to read quickly either
    error = _refused_in_time(lambda: TaskEnv(list(retail_tasks()), domain="retail", db=str(huge)))
    assert isinstance(error, InputFileError) and "larger than 512 MiB" in str(error)


def test_a_database_of_another_shape_is_one_line(tmp_path):
    wrong = tmp_path / "db.json"
    wrong.write_text('{"users": 5}')
    from trajectory2task.domains import get_domain

    with pytest.raises(InputFileError) as caught:
        read_db(get_domain("retail"), wrong)
    assert "not a retail database" in str(caught.value) and "\n" not in str(caught.value)
