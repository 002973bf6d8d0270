"""Task store benchmark: ingest rate of trajectories/steps, then latency of the standard views.

    python benchmarks/bench_store.py --steps 1000000

Writes into a fresh temporary DuckDB file: trajectories in batches (STEPS_PER_TRAJ steps each,
BATCH trajectories per add_trajectories call), then, for a quarter of the trajectories, a
general task plus three adapted tasks (ambiguous, changing, infeasible), static verdicts,
one LM call per task, and rollouts by two agent models with messages and verdicts, so the
views have real work to do. Model objects are built outside the timed sections: the figures
are the store's cost. Targets: ingest >= 50,000 steps/s; each standard view < 200 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trajectory2task.signatures.models import (  # noqa: E402
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
from trajectory2task.store import STANDARD_VIEWS, LMCall, TaskStore  # noqa: E402

TOOLS = ["find_user_id_by_email", "get_user_details", "get_order_details", "get_product_details",
         "list_all_product_types", "cancel_pending_order", "modify_pending_order_items",
         "modify_pending_order_address", "modify_user_address", "exchange_delivered_order_items",
         "return_delivered_order_items", "transfer_to_human_agents", "calculate"]
ADAPTED = ("ambiguous", "changing", "infeasible")
REASONS = ("wrong_end_state", "forbidden_action", "missing_required_action", "no_clarification", "max_turns")
MODELS = ("openai/gpt-4o-mini", "hosted_vllm/qwen3-8b")


def make_trajectory(rng: random.Random, tid: str, n_steps: int) -> Trajectory:
    steps = []
    for i in range(n_steps):
        tool = rng.choice(TOOLS)
        steps.append(Step(
            call=ToolCall(name=tool, arguments={"order_id": f"#W{rng.randrange(10**7):07d}",
                                                "item_ids": [str(rng.randrange(10**10))]}, id=f"call_{i}"),
            observation='{"order_id": "#W0000000", "status": "pending", "items": [' + "x" * rng.randrange(100, 400) + "]}",
            error=rng.random() < 0.02))
    return Trajectory(id=tid, domain="retail", steps=steps, seed_entity=f"user_{tid}", initial_state_hash="h0",
                      end_state_hash=f"h{rng.randrange(10**9)}", provenance=Provenance(source="baseline", seed=1))


def make_task(rng: random.Random, tid: str, condition: str, parent: str | None, traj: str) -> Task:
    tools = rng.sample(TOOLS, rng.randint(1, 4))
    return Task(
        id=tid, domain="retail", condition=condition, parent_task_id=parent,
        scenario=UserScenario(reason_for_call="You want to change your order. " * 3,
                              known_info="Your name is Yusuf Rossi, zip 19122.",
                              task_instructions="Be polite but firm. " * 4,
                              withheld_info=["which order"] if condition == "ambiguous" else []),
        gold_actions=[Action(name=t, arguments={"order_id": "#W0000001", "k": i}, action_id=f"{tid}_{i}")
                      for i, t in enumerate(tools)],
        expected_state_hash="he", initial_state_hash="h0",
        provenance=Provenance(source="baseline", trajectory_id=traj, seed=1))


def make_rollout(rng: random.Random, rid: str, task_id: str, model: str) -> Rollout:
    msgs = [Message(role="system", content="policy " * 20), Message(role="user", content="hi, I need help"),
            Message(role="assistant", tool_calls=[ToolCall(name="get_order_details",
                                                           arguments={"order_id": "#W1"}, id="c1")]),
            Message(role="tool", content='{"status": "pending"}', tool_call_id="c1"),
            Message(role="assistant", content="Done.")]
    return Rollout(id=rid, task_id=task_id, agent_model=model, user_model="user-sim", trial=0, messages=msgs,
                   end_state_hash="he", termination="user_stop",
                   usage=TokenUsage(prompt_tokens=rng.randrange(500, 3000), completion_tokens=rng.randrange(50, 300),
                                    cost=rng.random() / 100))


def verdict(rng: random.Random, task_id: str, p: float, rollout_id: str | None = None) -> Verdict:
    ok = rng.random() < p
    return Verdict(task_id=task_id, rollout_id=rollout_id, passed=ok,
                   reasons=[] if ok else rng.sample(REASONS, rng.randint(1, 2)))


def median_ms(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1_000_000, help="total trajectory steps to ingest")
    ap.add_argument("--steps-per-trajectory", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1000, help="trajectories per add_trajectories call")
    ap.add_argument("--task-fraction", type=float, default=0.25,
                    help="share of trajectories that get a general task (+3 adapted tasks, 2 rollouts each)")
    ap.add_argument("--path", help="DuckDB file to create (default: a fresh temporary file)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    tmpdir = None
    if args.path:
        path = Path(args.path)
        if path.exists():
            sys.exit(f"{path} exists: the benchmark needs a fresh file")
    else:
        tmpdir = tempfile.TemporaryDirectory(prefix="t2t_bench_")
        path = Path(tmpdir.name) / "bench.duckdb"

    n_traj = args.steps // args.steps_per_trajectory
    store = TaskStore(path)
    gen = store.start_run("generate", {"bench": True, "steps": args.steps}, seed=args.seed)

    # ---- trajectories + steps
    ingest_s = 0.0
    wall0 = time.perf_counter()
    for b0 in range(0, n_traj, args.batch):
        batch = [make_trajectory(rng, f"traj_{i}", args.steps_per_trajectory)
                 for i in range(b0, min(n_traj, b0 + args.batch))]
        t0 = time.perf_counter()
        store.add_trajectories(gen, batch)
        ingest_s += time.perf_counter() - t0
    wall_s = time.perf_counter() - wall0
    n_steps = n_traj * args.steps_per_trajectory

    # ---- tasks, static verdicts, LM calls, rollouts with verdicts
    task_s = rollout_s = 0.0
    n_tasks = n_rollouts = n_messages = 0
    bench = store.start_run("bench", {"models": list(MODELS)})
    n_general = int(n_traj * args.task_fraction)
    chunk = 2500
    for c0 in range(0, n_general, chunk):
        tasks: list[Task] = []
        for g in range(c0, min(n_general, c0 + chunk)):
            traj = f"traj_{g * n_traj // max(n_general, 1)}"
            tasks.append(make_task(rng, f"task_{g}", "general", None, traj))
            tasks.extend(make_task(rng, f"task_{g}_{cond}", cond, f"task_{g}", traj) for cond in ADAPTED)
        verdicts = [verdict(rng, t.id, 0.85) for t in tasks]
        calls = [LMCall(role="writer", model=MODELS[0], prompt_tokens=rng.randrange(300, 900),
                        completion_tokens=rng.randrange(50, 200), cost=rng.random() / 1000, latency_s=0.5)
                 for _ in tasks]
        rollouts = [make_rollout(rng, f"ro_{t.id}_{m}", t.id, model) for t in tasks for m, model in enumerate(MODELS)]
        rverdicts = [verdict(rng, r.task_id, 0.6, r.id) for r in rollouts]
        t0 = time.perf_counter()
        store.add_tasks(gen, tasks)
        store.add_verdicts(gen, verdicts, kind="static")
        store.add_lm_calls(gen, calls)
        task_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        store.add_rollouts(bench, rollouts, rverdicts)
        rollout_s += time.perf_counter() - t0
        n_tasks += len(tasks)
        n_rollouts += len(rollouts)
        n_messages += sum(len(r.messages) for r in rollouts)
    # ---- per-call cost of small writes at this size (a pipeline that stores item by item)
    t_one_task = median_ms(lambda: store.add_tasks(gen, [make_task(rng, f"extra_{rng.random()}", "general",
                                                                   None, "traj_0")]), repeat=20)
    t_one_rollout = median_ms(lambda: store.add_rollouts(
        bench, [r := make_rollout(rng, f"ro_extra_{rng.random()}", "task_0", MODELS[0])],
        [verdict(rng, r.task_id, 0.6, r.id)]), repeat=20)
    t_one_traj = median_ms(lambda: store.add_trajectories(
        gen, [make_trajectory(rng, f"traj_extra_{rng.random()}", args.steps_per_trajectory)]), repeat=20)
    store.finish_run(gen)
    store.finish_run(bench)
    store.close()
    size_mb = os.path.getsize(path) / 2**20

    print(f"store: {path} ({size_mb:.0f} MiB), DuckDB threads: {os.cpu_count()} cores")
    print(f"{'ingest':<34}{'rows':>12}{'seconds':>10}{'rows/s':>12}")
    print(f"{'steps (add_trajectories)':<34}{n_steps:>12,}{ingest_s:>10.2f}{n_steps / ingest_s:>12,.0f}"
          f"   target >= 50,000 steps/s: {'ok' if n_steps / ingest_s >= 50_000 else 'MISSED'}")
    print(f"{'  incl. building the models':<34}{n_steps:>12,}{wall_s:>10.2f}{n_steps / wall_s:>12,.0f}")
    if n_tasks:
        print(f"{'tasks+static verdicts+lm_calls':<34}{n_tasks:>12,}{task_s:>10.2f}{n_tasks / task_s:>12,.0f}")
        print(f"{'rollouts+messages+verdicts':<34}{n_rollouts:>12,}{rollout_s:>10.2f}{n_rollouts / rollout_s:>12,.0f}"
              f"   ({n_messages:,} messages)")

    print(f"single-item writes at this size (median of 20, incl. building the model): add_tasks "
          f"{t_one_task:.1f} ms, add_rollouts+verdict {t_one_rollout:.1f} ms, add_trajectories {t_one_traj:.1f} ms")

    # ---- views: a fresh read-only open, as `t2t sql` would
    with TaskStore(path, read_only=True) as ro:
        con = ro._cursor()
        print()
        print(f"{'view (median of 5, ms)':<26}{'rows':>9}{'count(*)':>10}{'fetch arrow':>13}{'fetchall':>10}  < 200 ms")
        worst = 0.0
        for view in STANDARD_VIEWS:
            rows = con.execute(f"SELECT count(*) FROM {view}").fetchall()[0][0]
            t_count = median_ms(lambda: con.execute(f"SELECT count(*) FROM (SELECT * FROM {view})").fetchall())
            t_arrow = median_ms(lambda: con.sql(f"SELECT * FROM {view}").to_arrow_table())
            t_py = median_ms(lambda: con.execute(f"SELECT * FROM {view}").fetchall())
            worst = max(worst, t_arrow)
            print(f"{view:<26}{rows:>9,}{t_count:>10.1f}{t_arrow:>13.1f}{t_py:>10.1f}  "
                  f"{'ok' if t_arrow < 200 else 'MISSED'}")
        t_sel = median_ms(lambda: con.execute(
            "SELECT task_id, condition, verified, gold_tools FROM tasks_latest").fetchall())
        print(f"{'tasks_latest w/o json':<26}{'':>9}{'':>10}{'':>13}{t_sel:>10.1f}  (fetchall of 4 columns)")
        con.close()
    if tmpdir is not None:
        tmpdir.cleanup()


if __name__ == "__main__":
    main()
