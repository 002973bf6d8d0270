"""Whole-process gold replay of tau2's 114 retail tasks: `t2t replay` against tau2-bench's own
code, side by side in one run (issue target: at least 50x faster).

Each round starts both as fresh processes, one after the other, and times each from start
to exit (wall clock): start-up, imports, loading db.json and tasks.json, the work and the
output are all counted. Our side is `t2t replay --domain retail --db db.json tasks.json
--json`: each task's gold actions on a fresh copy of the database, then its errors, changed
records and end-state hash. tau2's side runs under a Python environment where tau2-bench is
installed (``--tau2-python``; tau2 is no dependency of this project), in this same file
(``--tau2-side``), and does for each task what tau2 does to grade it, with tau2's own code:

- ``--tau2-work evaluator`` (default): ``EnvironmentEvaluator.calculate_reward`` on the task
  with an empty trajectory: it builds a fresh environment for the trajectory and another for
  the gold actions, replays the gold actions and compares the two DB hashes.
- ``--tau2-work replay``: the replay alone: one fresh environment per task (as tau2's
  ``get_environment`` makes it, the database loaded from db.json), the gold actions through
  ``make_tool_call``, then ``get_db_hash``. Less work than the evaluator does, so a lower
  bound on tau2's time.

Both sides read the same files (``--shared``/tau2-retail) and must agree on the number of
tasks (and, for ``replay``, on the tasks whose gold actions fail) or the run stops. Prints
one JSON object: each side's wall seconds (min, median, max over the rounds) and the speed-up
(the median of the round-by-round ratios, tau2 / t2t).

    python benchmarks/bench_replay_vs_tau2.py --tau2-python /path/to/tau2-venv/bin/python \\
        [--tau2-data /path/to/tau2-bench/data] [--rounds 5] [--tau2-work evaluator|replay] \\
        [--shared ../shared/reference]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_start import compile_package  # this folder is on sys.path when a script here runs

REPO = Path(__file__).resolve().parents[1]
# litellm (imported by tau2) fetches a price list over the network at import unless told not to
QUIET_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}


class BenchError(Exception):
    """The run cannot give a fair comparison (tau2 missing, a side failed or disagrees)."""


# ---------------------------------------------------------------- tau2's side (run by --tau2-python)


def tau2_side(db_path: str, tasks_path: str, work: str) -> dict[str, Any]:
    """Grade every task's gold actions with tau2's own code; runs where tau2 is installed."""
    from tau2.data_model.tasks import Task
    from tau2.domains.retail.data_model import RetailDB
    from tau2.domains.retail.environment import get_environment
    from tau2.evaluator.evaluator_env import EnvironmentEvaluator

    with open(tasks_path, encoding="utf-8") as fh:
        tasks = [Task.model_validate(raw) for raw in json.load(fh)]

    def fresh_environment(solo_mode: bool = False, **_: Any) -> Any:
        # what get_environment() does by default, over the given db.json
        return get_environment(db=RetailDB.load(db_path), solo_mode=solo_mode)

    failing = 0
    for task in tasks:
        if work == "evaluator":
            EnvironmentEvaluator.calculate_reward(environment_constructor=fresh_environment, task=task,
                                                  full_trajectory=[])
            continue
        environment = fresh_environment()
        failed = False
        for action in task.evaluation_criteria.actions or []:
            try:
                environment.make_tool_call(tool_name=action.name, requestor=action.requestor, **action.arguments)
            except Exception:  # noqa: BLE001 - tau2's tools refuse a call by raising; counted, as t2t does
                failed = True
        environment.get_db_hash()
        failing += failed
    return {"tasks": len(tasks), "failing_gold": failing if work == "replay" else None}


# ---------------------------------------------------------------- the comparison


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["(no message)"]
        raise BenchError(f"{' '.join(command[:4])} ... exited {result.returncode}: {tail[0]}")
    return elapsed, result.stdout


def _t2t_summary(stdout: str) -> dict[str, Any]:
    rows = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return {"tasks": len(rows), "failing_gold": sum(1 for row in rows if row["errors"])}


def _check_tau2(tau2_python: str, env: dict[str, str]) -> None:
    if not Path(tau2_python).is_file():
        raise BenchError(f"--tau2-python {tau2_python}: no such file; install tau2-bench in its own environment "
                         "(python3.12 -m venv VENV && VENV/bin/pip install /path/to/tau2-bench) and pass VENV/bin/python")
    probe = subprocess.run([tau2_python, "-c", "from tau2.domains.retail.utils import RETAIL_POLICY_PATH; "
                            "assert RETAIL_POLICY_PATH.is_file(), f'{RETAIL_POLICY_PATH} not found: give --tau2-data'"],
                           capture_output=True, text=True, env=env)
    if probe.returncode != 0:
        tail = probe.stderr.strip().splitlines()[-1:] or ["(no message)"]
        raise BenchError(f"--tau2-python {tau2_python} cannot import tau2-bench: {tail[0]}")


def _spread(times: list[float]) -> dict[str, float]:
    return {"min_s": round(min(times), 3), "median_s": round(statistics.median(times), 3),
            "max_s": round(max(times), 3)}


def compare(tau2_python: str, tau2_data: Path | None, data: Path, rounds: int, work: str) -> dict[str, Any]:
    env = dict(os.environ, **QUIET_ENV)
    if tau2_data is not None:
        env["TAU2_DATA_DIR"] = str(tau2_data)  # where tau2 reads its policy files
    _check_tau2(tau2_python, env)
    db, tasks = data / "db.json", data / "tasks.json"
    for path in (db, tasks):
        if not path.is_file():
            raise BenchError(f"{path}: not found (give --shared, the folder holding tau2-retail/)")
    ours = [sys.executable, "-m", "trajectory2task.cli", "replay", "--domain", "retail", "--db", str(db), str(tasks),
            "--json"]
    theirs = [tau2_python, str(Path(__file__).resolve()), "--tau2-side", str(db), str(tasks), "--tau2-work", work]
    # our bytecode compiled as an install compiles it (tau2's came with pip install), then one
    # uncounted run of each: files in the page cache
    compile_package()
    _, ours_out = _timed(ours, env)
    _, theirs_out = _timed(theirs, env)
    ours_summary, theirs_summary = _t2t_summary(ours_out), json.loads(theirs_out)
    if ours_summary["tasks"] != theirs_summary["tasks"] or (
            work == "replay" and ours_summary["failing_gold"] != theirs_summary["failing_gold"]):
        raise BenchError(f"the two sides disagree: t2t {ours_summary}, tau2 {theirs_summary}")
    ours_s, theirs_s = [], []
    for _ in range(rounds):
        ours_s.append(_timed(ours, env)[0])
        theirs_s.append(_timed(theirs, env)[0])
    ratios = [t / o for o, t in zip(ours_s, theirs_s)]
    return {"tasks": ours_summary["tasks"], "failing_gold": ours_summary["failing_gold"], "tau2_work": work,
            "rounds": rounds, "t2t_replay": _spread(ours_s), "tau2": _spread(theirs_s),
            "speedup_median": round(statistics.median(ratios), 1), "speedup_min": round(min(ratios), 1),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tau2-python", help="the python of an environment with tau2-bench installed")
    parser.add_argument("--tau2-data", type=Path,
                        help="tau2-bench's data/ folder, where tau2 reads its policies (not needed for an editable "
                             "install of tau2-bench)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "reference",
                        help="folder holding tau2-retail/ (db.json, tasks.json)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tau2-work", choices=("evaluator", "replay"), default="evaluator")
    parser.add_argument("--tau2-side", nargs=2, metavar=("DB", "TASKS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tau2_side:
        print(json.dumps(tau2_side(*args.tau2_side, args.tau2_work)))
        return
    if args.tau2_python is None:
        parser.error("--tau2-python is required: the python of an environment where tau2-bench is installed")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        print(json.dumps(compare(args.tau2_python, args.tau2_data, args.shared / "tau2-retail", args.rounds, args.tau2_work), indent=2))
    except BenchError as exc:
        print(f"bench_replay_vs_tau2: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
