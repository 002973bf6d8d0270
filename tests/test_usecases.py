"""The use cases as Python functions: what `t2t generate` makes, `generate()` makes too,
with or without a store; `verify()` and `audit()` judge it."""

from __future__ import annotations

import json

import pytest

import trajectory2task as t2t
from tests.cli import run_t2t


def _scenarios(tasks) -> list[tuple[str, str]]:
    return sorted((t.condition, t.scenario.reason_for_call or "") for t in tasks)


@pytest.fixture(scope="module")
def offline():
    return t2t.generate("retail", n=3, seed=5)


def test_generate_without_a_store_returns_the_tasks_the_command_stores(offline, tmp_path):
    store = tmp_path / "t2t.duckdb"
    result = run_t2t("generate", "--domain", "retail", "--n", "3", "--seed", "5", "--store", str(store))
    assert result.returncode == 0, result.stderr
    _, rows = t2t.read_only_query(store, "SELECT json FROM tasks_latest")
    stored = [t2t.Task.model_validate(json.loads(r[0]) if isinstance(r[0], str) else r[0]) for r in rows]
    assert offline.tasks and _scenarios(offline.tasks) == _scenarios(stored)
    _, verified = t2t.read_only_query(store, "SELECT condition, count(*) FILTER (verified) FROM tasks_latest "
                                             "GROUP BY 1")
    assert {c.condition: c.verified for c in offline.summary.conditions if c.tasks} == dict(verified)
    assert len(offline.verified()) == sum(n for _, n in verified)


def test_verify_agrees_with_the_pipeline_and_audit_has_a_row_per_class(offline):
    env = t2t.get_domain("retail")
    environment = env.environment(env.generate_db(5, 500))
    verdicts = t2t.verify(offline.verified(), environment)
    assert verdicts.passed == len(offline.verified()) > 0
    report = t2t.audit(offline.verified(), environment)
    from trajectory2task.programs.verification.audit import PROBLEMS

    assert list(report.counts) == list(PROBLEMS)


def test_generate_into_a_store_keeps_every_task_there(tmp_path):
    store = tmp_path / "py.duckdb"
    result = t2t.generate("airline", n=2, seed=1, conditions=["general", "infeasible"], store=store)
    _, rows = t2t.read_only_query(store, "SELECT count(*) FROM tasks_latest")
    assert rows[0][0] == len(result.tasks) > 0
    assert {t.condition for t in result.tasks} <= {"general", "infeasible"}


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="n must be at least 1"):
        t2t.generate(n=0)
    with pytest.raises(ValueError, match="unknown"):
        t2t.generate(n=1, conditions=["sideways"])
    with pytest.raises(ValueError, match="unknown role"):
        t2t.generate(n=1, lms={"painter": object()})


def test_bench_from_python_scores_the_references_as_the_command_does(offline, tmp_path):
    retail = t2t.get_domain("retail")
    env = retail.environment(retail.generate_db(5, 500))
    tasks = offline.verified()
    result = t2t.bench(tasks, env, store=tmp_path / "py.duckdb")
    assert result.cell("oracle").pass_at_1 == 1.0 and result.cell("do-nothing").pass_at_1 == 0.0
    assert len(result.rollouts) == len(result.verdicts) == 2 * len(tasks) and not result.crashes
    # the command on the same tasks (stored by generate) gives the same verdict per rollout
    store = tmp_path / "cli.duckdb"
    assert run_t2t("generate", "--domain", "retail", "--n", "3", "--seed", "5", "--store", str(store)).returncode == 0
    benched = run_t2t("bench", "--store", str(store), "--seed", "5")
    assert benched.returncode == 0, benched.stderr
    _, rows = t2t.read_only_query(store, "SELECT agent_model, count(*), count(*) FILTER (pass) FROM rollouts_latest "
                                         "GROUP BY 1 ORDER BY 1")
    ours = sorted((c.agent_model, c.rollouts, c.passed) for c in result.cells if c.condition == "all")
    assert ours == [tuple(r) for r in rows]
    _, stored = t2t.read_only_query(tmp_path / "py.duckdb", "SELECT count(*) FROM rollouts_latest")
    assert stored[0][0] == len(result.rollouts)


