"""The agent under test: native function calling through a real dspy.LM against the local
server (what the request carries is asserted), the text fallback, argument errors, and the
offline reference agents."""

from __future__ import annotations

import json

import dspy
import pytest

from trajectory2task.programs.loop.agent import (
    DoNothingAgent,
    LMAgent,
    OracleAgent,
    ToolCallingAgent,
    openai_messages,
    parse_arguments,
)
from trajectory2task.programs.lm.build import build_lm
from trajectory2task.programs.lm.config import LMSettings
from trajectory2task.signatures.conversation import AgentTurn
from trajectory2task.signatures.models import Message, ToolCall
from tests.closed_loop import environment, make_tasks
from tests.llm_server import ScriptedLLMServer, Text, ToolCalls, chat_fields

CONVERSATION = [
    Message(role="user", content="Where is my order #W1?"),
    Message(role="assistant", tool_calls=[ToolCall(id="call_a", name="get_order_details",
                                                   arguments={"order_id": "#W1"})]),
    Message(role="tool", tool_call_id="call_a", content="Error: Order not found"),
    Message(role="assistant", content="I could not find #W1. Could you check the id?"),
    Message(role="user", content="Sorry, it is #W2."),
]


def _decoded(messages: list[dict]) -> list[dict]:
    """Messages with tool-call arguments parsed (the client may re-serialize the JSON text)."""
    out = json.loads(json.dumps(messages))
    for m in out:
        for call in m.get("tool_calls") or []:
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    return out


@pytest.fixture(scope="module")
def env():
    return environment()


def test_native_request_carries_tools_the_policy_and_openai_messages(env):
    with ScriptedLLMServer(replies=[ToolCalls([("get_order_details", {"order_id": "#W2"})])]) as server:
        lm = build_lm(LMSettings(model="openai/gpt-4o-mini", api_base=server.base_url))
        agent = LMAgent(lm, env)
        reply = agent.session(make_tasks(env)["general-1"]).reply(CONVERSATION)
        body = server.requests[0]
    assert body["tools"] == env.tool_schemas()
    assert body["messages"][0] == {"role": "system", "content": agent.system_prompt()}
    assert agent.system_prompt().startswith(AgentTurn.instructions) and env.policy.strip() in agent.system_prompt()
    assert _decoded(body["messages"][1:]) == _decoded(openai_messages(CONVERSATION))
    assert json.loads(body["messages"][2]["tool_calls"][0]["function"]["arguments"]) == {"order_id": "#W1"}
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "call_a", "content": "Error: Order not found"}
    assert reply.content is None
    assert [(c.name, c.arguments, c.arguments_error) for c in reply.tool_calls] == \
        [("get_order_details", {"order_id": "#W2"}, None)]
    assert reply.tool_calls[0].id == "call_0_0"


def test_a_custom_model_name_sends_tools_once_function_calling_is_explicit(env):
    with ScriptedLLMServer(replies=[Text("Hello!")]) as server:
        settings = LMSettings(model="openai/my-local-agent", api_base=server.base_url, function_calling=True)
        reply = LMAgent(build_lm(settings), env).session(make_tasks(env)["general-1"]).reply(CONVERSATION[:1])
        body = server.requests[0]
    assert [t["function"]["name"] for t in body["tools"]] == [t.name for t in env.domain.tools]
    assert reply.content == "Hello!" and reply.tool_calls == []


def test_native_mode_refuses_a_model_not_known_to_call_functions(env):
    lm = build_lm(LMSettings(model="openai/my-unknown-model", api_base="http://127.0.0.1:9/v1"))
    assert not lm.supports_function_calling
    with pytest.raises(ValueError, match="function calling"):
        LMAgent(lm, env)


def test_text_mode_describes_tools_in_the_prompt_and_parses_json_calls(env):
    calls = [{"name": "get_order_details", "arguments": {"order_id": "#W2"}}]
    with ScriptedLLMServer(replies=[Text(chat_fields(message="", tool_calls=calls))]) as server:
        settings = LMSettings(model="openai/my-text-model", api_base=server.base_url, function_calling=False)
        agent = LMAgent(build_lm(settings), env, native_function_calling=False)
        reply = agent.session(make_tasks(env)["general-1"]).reply(CONVERSATION)
        body = server.requests[0]
    assert "tools" not in body
    prompt = "\n".join(m["content"] for m in body["messages"])
    assert "cancel_pending_order" in prompt and "Sorry, it is #W2." in prompt
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("get_order_details", {"order_id": "#W2"})]


