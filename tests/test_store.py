"""TaskStore: schema and migrations, round trips, views on a hand-built fixture, resume keys,
threads, read-only access and the SQL guard, exports."""

from __future__ import annotations

import json
import threading

import duckdb
import pytest

from trajectory2task.signatures.models import (
    Action,
    Message,
    Provenance,
    Rollout,
    Step,
    Task,
    TokenUsage,
    ToolCall,
    Trajectory,
    UserScenario,
    Verdict,
)
from trajectory2task.store import LMCall, StoreError, TaskStore, Trial, VIEW_DOCS, read_only_query
from trajectory2task.store import schema as store_schema

# ---------------------------------------------------------------- builders


def traj(tid: str, n_steps: int, domain: str = "retail") -> Trajectory:
    return Trajectory(
        id=tid, domain=domain, seed_entity=f"user_{tid}", goal=f"goal of {tid}",
        initial_state_hash="h0", end_state_hash=f"h_{tid}",
        steps=[Step(call=ToolCall(name=f"tool_{i}", arguments={"i": i, "tid": tid, "nested": {"x": [1, 2]}},
                                  id=f"call_{i}"),
                    observation=f"obs {tid} {i}", error=(i == 1))
               for i in range(n_steps)],
        provenance=Provenance(source="baseline", seed=7),
    )


def task(tid: str, condition: str = "general", parent: str | None = None, trajectory: str | None = None,
         tools: list[str] = (), reason: str = "help me") -> Task:
    return Task(
        id=tid, domain="retail", condition=condition, parent_task_id=parent,
        scenario=UserScenario(reason_for_call=reason, withheld_info=["the order id"] if condition == "ambiguous" else []),
        gold_actions=[Action(name=t, arguments={"k": i}, action_id=f"{tid}_{i}") for i, t in enumerate(tools)],
        expected_state_hash="hx", initial_state_hash="h0",
        provenance=Provenance(source="baseline", trajectory_id=trajectory),
    )


def rollout(rid: str, task_id: str, model: str, trial: int = 0, n_messages: int = 3) -> Rollout:
    msgs = [Message(role="system", content="policy")]
    for i in range(1, n_messages):
        if i % 2:
            msgs.append(Message(role="user", content=f"u{i}"))
        else:
            msgs.append(Message(role="assistant", content=None,
                                tool_calls=[ToolCall(name="get_order_details", arguments={"order_id": "#W1"}, id=f"c{i}")]))
    return Rollout(id=rid, task_id=task_id, agent_model=model, user_model="user-sim", trial=trial,
                   messages=msgs[:n_messages],
                   steps=[Step(call=ToolCall(name="get_order_details", arguments={"order_id": "#W1"}), observation="{}")],
                   end_state_hash="he", usage=TokenUsage(prompt_tokens=1000, completion_tokens=100, cost=0.5),
                   termination="user_stop")


def verdict(task_id: str, ok: bool, reasons: list[str] = (), rollout_id: str | None = None) -> Verdict:
    return Verdict(task_id=task_id, rollout_id=rollout_id, passed=ok, reasons=list(reasons),
                   details=[f"detail {r}" for r in reasons])


@pytest.fixture
def db(tmp_path):
    return tmp_path / "t2t.duckdb"


@pytest.fixture
def store(db):
    with TaskStore(db) as s:
        yield s


# ---------------------------------------------------------------- schema


def test_migrations_idempotent(db):
    with TaskStore(db) as s:
        first = s.query("SELECT version, name, applied_at FROM schema_version ORDER BY version")
        assert [r[0] for r in first[1]] == [m[0] for m in store_schema.MIGRATIONS]
        s.start_run("generate", {"x": 1})
    with TaskStore(db) as s:
        assert s.query("SELECT version, name, applied_at FROM schema_version ORDER BY version") == first
        assert s.schema_version == store_schema.LATEST_VERSION
        assert s.query("SELECT count(*) FROM runs")[1] == [(1,)]
    with TaskStore(db, read_only=True) as s:
        assert s.query("SELECT version, name, applied_at FROM schema_version ORDER BY version") == first


def test_views_are_documented(store):
    cols, rows = store.query("SELECT view_name, comment FROM duckdb_views() WHERE NOT internal")
    docs = dict(rows)
    assert set(docs) == set(VIEW_DOCS)
    assert all(docs[name] == VIEW_DOCS[name] for name in VIEW_DOCS)
    _, tables = store.query("SELECT table_name, comment FROM duckdb_tables()")
    assert all(comment for name, comment in tables if name != "schema_version")


