"""Bench rollouts on Ray (`trajectory2task.programs.distributed.rollouts`, `t2t bench --ray`).

Checked against the one-process run of the same jobs: the same rollouts with the same
verdicts and end states; results handed to the driver (the store's one writer) once per
rollout id; every LM call an actor made in the driver's ledger, as many as the server saw,
also those of actors killed mid-rollout (less only the requests whose reply never reached them);
each role's ``max_concurrent`` held over all actors together. An actor killed mid-run costs
nothing: its rollouts run again elsewhere, none lost, none twice, the retries counted.

One Ray per test class (started once: a class-scoped fixture): a local Ray with two CPUs, then
a simulated three-node cluster (``ray.cluster_utils.Cluster``).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from trajectory2task.programs.distributed.rollouts import (ActorShare, RolloutEngineSpec, actor_count,  # noqa: E402
                                                            run_engine_on_ray, run_rollouts_on_ray)
from trajectory2task.programs.distributed.cluster import RayTarget  # noqa: E402
from trajectory2task.programs.lm.accounting import CallLedger  # noqa: E402
from trajectory2task.programs.lm.build import build_lm  # noqa: E402
from trajectory2task.programs.lm.config import LMSettings  # noqa: E402
from trajectory2task.programs.loop.agent import DoNothingAgent, LMAgent, OracleAgent  # noqa: E402
from trajectory2task.programs.loop.rollout import RolloutEngine, RolloutJob  # noqa: E402
from trajectory2task.programs.loop.user_sim import LMUser, ScriptedUser  # noqa: E402
from trajectory2task.store import TaskStore, read_only_query  # noqa: E402
from tests.cli import REPO, run_t2t  # noqa: E402
from tests.closed_loop import environment, is_user_request, make_tasks, store_tasks, user_reply  # noqa: E402
from tests.llm_server import ScriptedLLMServer  # noqa: E402
from tests.ray_kill import HeldAnswers, KillWhenAllWait  # noqa: E402
from tests.test_rollout import AGENT, Conversation, plain_lms  # noqa: E402

EXISTING = RayTarget(address="auto")  # the fixtures' Ray is joined already: connect() uses it as it is


@pytest.fixture(autouse=True, scope="module")
def _tests_importable_by_actors():
    """Ray's worker processes unpickle this module's agents: they need the repository on their path."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), before) if p)
    yield
    if before is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = before


@pytest.fixture(scope="class")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="class")
def three_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _summary(results: list[Any]) -> list[tuple[Any, ...]]:
    return sorted((r.rollout.id, r.rollout.agent_model, r.rollout.trial, r.verdict.passed, tuple(r.verdict.reasons),
                   r.rollout.end_state_hash, tuple(s.call.name for s in r.rollout.steps)) for r in results)


def _reference_jobs(tasks: dict[str, Any], trials: int = 2) -> list[RolloutJob]:
    return [RolloutJob(task_id=t, agent=a, trial=k, rollout_id=f"{t}/{a}/{k}")
            for t in tasks for a in ("oracle", "do-nothing") for k in range(trials)]


class DiesOnce:
    """The oracle, except that the first rollout of ``task_id`` anywhere kills its process (the
    Ray actor) as it starts; a marker file says it happened, so the retry plays normally."""

    def __init__(self, env: Any, task_id: str, marker: Path) -> None:
        self.inner = OracleAgent(env)
        self.name = self.inner.name
        self.task_id = task_id
        self.marker = str(marker)

    def system_prompt(self) -> str:
        return self.inner.system_prompt()

    def session(self, task: Any) -> Any:
        if task.id == self.task_id:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass  # died once already: play
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.session(task)


class RoleCounter:
    """A responder wrapper that holds each answer ``hold_s`` and records, per role, the most
    requests in flight at once (the server's own count mixes the roles)."""

    def __init__(self, responder: Any, hold_s: float) -> None:
        self.responder, self.hold_s = responder, hold_s
        self.lock = threading.Lock()
        self.now: collections.Counter[str] = collections.Counter()
        self.most: collections.Counter[str] = collections.Counter()

    def __call__(self, body: dict[str, Any]) -> Any:
        role = "user" if is_user_request(body) else "agent"
        with self.lock:
            self.now[role] += 1
            self.most[role] = max(self.most[role], self.now[role])
        try:
            time.sleep(self.hold_s)
            return self.responder(body)
        finally:
            with self.lock:
                self.now[role] -= 1