def test_invalid_json_arguments_are_kept_as_an_error_not_repaired(env):
    with ScriptedLLMServer(replies=[ToolCalls([("get_order_details", '{"order_id": "#W2"')])]) as server:
        lm = build_lm(LMSettings(model="openai/gpt-4o-mini", api_base=server.base_url))
        broken = LMAgent(lm, env).session(make_tasks(env)["general-1"]).reply(CONVERSATION).tool_calls[0]
    assert broken.name == "get_order_details"
    assert broken.arguments == {} and "not valid JSON" in (broken.arguments_error or "")


@pytest.mark.parametrize(("raw", "arguments", "error"), [
    ('{"a": 1}', {"a": 1}, None),
    ({"a": 1}, {"a": 1}, None),
    ("", {}, None),
    (None, {}, None),
    ('{"a": ', {}, "not valid JSON"),
    ({"partial_json": '{"a": '}, {}, "not valid JSON"),  # DSPy's own client wraps unparseable text so
    ('"text"', {}, "JSON object"),
])
def test_parse_arguments(raw, arguments, error):
    parsed, problem = parse_arguments(raw)
    assert parsed == arguments
    assert (problem is None) if error is None else (error in problem)


def test_the_agent_instruction_is_tunable_and_is_what_the_lm_sees(env):
    program = ToolCallingAgent()
    program.turn.signature = program.turn.signature.with_instructions("Always greet the user first.")
    with ScriptedLLMServer(replies=[Text("Hello!")]) as server:
        lm = build_lm(LMSettings(model="openai/gpt-4o-mini", api_base=server.base_url))
        LMAgent(lm, env, program=program).session(make_tasks(env)["general-1"]).reply(CONVERSATION[:1])
        system = server.requests[0]["messages"][0]["content"]
    assert system.startswith("Always greet the user first.")
    assert [name for name, _ in program.named_predictors()] == ["turn"]


def test_oracle_replays_gold_one_call_per_turn_and_asks_before_the_first_write(env):
    task = make_tasks(env)["general-1"]
    session = OracleAgent(env).session(task)
    turns = [session.reply([]) for _ in range(len(task.gold_actions) + 2)]
    called = [(c.name, c.arguments) for t in turns for c in t.tool_calls]
    assert called == [(a.name, a.arguments) for a in task.gold_actions]
    assert all(len(t.tool_calls) <= 1 for t in turns)
    first_write = next(i for i, t in enumerate(turns) if t.tool_calls and t.tool_calls[0].name == "cancel_pending_order")
    assert "confirm" in (turns[first_write - 1].content or "") and not turns[first_write - 1].tool_calls
    assert "completed" in (turns[-1].content or "")


def test_do_nothing_agent_never_calls_a_tool(env):
    session = DoNothingAgent(env).session(make_tasks(env)["general-1"])
    assert all(not session.reply([]).tool_calls for _ in range(3))


def test_a_demod_agents_request_carries_its_demo(env):
    program = ToolCallingAgent()
    program.turn.demos = [dspy.Example(history=dspy.History(messages=[
        {"role": "user", "content": "DEMO-MARK: please cancel my order"}]),
        message="Could you confirm the order id first?", tool_calls=None)]
    with ScriptedLLMServer(replies=[Text("Hello!")]) as server:
        lm = build_lm(LMSettings(model="openai/gpt-4o-mini", api_base=server.base_url))
        LMAgent(lm, env, program=program).session(make_tasks(env)["general-1"]).reply(CONVERSATION[:1])
        system = server.requests[0]["messages"][0]["content"]
    assert "DEMO-MARK: please cancel my order" in system and "Could you confirm the order id first?" in system
    assert server.requests[0]["tools"] == env.tool_schemas()


def test_a_reask_after_a_parse_failure_is_not_answered_from_the_cache(env):
    """Text mode: the first reply does not parse; the re-ask carries its own rollout_id, so
    DSPy's cache (on here) does not hand back the failed reply: the server sees both asks."""
    import uuid

    unique = [Message(role="user", content=f"Hello {uuid.uuid4().hex}")]
    replies = [Text("no fields here"), Text(chat_fields(message="Hi there", tool_calls=[]))]
    with ScriptedLLMServer(replies=replies) as server:
        settings = LMSettings(model="openai/my-text-model", api_base=server.base_url, function_calling=False)
        agent = LMAgent(build_lm(settings, cache=True), env, native_function_calling=False)
        reply = agent.session(make_tasks(env)["general-1"]).reply(unique)
        asked = len(server.requests)
    assert asked == 2
    assert reply.content == "Hi there" and reply.tool_calls == []