def test_read_only_open_errors(tmp_path):
    with pytest.raises(StoreError, match="no task store"):
        TaskStore(tmp_path / "missing.duckdb", read_only=True)
    plain = tmp_path / "plain.duckdb"
    duckdb.connect(str(plain)).execute("CREATE TABLE other (a INT)").close()
    with pytest.raises(StoreError, match="no task-store schema"):
        TaskStore(plain, read_only=True)
    newer = tmp_path / "newer.duckdb"
    TaskStore(newer).close()
    con = duckdb.connect(str(newer))
    con.execute("INSERT INTO schema_version VALUES (999, 'future', now()::TIMESTAMP)")
    con.close()
    with pytest.raises(StoreError, match="newer than this code"):
        TaskStore(newer)


def test_read_only_store_refuses_writes(db):
    with TaskStore(db) as s:
        run = s.start_run("generate", {})
    with TaskStore(db, read_only=True) as s:
        with pytest.raises(StoreError, match="read-only"):
            s.add_tasks(run, [task("t1")])
        with pytest.raises(StoreError, match="read-only"):
            s.start_run("generate", {})
        assert s.tasks() == []


def test_unknown_run_and_bad_kind(store):
    with pytest.raises(StoreError, match="unknown run_id"):
        store.add_tasks("nope", [task("t1")])
    run = store.start_run("verify", {})
    with pytest.raises(StoreError, match="kind"):
        store.add_verdicts(run, [verdict("t1", True)], kind="judge")
    with pytest.raises(StoreError, match="exists with kind"):
        store.start_run("generate", {}, run_id=run)


# ---------------------------------------------------------------- runs


def test_runs_and_events(store):
    run = store.start_run("generate", {"model": "baseline", "n": 3}, seed=42, code_version="abc123")
    assert len(run) == 32
    assert store.start_run("generate", {"n": 4}, run_id=run) == run  # resume: no second runs row
    store.finish_run(run)
    cols, rows = store.query("SELECT run_id, kind, config, code_version, seed FROM runs")
    assert rows == [(run, "generate", json.dumps({"model": "baseline", "n": 3}, separators=(",", ":")), "abc123", 42)]
    _, ev = store.query("SELECT status FROM run_events WHERE run_id = ? ORDER BY created_at, status", [run])
    assert [e[0] for e in ev] == ["started", "resumed", "finished"]
    _, st = store.query("SELECT status FROM runs_status")
    assert st == [("finished",)]
    other = store.start_run("sweep", {}, run_id="my-run")
    assert other == "my-run"
    _, cv = store.query("SELECT code_version FROM runs WHERE run_id = 'my-run'")
    assert cv[0][0]  # git commit or package version


# ---------------------------------------------------------------- round trips


def test_trajectories_round_trip(store):
    run = store.start_run("generate", {})
    ts = [traj("T1", 3), traj("T2", 0), traj("T3", 5)]
    store.add_trajectories(run, ts)
    assert store.trajectories() == ts
    assert store.trajectories("domain = ? AND n_steps > 2", ["retail"]) == [ts[0], ts[2]]
    cols, rows = store.query("SELECT trajectory_id, idx, tool, arguments, observation, error, call_id "
                             "FROM steps WHERE trajectory_id = 'T1' ORDER BY idx")
    assert rows[1] == ("T1", 1, "tool_1", '{"i":1,"tid":"T1","nested":{"x":[1,2]}}', "obs T1 1", True, "call_1")
    assert store.query("SELECT count(*) FROM steps")[1] == [(8,)]
    # JSON columns are queryable
    assert store.query("SELECT arguments->>'$.tid' FROM steps WHERE idx = 4")[1] == [("T3",)]


def test_tau2_tasks_round_trip_through_the_store(store, tau2_tasks_raw):
    """Every tau2 retail task survives add_tasks -> tasks() unchanged (the stored JSON leaves
    out None fields; nulls inside dicts such as arguments and initial_state are kept)."""
    tau2 = pytest.importorskip("trajectory2task.store.tau2")
    tasks = [tau2.task_from_tau2(raw) for raw in tau2_tasks_raw]
    run = store.start_run("verify", {})
    store.add_tasks(run, tasks)
    assert store.tasks() == tasks


def test_tasks_round_trip_and_latest(store):
    run = store.start_run("generate", {})
    a = task("A", tools=["get_order_details", "cancel_pending_order"], trajectory="T1")
    b = task("B", "ambiguous", parent="A", tools=["get_order_details"])
    store.add_tasks(run, [a, b])
    assert store.tasks() == [a, b]
    assert store.tasks("condition = 'ambiguous'") == [b]
    assert store.tasks("list_contains(gold_tools, ?)", ["cancel_pending_order"]) == [a]
    a2 = a.model_copy(update={"scenario": UserScenario(reason_for_call="changed")})
    run2 = store.start_run("generate", {})
    store.add_tasks(run2, [a2])
    assert store.tasks() == [b, a2]  # newest insert wins, ordered by insert
    _, rows = store.query("SELECT task_id, run_id, condition, parent_task_id, trajectory_id, source, gold_tools, "
                          "verified FROM tasks_latest ORDER BY task_id")
    assert rows == [("A", run2, "general", None, "T1", "baseline", ["get_order_details", "cancel_pending_order"], None),
                    ("B", run, "ambiguous", "A", None, "baseline", ["get_order_details"], None)]
    assert store.query("SELECT count(*) FROM tasks")[1] == [(3,)]  # append-only