def test_bench_from_python_stores_every_call_of_plain_dspy_lms_and_leaves_them_as_they_were(tmp_path):
    """An agent and a user given as plain ``dspy.LM``s: each call the server answered is one
    ``lm_calls`` row of the run, under its role; the caller's LMs get no callback of ours."""
    from tests.closed_loop import environment, make_tasks
    from tests.llm_server import ScriptedLLMServer
    from tests.test_rollout import AGENT, Conversation, plain_lms

    env = environment()
    task = make_tasks(env)["general-1"]
    store = tmp_path / "t2t.duckdb"
    with ScriptedLLMServer(responder=Conversation(task)) as server:
        agent, user = plain_lms(server.base_url)
        result = t2t.bench([task], env, agents=[agent], user=user, trials=2, store=store)
        requests = len(server.requests)
        assert server.errors == []
    assert result.cell(AGENT).pass_at_1 == 1.0 and requests == 2 * 10  # 6 agent and 4 user calls a rollout
    _, rows = t2t.read_only_query(store, "SELECT role, model, count(*), count(*) FILTER (prompt_tokens > 0) "
                                         "FROM lm_calls WHERE run_id = ? GROUP BY ALL ORDER BY 1", [result.run_id])
    assert rows == [("agent", AGENT, 12, 12), ("user", "openai/gpt-4o", 8, 8)]
    assert agent.callbacks == [] and user.callbacks == [] and agent.history == []
    # without a store the bench takes the path with no ledger, and still runs
    assert t2t.bench([task], env, agents=["oracle"]).cell("oracle").pass_at_1 == 1.0


def test_bench_from_python_stores_the_calls_of_an_lm_built_for_a_role_and_its_ledger_keeps_them(tmp_path):
    """An agent LM built with its own ledger (``build_lm(role=..., ledger=...)``): its calls
    are stored with the run and stay in the caller's ledger as well."""
    from tests.closed_loop import environment, make_tasks
    from tests.llm_server import ScriptedLLMServer
    from tests.test_rollout import AGENT, Conversation, plain_lms
    from trajectory2task.programs.lm.accounting import CallLedger
    from trajectory2task.programs.lm.build import build_lm
    from trajectory2task.programs.lm.config import LMSettings

    env = environment()
    task = make_tasks(env)["general-1"]
    store = tmp_path / "t2t.duckdb"
    own = CallLedger()
    with ScriptedLLMServer(responder=Conversation(task)) as server:
        agent = build_lm(LMSettings(model=AGENT, api_base=server.base_url), role="agent", ledger=own)
        _, user = plain_lms(server.base_url)
        result = t2t.bench([task], env, agents=[agent], user=user, trials=2, store=store)
        assert server.errors == [] and len(server.requests) == 20
    assert result.cell(AGENT).pass_at_1 == 1.0
    _, rows = t2t.read_only_query(store, "SELECT role, count(*) FROM lm_calls WHERE run_id = ? GROUP BY ALL "
                                         "ORDER BY 1", [result.run_id])
    assert rows == [("agent", 12), ("user", 8)]
    assert len(own.take()) == 12


def test_bench_refuses_what_it_cannot_run(offline):
    retail = t2t.get_domain("retail")
    env = retail.environment(retail.generate_db(5, 500))
    with pytest.raises(ValueError, match="agent 'gpt'"):
        t2t.bench(offline.verified(), env, agents=["gpt"])
    with pytest.raises(ValueError, match="no tasks"):
        t2t.bench([], env)


def test_export_from_python_writes_what_the_command_writes(tmp_path):
    store = tmp_path / "t2t.duckdb"
    t2t.generate("retail", n=2, seed=5, store=store)
    ours, theirs = tmp_path / "py.json", tmp_path / "cli.json"
    n = t2t.export(store, ours, "tau2", where="verified")
    done = run_t2t("export", "--format", "tau2", "--where", "verified", "--store", str(store), "--out", str(theirs))
    assert done.returncode == 0, done.stderr
    assert n > 0 and ours.read_bytes() == theirs.read_bytes()
    from trajectory2task.store.outfile import OutputFileError

    with pytest.raises(OutputFileError, match="exists"):  # replace=True replaces it
        t2t.export(store, ours, "tau2")
    with pytest.raises(ValueError, match="unknown export format"):
        t2t.export(store, tmp_path / "x", "csv")
