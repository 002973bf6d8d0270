"""One price table (trajectory2task.programs.lm.prices) for `--estimate` and the usage ledger:
an estimate of a call's tokens costs what the ledger recorded for that call, on each engine,
and a model without a known price is said to be unknown in both, never $0."""

from __future__ import annotations

import json
import os

import dspy
import pytest
from typer.testing import CliRunner

from trajectory2task.cli import app
from trajectory2task.programs.lm.accounting import UsageRecorder
from trajectory2task.programs.lm.config import LMSettings
from trajectory2task.programs.lm.estimate import RolePrompts, RunEstimate
from trajectory2task.programs.lm.prices import call_cost, token_rates
from trajectory2task.programs.lm.session import LMSession
from trajectory2task.signatures.models import LMCall, TokenUsage
from tests.llm_server import ScriptedLLMServer, Text, chat_fields

PRICED = "openai/gpt-4o-mini"
UNPRICED = "openai/t2t-model-with-no-price"
ANSWER = Text(chat_fields(answer="forty-two"))


@pytest.fixture(autouse=True)
def no_env_lm(monkeypatch):
    for name in list(os.environ):
        if name.startswith("T2T_"):
            monkeypatch.delenv(name)


def _one_call(model: str, engine: str) -> tuple[LMCall, LMSession]:
    """One call of a ledgered LM (as every command builds them) against the scripted server."""
    with ScriptedLLMServer(replies=[ANSWER]) as server:
        session = LMSession(warn=None)
        lm = session.build("writer", LMSettings(model=model, api_base=server.base_url, timeout_s=2.0,
                                                num_retries=0, engine=engine))
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
            dspy.Predict("question -> answer")(question="what is six times seven?")
        assert server.errors == []
    (row,) = session.ledger.take()
    return row, session


def _estimate_of(row: LMCall) -> RunEstimate:
    """An estimate whose one role makes exactly that call."""
    role = RolePrompts(role="writer", calls_per_item=1.0, max_calls_per_item=1,
                       prompt_tokens=[row.prompt_tokens], completion_tokens=[row.completion_tokens])
    return RunEstimate(units=1, sampled=1, roles=[role], models={"writer": row.model})


@pytest.mark.parametrize("engine", ["api_base", "dspy"])  # t2t's lean engine and DSPy's own
def test_an_estimate_of_a_calls_tokens_costs_what_the_ledger_recorded_for_it(engine):
    row, _ = _one_call(PRICED, engine)
    assert row.prompt_tokens > 0 and row.completion_tokens > 0 and row.cost is not None and row.cost > 0
    rates = token_rates(PRICED)
    assert rates is not None and 0 < rates.prompt < rates.completion
    assert row.cost == pytest.approx(rates.cost(row.prompt_tokens, row.completion_tokens), rel=1e-12)
    assert _estimate_of(row).cost() == pytest.approx(row.cost, rel=1e-12)


def test_the_ledgers_per_token_rates_are_the_estimates():
    # two recorded calls of different shapes determine the two rates the ledger charged
    long_answer = Text(chat_fields(answer="forty-two " * 60))
    with ScriptedLLMServer(replies=[ANSWER, long_answer]) as server:
        session = LMSession(warn=None)
        lm = session.build("writer", LMSettings(model=PRICED, api_base=server.base_url, num_retries=0))
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
            dspy.Predict("question -> answer")(question="six times seven?")
            dspy.Predict("question -> answer")(question="and now at length? " * 40)
    a, b = session.ledger.take()
    det = a.prompt_tokens * b.completion_tokens - b.prompt_tokens * a.completion_tokens
    assert det != 0
    prompt_rate = (a.cost * b.completion_tokens - b.cost * a.completion_tokens) / det
    completion_rate = (a.prompt_tokens * b.cost - b.prompt_tokens * a.cost) / det
    rates = token_rates(PRICED)  # what RunEstimate.cost multiplies by
    assert rates is not None
    assert (prompt_rate, completion_rate) == (pytest.approx(rates.prompt, rel=1e-9), pytest.approx(rates.completion, rel=1e-9))


def test_a_model_with_no_known_price_is_unknown_in_the_ledger_and_the_estimate():
    row, session = _one_call(UNPRICED, "api_base")
    assert row.prompt_tokens > 0 and row.cost is None  # tokens known, price not: not $0
    line = session.ledger.progress_line()
    assert f"cost unknown for 1 calls of {UNPRICED} (no known price)" in line and "$" not in line
    plan = _estimate_of(row)
    assert token_rates(UNPRICED) is None and plan.cost() is None and plan.unpriced_models() == [UNPRICED]
    # a rollout's usage over a priced and an unpriced side is unknown, not the priced part alone
    assert (TokenUsage(prompt_tokens=1, cost=0.5) + TokenUsage(prompt_tokens=1, cost=None)).cost is None
    assert (TokenUsage(cost=0.5) + TokenUsage(cost=0.25)).cost == 0.75


def test_a_mixed_ledger_says_the_known_cost_and_the_unknown_calls():
    priced, session = _one_call(PRICED, "api_base")
    unpriced, _ = _one_call(UNPRICED, "api_base")
    session.ledger.add_rows([unpriced])
    line = session.ledger.progress_line()
    assert f"${session.ledger.cost:.6f} + cost unknown for 1 calls of {UNPRICED}" in line
    assert session.ledger.cost == priced.cost


def test_history_read_usage_is_priced_from_the_same_table():
    # an LM t2t did not build (no ledger callback) is read from its history, priced the same way
    with ScriptedLLMServer(replies=[ANSWER]) as server:
        lm = dspy.LM(PRICED, api_base=server.base_url, api_key="sk-local", cache=False, num_retries=0)
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
            dspy.Predict("question -> answer")(question="q?")
    (row,) = UsageRecorder().drain(lm, "writer")
    assert row.prompt_tokens > 0 and row.cost == call_cost(PRICED, row.prompt_tokens, row.completion_tokens)


def test_generate_estimate_says_the_cost_is_unknown_for_a_model_with_no_price(tmp_path):
    with ScriptedLLMServer(replies=[]) as server:
        result = CliRunner().invoke(app, ["generate", "--n", "1", "--conditions", "general", "--lm", UNPRICED,
                                          "--api-base", server.base_url, "--store", str(tmp_path / "s.duckdb"),
                                          "--estimate", "--json"])
        assert server.requests == []
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout.strip().splitlines()[-1])
    assert plan["prompt_tokens"] > 0
    assert plan["cost_usd"] is None and plan["max_cost_usd"] is None and plan["unpriced_models"] == [UNPRICED]
    shown = CliRunner().invoke(app, ["generate", "--n", "1", "--conditions", "general", "--lm", UNPRICED,
                                     "--store", str(tmp_path / "s.duckdb"), "--estimate"])
    assert shown.exit_code == 0, shown.output
    said = " ".join(shown.stdout.split())  # the console wraps long lines
    assert f"cost unknown: no known price for {UNPRICED}" in said and "$" not in said


def test_a_local_model_costs_nothing_and_an_unknown_one_is_not_priced_as_free():
    assert call_cost("local/any/checkpoint", 1000, 100) == 0.0  # generated in this process
    assert call_cost(UNPRICED, 1000, 100) is None and call_cost("", 1, 1) is None
