"""Property-based fuzzing (hypothesis) of the environment's `step` and the fine-tuning data
reader (issue 29): whatever text or JSON an agent sends, `step` answers with a normal step
result whose observation is in the observation space; whatever a --data file holds, the
reader gives records or one `DataError` line, nothing else. Bounded in examples so the file
runs in seconds."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("gymnasium", reason="the train extra is not installed: pip install 'trajectory2task[train]'")

from trajectory2task.programs.loop.environment import MAX_ACTION, TaskEnv, load_environment  # noqa: E402
from trajectory2task.programs.training.finetune import DataError, read_sft_file  # noqa: E402
from tests.offline_tasks import generate_offline  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
TOOLS = ["get_user_details", "get_order_details", "find_user_id_by_email", "cancel_pending_order",
         "transfer_to_human_agents", "no_such_tool", ""]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)
names = st.sampled_from(TOOLS) | st.text(max_size=12) | json_values
arguments = json_values | json_values.map(json.dumps) | st.text(max_size=30) | st.dictionaries(
    st.sampled_from(["user_id", "order_id", "email", "reason"]), json_values, max_size=3)
openai_call = st.fixed_dictionaries({}, optional={
    "id": json_values, "type": st.sampled_from(["function", "x"]),
    "function": json_values | st.fixed_dictionaries({}, optional={"name": names, "arguments": arguments})})


def deep(depth: int, opener: str, closer: str) -> str:
    return opener * depth + closer * depth


actions = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.fixed_dictionaries({}, optional={"content": json_values, "tool_calls": st.lists(openai_call, max_size=4)
                                        | json_values}).map(json.dumps),
    st.fixed_dictionaries({"name": names}, optional={"arguments": arguments}).map(json.dumps),
    st.tuples(st.text(max_size=20), st.fixed_dictionaries({"name": names}, optional={"arguments": arguments})
              .map(json.dumps) | st.text(max_size=40)).map(lambda p: f"{p[0]}<tool_call>{p[1]}</tool_call>"),
    st.integers(1, 6000).flatmap(lambda n: st.sampled_from([
        deep(n, '{"a":', "}").replace("}", "1}", 1), deep(n, "[", "]"),
        json.dumps({"name": "get_user_details", "arguments": deep(n, "[", "]")}),
        "<tool_call>" + deep(n, "[", "]") + "</tool_call>"])),
    st.integers(MAX_ACTION - 8, MAX_ACTION + 8).flatmap(lambda n: st.sampled_from(["x", "\U0001F600", '"', "\x01"])
                                                         .map(lambda c: c * n)),
)


@lru_cache(maxsize=1)
def env() -> TaskEnv:
    tasks = generate_offline(load_environment("retail"), n=2).kept()
    return TaskEnv(tasks, load_environment("retail"), max_turns=3)


@FUZZ
@given(st.lists(actions, min_size=1, max_size=3))
def test_step_takes_any_action_and_keeps_its_observation_in_the_space(sequence):
    environment = env()
    observation, _ = environment.reset(seed=0)
    assert environment.observation_space.contains(observation)
    for action in sequence:
        observation, reward, terminated, truncated, info = environment.step(action)
        assert environment.observation_space.contains(observation), len(observation)
        assert reward in (0.0, 1.0) and isinstance(terminated, bool) and isinstance(truncated, bool)
        assert set(info["signals"]) >= {"tool_error", "forbidden_write", "malformed"}
        json.loads(observation)  # an observation is always JSON
        if terminated or truncated:
            break


sft_lines = st.one_of(
    st.text(max_size=80),
    json_values.map(json.dumps),
    st.fixed_dictionaries({}, optional={
        "messages": st.lists(st.fixed_dictionaries({}, optional={
            "role": st.sampled_from(["system", "user", "assistant", "tool", "wizard"]) | json_values,
            "content": json_values, "tool_calls": st.lists(openai_call, max_size=2) | json_values,
            "tool_call_id": json_values}), max_size=3) | json_values,
        "tools": st.lists(json_values | st.fixed_dictionaries({"type": st.just("function"), "function": json_values}),
                          max_size=2) | json_values}).map(json.dumps),
    st.integers(1, 3000).map(lambda n: deep(n, "[", "]")),
)


@FUZZ
@given(st.lists(sft_lines, max_size=4))
def test_the_sft_reader_gives_records_or_one_data_error_line(tmp_path_factory, lines):
    path = Path(tmp_path_factory.mktemp("sft")) / "data.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        records = read_sft_file(path)
    except DataError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))
        return
    # what it accepts is what training reads: messages with known roles, text content, tools as schemas
    for record in records:
        assert record["messages"] and all(m["role"] in ("system", "user", "assistant", "tool")
                                          and (m.get("content") is None or isinstance(m["content"], str))
                                          for m in record["messages"])
        assert record.get("tools") is None or all(isinstance(t["function"]["name"], str) for t in record["tools"])
