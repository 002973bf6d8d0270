"""Rollouts sharded over worker processes (`RolloutEngine.run_many(workers=N)`).

Checked against the single-process run of the same jobs: the same rollouts, the same
verdicts and end states; results handed to `on_result` in the parent (the store has one
writer); every LM call a worker made lands in the parent's ledger, as many as the server saw.
"""

from __future__ import annotations

import os

import pytest

from trajectory2task.programs.lm.accounting import CallLedger
from trajectory2task.programs.lm.build import build_lm
from trajectory2task.programs.lm.config import LMSettings
from trajectory2task.programs.loop.agent import LMAgent, OracleAgent
from trajectory2task.programs.loop.rollout import RolloutEngine, RolloutJob
from trajectory2task.programs.loop.user_sim import LMUser, ScriptedUser
from tests.closed_loop import environment, make_tasks
from tests.llm_server import ScriptedLLMServer
from trajectory2task.store import TaskStore
from tests.test_rollout import AGENT, Conversation

pytestmark = pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(),
                                reason="sharding needs the fork start method")


def _summary(results):
    return sorted((r.rollout.id, r.verdict.passed, r.rollout.end_state_hash, tuple(s.call.name for s in r.rollout.steps))
                  for r in results)


def test_sharded_rollouts_match_the_single_process_run_and_return_to_the_parent():
    env = environment()
    tasks = make_tasks(env)
    engine = RolloutEngine(env, ScriptedUser(env.domain.tools), [OracleAgent(env)])
    jobs = [RolloutJob(task_id=t, agent="oracle", trial=k, rollout_id=f"{t}-{k}") for t in tasks for k in range(3)]
    alone, alone_crashes = engine.run_many(tasks, jobs, concurrency=4)
    seen_in: set[int] = set()
    sharded, crashes = engine.run_many(tasks, jobs, concurrency=4, workers=3,
                                       on_result=lambda result: seen_in.add(os.getpid()))
    assert crashes == alone_crashes == []
    assert len(sharded) == len(jobs) and _summary(sharded) == _summary(alone)
    assert all(passed for _, passed, _, _ in _summary(sharded))
    assert seen_in == {os.getpid()}


def test_the_workers_lm_calls_reach_the_parents_ledger():
    env = environment()
    task = make_tasks(env)["general-1"]
    ledger = CallLedger()
    with ScriptedLLMServer(responder=Conversation(task)) as server:
        agent = LMAgent(build_lm(LMSettings(model=AGENT, api_base=server.base_url), role="agent", ledger=ledger), env)
        user = LMUser(build_lm(LMSettings(model="openai/gpt-4o", api_base=server.base_url), role="user", ledger=ledger))
        engine = RolloutEngine(env, user, [agent])
        jobs = [RolloutJob(task_id=task.id, agent=AGENT, trial=k, rollout_id=f"r-{k}") for k in range(4)]
        results, crashes = engine.run_many({task.id: task}, jobs, concurrency=4, workers=2, ledger=ledger)
        requests = len(server.requests)
        assert server.errors == []
    assert crashes == [] and len(results) == 4 and all(r.verdict.passed for r in results)
    rows = ledger.take()
    assert len(rows) == ledger.calls == requests == 4 * 10  # 6 agent and 4 user calls a rollout
    assert {row.role for row in rows} == {"agent", "user"} and all(row.latency_s is not None for row in rows)


def test_bench_processes_stores_every_rollout_and_every_lm_call(tmp_path):
    from trajectory2task.store import read_only_query
    from tests.cli import run_t2t
    from tests.closed_loop import is_user_request, store_tasks, user_reply

    store = tmp_path / "t2t.duckdb"
    tasks = make_tasks(environment())
    with TaskStore(store) as ts:
        store_tasks(ts, tasks)

    def responder(body):
        assert is_user_request(body)
        return user_reply("Yes, go ahead." if len(body["messages"]) > 3 else "Please help me. ###STOP###")

    with ScriptedLLMServer(responder=responder) as server:
        done = run_t2t("bench", "--agent-lm", "oracle", "--user-lm", "openai/gpt-4o-mini", "--api-base",
                       server.base_url, "--trials", "2", "--processes", "2", "--store", str(store), "--json")
        assert done.returncode in (0, 1), done.stderr
        requests = len(server.requests)
        assert server.errors == []
    _, rollouts = read_only_query(store, "SELECT count(*), count(DISTINCT task_id) FROM rollouts_latest")
    _, calls = read_only_query(store, "SELECT count(*), count(*) FILTER (WHERE role = 'user') FROM lm_calls")
    assert rollouts == [(2 * len(tasks), len(tasks))]
    assert requests > 0 and calls == [(requests, requests)]