@dataclasses.dataclass
class NotesPid(RolloutEngineSpec):
    """A `RolloutEngineSpec` whose actors each leave a file named by their process id in ``pids``
    (so that a test can kill them)."""

    pids: str = ""

    def __call__(self, ledger: CallLedger, share: ActorShare) -> RolloutEngine:
        Path(self.pids, str(os.getpid())).touch()
        return super().__call__(ledger, share)


def test_an_actors_share_of_a_bound_adds_up_to_the_bound():
    for total in (1, 2, 5, 7, 64):
        for count in range(1, total + 1):
            parts = [ActorShare(i, count).of(total) for i in range(count)]
            assert sum(parts) == total and min(parts) >= 1 and max(parts) - min(parts) <= 1


class TestLocalRay:
    def test_rollouts_match_the_one_process_run_and_come_back_to_the_driver(self, local_ray):
        env = environment()
        tasks = make_tasks(env)
        engine = RolloutEngine(env, ScriptedUser(env.domain.tools), [OracleAgent(env), DoNothingAgent(env)])
        jobs = _reference_jobs(tasks)
        alone, alone_crashes = engine.run_many(tasks, jobs, concurrency=4)
        seen_in: set[int] = set()
        ran = run_engine_on_ray(EXISTING, engine, tasks, jobs, concurrency=4, actors=2,
                                on_result=lambda result: seen_in.add(os.getpid()))
        assert ran.crashes == alone_crashes == [] and ran.retries == 0 and ran.actors == 2
        assert len(ran.results) == len(jobs) and _summary(ran.results) == _summary(alone)
        assert {r.verdict.passed for r in ran.results} == {True, False}  # the oracle passes, do-nothing fails
        assert seen_in == {os.getpid()}

    def test_a_killed_actors_rollouts_run_elsewhere_none_lost_none_twice(self, local_ray, tmp_path):
        env = environment()
        tasks = make_tasks(env)
        jobs = [job for job in _reference_jobs(tasks, trials=3) if job.agent == "oracle"]
        alone, _ = RolloutEngine(env, ScriptedUser(env.domain.tools), [OracleAgent(env)]).run_many(tasks, jobs, 4)
        marker = tmp_path / "died"
        spec = RolloutEngineSpec(env, [DiesOnce(env, "changing-1", marker)], ScriptedUser(env.domain.tools),
                                 max_turns=30)
        delivered: collections.Counter[str] = collections.Counter()
        ran = run_rollouts_on_ray(ray, spec, tasks, jobs, concurrency=4, actors=2,
                                  on_result=lambda result: delivered.update([result.rollout.id]))
        assert marker.exists(), "no actor was killed: the test proves nothing"
        assert ran.crashes == [] and ran.retries >= 1
        assert delivered == collections.Counter(job.rollout_id for job in jobs)  # each once, none missing
        assert _summary(ran.results) == _summary(alone)

    def test_an_engine_that_cannot_be_built_fails_once_with_one_line(self, local_ray):
        def broken(ledger: CallLedger, share: ActorShare) -> RolloutEngine:
            raise ValueError("no database here\nsecond line")

        env = environment()
        tasks = make_tasks(env)
        from trajectory2task.programs.distributed.rollouts import ActorStartError

        with pytest.raises(ActorStartError, match="could not start: .*no database here") as caught:
            run_rollouts_on_ray(ray, broken, tasks, _reference_jobs(tasks, 1), concurrency=2, actors=2)
        assert "second line" not in str(caught.value)

    def test_lm_calls_reach_the_driver_and_each_roles_bound_holds_over_all_actors(self, local_ray):
        env = environment()
        task = make_tasks(env)["general-1"]
        ledger = CallLedger()
        counter = RoleCounter(Conversation(task), hold_s=0.05)
        with ScriptedLLMServer(responder=counter) as server:
            agent = LMAgent(build_lm(LMSettings(model=AGENT, api_base=server.base_url, max_concurrent=3),
                                     role="agent", ledger=ledger), env)
            user = LMUser(build_lm(LMSettings(model="openai/gpt-4o", api_base=server.base_url, max_concurrent=2),
                                   role="user", ledger=ledger))
            engine = RolloutEngine(env, user, [agent])
            jobs = [RolloutJob(task_id=task.id, agent=AGENT, trial=k, rollout_id=f"r-{k}") for k in range(8)]
            ran = run_engine_on_ray(EXISTING, engine, {task.id: task}, jobs, concurrency=8, actors=2, ledger=ledger)
            requests = len(server.requests)
            assert server.errors == []
        assert ran.crashes == [] and ran.actors == 2 and len(ran.results) == 8
        assert all(r.verdict.passed for r in ran.results)
        rows = ledger.take()
        assert len(rows) == requests == 8 * 10  # 6 agent and 4 user calls a rollout
        assert {row.role for row in rows} == {"agent", "user"}
        # 8 rollouts in flight would make up to 8 calls of a role at once; the bounds cut that
        assert 1 <= counter.most["agent"] <= 3 and 1 <= counter.most["user"] <= 2, counter.most

    def test_lm_calls_of_killed_actors_reach_the_ledger_once(self, local_ray, tmp_path):
        """Both actors are killed while each rollout they hold waits on an answer the server holds:
        every call made before (for those rollouts too) is in the ledger, once; only the held
        requests are not (their replies never reached an actor). The rollouts run again."""
        env = environment()
        task = make_tasks(env)["general-1"]
        ledger = CallLedger()
        answers = HeldAnswers(Conversation(task), first=30)  # 8 rollouts of 10 calls: each is under way
        delivered: list[str] = []
        pids = tmp_path / "pids"
        pids.mkdir()
        with ScriptedLLMServer(responder=answers) as server:
            agent = LMAgent(build_lm(LMSettings(model=AGENT, api_base=server.base_url), role="agent", ledger=ledger),
                            env)
            user = LMUser(build_lm(LMSettings(model="openai/gpt-4o", api_base=server.base_url), role="user",
                                   ledger=ledger))
            spec = RolloutEngineSpec.of(RolloutEngine(env, user, [agent]))
            spec = NotesPid(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}, pids=str(pids))
            jobs = [RolloutJob(task_id=task.id, agent=AGENT, trial=k, rollout_id=f"r-{k}") for k in range(8)]
            killer = KillWhenAllWait(answers, lambda: len(jobs) - len(delivered),
                                     lambda: [int(p.name) for p in pids.iterdir()])
            killer.start()
            ran = run_rollouts_on_ray(ray, spec, {task.id: task}, jobs, concurrency=8, actors=2, ledger=ledger,
                                      on_result=lambda result: delivered.append(result.rollout.id))
            killer.join(30)
            requests = len(server.requests)
            assert server.errors == []
        assert killer.error is None and len(killer.killed) == 2 and killer.lost >= 1, killer.error
        assert ran.crashes == [] and ran.retries >= 1 and sorted(delivered) == sorted(j.rollout_id for j in jobs)
        assert all(r.verdict.passed for r in ran.results)
        assert len(ledger.take()) == requests - killer.lost  # every call an actor completed, dead or alive, once

    def test_the_python_bench_on_ray_scores_as_in_one_process(self, local_ray, tmp_path):
        from trajectory2task import bench

        env = environment()
        tasks = list(make_tasks(env).values())
        alone = bench(tasks, env, trials=2)
        store = tmp_path / "t2t.duckdb"
        on_ray = bench(tasks, env, trials=2, ray="auto", actors=2, store=store)
        assert on_ray.crashes == [] and on_ray.retries == 0
        assert [c.model_dump() for c in on_ray.cells] == [c.model_dump() for c in alone.cells]
        _, rows = read_only_query(store, "SELECT count(*), count(DISTINCT rollout_id) FROM rollouts_latest")
        assert rows == [(len(tasks) * 2 * 2, len(tasks) * 2 * 2)]


    def test_the_python_bench_counts_and_stores_the_retries_after_an_actor_died(self, local_ray, tmp_path):
        from trajectory2task import bench

        env = environment()
        tasks = list(make_tasks(env).values())
        marker = tmp_path / "died"
        store = tmp_path / "t2t.duckdb"
        result = bench(tasks, env, agents=[DiesOnce(env, "ambiguous-1", marker)], trials=2, ray="auto", actors=2,
                       store=store)
        assert marker.exists() and result.crashes == [] and result.retries >= 1
        assert result.cell("oracle").pass_at_1 == 1.0
        _, rows = read_only_query(store, "SELECT count(*), count(DISTINCT rollout_id) FROM rollouts")
        assert rows == [(len(tasks) * 2, len(tasks) * 2)]  # every rollout once, the retried ones too
        _, events = read_only_query(store, "SELECT status, details FROM run_events WHERE run_id = ? "
                                           "AND status <> 'started'", [result.run_id])
        assert len(events) == 1 and events[0][0] == "finished"
        assert json.loads(events[0][1]) == {"retried_rollouts": result.retries}


    def test_the_python_bench_ships_plain_dspy_lms_to_the_actors(self, local_ray, tmp_path):
        """An agent and a user given as plain ``dspy.LM``s (no t2t role) travel to the actors as
        they are and call the server from there; each call is stored (``lm_calls``)."""
        from trajectory2task import bench

        env = environment()
        task = make_tasks(env)["general-1"]
        store = tmp_path / "t2t.duckdb"
        with ScriptedLLMServer(responder=Conversation(task)) as server:
            agent, user = plain_lms(server.base_url)
            result = bench([task], env, agents=[agent], user=user, trials=4, ray="auto", actors=2, store=store)
            requests = len(server.requests)
            assert server.errors == []
        assert result.crashes == [] and len(result.rollouts) == 4
        assert result.cell(AGENT).pass_at_1 == 1.0
        assert requests == 4 * 10  # 6 agent and 4 user calls a rollout, all made by the actors
        # every call an actor made is a row of the run, under its role, as in one process
        _, rows = read_only_query(store, "SELECT role, count(*), count(*) FILTER (prompt_tokens > 0) FROM lm_calls "
                                         "WHERE run_id = ? GROUP BY ALL ORDER BY 1", [result.run_id])
        assert rows == [("agent", 24, 24), ("user", 16, 16)]


