"""Rollout throughput on Ray across 1, 2 and 3 simulated nodes: how close to linear it scales.

Each node of a ``ray.cluster_utils.Cluster`` (one CPU each, all on this machine) runs one
rollout actor with the same share of in-flight rollouts (``--per-node``), against the scripted
OpenAI-compatible server of benchmarks/bench_rollouts.py in a separate process at ``--latency``
per call. The work grows with the nodes (``--rollouts`` per node), so every size runs about as
long. Rollouts are the real thing, as in bench_rollouts.py: LM user and LM agent over HTTP,
verdicts from the verifier, results streamed to this driver, which stores them in DuckDB.

Per size it prints LM calls per second over the whole run (actor start included) and once the
actors are up (from the moment every actor has built its engine to the last result), the ideal (``nodes * per_node / latency``), and the
scaling efficiency: the rate at n nodes over n times the rate at one node (goal >= 90%). The
share of the ideal each size reaches is printed too: a one-node run slowed by the machine's
other load inflates the efficiency of the larger sizes, the share of the ideal does not.
The simulated nodes share this machine's cores: on a machine with fewer free cores than nodes
(plus the server and the driver) the figure measures the machine, not the scaling.

    python benchmarks/bench_ray_rollouts.py [--nodes 1 2 3] [--per-node 16] [--latency 0.1] [--rollouts 160] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def _rollouts_benchmark() -> Any:
    """benchmarks/bench_rollouts.py as a module: its server, responder and tasks are reused."""
    spec = importlib.util.spec_from_file_location("bench_rollouts", Path(__file__).with_name("bench_rollouts.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_on_nodes(nodes: int, per_node: int, rollouts_per_node: int, latency_s: float, base_url: str,
                 helpers: Any) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    from trajectory2task.domains import get_domain
    from trajectory2task.programs.distributed.cluster import RayTarget
    from trajectory2task.programs.distributed.rollouts import run_engine_on_ray
    from trajectory2task.programs.lm.build import build_lm
    from trajectory2task.programs.lm.config import LMSettings
    from trajectory2task.programs.lm.accounting import CallLedger
    from trajectory2task.programs.loop.agent import LMAgent
    from trajectory2task.programs.loop.rollout import RolloutEngine, RolloutJob, RolloutWriter, rollout_id_for
    from trajectory2task.programs.loop.user_sim import LMUser
    from trajectory2task.store import TaskStore

    domain = get_domain("retail")
    env = domain.environment(domain.generate_db(0, 200))
    tasks = helpers.tasks_for(env, 64)
    ledger = CallLedger()
    # built for a role, so each actor rebuilds them recording into its own ledger
    agent = LMAgent(build_lm(LMSettings(model=helpers.AGENT_MODEL, api_base=base_url), role="agent", ledger=ledger),
                    env)
    user = LMUser(build_lm(LMSettings(model=helpers.USER_MODEL, api_base=base_url), role="user", ledger=ledger))
    engine = RolloutEngine(env, user, [agent])
    task_ids = list(tasks)

    def jobs(run_id: str, count: int, offset: int) -> list[RolloutJob]:
        return [RolloutJob(task_id=task_ids[i % len(task_ids)], agent=agent.name, trial=i + offset,
                           rollout_id=rollout_id_for(run_id, task_ids[i % len(task_ids)], agent.name, i + offset))
                for i in range(count)]

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        target = RayTarget(address="auto")  # the Ray joined above
        concurrency = nodes * per_node
        with tempfile.TemporaryDirectory() as tmp, TaskStore(Path(tmp) / "bench.duckdb") as store:
            run_id = store.start_run("bench", {"benchmark": "bench_ray_rollouts", "nodes": nodes})
            store.add_tasks(run_id, list(tasks.values()))
            run_engine_on_ray(target, engine, tasks, jobs(run_id, concurrency, 10**6), concurrency=concurrency,
                              actors=nodes)  # warm-up: worker processes and imports on every node
            ledger.take()
            writer = RolloutWriter(store, run_id, ledger=ledger)
            start = time.perf_counter()
            ran = run_engine_on_ray(target, engine, tasks, jobs(run_id, nodes * rollouts_per_node, 0),
                                    concurrency=concurrency, actors=nodes, on_result=writer.add, ledger=ledger)
            wall = time.perf_counter() - start
            writer.flush()
            stored_rows = store.query("SELECT count(*) FROM rollouts WHERE run_id = ?", [run_id])[1][0][0]
            stored_calls = store.query("SELECT count(*) FROM lm_calls WHERE run_id = ?", [run_id])[1][0][0]
    finally:
        ray.shutdown()
        cluster.shutdown()
    calls = sum(sum(1 for m in r.rollout.messages if m.role in ("user", "assistant")) for r in ran.results)
    steady = calls / (wall - ran.start_s)  # ramp-up and tail included, actor start not
    return {"nodes": nodes, "concurrency": concurrency, "rollouts": len(ran.results), "stored": stored_rows,
            "lm_calls": calls, "lm_calls_stored": stored_calls, "crashes": len(ran.crashes), "retries": ran.retries,
            "wall_s": wall, "actor_start_s": ran.start_s, "calls_per_s": calls / wall, "steady_calls_per_s": steady,
            "ideal_calls_per_s": concurrency / latency_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--per-node", type=int, default=16, help="rollouts in flight per node (its actor's share)")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--rollouts", type=int, default=160, help="rollouts per node")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    helpers = _rollouts_benchmark()
    proc, base_url = helpers.start_server(args.latency)
    sizes: list[dict[str, Any]] = []
    try:
        for nodes in args.nodes:
            sizes.append(run_on_nodes(nodes, args.per_node, args.rollouts, args.latency, base_url, helpers))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    base = next((s for s in sizes if s["nodes"] == 1), None)
    for size in sizes:
        if base is not None:
            size["efficiency"] = size["calls_per_s"] / (size["nodes"] * base["calls_per_s"])
            size["steady_efficiency"] = size["steady_calls_per_s"] / (size["nodes"] * base["steady_calls_per_s"])
    figures = {"sizes": sizes, "per_node": args.per_node, "latency_s": args.latency, "cpus": os.cpu_count(),
               "load_average": os.getloadavg()}
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{args.per_node} rollouts in flight per node, {args.latency * 1000:.0f} ms per LM call, "
          f"{figures['cpus']} CPU(s); load average after: {' '.join(f'{x:.2f}' for x in figures['load_average'])}")
    for size in sizes:
        line = (f"{size['nodes']} node(s): {size['rollouts']} rollouts ({size['stored']} stored, "
                f"{size['lm_calls_stored']} of {size['lm_calls']} LM calls stored, {size['retries']} retried), "
                f"{size['calls_per_s']:.1f} calls/s over {size['wall_s']:.1f} s, {size['steady_calls_per_s']:.1f} once "
                f"the actors were up ({size['actor_start_s']:.1f} s to start them)"
                f" (ideal {size['ideal_calls_per_s']:.0f}: "
                f"{100 * size['steady_calls_per_s'] / size['ideal_calls_per_s']:.1f}% of it)")
        if "efficiency" in size:
            line += (f"; scaling {100 * size['efficiency']:.1f}% of linear "
                     f"(actors up: {100 * size['steady_efficiency']:.1f}%)")
        print(line)


if __name__ == "__main__":
    main()
