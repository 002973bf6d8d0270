"""Generation items as Ray work (``--ray``): the same bytes as one process, on a local Ray and
on a simulated two-node cluster; a worker killed mid-run loses no item and stores none twice;
a driver killed mid-run resumes; an LM run records every call and holds a role's bound
across the cluster, and stores every call its workers completed even when they are killed
mid-run or the run is interrupted (only the requests whose reply never reached a worker are
not in lm_calls: ``tests/ray_kill.py`` makes that number exact).

Ray starts once per kind of cluster (a module-scoped fixture): ``ray.init(num_cpus=2)``, then
``ray.cluster_utils.Cluster`` with two one-CPU nodes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray")

from tests.cli import REPO, run_t2t  # noqa: E402
from tests.llm_server import ScriptedLLMServer  # noqa: E402
from tests.ray_kill import HeldAnswers, InterruptWhenAllWait, KillWhenAllWait  # noqa: E402
from tests.test_generate_lm import InFlight, Responder  # noqa: E402
from trajectory2task.cli import app  # noqa: E402
from trajectory2task.programs.distributed.generate_ray import RayItems, WorkerSetup  # noqa: E402
from trajectory2task.programs.generation.pipeline import (GenerationConfig, GenerationPipeline,  # noqa: E402
                                                           generation_programs, id_prefix)
from trajectory2task.settings import load_environment  # noqa: E402
from trajectory2task.store import TaskStore  # noqa: E402
from trajectory2task.store.failures import StoreSink, generation_items  # noqa: E402
from trajectory2task.usecases import MemorySink  # noqa: E402

USERS = 60
RUN_ID = "r" * 32


@pytest.fixture(autouse=True)
def no_env_lm(monkeypatch):
    for name in list(os.environ):
        if name.startswith("T2T_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module", params=["local", "two_nodes"])
def cluster(request):
    """A running Ray this process has joined: local with 2 CPUs, or a head and a worker node of one
    CPU each (a worker takes a CPU, so the two workers of a run sit on different nodes)."""
    if request.param == "local":
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        yield request.param
        ray.shutdown()
        return
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    ray.init(address=nodes.address, log_to_driver=False, configure_logging=False)
    yield request.param
    ray.shutdown()
    nodes.shutdown()


@pytest.fixture(scope="module")
def env():
    return load_environment("retail", None, seed=3, users=USERS)


def _config(env: Any, n: int, source: str = "baseline") -> GenerationConfig:
    config = GenerationConfig(domain="retail", domain_module="trajectory2task.domains.retail", n=n, seed=3,
                              db_users=USERS, db_initial_hash=env.initial_hash(), source=source,
                              roles={r: "baseline" for r in ("explorer", "writer", "adapter")})
    config.id_prefix = id_prefix(config, RUN_ID)
    return config


def _pipeline(env: Any, config: GenerationConfig, sink: Any, executor: Any = None, **kw: Any) -> GenerationPipeline:
    programs = generation_programs({})
    return GenerationPipeline(env, sink, config, explorer=programs["explorer"], writer=programs["writer"],
                              adaptation=programs["adapter"], executor=executor, **kw)


def _dump(sink: MemorySink) -> dict[str, list[str]]:
    """Every stored object as JSON, by id (the order items finish in may differ)."""
    return {"items": sorted(i.model_dump_json() for i in sink.items),
            "trajectories": sorted(t.model_dump_json() for t in sink.trajectories),
            "tasks": sorted(t.model_dump_json() for t in sink.tasks),
            "verdicts": sorted(v.model_dump_json() for v in sink.verdicts)}


@pytest.fixture(scope="module")
def one_process(env):
    """The reference: 16 offline items in this process."""
    sink = MemorySink()
    summary = _pipeline(env, _config(env, 16), sink).run(RUN_ID)
    return sink, summary


def test_offline_items_on_ray_are_byte_identical_to_one_process(cluster, env, one_process):
    reference, summary = one_process
    config = _config(env, 16)
    items = RayItems(ray, WorkerSetup(config=config))
    sink = MemorySink()
    on_ray = _pipeline(env, config, sink, items).run(RUN_ID)
    assert _dump(sink) == _dump(reference)
    assert len(reference.tasks) > 16  # adapted tasks too: the comparison covers every condition
    assert on_ray.model_dump(exclude={"retried"}) == summary.model_dump(exclude={"retried"})
    assert on_ray.retried == 0
    assert items.made_here == 0  # 16 in flight per worker: every item went to a worker before the driver looked


def test_an_offline_driver_makes_items_while_its_workers_are_busy_with_the_same_bytes(cluster, env, one_process):
    reference, summary = one_process
    config = _config(env, 16)
    items = RayItems(ray, WorkerSetup(config=config), depth=3)  # 2 workers x 3: 6 items are theirs from the start
    sink = MemorySink()
    made = _pipeline(env, config, sink, items).run(RUN_ID)
    assert _dump(sink) == _dump(reference)
    assert made.model_dump(exclude={"retried"}) == summary.model_dump(exclude={"retried"})
    # the workers are still loading when the driver first looks: it makes items itself at once
    assert 1 <= items.made_here <= 16 - 6


def test_an_offline_run_on_this_machines_ray_starts_one_worker_fewer_its_driver_works_too(cluster, env):
    from trajectory2task.programs.lm.config import LMSettings

    offline = WorkerSetup(config=_config(env, 16))
    with_lm = WorkerSetup(config=_config(env, 16, "lm"), lm_settings={"writer": LMSettings(model="openai/m")})

    def started(items: RayItems) -> int:
        items.start()
        count = len(items.workers)
        items.close()
        return count

    assert started(RayItems(ray, offline, driver_on_cpus=True)) == 1  # 2 CPUs: the driver's and one worker's
    assert started(RayItems(ray, offline)) == 2  # a cluster's driver need not sit on one of its CPUs
    assert started(RayItems(ray, with_lm, driver_on_cpus=True)) == 2  # an LM run's driver makes no items
    assert started(RayItems(ray, offline, actors=2, driver_on_cpus=True)) == 2  # a number asked for stands


def test_a_database_file_reaches_the_workers_through_the_object_store(cluster, env, tmp_path):
    from trajectory2task.domains import get_domain

    db_file = tmp_path / "db.json"  # workers on other nodes need not see it: the driver sends its bytes
    db_file.write_text(get_domain("retail").generate_db(9, 40).model_dump_json())
    from_file = load_environment("retail", str(db_file))
    config = _config(from_file, 6).model_copy(update={"db_path": str(db_file), "db_users": 40})
    reference, sink = MemorySink(), MemorySink()
    _pipeline(from_file, config, reference).run(RUN_ID)
    _pipeline(from_file, config, sink, RayItems(ray, WorkerSetup(config=config))).run(RUN_ID)
    assert _dump(sink) == _dump(reference) and reference.tasks
    assert from_file.initial_hash() != env.initial_hash()  # not the generated database of the other tests


def test_a_worker_killed_mid_run_loses_no_item_and_stores_none_twice(cluster, env, one_process, tmp_path):
    reference, _ = one_process
    config = _config(env, 16)
    items = RayItems(ray, WorkerSetup(config=config), depth=3)
    killed: list[int] = []

    def kill_a_worker(item: Any) -> None:
        if not killed:  # after the first stored item: the workers still hold items in flight
            worker = next(iter(items.workers.values()))
            pid = ray.get(worker.process_id.remote())
            # the process id is on this machine for both kinds of cluster (the simulated nodes are local)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    path = tmp_path / "killed.duckdb"
    with TaskStore(path) as store:
        store.start_run("generate", config.model_dump(mode="json"), seed=config.seed, run_id=RUN_ID)
        summary = _pipeline(env, config, StoreSink(store), items, after_item=kill_a_worker).run(RUN_ID)
        _, [(events, indexes)] = store.query(
            "SELECT count(*), count(DISTINCT details->>'index') FROM run_events WHERE run_id = ? AND status = 'item'",
            [RUN_ID])
        stored = store.tasks("run_id = ?", [RUN_ID])
    assert killed and summary.retried >= 1 and items.workers_lost == 1
    assert events == indexes == 16  # every item once
    assert sorted(t.model_dump_json() for t in stored) == _dump(reference)["tasks"]


def test_an_item_that_keeps_losing_its_worker_stops_the_run_and_resume_finishes_it(cluster, env, one_process,
                                                                                     tmp_path):
    from trajectory2task.programs.distributed.generate_ray import WorkerLost

    reference, _ = one_process
    config = _config(env, 16)
    items = RayItems(ray, WorkerSetup(config=config), depth=3, max_attempts=1)  # the first loss gives up
    killed: list[int] = []

    def kill_a_worker(item: Any) -> None:
        if not killed:
            worker = next(iter(items.workers.values()))
            killed.append(ray.get(worker.process_id.remote()))
            os.kill(killed[-1], signal.SIGKILL)

    path = tmp_path / "lost.duckdb"
    with TaskStore(path) as store:
        store.start_run("generate", config.model_dump(mode="json"), seed=config.seed, run_id=RUN_ID)
        with pytest.raises(WorkerLost, match=r"^item \d+ lost its Ray worker 1 times"):
            _pipeline(env, config, StoreSink(store), items, after_item=kill_a_worker).run(RUN_ID)
        stopped = len(generation_items(store, RUN_ID))
        assert 1 <= stopped < 16
        _pipeline(env, config, StoreSink(store)).run(RUN_ID)  # resumed in one process
        _, [(events, indexes)] = store.query(
            "SELECT count(*), count(DISTINCT details->>'index') FROM run_events WHERE run_id = ? AND status = 'item'",
            [RUN_ID])
        stored = store.tasks("run_id = ?", [RUN_ID])
    assert events == indexes == 16
    assert sorted(t.model_dump_json() for t in stored) == _dump(reference)["tasks"]


def _store_rows(path: Any, run_id: str) -> dict[str, list[str]]:
    """A run's stored tasks, trajectories, verdicts and items as JSON, its run id blanked."""
    with TaskStore(path, read_only=True) as store:
        tasks = store.tasks("run_id = ?", [run_id])
        _, verdicts = store.query("SELECT task_id, pass, reasons, details FROM verdicts WHERE run_id = ? "
                                  "ORDER BY task_id", [run_id])
        items = generation_items(store, run_id)
        _, trajectories = store.query("SELECT json FROM trajectories WHERE run_id = ? ORDER BY trajectory_id",
                                      [run_id])
    return {"tasks": sorted(t.model_dump_json().replace(run_id, "RUN") for t in tasks),
            "verdicts": [json.dumps(row, default=str) for row in verdicts],
            "items": [i.model_dump_json() for i in items],
            "trajectories": [str(row[0]).replace(run_id, "RUN") for row in trajectories]}