class TestThreeNodes:
    def test_actors_spread_over_the_nodes_and_give_the_one_process_verdicts(self, three_nodes):
        env = environment()
        tasks = make_tasks(env)
        engine = RolloutEngine(env, ScriptedUser(env.domain.tools), [OracleAgent(env), DoNothingAgent(env)])
        jobs = _reference_jobs(tasks)
        alone, _ = engine.run_many(tasks, jobs, concurrency=6)
        assert actor_count(ray, None, jobs=len(jobs), bounds=[6]) == 3  # one per CPU: one per node here
        ran = run_engine_on_ray(EXISTING, engine, tasks, jobs, concurrency=6)
        assert ran.crashes == [] and ran.actors == 3
        assert _summary(ran.results) == _summary(alone)

    def test_a_killed_actor_on_a_cluster_loses_nothing(self, three_nodes, tmp_path):
        env = environment()
        tasks = make_tasks(env)
        jobs = [job for job in _reference_jobs(tasks, trials=2) if job.agent == "oracle"]
        marker = tmp_path / "died"
        spec = RolloutEngineSpec(env, [DiesOnce(env, "general-2", marker)], ScriptedUser(env.domain.tools),
                                 max_turns=30)
        delivered: collections.Counter[str] = collections.Counter()
        ran = run_rollouts_on_ray(ray, spec, tasks, jobs, concurrency=6, actors=3,
                                  on_result=lambda result: delivered.update([result.rollout.id]))
        assert marker.exists() and ran.crashes == [] and ran.retries >= 1
        assert delivered == collections.Counter(job.rollout_id for job in jobs)
        assert all(r.verdict.passed for r in ran.results)

    def test_t2t_bench_joins_the_cluster_and_stores_every_rollout_and_lm_call(self, three_nodes, tmp_path):
        """The CLI in another process joins the running cluster by address; the bench writes
        the store alone, as in one process: the same verdicts, every LM call in lm_calls."""
        store = tmp_path / "t2t.duckdb"
        tasks = make_tasks(environment())
        with TaskStore(store) as ts:
            store_tasks(ts, tasks)

        def responder(body: dict[str, Any]) -> Any:
            assert is_user_request(body)
            return user_reply("Yes, go ahead." if len(body["messages"]) > 3 else "Please help me. ###STOP###")

        verdicts = {}
        for name, flags in (("one process", ()), ("cluster", ("--ray", three_nodes.address, "--concurrency", "6"))):
            with ScriptedLLMServer(responder=responder) as server:
                done = run_t2t("bench", "--user-lm", "openai/gpt-4o-mini", "--api-base", server.base_url,
                               "--trials", "2", "--store", str(store), "--json", *flags, timeout=240)
                assert done.returncode in (0, 1), done.stderr
                requests = len(server.requests)
                assert server.errors == []
            printed = [json.loads(line) for line in done.stdout.strip().splitlines()]  # stdout: JSON only
            summary = printed[-1]
            run_id = summary["run_id"]
            assert summary["retried"] == 0 and summary["crashed"] == [], name
            _, rows = read_only_query(store, "SELECT task_id, agent_model, trial, pass FROM rollouts_latest "
                                             "WHERE run_id = ? ORDER BY ALL", [run_id])
            _, calls = read_only_query(store, "SELECT count(*) FROM lm_calls WHERE run_id = ?", [run_id])
            assert len(rows) == 2 * 2 * len(tasks), name
            assert requests > 0 and calls == [(requests,)], name
            verdicts[name] = rows
        assert verdicts["cluster"] == verdicts["one process"]


