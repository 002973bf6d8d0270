"""LM configuration per role, and the real LiteLLM/DSPy path against the local scripted server.

No network: every LM call goes to tests/llm_server.py on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import threading
from pathlib import Path

import pytest

from trajectory2task.programs.lm.accounting import UsageRecorder, usage_of
from trajectory2task.programs.lm.build import build_lm, supports_native_tools
from trajectory2task.programs.lm.config import ROLES, LMConfigError, LMSettings, load_lm_config
from trajectory2task.programs.lm.prices import ensure_local_cost_map
from trajectory2task.signatures.models import LMCall
from tests.llm_server import (
    Fault,
    Hang,
    Malformed,
    ScriptedLLMServer,
    Text,
    ToolCalls,
    chat_fields,
    run_in_subprocess,
)

dspy = pytest.importorskip("dspy")
from dspy.utils.exceptions import LMInvalidRequestError, LMProviderError, LMServerError  # noqa: E402

ANSWER = Text(chat_fields(answer="forty-two"))


# ---------------------------------------------------------------------------- config


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_empty_config_means_offline_baselines():
    cfg = load_lm_config(environ={})
    assert cfg.offline
    assert all(cfg.for_role(role) is None for role in ROLES)


def test_precedence_flags_over_env_over_file(tmp_path):
    path = _write(tmp_path, "t2t.toml", """