def test_newest_insert_wins_within_and_across_batches(store):
    run = store.start_run("generate", {})
    store.add_tasks(run, [task("X", reason="v1"), task("Y", reason="y"), task("X", reason="v2")])
    assert [(t.id, t.scenario.reason_for_call) for t in store.tasks()] == [("Y", "y"), ("X", "v2")]
    store.add_tasks(run, [task("X", reason="v3")])
    assert [(t.id, t.scenario.reason_for_call) for t in store.tasks()] == [("Y", "y"), ("X", "v3")]
    # each replaced row is recorded once, by the row that replaced it
    assert store.query("SELECT tbl, seq, by_seq FROM superseded ORDER BY seq")[1] == [
        ("tasks", 1, 3), ("tasks", 3, 4)]
    # static verdicts: newest per task; rollout verdicts: newest per (task, rollout)
    store.add_verdicts(run, [verdict("X", False, ["invalid_gold"]), verdict("Y", True)], kind="static")
    store.add_verdicts(run, [verdict("X", True)], kind="static")
    store.add_rollouts(run, [rollout("r1", "X", "m"), rollout("r2", "X", "m", 1), rollout("r1", "X", "m")],
                       [verdict("X", False, ["max_turns"], "r1"), verdict("X", True, rollout_id="r2")])
    store.add_verdicts(run, [verdict("X", True, rollout_id="r1"), verdict("Y", False, ["lm_error"], "r1")],
                       kind="rollout")
    assert store.query("SELECT task_id, verified FROM tasks_latest ORDER BY task_id")[1] == [("X", True), ("Y", True)]
    assert store.query("SELECT rollout_id, trial, pass FROM rollouts_latest ORDER BY rollout_id")[1] == [
        ("r1", 0, True), ("r2", 1, True)]
    assert store.query("SELECT kind, task_id, rollout_id, pass FROM verdicts_latest ORDER BY kind, task_id, "
                       "rollout_id")[1] == [("rollout", "X", "r1", True), ("rollout", "X", "r2", True),
                                            ("rollout", "Y", "r1", False),
                                            ("static", "X", None, True), ("static", "Y", None, True)]
    assert store.query("SELECT * FROM pass_rate")[1] == [("general", "m", 2, 2, 1.0)]
    assert store.query("SELECT count(*), count(DISTINCT (tbl, seq)) FROM superseded")[1] == [(5, 5)]


def test_rollouts_round_trip(store):
    run = store.start_run("bench", {})
    rs = [rollout("r1", "A", "m1", n_messages=5), rollout("r2", "A", "m1", trial=1, n_messages=0)]
    store.add_rollouts(run, rs, [verdict("A", True, rollout_id="r1"), verdict("A", False, ["max_turns"], "r2")])
    assert store.rollouts() == rs
    assert store.rollouts("trial = 1") == [rs[1]]
    _, rows = store.query("SELECT rollout_id, task_id, agent_model, user_model, trial, termination, end_state_hash, "
                          "prompt_tokens, completion_tokens, cost, n_messages, pass, reasons FROM rollouts_latest "
                          "ORDER BY rollout_id")
    assert rows == [("r1", "A", "m1", "user-sim", 0, "user_stop", "he", 1000, 100, 0.5, 5, True, []),
                    ("r2", "A", "m1", "user-sim", 1, "user_stop", "he", 1000, 100, 0.5, 0, False, ["max_turns"])]
    _, v = store.query("SELECT kind, task_id, rollout_id, pass, reasons, details FROM verdicts ORDER BY rollout_id")
    assert v == [("rollout", "A", "r1", True, [], []),
                 ("rollout", "A", "r2", False, ["max_turns"], ["detail max_turns"])]
    _, m = store.query("SELECT role, content, tool_calls->>'$[0].name' FROM messages WHERE rollout_id = 'r1' "
                       "ORDER BY idx")
    assert m == [("system", "policy", None), ("user", "u1", None), ("assistant", None, "get_order_details"),
                 ("user", "u3", None), ("assistant", None, "get_order_details")]