def test_t2t_bench_processes_is_a_local_ray_and_stores_every_rollout_and_lm_call(tmp_path):
    store = tmp_path / "t2t.duckdb"
    tasks = make_tasks(environment())
    with TaskStore(store) as ts:
        store_tasks(ts, tasks)

    def responder(body: dict[str, Any]) -> Any:
        assert is_user_request(body)
        return user_reply("Yes, go ahead." if len(body["messages"]) > 3 else "Please help me. ###STOP###")

    with ScriptedLLMServer(responder=responder) as server:
        done = run_t2t("bench", "--agent-lm", "oracle", "--user-lm", "openai/gpt-4o-mini", "--api-base",
                       server.base_url, "--trials", "2", "--processes", "2", "--store", str(store), "--json",
                       timeout=240)
        assert done.returncode in (0, 1), done.stderr  # 1: the user stops at once, so the oracle fails
        requests = len(server.requests)
        assert server.errors == []
    _, rollouts = read_only_query(store, "SELECT count(*), count(DISTINCT task_id) FROM rollouts_latest")
    _, calls = read_only_query(store, "SELECT count(*), count(*) FILTER (WHERE role = 'user') FROM lm_calls")
    assert rollouts == [(2 * len(tasks), len(tasks))]
    assert requests > 0 and calls == [(requests, requests)]