[lm.default]
model = "openai/from-file"
temperature = 0.3
[lm.agent]
model = "hosted_vllm/agent-from-file"
api_base = "http://127.0.0.1:9/v1"
function_calling = true
""")
    env = {"T2T_LM": "openai/from-env", "T2T_JUDGE_LM": "openai/judge-from-env", "T2T_API_KEY": "sk-env"}
    flags = {"lm": None, "judge_lm": "openai/judge-from-flag", "writer-lm": ""}

    cfg = load_lm_config(flags=flags, config_path=path, environ=env)
    # env default beats file default; file-only fields survive underneath
    writer = cfg.for_role("writer")
    assert writer is not None and writer.model == "openai/from-env"
    assert writer.temperature == 0.3 and writer.api_key == "sk-env"
    # the env default model also beats the file's agent model (a source beats a lower one) ...
    agent = cfg.for_role("agent")
    assert agent is not None and agent.model == "openai/from-env"
    # ... but the file's agent-only fields stay
    assert agent.api_base == "http://127.0.0.1:9/v1" and agent.function_calling is True
    # flag beats env for the judge
    judge = cfg.for_role("judge")
    assert judge is not None and judge.model == "openai/judge-from-flag"

    # without env, the file's per-role entry beats the file's default
    cfg = load_lm_config(config_path=path, environ={})
    assert cfg.for_role("agent").model == "hosted_vllm/agent-from-file"  # type: ignore[union-attr]
    assert cfg.for_role("user").model == "openai/from-file"  # type: ignore[union-attr]


def test_per_role_env_and_default_fallback():
    env = {"T2T_AGENT_LM": "openai/agent-only", "T2T_AGENT_API_BASE": "http://127.0.0.1:1/v1"}
    cfg = load_lm_config(environ=env)
    assert cfg.for_role("agent").model == "openai/agent-only"  # type: ignore[union-attr]
    assert cfg.for_role("agent").api_base == "http://127.0.0.1:1/v1"  # type: ignore[union-attr]
    assert cfg.for_role("user") is None  # no default: that role runs the baseline
    assert set(cfg.roles) == {"agent"}

    cfg = load_lm_config(environ={**env, "T2T_LM": "openai/everyone", "T2T_API_BASE": "http://127.0.0.1:2/v1"})
    user = cfg.for_role("user")
    assert user is not None and user.model == "openai/everyone" and user.api_base == "http://127.0.0.1:2/v1"
    assert cfg.for_role("agent").api_base == "http://127.0.0.1:1/v1"  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        cfg.for_role("janitor")


def test_json_config_and_clear_errors(tmp_path):
    path = _write(tmp_path, "t2t.json", json.dumps({"lm": {"default": {"model": "openai/x", "max_tokens": 64}}}))
    cfg = load_lm_config(config_path=path, environ={})
    assert cfg.for_role("explorer").max_tokens == 64  # type: ignore[union-attr]

    bad_role = _write(tmp_path, "r.toml", '[lm.janitor]\nmodel = "openai/x"\n')
    bad_key = _write(tmp_path, "k.toml", '[lm.default]\nmodel = "openai/x"\ntemprature = 1\n')
    bad_type = _write(tmp_path, "t.toml", '[lm.default]\nmodel = "openai/x"\ntimeout_s = "soon"\n')
    for path in (bad_role, bad_key, bad_type, str(tmp_path / "missing.toml")):
        with pytest.raises(LMConfigError):
            load_lm_config(config_path=path, environ={})
    with pytest.raises(LMConfigError):
        load_lm_config(flags={"agnet_lm": "openai/x"}, environ={})


def test_local_cost_map_respects_the_user(monkeypatch):
    monkeypatch.delenv("LITELLM_LOCAL_MODEL_COST_MAP", raising=False)
    ensure_local_cost_map()
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "False")
    ensure_local_cost_map()
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "False"


def test_api_key_is_not_in_repr_or_redacted():
    s = LMSettings(model="openai/x", api_key="sk-secret")
    assert "sk-secret" not in repr(s) and "api_key" not in s.redacted()


# ---------------------------------------------------------------------------- the server itself


def _post(conn: http.client.HTTPConnection, body: dict) -> tuple[int, dict[str, str], bytes]:
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, dict(resp.getheaders()), resp.read()


def test_server_serves_script_in_order_and_reports_exhaustion():
    replies = [Text("hello"), ToolCalls([("get_order_details", {"order_id": "#W1"}), ("bad", "{not json")]),
               Fault(429), Malformed("{oops")]
    with ScriptedLLMServer(replies=replies) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        status, _, raw = _post(conn, body)
        data = json.loads(raw)
        assert status == 200 and data["object"] == "chat.completion"
        assert data["choices"][0]["message"]["content"] == "hello"
        assert set(data["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}

        status, _, raw = _post(conn, body)
        calls = json.loads(raw)["choices"][0]["message"]["tool_calls"]
        assert json.loads(raw)["choices"][0]["finish_reason"] == "tool_calls"
        assert [c["function"]["name"] for c in calls] == ["get_order_details", "bad"]
        assert json.loads(calls[0]["function"]["arguments"]) == {"order_id": "#W1"}
        assert calls[1]["function"]["arguments"] == "{not json"

        status, headers, _ = _post(conn, body)
        assert status == 429 and headers["Retry-After"] == "0"
        status, _, raw = _post(conn, body)
        assert status == 200 and raw == b"{oops"

        status, _, raw = _post(conn, body)  # script exhausted: loud, non-retryable
        assert status == 400 and b"exhausted" in raw
        assert len(server.requests) == 5 and server.requests[0] == body
        assert len(server.errors) == 1 and "exhausted" in server.errors[0]


def test_server_answers_in_one_write(monkeypatch):
    """Headers and body in separate writes cost ~40 ms per call (Nagle meets delayed ACK),
    so every response must leave in one write of headers plus body."""
    from tests.llm_server import _Handler

    writes: list[int] = []
    original_setup = _Handler.setup

    class CountingWriter:
        def __init__(self, raw):
            self.raw = raw

        def write(self, data):
            writes.append(len(data))
            return self.raw.write(data)

        def __getattr__(self, name):
            return getattr(self.raw, name)

    def counting_setup(handler):
        original_setup(handler)
        handler.wfile = CountingWriter(handler.wfile)

    monkeypatch.setattr(_Handler, "setup", counting_setup)
    with ScriptedLLMServer(responder=lambda body: "x" * 3000) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(20):
            assert _post(conn, body)[0] == 200
    assert len(writes) == 20 and all(size > 3000 for size in writes)


def test_server_in_subprocess_cli():
    with run_in_subprocess(latency_s=0.0, mode="tools") as proc:
        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=5)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        first = json.loads(_post(conn, body)[2])["choices"][0]["message"]
        second = json.loads(_post(conn, body)[2])["choices"][0]["message"]
        assert first["tool_calls"][0]["function"]["name"] == "get_order_details"
        assert "tool_calls" not in second and "[[ ## answer ## ]]" in second["content"]
    assert proc.process.poll() is not None


# ---------------------------------------------------------------------------- the real dspy.LM path


def _settings(server: ScriptedLLMServer, **kw) -> LMSettings:
    return LMSettings(**{"model": "openai/gpt-4o-mini", "api_base": server.base_url, "timeout_s": 1.0, **kw})


def _ask(lm, question: str = "what is six times seven?"):
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        return dspy.Predict("question -> answer")(question=question)


def test_predict_through_real_lm_and_usage_recording():
    with ScriptedLLMServer(replies=[ANSWER, ANSWER]) as server:
        lm = build_lm(_settings(server))
        assert _ask(lm).answer == "forty-two"
        request = server.requests[0]
        assert request["model"] == "gpt-4o-mini"
        assert "six times seven" in request["messages"][-1]["content"]

        recorder = UsageRecorder()
        (record,) = recorder.drain(lm, "writer")
        assert isinstance(record, LMCall)
        assert record.role == "writer" and record.model == "openai/gpt-4o-mini"
        assert record.prompt_tokens > 0 and record.completion_tokens > 0
        assert record.cost > 0  # gpt-4o-mini is priced in the bundled model map
        assert recorder.drain(lm, "writer") == []  # nothing new

        _ask(lm, "again?")
        assert len(recorder.drain(lm, "writer")) == 1
        total = usage_of(lm)
        assert total == recorder.total("writer")
        assert total.prompt_tokens == sum(r.prompt_tokens for r in recorder.records)
        assert server.errors == []


def _many_at_once(lm, calls: int = 6) -> None:
    """``calls`` predictions started together: awaited on one event loop, then on as many threads."""
    predict = dspy.Predict("question -> answer")

    async def gathered():
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
            await asyncio.gather(*(predict.acall(question=f"q{i}") for i in range(calls)))

    asyncio.run(gathered())
    threads = [threading.Thread(target=_ask, args=(lm, f"t{i}")) for i in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_max_concurrent_bounds_a_roles_calls_in_flight():
    with ScriptedLLMServer(responder=lambda body: ANSWER, latency_s=0.15) as server:
        _many_at_once(build_lm(_settings(server)))
        assert server.max_in_flight > 2  # unbounded, the calls overlap
        for limit in (1, 2):
            server.reset()
            lm = build_lm(_settings(server, max_concurrent=limit))
            _many_at_once(lm)
            assert server.max_in_flight == limit and len(server.requests) == 12
            server.reset()
            _many_at_once(lm.copy(temperature=0.5))  # an optimizer's copy shares the bound
            assert server.max_in_flight == limit
        assert server.errors == []


def test_the_ledger_feeds_a_live_line_after_every_call_failed_ones_included():
    from trajectory2task.programs.lm.session import LMSession

    lines: list[str] = []
    with ScriptedLLMServer(replies=[ANSWER, Fault(500)]) as server:
        session = LMSession(warn=None)
        session.ledger.on_call(lines.append)
        lm = session.build("writer", _settings(server, num_retries=0))
        _ask(lm)
        with pytest.raises(LMServerError):
            _ask(lm, "again?")
    assert len(lines) == 2
    assert lines[0].startswith("LM calls 1, tokens ") and lines[0].endswith("errors: none")
    assert lines[1].startswith("LM calls 2, ") and lines[1].endswith("errors: server_error 1")
    assert float(lines[0].split("$")[1].split(",")[0]) > 0  # gpt-4o-mini is priced: even a cheap call shows


def test_a_call_its_own_run_cancels_is_not_recorded_a_failed_one_is():
    """A call cut short by its run (cancelled as the run stops) got no reply: not a row, not
    an LM error. A call the endpoint failed is both."""
    from trajectory2task.programs.lm.session import LMSession

    async def cancelled(lm) -> None:
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
            call = asyncio.ensure_future(dspy.Predict("question -> answer").acall(question="slow?"))
            await asyncio.sleep(0.5)  # the request is at the server, which holds it
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call

    with ScriptedLLMServer(replies=[Hang(5.0), Fault(500), ANSWER]) as server:
        session = LMSession(warn=None)
        lm = session.build("writer", _settings(server, num_retries=0, timeout_s=10.0))
        asyncio.run(cancelled(lm))
        with pytest.raises(LMServerError):
            _ask(lm, "again?")
        assert _ask(lm, "and now?").answer == "forty-two"
        assert len(server.requests) == 3  # the cancelled call reached the server
    rows = session.ledger.take()
    assert [(r.role, r.error is not None) for r in rows] == [("writer", True), ("writer", False)]
    assert rows[0].error.startswith("server_error") and session.ledger.errors == {"server_error": 1}


def test_max_concurrent_is_a_per_role_knob_from_flags_env_and_file(tmp_path):
    config = _write(tmp_path, "lm.toml", "[lm.default]\nmodel = 'openai/x'\n[lm.writer]\nmax_concurrent = 3\n")
    resolved = load_lm_config(flags={"max_concurrent": "4", "explorer_max_concurrent": "1"}, config_path=config,
                              environ={"T2T_ADAPTER_MAX_CONCURRENT": "2"})
    assert resolved.for_role("explorer").max_concurrent == 1
    assert resolved.for_role("adapter").max_concurrent == 4  # a flag's default beats the role's env variable
    assert load_lm_config(config_path=config, environ={"T2T_ADAPTER_MAX_CONCURRENT": "2"}).for_role(
        "adapter").max_concurrent == 2
    assert load_lm_config(config_path=config, environ={}).for_role("writer").max_concurrent == 3
    with pytest.raises(LMConfigError, match="max.concurrent"):
        load_lm_config(flags={"lm": "openai/x", "max_concurrent": "0"}, environ={})


@pytest.mark.parametrize(
    ("replies", "expected_requests"),
    [
        ([Fault(500), ANSWER], 2),
        ([Fault(429), Fault(429), ANSWER], 3),
        ([Fault(503, retry_after=None), ANSWER], 2),  # no Retry-After: DSPy waits 1 s
    ],
    ids=["500", "429x2", "503-backoff"],
)
def test_transient_faults_are_retried(replies, expected_requests):
    with ScriptedLLMServer(replies=replies) as server:
        lm = build_lm(_settings(server, num_retries=3))
        assert _ask(lm).answer == "forty-two"
        assert len(server.requests) == expected_requests
        assert server.errors == []
        assert len(lm.history) == 1  # failed attempts are not in history


def test_timeout_is_retried():
    with ScriptedLLMServer(replies=[Hang(5), ANSWER]) as server:
        lm = build_lm(_settings(server, timeout_s=0.5, num_retries=2))
        # without the timeout the hung request would answer after 5 s and be the only one
        assert _ask(lm).answer == "forty-two"
        assert len(server.requests) == 2


def test_retries_give_up_and_client_errors_are_not_retried():
    with ScriptedLLMServer(replies=[Fault(500)] * 2) as server:
        lm = build_lm(_settings(server, num_retries=1))
        with pytest.raises(LMServerError):
            _ask(lm)
        assert len(server.requests) == 2
    with ScriptedLLMServer(replies=[Fault(400), ANSWER]) as server:
        with pytest.raises(LMInvalidRequestError):
            _ask(build_lm(_settings(server)))
        assert len(server.requests) == 1


def test_malformed_reply_raises_on_the_native_engine():
    """DSPy's native engine (used for openai/... models) raises LMProviderError for a 200 that
    is not JSON, and does not retry it."""
    with ScriptedLLMServer(replies=[Malformed(), ANSWER]) as server:
        lm = build_lm(_settings(server))
        with pytest.raises(LMProviderError, match="not JSON"):
            _ask(lm)
        assert len(server.requests) == 1


# ---------------------------------------------------------------------------- native function calling


def get_order_details(order_id: str) -> str:
    """Get the status and items of an order."""
    return order_id


class AgentStep(dspy.Signature):
    """Help the customer, calling tools when needed."""

    request: str = dspy.InputField()
    tools: list[dspy.Tool] = dspy.InputField()
    tool_calls: dspy.ToolCalls = dspy.OutputField()


def _agent_step(lm, use_native: bool = True):
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter(use_native_function_calling=use_native)):
        return dspy.Predict(AgentStep)(request="where is order #W1?", tools=[dspy.Tool(get_order_details)])


def test_function_calling_flag_sends_tools_for_custom_model_names():
    reply = ToolCalls([("get_order_details", {"order_id": "#W1"})])
    with ScriptedLLMServer(replies=[reply]) as server:
        settings = _settings(server, model="openai/my-local-model", function_calling=True)
        lm = build_lm(settings)
        assert supports_native_tools(settings) and lm.supports_function_calling
        result = _agent_step(lm)
        assert server.requests[0]["tools"][0]["function"]["name"] == "get_order_details"
        assert [(c.name, c.args) for c in result.tool_calls.tool_calls] == [("get_order_details", {"order_id": "#W1"})]


def test_without_the_flag_custom_names_silently_fall_back_to_text_tools():
    text_reply = Text(chat_fields(tool_calls={"tool_calls": [{"name": "get_order_details",
                                                                "args": {"order_id": "#W1"}}]}))
    with ScriptedLLMServer(replies=[text_reply]) as server:
        settings = _settings(server, model="openai/another-local-model")
        lm = build_lm(settings)
        assert not supports_native_tools(settings) and not lm.supports_function_calling
        result = _agent_step(lm)  # asked for native tools, got none: the documented silent fallback
        request = server.requests[0]
        assert "tools" not in request
        assert "get_order_details" in json.dumps(request["messages"])  # described in text instead
        assert result.tool_calls.tool_calls[0].name == "get_order_details"
    # a model the map knows gets native tools without the flag
    with ScriptedLLMServer(replies=[ToolCalls([("get_order_details", {"order_id": "#W1"})])]) as server:
        settings = _settings(server)
        assert supports_native_tools(settings)
        _agent_step(build_lm(settings))
        assert "tools" in server.requests[0]
    assert supports_native_tools(LMSettings(model="openai/gpt-4o-mini", function_calling=False)) is False


def test_malformed_reply_is_retried_on_the_litellm_engine():
    """function_calling=True on an unknown name runs through LiteLLM, which reports a non-JSON
    200 as InternalServerError: DSPy retries it (after 1 s, no Retry-After on a 200)."""
    with ScriptedLLMServer(replies=[Malformed(), ANSWER]) as server:
        lm = build_lm(_settings(server, model="openai/my-local-model-2", function_calling=True))
        assert lm.engine == "litellm"
        assert _ask(lm).answer == "forty-two"
        assert len(server.requests) == 2


def test_both_engines_answer_the_same_and_the_environment_chooses_between_them():
    from trajectory2task.programs.lm.http_engine import OpenAIChatEngine

    with ScriptedLLMServer(responder=lambda body: ANSWER) as server:
        env = {"T2T_LM": "openai/gpt-4o-mini", "T2T_API_BASE": server.base_url}
        lean = build_lm(load_lm_config(environ=env).for_role("writer"))
        dspy_own = build_lm(load_lm_config(environ={**env, "T2T_ENGINE": "dspy"}).for_role("writer"))
        assert isinstance(lean.engine, OpenAIChatEngine)
        assert not isinstance(getattr(dspy_own, "engine", None), OpenAIChatEngine)
        assert _ask(lean).answer == _ask(dspy_own).answer == "forty-two"
        first, second = server.requests
        assert first["messages"] == second["messages"] and first["model"] == second["model"] == "gpt-4o-mini"
        assert server.errors == []


def test_dspys_handoffs_run_on_the_loops_thread_and_other_work_still_gets_a_thread(monkeypatch):
    """trajectory2task.programs.lm.event_loop: DSPy's own steps of an async call skip the thread pool; a
    blocking call handed to the default executor (a DNS lookup, a local model) does not."""
    import functools

    from dspy.clients import execution

    from trajectory2task.programs.lm import event_loop

    prepared_on: list[int] = []
    real_prepare = execution.prepare

    @functools.wraps(real_prepare)  # keeps its module: still one of DSPy's hand-offs
    def prepare(*args, **kwargs):
        prepared_on.append(threading.get_ident())
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(execution, "prepare", prepare)
    with ScriptedLLMServer(replies=[ANSWER, ANSWER]) as server:
        lm = build_lm(_settings(server))

        async def main() -> tuple[int, int, str]:
            with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
                answer = (await dspy.Predict("question -> answer").acall(question="six times seven?")).answer
            return threading.get_ident(), await asyncio.to_thread(threading.get_ident), answer

        loop_thread, worker_thread, answer = event_loop.run(main())
        on_plain_loop = asyncio.run(main())[0]
    assert answer == "forty-two"
    assert prepared_on[0] == loop_thread and worker_thread != loop_thread
    assert prepared_on[1] != on_plain_loop  # on asyncio's own loop the same step is on a thread
