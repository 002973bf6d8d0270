"""The LM agent as an optimizable program: `t2t optimize --program agent` over stored verified
tasks (rollouts with the offline scripted user, scored by the verifier), pass1 and pass^k
metrics, `t2t bench --agent-program NAME`, and the intent adaptation's re-ask.

The agent "LM" is `tests.closed_loop.PlannedAgentLM` behind the local OpenAI-compatible
server: each conversation of a task takes the next plan of that task ("pass" plays the
gold actions, "fail" refuses), so which rollouts pass is known in advance and every
expected score below is derived from the plans.
"""

from __future__ import annotations

import json
import uuid
from math import comb

import dspy
import pytest
from typer.testing import CliRunner

from trajectory2task.optimize.compile import AgentMetric, AgentTarget, CompileError
from trajectory2task.programs.lm.build import build_lm
from trajectory2task.programs.lm.config import LMSettings
from trajectory2task.programs.loop.agent import DEMO_MESSAGES
from trajectory2task.store import TaskStore
from trajectory2task.cli import app
from tests.cli import run_t2t
from tests.closed_loop import PlannedAgentLM, environment, make_tasks, store_tasks, write_tools
from tests.llm_server import ScriptedLLMServer, Text, chat_fields

MODEL = "openai/gpt-4o-mini"  # known to LiteLLM as function-calling: the agent sends native tools


@pytest.fixture(scope="module")
def env():
    return environment()


@pytest.fixture(scope="module")
def tasks(env):
    return make_tasks(env)


def _store(tasks, path):
    with TaskStore(path) as ts:
        store_tasks(ts, tasks)
    return path


def _plans(per_task: dict[str, list[str]]) -> dict[tuple[str, str], list[str]]:
    return {(MODEL, task_id): list(plan) for task_id, plan in per_task.items()}


def _optimize(server, store, *args: str):
    return CliRunner().invoke(app, ["optimize", "--program", "agent", "--optimizer", "bootstrap", "--lm", MODEL,
                                    "--api-base", server.base_url, "--store", str(store), "--json", *args])


