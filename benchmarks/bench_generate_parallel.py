"""Offline generation on several cores (``--ray``) against one process: items and verified
tasks per second, and the speed-up.

Each run goes through ``trajectory2task.generate`` into a fresh store (one transaction per item,
as `t2t generate` writes): first in one process, then on a local Ray of ``--cores`` CPUs (a
worker per CPU but one: the driver stores every item and makes items itself between stores).
Ray's own start (``ray.init``) is timed apart: it is paid once per command, not per item.
"steady" rates count from the first stored item to the last: they leave out loading (and, on
Ray, the workers' own start: a Python process importing the package and loading the domain),
which a long run pays once. Every run's verified tasks are checked equal to the first run's
(the same bytes, whatever ran them). Rounds alternate one process and Ray (each Ray started for
its round and stopped after it), so a drift in the machine's speed falls on both;
``speedup_by_round`` gives each round's ratio, ``core_scaling_by_round`` what a pure-Python
loop gained from the cores just before it (its spread is the machine's own noise), and
``of_core_scaling_by_round`` the one over the other. Targets (issue 27): on 2 cores, at least
1.8x the one-process rate and at least 100 verified tasks per second. Give ``--repeat 3``
(medians).

    python benchmarks/bench_generate_parallel.py [--n 400] [--cores 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _run(n: int, store: Path, ray: Any) -> tuple[float, float, Any]:
    """(whole seconds, seconds from the first stored item to the last, result)."""
    from trajectory2task.usecases import generate

    stored: list[float] = []
    start = time.perf_counter()
    result = generate("retail", n=n, store=store, ray=ray, progress=lambda item: stored.append(time.perf_counter()))
    return time.perf_counter() - start, stored[-1] - stored[0], result


def _spin(seconds: float) -> int:
    """Pure-Python work for ``seconds``: how many steps one core makes."""
    steps, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(10_000):
            steps += 1
    return steps


def _core_scaling(cores: int, seconds: float = 2.0) -> float:
    """What ``cores`` processes spinning at once make together over what one makes alone, just
    now: on a machine whose cores are its own, ``cores``; on one sharing them with other
    machines, less, or (when the one alone was slowed) more. Its spread over the rounds shows how
    far the machine's own noise reaches."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        before = pool.apply(_spin, (seconds,))
        together = sum(pool.map(_spin, [seconds] * cores, chunksize=1))
        after = pool.apply(_spin, (seconds,))
    return together / ((before + after) / 2)  # one alone on each side: a drift in between evens out


def _verified_bytes(result: Any) -> list[str]:
    return sorted(t.model_dump_json().replace(result.run_id, "RUN") for t in result.verified())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    for key in [k for k in os.environ if k.startswith("T2T_")]:
        del os.environ[key]  # offline: no model, no Ray unless asked here
    import ray

    from trajectory2task.programs.distributed.cluster import RayTarget, connect

    one: list[float] = []
    many: list[float] = []
    one_steady: list[float] = []
    many_steady: list[float] = []
    ratios: list[float] = []  # each round's one-process seconds over its Ray seconds
    ceilings: list[float] = []  # the machine's own scaling over the cores, measured each round
    ray_starts: list[float] = []
    reference: list[str] | None = None
    verified = 0
    with tempfile.TemporaryDirectory() as tmp:
        _run(5, Path(tmp) / "warm.duckdb", None)  # imports and first-use costs out of the timed runs
        for i in range(args.repeat):
            # rounds interleave the two, so a drift in the machine's speed hits both alike; Ray
            # runs alone in its round (started after the one-process run, stopped after its own),
            # as `t2t generate --ray local` starts it for one command
            ceilings.append(_core_scaling(args.cores))
            seconds, steady, result = _run(args.n, Path(tmp) / f"one{i}.duckdb", None)
            one.append(seconds)
            one_steady.append(steady)
            reference = reference or _verified_bytes(result)
            verified = len(result.verified())
            start = time.perf_counter()
            target = RayTarget(num_cpus=args.cores)
            connect(target)
            ray_starts.append(time.perf_counter() - start)
            seconds, steady, result = _run(args.n, Path(tmp) / f"ray{i}.duckdb", target)
            ray.shutdown()
            many.append(seconds)
            many_steady.append(steady)
            ratios.append(one[-1] / seconds)
            if _verified_bytes(result) != reference:
                raise SystemExit("the Ray run's verified tasks differ from the one-process run's")
    one_s, many_s = statistics.median(one), statistics.median(many)
    ray_start = statistics.median(ray_starts)
    # n - 1 items are stored between the first stored item and the last
    steady_one = (args.n - 1) / statistics.median(one_steady)
    steady_many = (args.n - 1) / statistics.median(many_steady)
    per_item = verified / args.n
    print(json.dumps({
        "n": args.n, "cores": args.cores, "runs": args.repeat, "verified_tasks": verified,
        "one_process": {"seconds": round(one_s, 2), "items_per_s": round(args.n / one_s, 1),
                        "verified_per_s": round(verified / one_s, 1)},
        "ray": {"seconds": round(many_s, 2), "items_per_s": round(args.n / many_s, 1),
                "verified_per_s": round(verified / many_s, 1), "ray_init_s": round(ray_start, 2)},
        "speedup": round(one_s / many_s, 2),
        "speedup_by_round": [round(r, 2) for r in ratios],
        # a pure-Python loop on all the cores against one, before each round (`_core_scaling`)
        "core_scaling_by_round": [round(c, 2) for c in ceilings],
        # each round's speed-up over what the cores gave that loop: how much of the machine's
        # own scaling the run reached (the loop and the run are a minute apart: noisy too)
        "of_core_scaling_by_round": [round(r / c, 2) for r, c in zip(ratios, ceilings)],
        "steady": {"one_process_verified_per_s": round(steady_one * per_item, 1),
                   "ray_verified_per_s": round(steady_many * per_item, 1),
                   "speedup": round(steady_many / steady_one, 2)},
        "targets": {"speedup": 1.8, "verified_per_s": 100},
    }, indent=2))


if __name__ == "__main__":
    main()