def test_cli_ray_run_stores_what_one_process_stores_and_resumes_after_the_driver_dies(cluster, tmp_path):
    base = ["generate", "--n", "10", "--users", str(USERS), "--seed", "3", "--json"]
    straight = CliRunner().invoke(app, [*base, "--store", str(tmp_path / "one.duckdb")])
    assert straight.exit_code == 0, straight.output
    on_ray = CliRunner().invoke(app, [*base, "--store", str(tmp_path / "ray.duckdb"), "--ray", "local"])
    assert on_ray.exit_code == 0, on_ray.output
    one, many = json.loads(straight.stdout.splitlines()[-1]), json.loads(on_ray.stdout.splitlines()[-1])
    assert many.pop("retried") == 0
    assert {k: v for k, v in many.items() if k != "run_id"} == {k: v for k, v in one.items() if k != "run_id"}
    assert _store_rows(tmp_path / "ray.duckdb", many["run_id"]) == _store_rows(tmp_path / "one.duckdb", one["run_id"])

    # the driver dies after 4 stored items (an interrupt from inside the run); --resume --ray finishes the run
    path = tmp_path / "resumed.duckdb"
    stop = _StopAfter(4)
    from trajectory2task.programs.generation import pipeline as pipeline_module

    original = pipeline_module.GenerationPipeline._finish_item

    def finish_then_maybe_die(self: Any, run_id: str, output: Any, progress: Any) -> None:
        original(self, run_id, output, progress)
        stop()

    pipeline_module.GenerationPipeline._finish_item = finish_then_maybe_die  # type: ignore[method-assign]
    try:
        first = CliRunner().invoke(app, [*base, "--store", str(path), "--ray", "local"])
    finally:
        pipeline_module.GenerationPipeline._finish_item = original  # type: ignore[method-assign]
    assert first.exit_code != 0 and stop.count == 4
    with TaskStore(path, read_only=True) as store:
        _, [(run_id,)] = store.query("SELECT run_id FROM runs")
        _, [(status,)] = store.query("SELECT status FROM run_events WHERE run_id = ? AND status != 'item' "
                                     "ORDER BY created_at DESC LIMIT 1", [run_id])
        assert status == "interrupted" and len(generation_items(store, run_id)) == 4
    resumed = CliRunner().invoke(app, ["generate", "--resume", run_id, "--store", str(path), "--json", "--ray",
                                       "local"])
    assert resumed.exit_code == 0, resumed.output
    assert _store_rows(path, run_id) == _store_rows(tmp_path / "one.duckdb", one["run_id"])
    with TaskStore(path, read_only=True) as store:
        _, [(events,)] = store.query("SELECT count(*) FROM run_events WHERE run_id = ? AND status = 'item'", [run_id])
    assert events == 10  # the 4 stored before the interrupt were not made again