def test_lm_calls_and_trials(store):
    run = store.start_run("optimize", {})
    store.add_lm_calls(run, [LMCall(role="writer", model="openai/gpt-4o-mini", prompt_tokens=10,
                                    completion_tokens=2, cost=0.25, latency_s=0.5),
                             LMCall(role="agent", model="m", cost=0.0, error="RateLimitError")])
    store.add_trials(run, "study1", [Trial(number=0, params={"lr": 0.1}, value=0.5, state="COMPLETE",
                                           user_attrs={"note": "x"}),
                                     Trial(number=1, params={"lr": 0.2}, value=None, state="FAIL")])
    assert store.query("SELECT role, model, prompt_tokens, completion_tokens, cost, latency_s, error FROM lm_calls "
                       "ORDER BY role")[1] == [("agent", "m", 0, 0, 0.0, None, "RateLimitError"),
                                               ("writer", "openai/gpt-4o-mini", 10, 2, 0.25, 0.5, None)]
    assert store.query("SELECT study, number, params->>'$.lr', value, state, user_attrs FROM trials ORDER BY number"
                       )[1] == [("study1", 0, "0.1", 0.5, "COMPLETE", '{"note":"x"}'),
                                ("study1", 1, "0.2", None, "FAIL", "{}")]


def test_latest_program(store):
    assert store.latest_program("writer") is None
    run = store.start_run("optimize", {})
    store.add_program("writer", "TaskWriter", {"v": 1}, run, score_before=0.1, score_after=0.2, optimizer="MIPROv2")
    store.add_program("writer", "TaskWriter", {"v": 2, "demos": [{"a": 1}]}, None, optimizer="BootstrapFewShot")
    store.add_program("adapter", "IntentAdaptation", {"v": 9}, run)
    p = store.latest_program("writer")
    assert {k: p[k] for k in ("name", "program", "state", "optimizer", "score_before", "score_after", "run_id")} == {
        "name": "writer", "program": "TaskWriter", "state": {"v": 2, "demos": [{"a": 1}]},
        "optimizer": "BootstrapFewShot", "score_before": None, "score_after": None, "run_id": None}
    assert p["created_at"] is not None
    assert store.latest_program("adapter")["state"] == {"v": 9}


def test_resume_keys(store):
    run = store.start_run("bench", {})
    other = store.start_run("bench", {})
    assert store.done_task_ids(run) == set() and store.done_rollout_keys(run) == set()
    store.add_tasks(run, [task("A"), task("B")])
    store.add_tasks(other, [task("C")])
    store.add_rollouts(run, [rollout("r1", "A", "m1", 0), rollout("r2", "A", "m1", 1), rollout("r3", "B", "m2", 0)])
    store.add_rollouts(other, [rollout("r4", "C", "m1", 0)])
    assert store.done_task_ids(run) == {"A", "B"}
    assert store.done_rollout_keys(run) == {("A", "m1", 0), ("A", "m1", 1), ("B", "m2", 0)}
    assert store.done_rollout_keys(other) == {("C", "m1", 0)}


class FailingStore(TaskStore):
    """A store whose commits fail while ``fail`` is set."""

    fail = False

    def _before_commit(self, cur, op):
        if self.fail:
            raise RuntimeError("boom")


def test_failed_batch_leaves_nothing(db):
    with FailingStore(db) as s:
        run = s.start_run("generate", {})
        s.fail = True
        with pytest.raises(RuntimeError, match="boom"):
            s.add_trajectories(run, [traj("T1", 4), traj("T2", 4)])
        with pytest.raises(RuntimeError):
            s.add_rollouts(run, [rollout("r1", "A", "m")], [verdict("A", True, rollout_id="r1")])
        s.fail = False
        for table in ("trajectories", "steps", "rollouts", "messages", "verdicts"):
            assert s.query(f"SELECT count(*) FROM {table}")[1] == [(0,)], table
        s.add_trajectories(run, [traj("T1", 4)])  # the store still works after a rollback
        assert s.query("SELECT count(*) FROM steps")[1] == [(4,)]


def test_transaction_groups_writes(store):
    run = store.start_run("generate", {})
    with store.transaction():
        store.add_trajectories(run, [traj("T1", 2)])
        with store.transaction():  # nested: joins
            store.add_tasks(run, [task("A", trajectory="T1")])
        store.add_verdicts(run, [verdict("A", True)], kind="static")
        store.add_run_event(run, "item", {"index": 0, "task": "A"})
    assert store.query("SELECT count(*) FROM tasks_latest WHERE verified")[1] == [(1,)]
    assert store.query("SELECT details->>'$.task' FROM run_events WHERE status = 'item'")[1] == [("A",)]
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.add_trajectories(run, [traj("T2", 2)])
            store.add_tasks(run, [task("B", trajectory="T2")])
            raise RuntimeError("item failed")
    with pytest.raises(StoreError, match="unknown run_id"):
        with store.transaction():
            store.add_tasks(run, [task("C")])
            store.add_tasks("no-such-run", [task("D")])
    assert [t.id for t in store.tasks()] == ["A"]
    assert store.query("SELECT count(*) FROM trajectories")[1] == [(1,)]
    # another thread's write waits for the open transaction and then lands
    done = threading.Event()
    with store.transaction():
        store.add_tasks(run, [task("E")])
        t = threading.Thread(target=lambda: (store.add_tasks(run, [task("F")]), done.set()))
        t.start()
        assert not done.wait(0.3)
        assert store.query("SELECT count(*) FROM tasks WHERE task_id IN ('E', 'F')")[1] == [(0,)]  # not committed
    t.join()
    assert [t.id for t in store.tasks()] == ["A", "E", "F"]


