"""Re-asking on DSPy's BestOfN (`trajectory2task.programs.generation.reask.Reask`), through a real
``dspy.LM`` against the scripted server: what each attempt sends, what the caller gets."""

from __future__ import annotations

import asyncio
import uuid

import dspy
import pytest

from trajectory2task.programs.generation.reask import Reask, Verdict
from trajectory2task.programs.lm.build import build_lm
from trajectory2task.programs.lm.config import LMSettings
from tests.llm_server import Fault, ScriptedLLMServer, Text, chat_fields


class Count(dspy.Signature):
    """Count the words."""

    text: str = dspy.InputField()
    previous_error: str = dspy.InputField()
    count: int = dspy.OutputField()


def _judge(prediction: dspy.Prediction) -> Verdict:
    return Verdict(1.0) if prediction.count == 3 else Verdict(0.5, f"{prediction.count} is not the count")


SCRIPT = [Text("no fields at all"), Text(chat_fields(count=2)), Text(chat_fields(count=3))]


def _lm(server: ScriptedLLMServer, **settings: object) -> dspy.BaseLM:
    # a model of its own per test: no other test's requests are in DSPy's cache
    return build_lm(LMSettings(model=f"openai/t2t-reask-{uuid.uuid4().hex[:8]}", api_base=server.base_url,
                               **settings))


def _ask(predict: dspy.Predict, asynchronous: bool, attempts: int = 3):
    reask = Reask(predict, attempts, _judge, feedback_field="previous_error")
    inputs = dict(text="one two three", previous_error="")
    with dspy.context(adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
        if asynchronous:
            return asyncio.run(reask.acall(**inputs))
        return reask(**inputs)


def _prompts(server: ScriptedLLMServer) -> list[str]:
    return [r["messages"][-1]["content"] for r in server.requests]


def test_reask_is_a_plain_module_that_holds_the_programs_own_predictor():
    predict = dspy.Predict(Count)
    reask = Reask(predict, 2, _judge)
    assert isinstance(reask, dspy.Module) and not isinstance(reask, dspy.BestOfN)
    assert [p for _, p in reask.named_predictors()] == [predict]  # the same object: no copy per attempt


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_each_reask_shows_what_failed_until_one_is_accepted(asynchronous, capsys):
    predict = dspy.Predict(Count)
    with ScriptedLLMServer(replies=list(SCRIPT)) as server:
        predict.set_lm(_lm(server, temperature=0.3))
        answer = _ask(predict, asynchronous)
        assert server.errors == []
        prompts = _prompts(server)
        bodies = server.requests
    assert answer.accepted and answer.prediction.count == 3 and answer.attempts == 3
    assert len(prompts) == 3
    assert "could not be read" not in prompts[0]
    assert "Your answer could not be read" in prompts[1]
    assert "2 is not the count" in prompts[2]
    # the LM's own temperature on every attempt, not BestOfN's 1.0
    assert [b.get("temperature") for b in bodies] == [0.3, 0.3, 0.3]
    assert capsys.readouterr().out == ""  # BestOfN's print path never ran


def test_sync_and_async_send_the_same_requests():
    sent = {}
    for asynchronous in (False, True):
        predict = dspy.Predict(Count)
        with ScriptedLLMServer(replies=list(SCRIPT)) as server:
            predict.set_lm(_lm(server))
            _ask(predict, asynchronous)
            sent[asynchronous] = [(r["messages"], r.get("temperature")) for r in server.requests]
    assert sent[False] == sent[True]
    assert all(temperature is None for _, temperature in sent[False])  # unset stays unset


def test_the_best_attempt_is_returned_when_none_is_accepted():
    predict = dspy.Predict(Count)
    with ScriptedLLMServer(replies=[Text(chat_fields(count=2)), Text("unreadable")]) as server:
        predict.set_lm(_lm(server))
        answer = _ask(predict, asynchronous=False, attempts=2)
    assert not answer.accepted
    assert answer.prediction.count == 2 and answer.verdict.reward == 0.5
    assert answer.unreadable is not None and answer.attempts == 2


def test_an_lm_call_failure_stops_the_asking_and_is_raised(capsys):
    predict = dspy.Predict(Count)
    with ScriptedLLMServer(replies=[Text("unreadable"), Fault(400, "bad request")]) as server:
        predict.set_lm(_lm(server, num_retries=0))
        with pytest.raises(Exception) as raised:
            _ask(predict, asynchronous=False, attempts=3)
        assert len(server.requests) == 2  # the third attempt did not call the LM
    assert "bad request" in str(raised.value) or "400" in str(raised.value)
    assert capsys.readouterr().out == ""


def test_the_trace_names_the_programs_own_predictor_and_holds_the_accepted_attempt():
    """BootstrapFewShot maps trace entries to the program's predictors by identity."""
    predict = dspy.Predict(Count)
    with ScriptedLLMServer(replies=list(SCRIPT)) as server:
        lm = _lm(server)
        predict.set_lm(lm)
        with dspy.context(trace=[]):
            _ask(predict, asynchronous=False)
            trace = list(dspy.settings.trace)
    assert [entry[0] for entry in trace] == [predict]
    assert trace[0][2].count == 3
    assert set(trace[0][1]) == {"text", "previous_error"}  # inputs only: no LM, no config
    assert len(lm.history) == 3  # every attempt's call is in the program's LM history


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_the_trace_stays_within_max_trace_size(asynchronous):
    """Outside an optimizer the trace is DSPy's global one: re-asks must not grow it for ever."""
    predict = dspy.Predict(Count)
    with ScriptedLLMServer(replies=[Text(chat_fields(count=3))] * 3) as server:
        predict.set_lm(_lm(server))
        with dspy.context(trace=[], max_trace_size=2):
            for _ in range(3):
                _ask(predict, asynchronous)
            assert len(dspy.settings.trace) == 2


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_no_lm_is_an_error_that_says_so(asynchronous):
    with dspy.context(lm=None), pytest.raises(ValueError, match="No LM is loaded"):
        _ask(dspy.Predict(Count), asynchronous)