class _StopAfter:
    def __init__(self, n: int) -> None:
        self.n, self.count = n, 0

    def __call__(self) -> None:
        self.count += 1
        if self.count == self.n:
            raise KeyboardInterrupt


def _lm_run(tmp_path: Any, name: str, server: ScriptedLLMServer, *extra: str) -> tuple[dict[str, Any], Any]:
    path = tmp_path / f"{name}.duckdb"
    result = CliRunner().invoke(app, [
        "generate", "--lm", "openai/gpt-4o-mini", "--api-base", server.base_url, "--n", "6", "--users", str(USERS),
        "--seed", "2", "--workers", "4", "--store", str(path), "--json", "--no-cache", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.splitlines()[-1]), path


def _lm_outcome(path: Any, run_id: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int]:
    """(tasks by item, condition, verdict and the general task's text; items; LM calls stored),
    ids aside: an LM run's ids carry its run id, and so do the seeds of its adaptations'
    choices (the adapter's rng is seeded with the task id), so adapted texts differ between
    any two LM runs."""
    with TaskStore(path, read_only=True) as store:
        _, tasks = store.query(
            "SELECT split_part(t.task_id, '-', 3), t.condition, v.pass, "
            "CASE WHEN t.condition = 'general' THEN t.json->>'scenario' END FROM tasks t "
            "JOIN verdicts v ON v.task_id = t.task_id WHERE t.run_id = ? ORDER BY 1, 2", [run_id])
        items = [(i.index, i.status, sorted(i.tasks), i.verified) for i in generation_items(store, run_id)]
        _, [(calls,)] = store.query("SELECT count(*) FROM lm_calls WHERE run_id = ?", [run_id])
    return tasks, items, calls


def test_an_lm_run_on_ray_records_every_call_and_bounds_a_role_across_the_cluster(cluster, tmp_path):
    in_flight = InFlight(Responder({}), seconds=0.05)
    with ScriptedLLMServer(responder=in_flight) as server:
        one, one_path = _lm_run(tmp_path, "one", server)
        one_requests = len(server.requests)
        assert in_flight.most["explorer"] > 1  # unbounded, four items explore at once
        in_flight.most.clear()
        many, many_path = _lm_run(tmp_path, "ray", server, "--ray", "local", "--max-concurrent", "explorer=1")
        ray_requests = len(server.requests) - one_requests
        assert server.errors == []
    # two workers with four items in flight each: a per-worker bound would let two explorer calls out at once
    assert in_flight.most["explorer"] == 1
    assert many["retried"] == 0 and many["items"] == one["items"] == 6
    tasks, items, calls = _lm_outcome(many_path, many["run_id"])
    assert (tasks, items) == _lm_outcome(one_path, one["run_id"])[:2]
    assert len(tasks) >= 6
    assert calls == ray_requests  # every LM call the workers made is in lm_calls, once


def test_the_python_api_on_ray_builds_lms_from_settings_in_each_worker(cluster, tmp_path):
    from trajectory2task.programs.lm.build import build_lm
    from trajectory2task.programs.lm.config import LMSettings
    from trajectory2task.programs.lm.session import LMSession
    from trajectory2task.usecases import generate

    LMSession.install_adapter()  # the typed signatures' adapter, as the command installs it
    in_flight = InFlight(Responder({}), seconds=0.05)
    with ScriptedLLMServer(responder=in_flight) as server:
        settings = LMSettings(model="openai/gpt-4o-mini", api_base=server.base_url, max_concurrent=1)
        # an LM object built for an api_base holds connections: it cannot be sent, and the error says what to do
        with pytest.raises(ValueError, match=r"the explorer's LM cannot be sent to Ray workers .* LMSettings"):
            generate("retail", n=2, users=USERS, seed=2, lm=build_lm(settings), ray="local")
        result = generate("retail", n=4, users=USERS, seed=2, lm=settings, workers=4, ray="local",
                          store=tmp_path / "api.duckdb")
        assert server.errors == []
        requests = len(server.requests)
    assert result.summary.items == 4 and not result.summary.failed and result.summary.retried == 0
    assert in_flight.most == {"explorer": 1, "writer": 1, "adapter": 1}  # each role's bound, cluster-wide
    with TaskStore(tmp_path / "api.duckdb", read_only=True) as store:
        _, [(calls,)] = store.query("SELECT count(*) FROM lm_calls WHERE run_id = ?", [result.run_id])
    assert calls == requests


@pytest.mark.parametrize("max_attempts", [3, 1])
def test_lm_calls_a_killed_worker_completed_are_stored_once(cluster, env, tmp_path, max_attempts):
    """Both workers are killed while each item they hold waits on an answer the server holds:
    every call made before (for those items too) is in lm_calls, once; only the held requests
    are not (their replies never reached a worker). With 3 attempts the items run again on new
    workers; with 1 the run stops (WorkerLost), and the calls reach the store all the same."""
    from trajectory2task.programs.distributed.generate_ray import WorkerLost
    from trajectory2task.programs.generation.pipeline import GENERATION_ROLES
    from trajectory2task.programs.lm.config import LMSettings

    n = 6
    answers = HeldAnswers(Responder({}), first=14)  # about a third into the run: items are half made
    with ScriptedLLMServer(responder=answers) as server:
        settings = LMSettings(model="openai/gpt-4o-mini", api_base=server.base_url)
        config = _config(env, n, source="lm").model_copy(update={"roles": dict.fromkeys(GENERATION_ROLES,
                                                                                           settings.model)})
        config.id_prefix = id_prefix(config, RUN_ID)
        setup = WorkerSetup(config=config, lm_settings=dict.fromkeys(GENERATION_ROLES, settings), workers=4)
        stored: list[int] = []
        with TaskStore(tmp_path / "lm.duckdb") as store:
            store.start_run("generate", config.model_dump(mode="json"), seed=config.seed, run_id=RUN_ID)
            items = RayItems(ray, setup, actors=2, max_attempts=max_attempts,
                             store_calls=lambda calls: store.add_lm_calls(RUN_ID, calls))
            killer = KillWhenAllWait(answers, lambda: n - len(stored),
                                     lambda: [ray.get(w.process_id.remote()) for w in list(items.workers.values())])
            killer.start()
            pipeline = _pipeline(env, config, StoreSink(store), items,
                                 after_item=lambda item: stored.append(item.index))
            if max_attempts == 1:
                with pytest.raises(WorkerLost):
                    pipeline.run(RUN_ID)
            else:
                summary = pipeline.run(RUN_ID)
            killer.join(30)
            requests = len(server.requests)
            _, [(calls,)] = store.query("SELECT count(*) FROM lm_calls WHERE run_id = ?", [RUN_ID])
            _, [(events, indexes)] = store.query(
                "SELECT count(*), count(DISTINCT details->>'index') FROM run_events WHERE run_id = ? "
                "AND status = 'item'", [RUN_ID])
        assert server.errors == []
    assert killer.error is None and len(killer.killed) == 2 and killer.lost >= 1, killer.error
    if max_attempts == 1:  # the run stops at the first loss it sees
        assert items.workers_lost >= 1 and events == indexes == len(stored) < n
    else:
        assert items.workers_lost == 2 and summary.retried >= 1 and events == indexes == n  # every item once
    assert calls == requests - killer.lost  # every call a worker completed, dead or alive, and none twice


def test_an_interrupted_lm_run_on_ray_stores_the_calls_of_its_items_in_flight(cluster, tmp_path):
    """`t2t generate --ray` interrupted (Ctrl-C) while its items in flight wait on answers the
    server holds: those items are not stored, but every call made for them is in lm_calls
    (stored as the run stops); only the held requests are not (their replies never reached a
    worker)."""
    from trajectory2task.programs.generation import pipeline as pipeline_module

    n = 6
    answers = HeldAnswers(Responder({}), first=14)
    original = pipeline_module.GenerationPipeline._finish_item
    stored: list[int] = []

    def finish_and_count(self: Any, run_id: str, output: Any, progress: Any) -> None:
        original(self, run_id, output, progress)
        stored.append(output.item.index)

    path = tmp_path / "interrupted.duckdb"
    interrupt = InterruptWhenAllWait(answers, lambda: n - len(stored))
    with ScriptedLLMServer(responder=answers) as server:
        pipeline_module.GenerationPipeline._finish_item = finish_and_count  # type: ignore[method-assign]
        try:
            interrupt.start()
            result = CliRunner().invoke(app, [
                "generate", "--lm", "openai/gpt-4o-mini", "--api-base", server.base_url, "--n", str(n), "--users",
                str(USERS), "--seed", "2", "--workers", "4", "--store", str(path), "--json", "--no-cache",
                "--ray", "local"])
            interrupt.join(30)
        finally:
            pipeline_module.GenerationPipeline._finish_item = original  # type: ignore[method-assign]
            answers.release()  # the run is over and its workers with it: no held reply reaches one
        requests = len(server.requests)
        assert server.errors == []
    assert interrupt.error is None and interrupt.lost >= 1, interrupt.error
    assert result.exit_code == 130 and len(stored) < n, result.output
    with TaskStore(path, read_only=True) as store:
        _, [(run_id,)] = store.query("SELECT run_id FROM runs")
        assert len(generation_items(store, run_id)) == len(stored)
        _, [(calls,)] = store.query("SELECT count(*) FROM lm_calls WHERE run_id = ?", [run_id])
    assert calls == requests - interrupt.lost  # the calls of the items cut short too, and none twice


# ---------------------------------------------------------------- without Ray


def test_without_the_flag_generate_imports_no_ray(tmp_path):
    code = ("import sys; from trajectory2task.cli import main; sys.argv = ['t2t', 'generate', '--n', '2', '--users', "
            f"'{USERS}', '--store', {str(tmp_path / 's.duckdb')!r}, '--json']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'ray' not in sys.modules, 'ray imported'\nprint('ok')")
    env = {k: v for k, v in os.environ.items() if not k.startswith("T2T_")}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


def test_a_bad_ray_address_is_one_line_and_leaves_no_store(tmp_path):
    done = run_t2t("generate", "--n", "2", "--store", str(tmp_path / "s.duckdb"),
                   env={"T2T_RAY_ADDRESS": "not an address"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "t2t: error: T2T_RAY_ADDRESS: 'not an address' is not a Ray address; give 'local', 'auto', "
        "ray://HOST:PORT or HOST:PORT"]
    assert not (tmp_path / "s.duckdb").exists()


def test_a_cluster_that_does_not_answer_is_one_line_and_leaves_no_store(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = run_t2t("generate", "--n", "2", "--store", str(tmp_path / "s.duckdb"), "--ray", f"127.0.0.1:{port}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"t2t: error: cannot join the Ray cluster at 127.0.0.1:{port}: nothing answers at 127.0.0.1:{port} "
        "(Connection refused); is the cluster running? (ray start --head)"]
    assert not (tmp_path / "s.duckdb").exists()


def test_call_slots_bound_a_role_and_a_dead_workers_slots_come_back():
    import asyncio

    from trajectory2task.programs.distributed.slots import CallSlots

    async def scenario() -> None:
        slots = CallSlots({"explorer": 2})
        await slots.acquire("explorer", "w0")
        await slots.acquire("explorer", "w0")
        third = asyncio.ensure_future(slots.acquire("explorer", "w1"))
        late = asyncio.ensure_future(slots.acquire("explorer", "w0"))  # w0 dies before this one is granted
        await asyncio.sleep(0.01)
        assert not third.done() and slots.in_use("explorer") == 2  # the bound holds
        assert await slots.release_holder("w0") == 2  # w0 died holding two slots: the driver hands them back
        await asyncio.wait_for(third, 1)
        await asyncio.wait_for(late, 1)  # granted to the dead w0, and given back at once
        assert slots.in_use("explorer") == 1
        await slots.release("explorer", "w1")
        assert slots.in_use("explorer") == 0 and (await slots.peak()) == {"explorer": 2}

    asyncio.run(scenario())


def test_the_python_api_refuses_a_number_of_workers_below_one():
    from trajectory2task.usecases import generate

    with pytest.raises(ValueError, match="actors must be at least 1, not 0"):
        generate("retail", n=1, users=USERS, ray="local", actors=0)