# ---------------------------------------------------------------- views


@pytest.fixture
def fixture_store(store):
    """Three runs: generate (trajectories, tasks, LM calls, static verdicts), verify (re-inserts
    and re-verifies B), bench (rollouts with verdicts, one rollout re-judged)."""
    s = store
    gen = s.start_run("generate", {}, run_id="gen")
    s.add_trajectories(gen, [traj("T1", 3), traj("T2", 2), traj("T3", 1)])
    s.add_tasks(gen, [
        task("A", tools=["get_order_details", "cancel_pending_order"], trajectory="T1"),
        task("A_amb", "ambiguous", parent="A", tools=["get_order_details", "cancel_pending_order"]),
        task("A_inf", "infeasible", parent="A", tools=["get_order_details"], trajectory="T1"),
        task("B", tools=["get_user_details"], trajectory="T2"),
        task("C", tools=["get_order_details"], trajectory="T2"),
    ])
    s.add_lm_calls(gen, [LMCall(role="writer", model="w", prompt_tokens=100, completion_tokens=20, cost=0.25),
                         LMCall(role="adapter", model="w", prompt_tokens=200, completion_tokens=30, cost=0.5)])
    s.add_verdicts(gen, [verdict("A", True), verdict("A_amb", True), verdict("A_inf", False, ["not_infeasible"]),
                         verdict("B", False, ["invalid_gold"])], kind="static")
    ver = s.start_run("verify", {}, run_id="ver")
    s.add_tasks(ver, [task("B", tools=["get_user_details", "get_user_details", "modify_user_address"],
                           trajectory="T2", reason="fixed")])
    s.add_verdicts(ver, [verdict("B", True)], kind="static")
    s.add_lm_calls(ver, [LMCall(role="judge", model="j", prompt_tokens=50, completion_tokens=10, cost=0.125)])
    bench = s.start_run("bench", {}, run_id="bench")
    s.add_rollouts(bench, [rollout("r1", "A", "m1", 0), rollout("r2", "A", "m1", 1), rollout("r3", "A_amb", "m1"),
                           rollout("r4", "A_amb", "m2"), rollout("r5", "A_inf", "m2"), rollout("r6", "B", "m2")],
                   [verdict("A", True, rollout_id="r1"), verdict("A", False, ["wrong_end_state"], "r2"),
                    verdict("A_amb", False, ["no_clarification", "wrong_end_state"], "r3"),
                    verdict("A_amb", True, rollout_id="r4"), verdict("A_inf", False, ["forbidden_action"], "r5"),
                    verdict("B", True, rollout_id="r6")])
    s.add_verdicts(bench, [verdict("A", True, rollout_id="r2")], kind="rollout")  # r2 re-judged: newest wins
    return s


def test_view_tasks_latest(fixture_store):
    _, rows = fixture_store.query(
        "SELECT task_id, run_id, condition, verified, verify_reasons, verify_run_id, gold_tools "
        "FROM tasks_latest ORDER BY task_id")
    assert rows == [
        ("A", "gen", "general", True, [], "gen", ["get_order_details", "cancel_pending_order"]),
        ("A_amb", "gen", "ambiguous", True, [], "gen", ["get_order_details", "cancel_pending_order"]),
        ("A_inf", "gen", "infeasible", False, ["not_infeasible"], "gen", ["get_order_details"]),
        ("B", "ver", "general", True, [], "ver", ["get_user_details", "get_user_details", "modify_user_address"]),
        ("C", "gen", "general", None, None, None, ["get_order_details"]),
    ]
    assert [t.id for t in fixture_store.tasks("verified")] == ["A", "A_amb", "B"]
    assert [t.id for t in fixture_store.tasks("verified IS NULL")] == ["C"]
    assert fixture_store.tasks("task_id = 'B'")[0].scenario.reason_for_call == "fixed"