def _summary(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _pass_rate(plans: list[str]) -> float:
    return sum(p == "pass" for p in plans) / len(plans)


# ---------------------------------------------------------------- optimize --program agent

# general-1 fails its first conversation (the uncompiled evaluation) and passes the next two
# (the bootstrap teacher's, then the compiled evaluation); general-2 passes all three. With
# --max-demos 2 the teacher runs on both tasks (BootstrapFewShot bootstraps up to that many
# examples) and keeps one traced turn of each passing rollout as a demo.
BOOT_PLANS = {"general-1": ["fail", "pass", "pass"], "general-2": ["pass", "pass", "pass"]}


@pytest.fixture(scope="module")
def optimized(env, tasks, tmp_path_factory):
    store = _store(tasks, tmp_path_factory.mktemp("agent-opt") / "t2t.duckdb")
    responder = PlannedAgentLM(tasks, _plans(BOOT_PLANS), write_tools(env))
    # the in-process run installs its adapter globally; conftest's per-test reset runs after
    # module fixtures, so this one puts DSPy's adapter back itself
    adapter = dspy.settings.adapter
    try:
        with ScriptedLLMServer(responder=responder) as server:
            result = _optimize(server, store, "--trainset", "condition = 'general'", "--name", "agent-boot",
                               "--max-demos", "2")
            assert server.errors == []
    finally:
        dspy.settings.configure(adapter=adapter)
    return store, _summary(result), responder


def test_bootstrap_saves_an_agent_program_with_its_scores_and_demos(optimized, tasks):
    store, summary, responder = optimized
    with TaskStore(store, read_only=True) as ts:
        saved = ts.latest_program("agent-boot")
        _, [(config,)] = ts.query("SELECT config FROM runs WHERE run_id = ?", [summary["run_id"]])
    # the uncompiled agent: each task's first conversation; the compiled one: its last
    before = sum(_pass_rate(p[:1]) for p in BOOT_PLANS.values()) / len(BOOT_PLANS)
    after = sum(_pass_rate(p[-1:]) for p in BOOT_PLANS.values()) / len(BOOT_PLANS)
    assert saved["program"] == "agent" and saved["optimizer"] == "bootstrap"
    assert (saved["score_before"], saved["score_after"]) == (before, after) == (0.5, 1.0)
    assert (summary["score_before"], summary["score_after"]) == (before, after)
    # every planned conversation was played: one rollout per task and evaluation, plus the teacher's
    assert {t: responder.started[(MODEL.split("/")[1], t)] for t in BOOT_PLANS} == {"general-1": 3, "general-2": 3}
    demos = saved["state"]["turn"]["demos"]
    assert len(demos) == 2 and summary["demos"] == 2
    # one turn of each task's passing rollout (its order is in it), cut to what the agent shows
    for demo, task_id in zip(demos, BOOT_PLANS):
        assert tasks[task_id].gold_actions[-1].arguments["order_id"] in json.dumps(demo)
        assert 1 <= len(demo["history"]["messages"]) <= DEMO_MESSAGES
    assert all(set(d) <= {"augmented", "history", "message", "tool_calls"} for d in demos)
    assert json.loads(config)["metric"] == {"name": "pass1", "k": 1, "trials": 1}


def test_bench_with_the_compiled_agent_sends_its_demos(optimized, env, tasks):
    store, _, _ = optimized
    with TaskStore(store, read_only=True) as ts:
        demos = ts.latest_program("agent-boot")["state"]["turn"]["demos"]
    # the last words of each demo's conversation: shown with the demo in the system message
    marks = [[m["content"] for m in d["history"]["messages"] if m.get("content")][-1] for d in demos]
    sent = {}
    for label, extra in (("compiled", ["--agent-program", "agent-boot"]), ("plain", [])):
        responder = PlannedAgentLM(tasks, {}, write_tools(env), default_plan="pass")
        with ScriptedLLMServer(responder=responder) as server:
            result = CliRunner().invoke(app, ["bench", "--agent-lm", MODEL, "--api-base", server.base_url,
                                              "--tasks", "task_id = 'general-2'", "--store", str(store), "--json",
                                              *extra])
            assert result.exit_code == 0, result.output
            assert server.errors == []
            sent[label] = [r["messages"][0]["content"] for r in server.requests if "tools" in r]
    assert sent["compiled"] and all(mark in system for system in sent["compiled"] for mark in marks)
    assert sent["plain"] and not any(mark in system for system in sent["plain"] for mark in marks)
    with TaskStore(store, read_only=True) as ts:
        _, configs = ts.query("SELECT config FROM runs WHERE kind = 'bench' ORDER BY started_at")
    assert [json.loads(c)["agent_program"] for (c,) in configs] == ["agent-boot", None]


# ---------------------------------------------------------------- pass1 and pass^k


FLAKY = ["pass", "fail", "pass", "pass"]  # four trials of one task


def test_pass_hat_k_and_pass1_differ_on_a_flaky_agent(env, tasks):
    task = tasks["general-1"]
    pass1 = AgentTarget(env, metric=AgentMetric.of("pass1", trials=len(FLAKY)))
    pass2 = AgentTarget(env, metric=AgentMetric.of("pass^k", k=2, trials=len(FLAKY)))
    responder = PlannedAgentLM(tasks, _plans({task.id: FLAKY}), write_tools(env))
    example = dspy.Example(task=task).with_inputs("task")
    with ScriptedLLMServer(responder=responder) as server:
        with dspy.context(lm=build_lm(LMSettings(model=MODEL, api_base=server.base_url))):
            prediction = pass2.harness(pass2.student())(**example.inputs())
        assert server.errors == []
    passed = [v.passed for v in prediction.verdicts]
    assert passed == [p == "pass" for p in FLAKY]
    n, c = len(passed), sum(passed)
    assert pass1.score(example, prediction).value == c / n
    assert pass2.score(example, prediction).value == comb(c, 2) / comb(n, 2)
    assert pass1.score(example, prediction).value != pass2.score(example, prediction).value
    assert "trial 1" in pass2.score(example, prediction).feedback


def test_optimize_scores_pass_hat_k_over_metric_trials(env, tasks, tmp_path):
    store = _store(tasks, tmp_path / "t2t.duckdb")
    # three trials per evaluation: the uncompiled one, the bootstrap teacher's, the compiled one
    plans = {"general-1": ["pass", "fail", "pass"] + ["pass"] * 3 + ["pass"] * 3}
    responder = PlannedAgentLM(tasks, _plans(plans), write_tools(env))
    with ScriptedLLMServer(responder=responder) as server:
        summary = _summary(_optimize(server, store, "--trainset", "task_id = 'general-1'", "--name", "agent-k",
                                     "--metric", "pass^k", "--k", "2", "--metric-trials", "3"))
        assert server.errors == []
    first = plans["general-1"][:3]
    c = sum(p == "pass" for p in first)
    with TaskStore(store, read_only=True) as ts:
        saved = ts.latest_program("agent-k")
    assert saved["program"] == "agent" and summary["name"] == "agent-k"
    assert saved["score_before"] == pytest.approx(comb(c, 2) / comb(3, 2))
    assert saved["score_before"] != pytest.approx(_pass_rate(first))  # what pass1 would have said
    assert saved["score_after"] == 1.0
    assert responder.started[(MODEL.split("/")[1], "general-1")] == len(plans["general-1"])


@pytest.mark.parametrize(("name", "k", "trials", "message"), [
    ("pass@5", None, None, "unknown metric"),
    ("pass^k", None, 3, "needs --k"),
    ("pass^k", 3, 2, "fewer than --k 3"),
    ("pass1", 2, None, "--k goes with --metric pass^k"),
])
def test_agent_metric_combinations_are_checked(name, k, trials, message):
    with pytest.raises(CompileError, match=message.replace("^", r"\^")):
        AgentMetric.of(name, k, trials)


def test_agent_metric_defaults():
    assert AgentMetric.of("pass^k", 3) == AgentMetric(name="pass^k", k=3, trials=3)
    assert AgentMetric.of("pass1", trials=4) == AgentMetric(name="pass1", k=1, trials=4)


# ---------------------------------------------------------------- errors a user can make


def test_bad_metric_flags_are_one_line(tasks, tmp_path):
    store = _store(tasks, tmp_path / "t2t.duckdb")
    base = ["optimize", "--optimizer", "bootstrap", "--trainset", "true", "--lm", MODEL, "--api-base",
            "http://127.0.0.1:9/v1", "--store", str(store)]
    combos = [(["--program", "agent", "--metric", "pass^k", "--k", "3", "--metric-trials", "2"], "fewer than --k 3"),
              (["--program", "writer", "--metric", "pass1"], "--metric goes with --program agent")]
    for args, message in combos:
        done = run_t2t(*base, *args)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().count("\n") == 0 and message in done.stderr


def test_bad_agent_program_names_fail_in_one_line(tasks, tmp_path):
    store = _store(tasks, tmp_path / "t2t.duckdb")
    with TaskStore(store) as ts:
        ts.add_program("a-user", "user", {"respond": {"demos": []}}, None)
    cases = [(["--agent-lm", MODEL, "--agent-program", "nope"], "no program named 'nope'"),
             (["--agent-lm", MODEL, "--agent-program", "a-user"], "holds a 'user' program, not an agent"),
             (["--agent-program", "a-user"], "needs an LM agent")]
    for args, message in cases:
        done = run_t2t("bench", "--store", str(store), "--api-base", "http://127.0.0.1:9/v1", *args)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().count("\n") == 0 and message in done.stderr


# ---------------------------------------------------------------- the intent adaptation's re-ask


def test_an_adaptation_reask_has_its_own_rollout_id(retail):
    """With DSPy's cache on, asking again with the same request returns the failed reply from
    the cache; the re-ask carries its own rollout id and reaches the server."""
    from dspy.utils.exceptions import AdapterParseError

    from trajectory2task.programs.generation.adaptation import IntentAdaptation
    from trajectory2task.programs.generation.adapting import BaselineAdaptation
    from tests.test_adaptation import _user_with_pending_orders
    from tests.test_conditions import DB_SEED, DB_USERS, auth, build_general, orders_of

    env = retail.environment(retail.generate_db(DB_SEED, DB_USERS))
    db = env.base.db
    user_id = _user_with_pending_orders(db, 2)
    order = orders_of(db, user_id, "pending")[0]
    case = build_general(env, [auth(db, user_id), ("get_order_details", {"order_id": order.order_id}),
                               ("cancel_pending_order", {"order_id": order.order_id, "reason": "no longer needed"})],
                         "cancel")
    reference = BaselineAdaptation().adapt(*case, "ambiguous", env, seed=0).task
    scenario = reference.scenario.model_copy(update={"withheld_info": []})
    good = chat_fields(scenario=scenario.model_dump(), withheld_info=reference.scenario.withheld_info, claims=[])
    with ScriptedLLMServer(replies=[Text("no fields here"), Text(good)]) as server:
        # a model name of its own: nothing else in this process has cached its requests
        lm = build_lm(LMSettings(model=f"openai/t2t-reask-{uuid.uuid4().hex[:8]}", api_base=server.base_url),
                      cache=True)
        with dspy.context(adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
            with pytest.raises(AdapterParseError):
                IntentAdaptation(lm=lm, attempts=1).adapt(*case, "ambiguous", env, 0)
            with pytest.raises(AdapterParseError):
                IntentAdaptation(lm=lm, attempts=1).adapt(*case, "ambiguous", env, 0)  # the cache answers
            assert len(server.requests) == 1
            result = IntentAdaptation(lm=lm, attempts=2).adapt(*case, "ambiguous", env, 0)
            assert len(server.requests) == 2 and server.errors == []  # the first ask again from the cache
            again = IntentAdaptation(lm=lm, attempts=2).adapt(*case, "ambiguous", env, 0)
        assert len(server.requests) == 2  # both asks from the cache, each under its own rollout id
    assert result.task is not None, result
    assert again.task is not None and again.task.scenario == result.task.scenario


def test_the_agent_learns_from_verified_tasks_only(env, tasks, tmp_path):
    broken = tasks["general-1"].model_copy(update={"id": "broken-1", "expected_state_hash": env.initial_hash()})
    store = _store({"broken-1": broken, **tasks}, tmp_path / "t2t.duckdb")
    with TaskStore(store, read_only=True) as ts:
        examples = AgentTarget(env).examples(ts, ["broken-1", "general-1"])
    assert [e.task.id for e in examples] == ["general-1"]
    done = run_t2t("optimize", "--program", "agent", "--optimizer", "bootstrap", "--trainset", "task_id = 'broken-1'",
                   "--lm", MODEL, "--api-base", "http://127.0.0.1:9/v1", "--store", str(store))
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "none of the 1 selected tasks is verified" in done.stderr


def test_an_inconsistent_agent_metric_cannot_be_built():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="at least 3 trials"):
        AgentMetric(name="pass^k", k=3, trials=2)
    with pytest.raises(ValidationError, match="pass1 is k = 1"):
        AgentMetric(name="pass1", k=2, trials=2)
