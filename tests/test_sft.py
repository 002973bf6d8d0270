"""`t2t export --format sft`: successful rollouts as OpenAI fine-tuning chat JSONL; every line
is checked against the format by a validator written here."""

from __future__ import annotations

import json
from typing import Any

import pytest

from trajectory2task.signatures.models import Message, Rollout, ToolCall
from trajectory2task.store import TaskStore, read_only_query
from trajectory2task.store.sft import sft_messages, sft_record
from tests.cli import run_t2t
from tests.closed_loop import PlannedAgentLM, environment, make_tasks, store_tasks
from tests.llm_server import ScriptedLLMServer

A = "openai/gpt-4o-mini"
ROLES = {"system", "user", "assistant", "tool"}


class FormatError(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise FormatError(message)


def validate_fine_tuning_line(line: str) -> dict[str, Any]:
    """Check one line against OpenAI's chat fine-tuning format with tools; return it parsed."""
    record = json.loads(line)
    check(isinstance(record, dict) and set(record) <= {"messages", "tools", "parallel_tool_calls"},
          f"unexpected top-level keys {sorted(record)}")
    tools = record.get("tools", [])
    check(isinstance(tools, list), "tools must be a list")
    names = set()
    for tool in tools:
        check(tool.get("type") == "function" and isinstance(tool.get("function"), dict), f"bad tool {tool}")
        function = tool["function"]
        check(isinstance(function.get("name"), str) and function["name"], "a tool needs a name")
        check(isinstance(function.get("description", ""), str), "a tool description must be a string")
        parameters = function.get("parameters", {"type": "object"})
        check(isinstance(parameters, dict) and parameters.get("type") == "object",
              f"tool {function['name']}: parameters must be a JSON schema object")
        names.add(function["name"])
    messages = record.get("messages")
    check(isinstance(messages, list) and messages, "messages must be a non-empty list")
    open_calls: list[str] = []
    seen_ids: set[str] = set()
    assistants = 0
    for index, m in enumerate(messages):
        role = m.get("role")
        check(role in ROLES, f"message {index}: role {role!r}")
        if role != "tool":
            check(not open_calls, f"message {index}: tool calls {open_calls} were never answered")
        if role in ("system", "user"):
            check(set(m) == {"role", "content"}, f"message {index}: keys {sorted(m)}")
            check(isinstance(m["content"], str) and m["content"].strip(), f"message {index}: empty {role} content")
            check(role != "system" or index == 0, f"message {index}: a system message must come first")
        elif role == "assistant":
            assistants += 1
            check(set(m) <= {"role", "content", "tool_calls", "weight"}, f"message {index}: keys {sorted(m)}")
            content, calls = m.get("content"), m.get("tool_calls")
            check(content is None or isinstance(content, str), f"message {index}: content must be a string or null")
            check(bool(content) or bool(calls), f"message {index}: an assistant message needs content or tool_calls")
            for call in calls or []:
                check(set(call) == {"id", "type", "function"} and call["type"] == "function",
                      f"message {index}: bad tool call {call}")
                check(isinstance(call["id"], str) and call["id"] and call["id"] not in seen_ids,
                      f"message {index}: tool call id missing or reused: {call['id']!r}")
                function = call["function"]
                check(set(function) == {"name", "arguments"}, f"message {index}: bad function {function}")
                check(not names or function["name"] in names, f"message {index}: unknown tool {function['name']}")
                check(isinstance(function["arguments"], str), f"message {index}: arguments must be a JSON string")
                check(isinstance(json.loads(function["arguments"]), dict),
                      f"message {index}: arguments must encode a JSON object")
                seen_ids.add(call["id"])
                open_calls.append(call["id"])
        else:  # tool
            check(set(m) == {"role", "tool_call_id", "content"}, f"message {index}: keys {sorted(m)}")
            check(isinstance(m["content"], str), f"message {index}: tool content must be a string")
            check(m["tool_call_id"] in open_calls, f"message {index}: answers no open call: {m['tool_call_id']}")
            open_calls.remove(m["tool_call_id"])
    check(not open_calls, f"tool calls {open_calls} were never answered")
    check(assistants > 0, "no assistant message to learn from")
    check(messages[-1]["role"] in ("assistant", "tool"), "the conversation must end on the assistant's turn")
    return record


@pytest.mark.parametrize("bad", [
    {"messages": [{"role": "user", "content": "hi"}]},  # nothing to learn from
    {"messages": [{"role": "user", "content": "hi"},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]},
                  {"role": "tool", "tool_call_id": "c1", "content": "x"}]},  # arguments not a string
    {"messages": [{"role": "user", "content": "hi"},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                  {"role": "assistant", "content": "done"}]},  # call never answered
    {"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "c9", "content": "x"},
                  {"role": "assistant", "content": "ok"}]},  # result of no call
])
def test_the_validator_rejects_malformed_lines(bad):
    with pytest.raises(FormatError):
        validate_fine_tuning_line(json.dumps(bad))


