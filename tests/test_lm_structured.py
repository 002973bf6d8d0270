"""Structured output (trajectory2task.programs.lm.structured) and call accounting (trajectory2task.programs.lm.accounting),
against the scripted OpenAI-compatible server: what is sent, what is recorded."""

from __future__ import annotations

import json

import dspy
import pytest
from pydantic import BaseModel

from trajectory2task.programs.lm.accounting import CallLedger
from trajectory2task.programs.lm.build import build_lm
from trajectory2task.programs.lm.config import LMSettings, load_lm_config
from trajectory2task.programs.lm.structured import StructuredAdapter, StructuredOutputRefused
from tests.llm_server import Fault, ScriptedLLMServer, Text, chat_fields


class Box(BaseModel):
    label: str
    count: int


class Pack(dspy.Signature):
    """Pack the item."""

    item: str = dspy.InputField()
    box: Box = dspy.OutputField()


ANSWER = json.dumps({"box": {"label": "a", "count": 2}})


def _lm(server: ScriptedLLMServer, ledger: CallLedger, **settings: object) -> dspy.LM:
    return build_lm(LMSettings(model="openai/local-model", api_base=server.base_url, num_retries=0, **settings),
                    role="writer", ledger=ledger)


def _predict(lm: dspy.LM) -> dspy.Prediction:
    with dspy.context(lm=lm, adapter=StructuredAdapter()):
        return dspy.Predict(Pack)(item="pen")


def test_schema_sent_to_an_unknown_local_model_and_recorded():
    ledger = CallLedger()
    with ScriptedLLMServer(replies=[Text(ANSWER)]) as server:
        out = _predict(_lm(server, ledger, max_tokens=64))
        body = server.requests[0]
    assert out.box == Box(label="a", count=2)
    schema = body["response_format"]["json_schema"]["schema"]
    assert body["response_format"]["type"] == "json_schema" and "box" in schema["properties"]
    assert body.get("max_tokens") == 64 and "max_completion_tokens" not in body
    [call] = ledger.take()
    assert call.role == "writer" and call.error is None and call.latency_s is not None and call.latency_s >= 0
    assert call.prompt_tokens > 0 and call.completion_tokens > 0


def test_llama_cpp_dialect_after_a_refusal_and_kept():
    """llama-cpp-python answers 422 to type json_schema; the next dialect is its own."""
    refusal = Fault(422, json.dumps({"detail": [{"loc": ["body", "response_format", "type"],
                                                 "msg": "Input should be 'text' or 'json_object'"}]}))
    ledger = CallLedger()
    with ScriptedLLMServer(replies=[refusal, Text(ANSWER), Text(ANSWER)]) as server:
        lm = _lm(server, ledger)
        _predict(lm)
        _predict(lm.copy())  # copies share the role: the dialect found is kept
        sent = [r.get("response_format") for r in server.requests]
    assert sent[0]["type"] == "json_schema"
    assert sent[1]["type"] == "json_object" and "box" in sent[1]["schema"]["properties"]
    assert sent[2] == sent[1]
    calls = ledger.take()
    assert len(calls) == 3 and calls[0].error is not None and calls[0].error.startswith("bad_request")


def test_auto_falls_back_to_plain_parsing_and_on_fails():
    refusal = Fault(400, '{"error": {"message": "response_format is not supported"}}')
    with ScriptedLLMServer(replies=[refusal, refusal, Text(chat_fields(box={"label": "b", "count": 1}))]) as server:
        out = _predict(_lm(server, CallLedger()))
        assert "response_format" not in server.requests[-1]
    assert out.box.label == "b"
    with ScriptedLLMServer(replies=[refusal]) as server:
        with pytest.raises(StructuredOutputRefused, match="--structured on"):
            _predict(_lm(server, CallLedger(), structured="on"))


def test_off_sends_no_schema():
    ledger = CallLedger()
    with ScriptedLLMServer(replies=[Text("not the format"), Text("nor this")]) as server:
        with pytest.raises(Exception):
            _predict(_lm(server, ledger, structured="off"))
        assert "response_format" not in server.requests[0]
        assert "json_schema" not in json.dumps(server.requests)  # DSPy's JSON re-ask asks for json_object at most
    assert all(call.error is None for call in ledger.take())  # the calls answered; the parse failure is not the LM's


def test_text_format_reply_read_without_a_second_call():
    with ScriptedLLMServer(replies=[Text(chat_fields(box={"label": "c", "count": 3}))]) as server:
        out = _predict(_lm(server, CallLedger()))
        assert len(server.requests) == 1
    assert out.box.count == 3


def test_failed_calls_recorded_with_kind_and_advice():
    ledger = CallLedger()
    lm = build_lm(LMSettings(model="openai/local-model", api_base="http://127.0.0.1:9/v1", num_retries=0,
                             timeout_s=5), role="agent", ledger=ledger)
    with pytest.raises(Exception):
        lm("hi")
    [call] = ledger.take()
    assert call.error.startswith("unreachable") and call.latency_s is not None
    assert "--api-base" in ledger.reasons()[0]


def test_wrong_base_url_and_timeout_name_what_to_change():
    ledger = CallLedger()
    with ScriptedLLMServer(replies=[Fault(404, '{"error": {"message": "Not Found"}}')]) as server:
        lm = build_lm(LMSettings(model="openai/m", api_base=server.base_url.removesuffix("/v1"), num_retries=0),
                      role="writer", ledger=ledger)
        with pytest.raises(Exception):
            lm("hi")
    assert ledger.errors["wrong_url"] == 1 and "/v1" in ledger.reasons()[0]
    from tests.llm_server import Hang

    ledger = CallLedger()
    with ScriptedLLMServer(replies=[Hang(3)]) as server:
        lm = build_lm(LMSettings(model="openai/m", api_base=server.base_url, num_retries=0, timeout_s=0.5),
                      role="user", ledger=ledger)
        with pytest.raises(Exception):
            lm("hi")
    assert ledger.errors["timeout"] == 1 and "raise --timeout (now 0.5 s)" in ledger.reasons()[0]


def test_knobs_from_flags_and_env_per_role():
    config = load_lm_config(flags={"lm": "openai/m", "timeout": "120", "writer_max_tokens": "300",
                                   "structured": "off"},
                            environ={"T2T_AGENT_TIMEOUT": "9", "T2T_RETRIES": "1", "T2T_USER_TEMPERATURE": "0.5"})
    writer, agent, user = (config.for_role(r) for r in ("writer", "agent", "user"))
    assert writer.timeout_s == 120 and writer.max_tokens == 300 and writer.num_retries == 1
    assert agent.timeout_s == 120  # a flag beats the environment, even the role's own variable
    assert user.temperature == 0.5 and user.structured == "off"
    config = load_lm_config(flags={"lm": "openai/m"}, environ={"T2T_AGENT_TIMEOUT": "9"})
    assert config.for_role("agent").timeout_s == 9 and config.for_role("writer").timeout_s == 60


def test_prompt_that_will_not_fit_is_said_before_the_call():
    warnings: list[str] = []
    ledger = CallLedger()
    with ScriptedLLMServer(replies=[Text("ok")]) as server:
        lm = build_lm(LMSettings(model="openai/m", api_base=server.base_url, context_window=150, max_tokens=20),
                      role="explorer", ledger=ledger, warn=warnings.append)
        lm("x" * 400)
    assert len(warnings) == 1 and "explorer prompt ~200 tokens" in warnings[0] and "150-token window" in warnings[0]