def test_view_pass_rate(fixture_store):
    cols, rows = fixture_store.query("SELECT * FROM pass_rate")
    assert cols == ["condition", "agent_model", "rollouts", "passed", "pass_rate"]
    assert rows == [
        ("ambiguous", "m1", 1, 0, 0.0),
        ("ambiguous", "m2", 1, 1, 1.0),
        ("general", "m1", 2, 2, 1.0),
        ("general", "m2", 1, 1, 1.0),
        ("infeasible", "m2", 1, 0, 0.0),
    ]


def test_view_failure_reasons(fixture_store):
    cols, rows = fixture_store.query("SELECT * FROM failure_reasons")
    assert cols == ["kind", "condition", "reason", "n", "verdicts", "share"]
    assert rows == [
        ("rollout", "ambiguous", "no_clarification", 1, 2, 0.5),
        ("rollout", "ambiguous", "wrong_end_state", 1, 2, 0.5),
        ("rollout", "infeasible", "forbidden_action", 1, 1, 1.0),
        ("static", "infeasible", "not_infeasible", 1, 1, 1.0),
    ]


def test_view_tool_coverage(fixture_store):
    cols, rows = fixture_store.query("SELECT * FROM tool_coverage")
    assert cols == ["condition", "tool", "tasks", "verified_tasks"]
    assert rows == [
        ("ambiguous", "cancel_pending_order", 1, 1),
        ("ambiguous", "get_order_details", 1, 1),
        ("general", "cancel_pending_order", 1, 1),
        ("general", "get_order_details", 2, 1),
        ("general", "get_user_details", 1, 1),
        ("general", "modify_user_address", 1, 1),
        ("infeasible", "get_order_details", 1, 0),
    ]


def test_view_task_lineage(fixture_store):
    cols, rows = fixture_store.query(
        "SELECT * FROM task_lineage ORDER BY trajectory_id, general_task_id, task_id, rollout_id")
    assert cols == ["trajectory_id", "general_task_id", "task_id", "condition", "verified", "rollout_id",
                    "agent_model", "trial", "pass"]
    assert rows == [
        ("T1", "A", "A", "general", True, "r1", "m1", 0, True),
        ("T1", "A", "A", "general", True, "r2", "m1", 1, True),
        ("T1", "A", "A_amb", "ambiguous", True, "r3", "m1", 0, False),
        ("T1", "A", "A_amb", "ambiguous", True, "r4", "m2", 0, True),
        ("T1", "A", "A_inf", "infeasible", False, "r5", "m2", 0, False),
        ("T2", "B", "B", "general", True, "r6", "m2", 0, True),
        ("T2", "C", "C", "general", None, None, None, None, None),
        ("T3", None, None, None, None, None, None, None, None),
    ]


def test_view_cost_per_verified_task_is_null_while_a_call_has_no_price(db):
    with TaskStore(db) as s:
        run = s.start_run("generate", {})
        s.add_lm_calls(run, [LMCall(role="writer", model="priced", prompt_tokens=100, completion_tokens=20, cost=0.25),
                             LMCall(role="writer", model="local", prompt_tokens=80, completion_tokens=10, cost=None),
                             LMCall(role="writer", model="local", error="timeout", cost=None)])  # no tokens: free
        cols, rows = s.query("SELECT lm_calls, prompt_tokens, unpriced_calls, cost, cost_per_verified_task "
                             "FROM cost_per_verified_task")
    assert rows == [(3, 180, 1, None, None)]


def test_view_cost_per_verified_task(fixture_store):
    cols, rows = fixture_store.query(
        "SELECT run_id, kind, lm_calls, rollouts, prompt_tokens, completion_tokens, unpriced_calls, cost, tasks, "
        "verified_tasks, tokens_per_verified_task, cost_per_verified_task FROM cost_per_verified_task")
    by_run = {r[0]: r for r in rows}
    assert by_run == {
        "gen": ("gen", "generate", 2, 0, 300, 50, 0, 0.75, 4, 2, 175.0, 0.375),
        "ver": ("ver", "verify", 1, 0, 50, 10, 0, 0.125, 1, 1, 60.0, 0.125),
        "bench": ("bench", "bench", 0, 6, 6000, 600, 0, 3.0, 0, 0, None, None),
    }


# ---------------------------------------------------------------- concurrency


