"""Replay + end-state comparison speed over tau2's tasks (the one-time DB load excluded).

For each task: open a fresh episode, replay its gold actions, and compare the end state with
a reference end state (the state hash of an independent replay). The timed replays run every
call (``episode(cached=False)``): the environment's replay tree would answer all of them after
the first round, and a first replay is what a user pays; the reference replays go through the
tree, so each round also checks that it gives the state the tools give. Also times judging one
rollout against its task beyond the replay itself (verdict assembly, cached gold). Runs on
tau2's 114 retail tasks and 50 airline tasks; one JSON object per domain.

    python benchmarks/bench_replay.py [--domain retail|airline|all] [--shared ../shared/reference] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from trajectory2task.domains import get_domain
from trajectory2task.programs.verification.verifier import Verifier, execute_calls
from trajectory2task.store.files import load_tasks

REPO = Path(__file__).resolve().parents[1]
DOMAINS = ("retail", "airline")


def bench(domain_name: str, data: Path, repeat: int) -> dict[str, Any]:
    domain = get_domain(domain_name)
    t0 = time.perf_counter()
    env = domain.environment(domain.load_db(str(data / "db.json")))
    load_s = time.perf_counter() - t0
    tasks, _ = load_tasks(data / "tasks.json", domain=domain_name)
    reference = {}
    for task in tasks:
        episode = env.episode()
        execute_calls(episode, task.gold_actions)
        reference[task.id] = episode.state_hash()

    # replay + end-state comparison
    per_task_ms = []
    for _ in range(repeat):
        start = time.perf_counter()
        matches = 0
        for task in tasks:
            episode = env.episode(cached=False)
            for action in task.gold_actions:
                episode.call(action.name, action.arguments)
            matches += episode.state_hash() == reference[task.id]
        elapsed = time.perf_counter() - start
        assert matches == len(tasks)
        per_task_ms.append(elapsed / len(tasks) * 1000)
    replay_ms = statistics.median(per_task_ms)

    # judging one rollout beyond its replay: the rollout's end hash is known (as in a live rollout)
    verifier = Verifier(env)
    steps = {t.id: execute_calls(env.episode(), t.gold_actions) for t in tasks}
    for task in tasks:
        verifier.replay_gold(task)
    judge_ms = []
    for _ in range(repeat):
        start = time.perf_counter()
        for task in tasks:
            verifier.judge(task, steps[task.id], end_state_hash=reference[task.id])
        judge_ms.append((time.perf_counter() - start) / len(tasks) * 1000)

    return {"domain": domain_name, "tasks": len(tasks), "db_load_s": round(load_s, 3),
            "replay_and_compare_ms_per_task": round(replay_ms, 4),
            "replay_and_compare_tasks_per_s": round(1000 / replay_ms),
            "judge_ms_per_rollout_beyond_replay": round(statistics.median(judge_ms), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", choices=(*DOMAINS, "all"), default="all")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "reference",
                        help="folder holding tau2-retail/ and tau2-airline/")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    for name in DOMAINS if args.domain == "all" else (args.domain,):
        print(json.dumps(bench(name, args.shared / f"tau2-{name}", args.repeat), indent=2))


if __name__ == "__main__":
    main()
