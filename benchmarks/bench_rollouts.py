"""Rollout throughput against the local OpenAI-compatible server at a fixed latency per call.

The server runs in a SEPARATE PROCESS (tests/llm_server.py's ScriptedLLMServer with a
responder that plays both sides), so its own CPU does not compete with the client for the
GIL. Each rollout is the real thing: the LM user simulator (DSPy ChatAdapter) and the LM
agent (native tools) over HTTP through dspy.LM, tool calls run on the rollout's own episode,
verdicts from the verifier, rollouts stored in DuckDB in atomic batches. Per rollout: the
user's opening, then twice (agent tool call, agent message, user answer) = 7 LM calls.

Ideal throughput: `concurrency` calls in flight at all times, i.e. concurrency / latency
calls per second (32 / 0.1 s = 320 calls/s). Rollouts run on one asyncio event loop (DSPy's
async LM calls), not a thread each; ``--actors N`` runs them on N Ray actors on this machine
(a local Ray, as ``t2t bench --processes N``), one loop each, the concurrency split between them
(the client CPU figure then leaves the actors out: they are not this process's children). Across
simulated nodes see benchmarks/bench_ray_rollouts.py. The script prints the achieved share of that
(targets: >= 95% at 32, >= 80% at 128), the same share for bare one-field dspy.Predict calls on as many
threads (the ceiling the DSPy client itself sets here), the client's and the server's CPU
per LM call, and the engine's own time per turn with no LM at all (reference agent x
scripted user), which is the pipeline's overhead.

    python benchmarks/bench_rollouts.py [--concurrency 32] [--latency 0.1] [--rollouts 640] [--actors 1] [--profile 30]

``--profile N`` runs the measured rollouts under a profiler and prints the N functions with the
most CPU time of their own: yappi where it is installed (every thread, so DSPy's
``asyncio.to_thread`` work shows too), else cProfile (the event loop's thread only). Profiling
slows the client several times over: its throughput figure is not the benchmark's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

AGENT_MODEL = "openai/gpt-4o-mini"  # known to DSPy's model map as function-calling: native engine
USER_MODEL = "openai/gpt-4o-mini"
_AGENT_TURN = re.compile(r'\\?"role\\?": ?\\?"agent\\?"')


# ============================================================================ server side


def respond(body: dict[str, Any]) -> Any:
    """Agent requests (they carry `tools`): look the order up, then answer. User requests:
    ask again after the first answer, stop after the second."""
    from tests.llm_server import Text, ToolCalls, chat_fields

    messages = body.get("messages") or []
    if "tools" in body:
        last = messages[-1] if messages else {}
        if last.get("role") == "tool":
            return Text("Your order is pending and will ship soon.")
        return ToolCalls([("get_order_details", {"order_id": "#W0000000"})])
    prompt = messages[-1].get("content", "") if messages else ""
    agent_turns = len(_AGENT_TURN.findall(prompt if isinstance(prompt, str) else json.dumps(prompt)))
    if agent_turns == 0:
        return Text(chat_fields(message="Hi, where is my order?"))
    if agent_turns < 2:
        return Text(chat_fields(message="Could you check it once more?"))
    return Text(chat_fields(message="Thanks! ###STOP###"))


def serve(latency_s: float) -> None:
    import signal
    import threading

    from tests.llm_server import ScriptedLLMServer

    server = ScriptedLLMServer(responder=respond, latency_s=latency_s).start()
    print(server.port, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    while not done.wait(0.5):
        pass
    server.stop()


def start_server(latency_s: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--latency", str(latency_s)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None
    port = int(proc.stdout.readline().strip())
    return proc, f"http://127.0.0.1:{port}/v1"


# ============================================================================ client side


def tasks_for(env: Any, n: int) -> dict[str, Any]:
    from trajectory2task.signatures.models import Action, Task, UserScenario

    orders = list(env.base.db.orders)[:n]
    return {f"bench-{i}": Task(id=f"bench-{i}", domain="retail",
                               scenario=UserScenario(reason_for_call=f"You want to know where order {o} is."),
                               gold_actions=[Action(name="get_order_details", arguments={"order_id": o})])
            for i, o in enumerate(orders)}


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished children."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def run_lm_rollouts(base_url: str, concurrency: int, rollouts: int, latency_s: float,
                    actors: int = 1) -> dict[str, Any]:
    from trajectory2task.domains import get_domain
    from trajectory2task.programs.loop.agent import LMAgent
    from trajectory2task.programs.lm.build import build_lm
    from trajectory2task.programs.lm.config import LMSettings
    from trajectory2task.programs.loop.rollout import RolloutEngine, RolloutJob, RolloutWriter, rollout_id_for
    from trajectory2task.programs.loop.user_sim import LMUser
    from trajectory2task.store import TaskStore

    domain = get_domain("retail")
    env = domain.environment(domain.generate_db(0, 200))
    tasks = tasks_for(env, 64)
    agent = LMAgent(build_lm(LMSettings(model=AGENT_MODEL, api_base=base_url)), env)
    user = LMUser(build_lm(LMSettings(model=USER_MODEL, api_base=base_url)))
    engine = RolloutEngine(env, user, [agent])
    task_ids = list(tasks)

    def jobs(run_id: str, count: int, offset: int = 0) -> list[RolloutJob]:
        return [RolloutJob(task_id=task_ids[i % len(task_ids)], agent=agent.name, trial=i + offset,
                           rollout_id=rollout_id_for(run_id, task_ids[i % len(task_ids)], agent.name, i + offset))
                for i in range(count)]

    with tempfile.TemporaryDirectory() as tmp, TaskStore(Path(tmp) / "bench.duckdb") as store:
        run_id = store.start_run("bench", {"benchmark": "bench_rollouts"})
        store.add_tasks(run_id, list(tasks.values()))
        engine.run_many(tasks, jobs(run_id, concurrency, offset=10**6), concurrency=concurrency)  # warm-up
        writer = RolloutWriter(store, run_id)
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        if actors > 1:
            from trajectory2task.programs.distributed.cluster import RayTarget
            from trajectory2task.programs.distributed.rollouts import run_engine_on_ray

            ray_run = run_engine_on_ray(RayTarget(num_cpus=actors), engine, tasks, jobs(run_id, concurrency, 10**6),
                                        concurrency=concurrency, actors=actors)  # warm-up: Ray and its actors start
            cpu0, wall0 = _cpu_s(), time.perf_counter()
            ray_run = run_engine_on_ray(RayTarget(num_cpus=actors), engine, tasks, jobs(run_id, rollouts),
                                        concurrency=concurrency, actors=actors, on_result=writer.add)
            results, crashes = ray_run.results, ray_run.crashes
        else:
            results, crashes = engine.run_many(tasks, jobs(run_id, rollouts), concurrency=concurrency,
                                               on_result=writer.add)
        writer.flush()
        wall = time.perf_counter() - wall0
        cpu = _cpu_s() - cpu0
        stored = store.query("SELECT count(*) FROM rollouts WHERE run_id = ?", [run_id])[1][0][0]
    calls = sum(sum(1 for m in r.rollout.messages if m.role in ("user", "assistant")) for r in results)
    errors = [r.rollout.error for r in results if r.rollout.error] + [c.error for c in crashes]
    ideal = concurrency / latency_s
    return {"rollouts": len(results), "stored": stored, "lm_calls": calls, "wall_s": wall,
            "calls_per_s": calls / wall, "ideal_calls_per_s": ideal, "share_of_ideal": calls / wall / ideal,
            "client_cpu_ms_per_call": 1000 * cpu / calls, "errors": errors[:3]}


def bare_predict(base_url: str, concurrency: int, calls_per_thread: int, latency_s: float) -> dict[str, float]:
    """The ceiling to compare with: `concurrency` threads doing nothing but a one-field
    dspy.Predict through the same client and server."""
    import threading

    import dspy

    from trajectory2task.programs.lm.build import build_lm

    from trajectory2task.programs.lm.config import LMSettings

    class Echo(dspy.Signature):
        """Reply."""

        conversation: str = dspy.InputField()
        message: str = dspy.OutputField()

    lm = build_lm(LMSettings(model=USER_MODEL, api_base=base_url))
    predict = dspy.Predict(Echo)

    def work() -> None:
        with dspy.context(lm=lm.copy()):
            for _ in range(calls_per_thread):
                predict(conversation="[]")

    threads = [threading.Thread(target=work) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rate = concurrency * calls_per_thread / (time.perf_counter() - start)
    return {"bare_predict_calls_per_s": rate, "bare_predict_share_of_ideal": rate * latency_s / concurrency}


def engine_overhead(turn_rollouts: int = 400) -> dict[str, float]:
    """Time per turn of the engine alone: oracle agent x scripted user, no LM."""
    from trajectory2task.domains import get_domain
    from trajectory2task.programs.loop.agent import OracleAgent
    from trajectory2task.programs.loop.rollout import RolloutEngine
    from trajectory2task.programs.loop.user_sim import ScriptedUser
    from tests.closed_loop import make_tasks

    domain = get_domain("retail")
    env = domain.environment(domain.generate_db(0, 500))
    tasks = list(make_tasks(env).values())
    from trajectory2task.programs.loop.rollout import RolloutJob

    engine = RolloutEngine(env, ScriptedUser(env.domain.tools), [OracleAgent(env)])
    by_id = {t.id: t for t in tasks}
    jobs = [RolloutJob(task_id=tasks[i % len(tasks)].id, agent="oracle", trial=i, rollout_id=f"r{i}")
            for i in range(turn_rollouts)]
    engine.warm(tasks)
    start = time.perf_counter()
    results, _ = engine.run_many(by_id, jobs, concurrency=1)
    elapsed = time.perf_counter() - start
    turns = sum(sum(1 for m in r.rollout.messages if m.role in ("user", "assistant")) for r in results)
    return {"turns": turns, "engine_ms_per_turn": 1000 * elapsed / turns}


@contextlib.contextmanager
def profiled(top: int) -> Iterator[None]:
    """Profile the block when ``top`` > 0 and print its ``top`` functions by own CPU time."""
    if top <= 0:
        yield
        return
    try:
        import yappi
    except ImportError:
        yappi = None
    if yappi is not None:
        yappi.set_clock_type("cpu")
        yappi.start(builtins=False)
        try:
            yield
        finally:
            yappi.stop()
            stats = yappi.get_func_stats()
            stats.sort("tsub")
            print("profile (yappi, CPU time, all threads): own s, total s, calls, function")
            for entry in list(stats)[:top]:
                where = entry.module.split("site-packages/")[-1]
                print(f"{entry.tsub:8.3f} {entry.ttot:8.3f} {entry.ncall:8d}  {where}:{entry.lineno} {entry.name}")
        return
    import cProfile
    import pstats

    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        print("profile (cProfile, the event loop's thread only; install yappi for every thread):")
        pstats.Stats(profile).sort_stats("tottime").print_stats(top)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc; -inf elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("-inf")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--rollouts", type=int, default=640)
    parser.add_argument("--actors", type=int, default=1,
                        help="run the rollouts on this many Ray actors on this machine (a local Ray)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the bare dspy.Predict comparison")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="profile the measured rollouts and print the N costliest functions")
    args = parser.parse_args()
    if args.serve:
        serve(args.latency)
        return
    proc, base_url = start_server(args.latency)
    try:
        server_cpu0 = process_cpu_s(proc.pid)
        with profiled(args.profile):
            figures = run_lm_rollouts(base_url, args.concurrency, args.rollouts, args.latency, args.actors)
        server_cpu = process_cpu_s(proc.pid) - server_cpu0
        if server_cpu >= 0:
            figures["server_cpu_ms_per_call"] = 1000 * server_cpu / figures["lm_calls"]  # warm-up included
        if not args.no_ceiling:
            figures.update(bare_predict(base_url, args.concurrency, 60, args.latency))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    figures.update(engine_overhead())
    figures.update(concurrency=args.concurrency, latency_s=args.latency, cpus=os.cpu_count(), actors=args.actors,
                   load_average=os.getloadavg())
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{figures['rollouts']} rollouts ({figures['stored']} stored), {figures['lm_calls']} LM calls in "
          f"{figures['wall_s']:.2f} s at concurrency {args.concurrency}, {args.latency * 1000:.0f} ms per call, "
          f"{figures['cpus']} CPU(s), {args.actors} Ray actor(s); load average after: "
          f"{' '.join(f'{x:.2f}' for x in figures['load_average'])}")
    print(f"throughput: {figures['calls_per_s']:.1f} calls/s of an ideal {figures['ideal_calls_per_s']:.0f} = "
          f"{100 * figures['share_of_ideal']:.1f}% (target >= 95% at 32, >= 80% at 128)")
    if "bare_predict_share_of_ideal" in figures:
        print(f"for comparison, bare one-field dspy.Predict calls on {args.concurrency} threads: "
              f"{figures['bare_predict_calls_per_s']:.1f} calls/s = {100 * figures['bare_predict_share_of_ideal']:.1f}%")
    print(f"client CPU per LM call (DSPy + HTTP + pipeline): {figures['client_cpu_ms_per_call']:.2f} ms")
    if "server_cpu_ms_per_call" in figures:
        print(f"server CPU per LM call (other process): {figures['server_cpu_ms_per_call']:.2f} ms")
    print(f"engine alone (no LM): {figures['engine_ms_per_turn'] * 1000:.0f} us per turn "
          f"over {figures['turns']} turns")
    if figures["errors"]:
        print(f"errors: {figures['errors']}")


if __name__ == "__main__":
    main()