# ============================================================================ export of real rollouts


@pytest.fixture(scope="module")
def store_with_rollouts(tmp_path_factory):
    env = environment()
    tasks = make_tasks(env)
    store = tmp_path_factory.mktemp("sft") / "t2t.duckdb"
    with TaskStore(store) as ts:
        store_tasks(ts, tasks)
    writes = {n for n, s in env.tools.items() if s.kind == "write"}
    plans = {(A, t): ["pass", "fail"] for t in tasks}
    with ScriptedLLMServer(responder=PlannedAgentLM(tasks, plans, writes)) as server:
        lm_run = run_t2t("bench", "--agent-lm", A, "--trials", "2", "--api-base", server.base_url,
                         "--store", str(store))
    references = run_t2t("bench", "--store", str(store))
    assert lm_run.returncode == 0, lm_run.stderr
    assert references.returncode == 0, references.stderr
    return store, env


def export(store, tmp_path, *flags: str) -> list[dict[str, Any]]:
    out = tmp_path / "sft.jsonl"
    done = run_t2t("export", "--format", "sft", "--out", str(out), "--store", str(store), "--force", *flags)
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert f"wrote {len(lines)} record(s)" in done.stdout
    return [validate_fine_tuning_line(line) for line in lines]


def passing(store, where: str = "true") -> int:
    _, rows = read_only_query(store, f"SELECT count(*) FROM rollouts_latest WHERE pass AND ({where})")
    return rows[0][0]


def test_every_exported_line_is_valid_fine_tuning_data(store_with_rollouts, tmp_path):
    store, env = store_with_rollouts
    records = export(store, tmp_path)
    assert len(records) == passing(store) == 5 + 5  # the LM agent's passing trials, and the oracle's
    for record in records:
        assert record["tools"] == env.tool_schemas()
        assert record["messages"][0]["role"] == "system" and env.policy.strip() in record["messages"][0]["content"]
        assert all("###" not in (m.get("content") or "") for m in record["messages"] if m["role"] == "user")
        called = [c["function"]["name"] for m in record["messages"] for c in m.get("tool_calls") or []]
        assert called and called[0] == "find_user_id_by_email"


def test_export_filters_by_condition_model_and_sql(store_with_rollouts, tmp_path):
    store, _ = store_with_rollouts
    assert len(export(store, tmp_path, "--model", "oracle")) == passing(store, "agent_model = 'oracle'") == 5
    assert len(export(store, tmp_path, "--condition", "ambiguous")) == passing(store, "condition = 'ambiguous'") == 2
    assert len(export(store, tmp_path, "--where", "agent_model <> 'oracle' AND condition = 'general'")) == 2
    assert export(store, tmp_path, "--model", "do-nothing") == []  # it never passes a verified task


def test_sft_messages_make_ids_unique_strip_markers_and_end_on_the_agent():
    messages = [
        Message(role="system", content="policy"),
        Message(role="user", content="Cancel #W1 please."),
        Message(role="assistant", content="Checking.", tool_calls=[ToolCall(id="call_0", name="get_order_details",
                                                                            arguments={"order_id": "#W1"})]),
        Message(role="tool", tool_call_id="call_0", content="{}"),
        Message(role="assistant", tool_calls=[ToolCall(id="call_0", name="cancel_pending_order",
                                                       arguments={"order_id": "#W1", "reason": "no longer needed"})]),
        Message(role="tool", tool_call_id="call_0", content="{}"),
        Message(role="assistant", content="Done."),
        Message(role="user", content="Thanks! ###STOP###"),
    ]
    out = sft_messages(messages)
    ids = [c["id"] for m in out for c in m.get("tool_calls") or []]
    assert len(set(ids)) == 2
    assert [m["tool_call_id"] for m in out if m["role"] == "tool"] == ids
    assert out[-1] == {"role": "assistant", "content": "Done."}
    record = sft_record(Rollout(id="r", task_id="t", messages=messages), tools=None)
    validate_fine_tuning_line(json.dumps(record))