def test_threads_write_concurrently(db):
    n_threads, n_batches, per_batch, n_steps = 8, 12, 25, 4
    errors: list[BaseException] = []
    with TaskStore(db) as s:
        run = s.start_run("generate", {})

        def work(k: int) -> None:
            try:
                for b in range(n_batches):
                    ids = [f"t{k}_{b}_{i}" for i in range(per_batch)]
                    s.add_trajectories(run, [traj(i, n_steps) for i in ids])
                    s.add_tasks(run, [task(i, tools=["x"], trajectory=i) for i in ids])
                    s.add_rollouts(run, [rollout(f"r_{i}", i, "m") for i in ids],
                                   [verdict(i, True, rollout_id=f"r_{i}") for i in ids])
                    s.query("SELECT count(*) FROM pass_rate")  # reads interleave with writes
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        total = n_threads * n_batches * per_batch
        q = lambda sql: s.query(sql)[1][0]  # noqa: E731
        assert q("SELECT count(*), count(DISTINCT seq), count(DISTINCT trajectory_id) FROM trajectories") == (
            total, total, total)
        assert q("SELECT count(*) FROM steps") == (total * n_steps,)
        assert s.query("SELECT count(*) FROM (SELECT s.traj_seq FROM steps s JOIN trajectories t "
                       "ON t.seq = s.traj_seq AND t.trajectory_id = s.trajectory_id "
                       "GROUP BY s.traj_seq HAVING count(*) = ?)", [n_steps])[1] == [(total,)]
        assert q("SELECT count(*), count(DISTINCT seq) FROM tasks") == (total, total)
        assert q("SELECT count(*), count(DISTINCT seq) FROM rollouts") == (total, total)
        assert q("SELECT count(*) FROM messages") == (total * 3,)
        assert q("SELECT count(*), count(DISTINCT seq) FROM verdicts") == (total, total)
        assert q("SELECT rollouts, passed FROM pass_rate") == (total, total)


# ---------------------------------------------------------------- SQL guard and read-only access


@pytest.mark.parametrize("sql", [
    "INSERT INTO runs VALUES ('x', 'k', NULL, NULL, NULL, now()::TIMESTAMP)",
    "UPDATE tasks SET condition = 'x'",
    "DELETE FROM tasks",
    "DROP TABLE tasks",
    "CREATE TABLE z (a INT)",
    "ALTER TABLE tasks ADD COLUMN z INT",
    "COPY tasks TO '/tmp/t2t_guard_test.csv'",
    "ATTACH ':memory:' AS m",
    "DETACH m",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET threads = 1",
    "PRAGMA enable_profiling",
    "CALL pragma_version()",
    "CHECKPOINT",
    "EXPORT DATABASE '/tmp/t2t_guard_export'",
    "EXPLAIN ANALYZE DELETE FROM tasks",
    "EXPLAIN SELECT * FROM pass_rate",  # only SELECT passes: EXPLAIN would hide its statement from the check
    "PRAGMA table_info('tasks')",
    "/* /* */ EXPLAIN SELECT $$ */ EXPLAIN ANALYZE DELETE FROM tasks --$$",  # DuckDB nests block comments
    "SELECT 1; DELETE FROM tasks",
    "BEGIN TRANSACTION",
    "VACUUM",
    "USE memory",
    "not even sql",
])
def test_read_only_query_refuses(fixture_store, db, sql):
    fixture_store.close()
    with pytest.raises(StoreError):
        read_only_query(db, sql)
    with TaskStore(db) as s:  # the programmatic query() refuses the same
        with pytest.raises(StoreError):
            s.query(sql)
        assert s.query("SELECT count(*) FROM tasks")[1] == [(6,)]


@pytest.mark.parametrize("sql,first", [
    ("SELECT count(*) AS n FROM tasks_latest", ("n", (5,))),
    ("WITH x AS (SELECT * FROM pass_rate) SELECT sum(rollouts) AS s FROM x", ("s", (6,))),
    ("FROM tool_coverage SELECT count(*) AS c", ("c", (7,))),
    ("DESCRIBE tasks", ("column_name", None)),
    ("SHOW TABLES", ("name", None)),
    ("SUMMARIZE steps", ("column_name", None)),
    ("SELECT * FROM pragma_table_info('tasks')", ("cid", None)),
    ("/* comment */ SELECT 1 AS one;", ("one", (1,))),
])
def test_read_only_query_reads(fixture_store, db, sql, first):
    fixture_store.close()
    cols, rows = read_only_query(db, sql)
    assert cols[0] == first[0]
    assert rows
    if first[1] is not None:
        assert rows[0] == first[1]


def test_read_only_query_params_and_no_file_access(fixture_store, db, tmp_path):
    fixture_store.close()
    assert read_only_query(db, "SELECT task_id FROM tasks_latest WHERE condition = ?", ["ambiguous"]) == (
        ["task_id"], [("A_amb",)])
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    with pytest.raises(StoreError):
        read_only_query(db, f"SELECT * FROM read_csv('{secret}')")
    with pytest.raises(StoreError, match="no task store"):
        read_only_query(tmp_path / "missing.duckdb", "SELECT 1")


