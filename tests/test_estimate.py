"""`t2t generate --estimate` and `t2t bench --estimate`: the LM calls, tokens and cost of a run,
counted on the prompts the LM programs really send, without calling a model."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from trajectory2task.programs.generation.estimate import estimate_run
from trajectory2task.store import TaskStore
from trajectory2task.programs.lm.tokens import litellm_tokenizer
from trajectory2task.cli import app
from trajectory2task.settings import load_environment
from tests.cli import run_t2t
from tests.llm_server import ScriptedLLMServer
from tests.test_generate_lm import Responder

MODEL = "openai/gpt-4o-mini"  # priced in the price table (programs/lm/prices.py)
ARGS = ["--n", "6", "--users", "60", "--seed", "2", "--conditions", "general,ambiguous,infeasible"]


@pytest.fixture(autouse=True)
def no_env_lm(monkeypatch):
    for name in list(os.environ):
        if name.startswith("T2T_"):
            monkeypatch.delenv(name)


def test_estimate_prints_calls_tokens_and_cost_without_calling_the_model(tmp_path):
    store = tmp_path / "never.duckdb"
    with ScriptedLLMServer(replies=[]) as server:  # any call would be answered 400 and listed in errors
        result = CliRunner().invoke(app, ["generate", *ARGS, "--lm", MODEL, "--api-base", server.base_url,
                                          "--store", str(store), "--estimate", "--json"])
        assert server.requests == [] and server.errors == []
    assert result.exit_code == 0, result.output
    assert not store.exists()  # nothing run, nothing stored
    plan = json.loads(result.stdout.strip().splitlines()[-1])
    roles = {r["role"]: r for r in plan["roles"]}
    assert set(roles) == {"explorer", "writer", "adapter"} and plan["units"] == 6 and plan["unit"] == "item"
    assert roles["writer"]["calls_per_item"] == 1.0
    assert 0 < roles["adapter"]["calls_per_item"] <= 2  # two adapted conditions, when they have candidates
    assert plan["calls"] == round(6 * sum(r["calls_per_item"] for r in plan["roles"]))
    assert plan["max_calls"] == 6 * (24 + 2 + 4) >= plan["calls"]
    assert all(0 < r["prompt_tokens_mean"] <= r["prompt_tokens_max"] for r in plan["roles"])
    assert plan["prompt_tokens"] > 0 and plan["max_prompt_tokens"] >= plan["prompt_tokens"]
    assert 0 < plan["cost_usd"] <= plan["max_cost_usd"]


def test_the_estimate_counts_the_prompt_the_explorer_really_sends(tmp_path):
    responder = Responder({})
    with ScriptedLLMServer(responder=responder) as server:
        result = CliRunner().invoke(app, ["generate", *ARGS[:2], *ARGS[2:6], "--n", "1", "--lm", MODEL,
                                          "--api-base", server.base_url, "--store", str(tmp_path / "s.duckdb"),
                                          "--no-cache", "--json"])
        first = server.requests[0]
    assert result.exit_code == 0, result.output
    assert responder.kinds[0] == "explorer"
    count = litellm_tokenizer(MODEL)
    env = load_environment("retail", None, seed=2, users=60)
    plan = estimate_run(env, items=1, run_seed=2, conditions=["general"], tokenizer=lambda role: count)
    explorer = next(r for r in plan.roles if r.role == "explorer")
    assert explorer.prompt_tokens[0] == count(first["messages"])


def test_estimate_with_resume_is_one_clear_error(tmp_path):
    done = run_t2t("generate", "--estimate", "--resume", "abc", "--store", str(tmp_path / "s.duckdb"))
    assert done.returncode == 2 and done.stderr.startswith("t2t: error: --estimate")
    assert len(done.stderr.splitlines()) == 1


def test_bench_estimate_counts_agent_and_user_turns_without_calling_the_model(tmp_path):
    store = tmp_path / "offline.duckdb"
    made = CliRunner().invoke(app, ["generate", "--n", "2", "--conditions", "general", "--store", str(store)])
    assert made.exit_code == 0, made.output
    with ScriptedLLMServer(replies=[]) as server:
        result = CliRunner().invoke(app, ["bench", "--agent-lm", MODEL, "--user-lm", MODEL, "--function-calling",
                                          "--api-base", server.base_url, "--store", str(store), "--trials", "3",
                                          "--max-turns", "8", "--estimate", "--json"])
        assert server.requests == [] and server.errors == []
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout.strip().splitlines()[-1])
    roles = {r["role"]: r for r in plan["roles"]}
    assert set(roles) == {f"agent {MODEL}", "user"} and plan["units"] == 2 * 3
    agent, user = roles[f"agent {MODEL}"], roles["user"]
    # the oracle's conversation: a tool call or a message per agent turn, a user turn after each message
    assert 1 <= agent["calls_per_task"] <= agent["max_calls_per_task"] == 8
    assert 1 <= user["calls_per_task"] <= user["max_calls_per_task"] == 9
    assert agent["prompt_tokens_mean"] > user["prompt_tokens_mean"] > 0  # the agent also gets policy and tools
    assert plan["calls"] == round(6 * (agent["calls_per_task"] + user["calls_per_task"]))
    assert 0 < plan["cost_usd"] <= plan["max_cost_usd"]
    with TaskStore(store, read_only=True) as ts:
        _, [(bench_runs,)] = ts.query("SELECT count(*) FROM runs WHERE kind = 'bench'")
    assert bench_runs == 0  # nothing was run