@pytest.mark.parametrize("flags, message", [
    (("--ray", "not an address"), "--ray: 'not an address' is not a Ray address"),
    (("--ray", "ray://127.0.0.1:1"), "cannot join the Ray cluster at ray://127.0.0.1:1"),
])
def test_t2t_bench_refuses_a_ray_it_cannot_use_in_one_line(tmp_path, flags, message):
    store = tmp_path / "t2t.duckdb"
    with TaskStore(store) as ts:
        store_tasks(ts, make_tasks(environment()))
    done = run_t2t("bench", "--store", str(store), *flags, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.startswith("t2t: error:")]
    assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr
    _, runs = read_only_query(store, "SELECT count(*) FROM runs WHERE kind = 'bench'")
    assert runs == [(0,)]  # refused before the run is recorded


def test_a_bare_ray_flag_means_a_local_ray_and_processes_alone_a_local_ray_of_that_many_cpus():
    from trajectory2task.bench_setup import BenchRequest, ray_target_of
    from trajectory2task.ray_options import with_bare_ray_flag

    assert with_bare_ray_flag(["bench", "--ray"]) == ["bench", "--ray", "local"]
    assert with_bare_ray_flag(["bench", "--ray", "--json"]) == ["bench", "--ray", "local", "--json"]
    assert with_bare_ray_flag(["bench", "--ray", "h:6379"]) == ["bench", "--ray", "h:6379"]
    assert with_bare_ray_flag(["bench", "--json"]) == ["bench", "--json"]
    store = Path("t2t.duckdb")
    without = {k: v for k, v in os.environ.items() if k != "T2T_RAY_ADDRESS"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "environ", without)
        assert ray_target_of(BenchRequest(store=store)) is None
        assert ray_target_of(BenchRequest(store=store, processes=3)) == RayTarget(num_cpus=3)
        assert ray_target_of(BenchRequest(store=store, ray="local", processes=3)) == RayTarget()
        assert ray_target_of(BenchRequest(store=store, ray="h:6379")) == RayTarget(address="h:6379")
        patch.setitem(without, "T2T_RAY_ADDRESS", "local")
        assert ray_target_of(BenchRequest(store=store)) == RayTarget()


def test_without_ray_asked_for_a_bench_does_not_import_ray(tmp_path):
    """`t2t bench` and `bench()` with no --ray, no ray= and no T2T_RAY_ADDRESS: one process, no Ray."""
    import subprocess
    import sys

    store = tmp_path / "t2t.duckdb"
    with TaskStore(store) as ts:
        store_tasks(ts, make_tasks(environment()))
    code = f"""
import sys
from trajectory2task.cli import main
sys.argv = ["t2t", "bench", "--store", {str(store)!r}, "--json"]
try:
    main()
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
import trajectory2task as t2t
from tests.closed_loop import environment, make_tasks
env = environment()
assert t2t.bench(list(make_tasks(env).values()), env).cell("oracle").pass_at_1 == 1.0
print("ray imported:", "ray" in sys.modules, file=sys.stderr)
"""
    env = {k: v for k, v in os.environ.items() if k != "T2T_RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr
    assert "ray imported: False" in done.stderr