def test_where_filter_cannot_smuggle_statements(fixture_store):
    with pytest.raises(StoreError):
        fixture_store.tasks("true); DELETE FROM tasks; SELECT (1")
    assert fixture_store.query("SELECT count(*) FROM tasks")[1] == [(6,)]


# ---------------------------------------------------------------- exports


def test_export_parquet_round_trip(fixture_store, tmp_path):
    out = tmp_path / "out" / "tasks.parquet"
    n = fixture_store.export_parquet("condition = ?", out, ["general"])
    assert n == 3
    con = duckdb.connect()
    rows = con.execute(f"SELECT task_id, verified, gold_tools, json FROM read_parquet('{out}') ORDER BY task_id"
                       ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [("A", True), ("B", True), ("C", None)]
    assert rows[1][2] == ["get_user_details", "get_user_details", "modify_user_address"]
    assert [Task.model_validate_json(r[3]) for r in rows] == sorted(fixture_store.tasks("condition = 'general'"),
                                                                    key=lambda t: t.id)
    assert fixture_store.export_parquet(None, tmp_path / "all.parquet") == 5


def test_export_tau2(fixture_store, tmp_path):
    tau2 = pytest.importorskip("trajectory2task.store.tau2")
    if not hasattr(tau2, "task_to_tau2"):
        pytest.skip("store/tau2.py has no task_to_tau2 yet")
    out = tmp_path / "tasks.json"
    assert fixture_store.export_tau2("verified", out) == 3
    data = json.loads(out.read_text())
    assert [d["id"] for d in data] == ["A", "A_amb", "B"]
    if hasattr(tau2, "task_from_tau2"):
        back = [tau2.task_from_tau2(d) for d in data]
        assert [t.id for t in back] == ["A", "A_amb", "B"]
        assert [len(t.gold_actions) for t in back] == [2, 2, 3]


# ---------------------------------------------------------------- what the writers of a file share


def _seqs(store, table):
    return [s for (s,) in store.query(f"SELECT seq FROM {table} ORDER BY seq")[1]]


def test_two_stores_on_one_file_number_and_supersede_as_one(db):
    with TaskStore(db) as a, TaskStore(db) as b:
        run = a.start_run("generate", {})
        a.add_tasks(run, [task("X", reason="a1")])
        b.add_tasks(run, [task("Y"), task("X", reason="b1")])  # b learns nothing from a's write itself
        a.add_tasks(run, [task("X", reason="a2")])
        assert _seqs(a, "tasks") == [1, 2, 3, 4]
        assert a.query("SELECT tbl, seq, by_seq FROM superseded ORDER BY seq")[1] == [
            ("tasks", 1, 3), ("tasks", 3, 4)]
        assert [(t.id, t.scenario.reason_for_call) for t in b.tasks()] == [("Y", "help me"), ("X", "a2")]


def test_a_rolled_back_item_leaves_no_number_and_no_key_behind(db):
    with FailingStore(db) as s:
        run = s.start_run("generate", {})
        s.add_tasks(run, [task("A")])
        s.fail = True
        with pytest.raises(RuntimeError):
            with s.transaction():
                lost = s.start_run("generate", {})
                s.add_tasks(lost, [task("X")])
                s.add_verdicts(lost, [verdict("X", True)], kind="static")
        s.fail = False
        with pytest.raises(StoreError, match="unknown run_id"):  # the run went with the rollback
            s.add_tasks(lost, [task("Z")])
        s.add_tasks(run, [task("X")])
        assert _seqs(s, "tasks") == [1, 2]
        assert s.query("SELECT count(*) FROM superseded")[1] == [(0,)]  # no X before this one


def test_a_file_written_while_no_store_had_it_open_is_read_again(db):
    with TaskStore(db) as s:
        run = s.start_run("generate", {})
        s.add_tasks(run, [task("X", reason="first")])
    # another writer (here a bare connection) while no store has the file open
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO tasks SELECT * REPLACE (2 AS seq, json_object('reason', 'other') AS json) "
                "FROM tasks WHERE seq = 1")
    con.close()
    with TaskStore(db) as s:
        s.add_tasks(run, [task("X", reason="third")])
        assert _seqs(s, "tasks") == [1, 2, 3]
        assert s.query("SELECT tbl, seq, by_seq FROM superseded ORDER BY seq")[1] == [
            ("tasks", 1, 3), ("tasks", 2, 3)]


def test_a_store_dropped_unclosed_counts_itself_out(db):
    import gc

    from trajectory2task.store.taskstore import _state_for

    s = TaskStore(db)
    run = s.start_run("generate", {})
    s.add_tasks(run, [task("X")])
    state = _state_for(db)
    assert state.writers == 1 and state.next_seqs
    s._con.close()  # what the collector's finalizers do to the connection
    del s
    gc.collect()
    assert state.writers == 0 and not state.next_seqs and not state.runs
