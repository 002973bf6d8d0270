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


# ---------------------------------------------------------------- domains and task files

DOMAIN_MODULES = {
    "raises_dom": ('raise RuntimeError("boom at import")\n', "RuntimeError: boom at import"),
    "broken_dom": ("def f(:\n    pass\n", "SyntaxError: "),
    "needs_dom": ("import no_such_dependency_t2t\n", "No module named 'no_such_dependency_t2t'"),
    "exits_dom": ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
}


@pytest.fixture(scope="module")
def domain_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("domains")
    for name, (source, _) in DOMAIN_MODULES.items():
        (directory / f"{name}.py").write_text(source)
    return directory


def _one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("t2t: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("module", sorted(DOMAIN_MODULES))
def test_a_domain_module_that_fails_at_import_is_one_line_naming_it(domain_dir, module):
    from tests.cli import run_t2t

    result = run_t2t("domain", "show", module, env={"PYTHONPATH": str(domain_dir)})
    line = _one_error_line(result)
    assert f"domain module {module} failed at import" in line and DOMAIN_MODULES[module][1] in line
    if module == "broken_dom":
        assert "broken_dom.py, line 1" in line


@pytest.mark.parametrize("command", [
    ["generate", "--n", "1", "--store", "STORE"],
    ["bench", "--tasks", "TASKS", "--store", "STORE"],
    ["replay", "TASKS"],
    ["verify", "TASKS"],
    ["audit", "TASKS"],
    ["sweep", "--trials", "1", "--store", "STORE"],
    ["domain", "generate-db", "--out", "OUT"],
])
def test_every_command_taking_a_domain_says_its_import_failure_in_one_line(domain_dir, tmp_path, tau2_dir, command):
    from tests.cli import run_t2t

    places = {"STORE": str(tmp_path / "t2t.duckdb"), "TASKS": str(tau2_dir / "tasks.json"),
              "OUT": str(tmp_path / "db.json")}
    args = [places.get(a, a) for a in command]
    args = args + ["raises_dom"] if command[0] == "domain" else args + ["--domain", "raises_dom"]
    line = _one_error_line(run_t2t(*args, env={"PYTHONPATH": str(domain_dir)}))
    assert "domain module raises_dom failed at import: RuntimeError: boom at import" in line
    assert not (tmp_path / "db.json").exists()


def _nested(depth: int) -> object:
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


def test_a_task_nested_past_the_cap_is_a_problem_and_one_at_the_cap_is_stored(tau2_tasks_raw, tmp_path):
    from trajectory2task.store.files import MAX_ENTRY_DEPTH, json_depth, load_tasks

    deep = json.loads(json.dumps(tau2_tasks_raw[0]))
    deep["evaluation_criteria"]["actions"][1]["arguments"]["order_id"] = _nested(900)
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps([deep]))
    tasks, problems = load_tasks(path)
    assert tasks == [] and len(problems) == 1
    assert f"nested more than {MAX_ENTRY_DEPTH} levels" in problems[0].line() and problems[0].entry_id == "0"

    at_cap = json.loads(json.dumps(tau2_tasks_raw[0]))
    arguments = at_cap["evaluation_criteria"]["actions"][1]["arguments"]
    # the arguments object is the 5th level (task, criteria, actions, action, arguments)
    arguments["order_id"] = _nested(MAX_ENTRY_DEPTH - 5)
    assert json_depth(at_cap, 10_000) == MAX_ENTRY_DEPTH
    path.write_text(json.dumps([at_cap]))
    tasks, problems = load_tasks(path)
    assert problems == [] and len(tasks) == 1
    assert json.loads(tasks[0].model_dump_json())  # what the store does with it


def test_bench_on_a_task_with_a_900_deep_gold_argument_refuses_it_and_leaves_no_run_started(tau2_dir,
                                                                                            tau2_tasks_raw, tmp_path):
    from tests.cli import run_t2t
    from trajectory2task.store import read_only_query

    deep = json.loads(json.dumps(tau2_tasks_raw[0]))
    deep["evaluation_criteria"]["actions"][1]["arguments"]["order_id"] = _nested(900)
    tasks = tmp_path / "deep.json"
    tasks.write_text(json.dumps([deep]))
    store = tmp_path / "t2t.duckdb"
    result = run_t2t("bench", "--tasks", str(tasks), "--db", str(tau2_dir / "db.json"), "--store", str(store))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("t2t: error: "), result.stderr
    assert "task 0: task: nested more than 64 levels" in lines[0], result.stderr
    if store.exists():
        _, rows = read_only_query(store, "SELECT count(*) FROM runs_status WHERE status = 'started'")
        assert rows == [(0,)]


def test_json_depth_counts_levels_without_recursion():
    from trajectory2task.store.files import json_depth

    assert [json_depth(v, 10) for v in ("x", [], {}, [1], {"a": [{}]}, [[], [[[]]]])] == [0, 1, 1, 1, 3, 4]
    assert json_depth(_nested(100_000), 10) == 11  # stops one past the limit, whatever the depth


@pytest.mark.parametrize("completion", [
    '{"a":' * DEEP + "1" + "}" * DEEP,
    "<tool_call>" + "[" * DEEP + "]" * DEEP + "</tool_call>",
    [{"role": "assistant", "content": None, "tool_calls": [{"function": "x"}]}],
    [{"role": "assistant", "content": 7, "tool_calls": [{"function": {"name": "get_user_details",
                                                                      "arguments": "[" * DEEP + "]" * DEEP}}]}],
])
def test_the_grpo_reward_scores_hostile_completions_zero_without_raising(completion):
    from trajectory2task.programs.loop.environment import grpo_reward

    tasks = list(retail_tasks())
    task = next(t for t in tasks if t.condition == "general")  # it needs a write: doing nothing fails it
    reward = grpo_reward(load_environment("retail"), tasks)
    assert reward(["[]"], [completion], task_id=[task.id]) == [0.0]
