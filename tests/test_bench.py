"""`t2t bench`: pass@1 / pass^k per condition and model against the local server, matching
hand-counted verdicts; reference-agent calibration; tau2 task files; kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from trajectory2task.optimize.metrics import RolloutRow, pass_hat_k, score_cells
from trajectory2task.programs.loop.bench import plan_jobs
from trajectory2task.signatures.models import Action, Task
from trajectory2task.store import TaskStore, read_only_query
from tests.cli import REPO, run_t2t
from tests.closed_loop import PlannedAgentLM, environment, write_tools, make_tasks, store_tasks
from tests.llm_server import ScriptedLLMServer

A = "openai/gpt-4o-mini"
B = "openai/gpt-4o"


@pytest.fixture(scope="module")
def env():
    return environment()


@pytest.fixture(scope="module")
def tasks(env):
    return make_tasks(env)


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


# ============================================================================ metrics


def test_pass_hat_k_is_taus_definition():
    assert pass_hat_k(4, 2, 1) == 0.5
    assert pass_hat_k(4, 2, 2) == pytest.approx(1 / 6)  # C(2,2)/C(4,2)
    assert pass_hat_k(4, 4, 3) == 1.0 and pass_hat_k(4, 2, 3) == 0.0
    with pytest.raises(ValueError):
        pass_hat_k(2, 1, 3)


def test_score_cells_average_over_tasks_per_condition_and_overall():
    rows = [RolloutRow(task_id=t, condition=c, agent_model="m", trial=k, passed=p,
                       reasons=[] if p else ["wrong_end_state"])
            for t, c, results in [("g1", "general", [1, 1, 1]), ("g2", "general", [1, 0, 0]),
                                  ("a1", "ambiguous", [0, 0, 1])]
            for k, p in enumerate(map(bool, results))]
    cells = {c.condition: c for c in score_cells(rows, max_k=3)}
    general = cells["general"]
    assert (general.tasks, general.rollouts, general.passed) == (2, 6, 4)
    assert general.pass_at_1 == pytest.approx((1 + 1 / 3) / 2)
    assert general.pass_hat_k[2] == pytest.approx((1 + 0) / 2)
    assert general.pass_hat_k[3] == pytest.approx(0.5)
    assert general.failure_reasons == {"wrong_end_state": 2}
    assert cells["all"].pass_at_1 == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)
    assert list(cells) == ["general", "ambiguous", "all"]


def test_plan_jobs_skips_what_the_run_already_stored():
    jobs = plan_jobs("run", ["t1", "t2"], ["m"], 2, done={("t1", "m", 0)})
    assert [(j.task_id, j.trial) for j in jobs] == [("t2", 0), ("t1", 1), ("t2", 1)]
    assert len({j.rollout_id for j in plan_jobs("run", ["t1", "t2"], ["m"], 2, set())}) == 4


# ============================================================================ the command against the local server

# Each agent's trials per task, scripted. "pass" follows the gold; "fail" looks up and refuses
# (on the infeasible task: runs the forbidden write); "lm_error" gets HTTP 500 after one call.
PLANS = {
    A: {"general-1": ["pass", "pass"], "general-2": ["pass", "fail"], "ambiguous-1": ["pass", "lm_error"],
        "changing-1": ["fail", "fail"], "infeasible-1": ["pass", "fail"]},
    B: {"general-1": ["fail", "fail"], "general-2": ["pass", "pass"], "ambiguous-1": ["pass", "pass"],
        "changing-1": ["pass", "fail"], "infeasible-1": ["pass", "pass"]},
}

# Counted by hand from PLANS: (pass@1, pass^2) per condition; "all" averages the five tasks.
#   A general:   g1 2/2, g2 1/2 -> pass@1 (1 + .5)/2 = .75, pass^2 (1 + 0)/2 = .5
#   A ambiguous: the HTTP 500 is the server's failure, not the agent's: not scored, so 1/1 -> 1,
#     and no pass^2 (one scored trial)      A changing: 0/2 -> 0, 0      A infeasible: 1/2 -> .5, 0
#   A all: (1 + .5 + 1 + 0 + .5)/5 = .6;  pass^2 over the four tasks with two scored trials
#     (1 + 0 + 0 + 0)/4 = .25
#   B general:   g1 0/2, g2 2/2 -> .5, .5      B ambiguous: 1, 1      B changing: .5, 0
#   B infeasible: 1, 1      B all: (0 + 1 + 1 + .5 + 1)/5 = .7;  pass^2 (0 + 1 + 1 + 0 + 1)/5 = .6
EXPECTED = {
    (A, "general"): (0.75, 0.5), (A, "ambiguous"): (1.0, None), (A, "changing"): (0.0, 0.0),
    (A, "infeasible"): (0.5, 0.0), (A, "all"): (0.6, 0.25),
    (B, "general"): (0.5, 0.5), (B, "ambiguous"): (1.0, 1.0), (B, "changing"): (0.5, 0.0),
    (B, "infeasible"): (1.0, 1.0), (B, "all"): (0.7, 0.6),
}


@pytest.fixture(scope="module")
def bench_run(env, tasks, tmp_path_factory):
    store = tmp_path_factory.mktemp("bench") / "t2t.duckdb"
    with TaskStore(store) as ts:
        store_tasks(ts, tasks)
    plans = {(model, task_id): list(p) for model, per_task in PLANS.items() for task_id, p in per_task.items()}
    responder = PlannedAgentLM(tasks, plans, write_tools(env))
    with ScriptedLLMServer(responder=responder) as server:
        done = run_t2t("bench", "--agent-lm", f"{A},{B}", "--trials", "2", "--api-base", server.base_url,
                       "--store", str(store), "--concurrency", "4", "--json")
        errors = server.errors
    assert errors == []
    assert done.returncode == 0, done.stderr
    return store, done


def test_bench_scores_match_hand_counted_verdicts(bench_run):
    _, done = bench_run
    lines = json_lines(done.stdout)
    cells = {(c["agent_model"], c["condition"]): c for c in lines if "agent_model" in c}
    assert set(cells) == set(EXPECTED)
    for key, (at_1, hat_2) in EXPECTED.items():
        assert cells[key]["pass@1"] == pytest.approx(at_1), key
        assert cells[key]["pass^k"].get("2") == (None if hat_2 is None else pytest.approx(hat_2)), key
        assert cells[key]["pass^k"]["1"] == pytest.approx(at_1), key
    assert cells[(A, "all")]["rollouts"] == 9 and cells[(A, "all")]["passed"] == 5
    assert cells[(A, "all")]["not_scored"] == {"transport": 1}
    assert cells[(A, "changing")]["failure_reasons"] == {"wrong_end_state": 2}
    # the server's failure is reported as such, and never as the agent's wrong end state
    assert cells[(A, "ambiguous")]["failure_reasons"] == {} and cells[(A, "ambiguous")]["not_scored"] == {
        "transport": 1}
    assert cells[(A, "infeasible")]["failure_reasons"]["forbidden_action"] == 1
    summary = lines[-1]
    assert summary["rollouts"] == 20 and summary["crashed"] == [] and summary["calibration"] == []


def test_bench_rows_in_the_store_are_the_counted_verdicts(bench_run):
    store, _ = bench_run
    _, rows = read_only_query(store, "SELECT r.agent_model, r.task_id, count(*) FILTER (WHERE r.pass), count(*) "
                                     "FROM rollouts_latest r JOIN runs_status s USING (run_id) "
                                     "WHERE s.kind = 'bench' GROUP BY ALL")
    counted = {(m, t): (passed, total) for m, t, passed, total in rows}
    for model, per_task in PLANS.items():
        for task_id, plans in per_task.items():
            assert counted[(model, task_id)] == (plans.count("pass"), 2), (model, task_id)
    _, status = read_only_query(store, "SELECT status FROM runs_status WHERE kind = 'bench'")
    assert status == [("finished",)]
    _, lm_errors = read_only_query(store, "SELECT count(*) FROM rollouts WHERE termination = 'lm_error'")
    assert lm_errors == [(1,)]


def test_bench_prints_a_table_per_condition_and_model(bench_run, tmp_path):
    store, _ = bench_run
    # same run, same store: a table this time, from a resume that has nothing left to do
    _, runs = read_only_query(store, "SELECT run_id FROM runs WHERE kind = 'bench'")
    shown = run_t2t("bench", "--resume", runs[0][0], "--store", str(store))
    assert shown.returncode == 0, shown.stderr
    for text in ("pass@1", "pass^2", "gpt-4o-mini", "ambiguous", "infeasible", "75.0%", "transport 1"):
        assert text in shown.stdout


# ============================================================================ calibration


def test_without_agent_models_both_references_run_and_every_breaking_task_is_named(env, tasks, tmp_path):
    login = tasks["general-1"].gold_actions[0]
    cancel = tasks["general-1"].gold_actions[2]
    extra = [
        # only a look-up: nothing changes, so doing nothing passes (static verification says noop_passes)
        Task(id="noop-1", domain="retail", gold_actions=[login], scenario=tasks["general-1"].scenario),
        # verified, yet an agent that follows the gold is cut off by the transfer before it acts
        Task(id="transfer-midway", domain="retail", scenario=tasks["general-1"].scenario,
             gold_actions=[login, Action(name="transfer_to_human_agents", arguments={"summary": "s"}), cancel]),
    ]
    store = tmp_path / "t2t.duckdb"
    with TaskStore(store) as ts:
        store_tasks(ts, {**tasks, **{t.id: t for t in extra}})
    done = run_t2t("bench", "--tasks", "task_id IS NOT NULL", "--store", str(store), "--json")
    assert done.returncode == 1, done.stderr  # a verified task breaks the oracle
    lines = json_lines(done.stdout)
    cells = {(c["agent_model"], c["condition"]): c for c in lines if "agent_model" in c}
    assert cells[("do-nothing", "all")]["passed"] == 1  # noop-1 only
    assert cells[("oracle", "all")]["passed"] == 6  # all but transfer-midway
    named = {(p["task_id"], p["agent"], p["verified"]) for p in lines[-1]["calibration"]}
    assert named == {("noop-1", "do-nothing", False), ("transfer-midway", "oracle", True)}

    verified_only = run_t2t("bench", "--store", str(store))  # default --tasks: verified tasks
    assert verified_only.returncode == 1
    assert "transfer-midway: oracle fails" in verified_only.stdout and "noop-1" not in verified_only.stdout


def test_bench_runs_on_imported_tau2_tasks(tau2_dir, tmp_path):
    subset = json.loads((tau2_dir / "tasks.json").read_text())[:6]
    tasks_file = tmp_path / "tasks.json"
    tasks_file.write_text(json.dumps(subset))
    store = tmp_path / "t2t.duckdb"
    done = run_t2t("bench", "--tasks", str(tasks_file), "--db", str(tau2_dir / "db.json"), "--store", str(store),
                   "--json")
    assert done.returncode == 0, done.stderr
    cells = {(c["agent_model"], c["condition"]): c for c in json_lines(done.stdout) if "agent_model" in c}
    assert cells[("oracle", "general")]["pass@1"] == 1.0 and cells[("oracle", "general")]["tasks"] == 6
    assert cells[("do-nothing", "general")]["pass@1"] == 0.0


def test_bad_input_is_one_line_and_a_nonzero_exit(tasks, tmp_path):
    store = tmp_path / "t2t.duckdb"
    with TaskStore(store) as ts:
        store_tasks(ts, tasks)
    unknown = run_t2t("bench", "--resume", "no-such-run", "--store", str(store))
    other_db = run_t2t("bench", "--seed", "1", "--store", str(store))
    nothing = run_t2t("bench", "--tasks", "condition = 'nonexistent'", "--store", str(store))
    bad_sql = run_t2t("bench", "--tasks", "condition = ", "--store", str(store))
    for done, text in ((unknown, "no such run"), (other_db, "another database"), (nothing, "no tasks match"),
                       (bad_sql, "--tasks")):
        assert done.returncode == 2
        assert done.stderr.strip().count("\n") == 0 and text in done.stderr, done.stderr


# ============================================================================ kill and resume


def test_a_bench_killed_mid_run_resumes_with_no_duplicate_and_no_lost_rollout(env, tasks, tmp_path):
    store = tmp_path / "t2t.duckdb"
    with TaskStore(store) as ts:
        store_tasks(ts, tasks)
    responder = PlannedAgentLM(tasks, {}, write_tools(env), default_plan="pass")
    trials, models = 3, [A, B]
    total = len(tasks) * len(models) * trials
    calls_per_rollout = 5  # look-up, look-up, confirmation, write, closing (the infeasible task has fewer)
    with ScriptedLLMServer(responder=responder, latency_s=0.03) as server:
        args = [sys.executable, "-m", "trajectory2task.cli", "bench", "--agent-lm", ",".join(models), "--trials", str(trials),
                "--api-base", server.base_url, "--store", str(store), "--concurrency", "2"]
        proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True"))
        deadline = time.monotonic() + 60
        while len(server.requests) < total * calls_per_rollout // 2 and time.monotonic() < deadline:
            assert proc.poll() is None, "the bench finished before it could be killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

        _, runs = read_only_query(store, "SELECT run_id FROM runs WHERE kind = 'bench'")
        run_id = runs[0][0]
        _, before = read_only_query(store, "SELECT count(*) FROM rollouts WHERE run_id = ?", [run_id])
        assert 0 < before[0][0] < total  # killed mid-run, with part of the work stored

        resumed = run_t2t("bench", "--resume", run_id, "--store", str(store), "--json")
    assert resumed.returncode == 0, resumed.stderr
    _, rows = read_only_query(store, "SELECT task_id, agent_model, trial, count(*) FROM rollouts WHERE run_id = ? "
                                     "GROUP BY ALL", [run_id])
    assert len(rows) == total and all(n == 1 for *_, n in rows)  # every rollout once: none lost, none twice
    assert {(t, m, k) for t, m, k, _ in rows} == {(t, m, k) for t in tasks for m in models for k in range(trials)}
    _, verdicts = read_only_query(store, "SELECT count(*), count(DISTINCT rollout_id) FROM verdicts "
                                         "WHERE run_id = ? AND kind = 'rollout'", [run_id])
    assert verdicts == [(total, total)]
    _, events = read_only_query(store, "SELECT status FROM run_events WHERE run_id = ? ORDER BY created_at",
                                [run_id])
    assert [e for (e,) in events] == ["started", "resumed", "finished"]
    cells = {(c["agent_model"], c["condition"]): c for c in json_lines(resumed.stdout) if "agent_model" in c}
    assert cells[(A, "all")]["rollouts"] == len(tasks) * trials and cells[(A, "all")]["pass@1"] == 1.0


# ============================================================================ LM user, text-mode agent


def test_bench_wires_an_lm_user_and_a_text_mode_agent(tasks, tmp_path):
    from tests.closed_loop import is_user_request, user_reply
    from tests.llm_server import Text, chat_fields

    store = tmp_path / "t2t.duckdb"
    with TaskStore(store) as ts:
        store_tasks(ts, tasks)

    def respond(body):
        if is_user_request(body):
            agent_turns = body["messages"][-1]["content"].count('"role": "agent"')
            return user_reply("I need help with an order." if agent_turns == 0 else "Okay. ###STOP###")
        return Text(chat_fields(message="Sorry, I cannot help with that.", tool_calls=[]))

    with ScriptedLLMServer(responder=respond) as server:
        done = run_t2t("bench", "--agent-lm", "openai/my-text-model", "--no-function-calling",
                       "--user-lm", "openai/gpt-4o", "--api-base", server.base_url, "--store", str(store), "--json")
        requests = server.requests
    assert done.returncode == 0, done.stderr
    assert "tools described in the prompt text" in done.stderr
    agent_requests = [r for r in requests if not is_user_request(r)]
    assert len(agent_requests) == len(tasks) and all("tools" not in r for r in agent_requests)
    assert all("cancel_pending_order" in json.dumps(r["messages"]) for r in agent_requests)  # described in text
    _, rows = read_only_query(store, "SELECT DISTINCT user_model, agent_model, termination FROM rollouts")
    assert rows == [("openai/gpt-4o", "openai/my-text-model", "user_stop")]
