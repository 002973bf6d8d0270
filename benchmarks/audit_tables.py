"""The figures of docs/verification.md's audit tables, measured again.

For each domain, on tau2's database and on a fresh generated one, runs what a user runs:
`t2t domain generate-db D --seed 17 --users 500` (fresh only), `t2t generate --domain D --n N
--seed 17`, `t2t export --format tau2 --where verified`, `t2t audit --json`; and prints the
verified tasks per condition, every audit row with a finding (or n/a), and the diversity
figures of the tables, as one JSON line per (domain, database).

    python benchmarks/audit_tables.py [--domains retail airline] [--n 120] [--reference ../shared/reference]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _t2t(*args: str) -> str:
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
    for key in [k for k in env if k.startswith("T2T_")]:
        del env[key]  # offline: no model configured
    done = subprocess.run([sys.executable, "-m", "trajectory2task.cli", *args], env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"t2t {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def measure(domain: str, db: Path | None, n: int, tmp: Path) -> dict[str, Any]:
    start = time.perf_counter()
    if db is None:
        db = tmp / f"{domain}-fresh.json"
        _t2t("domain", "generate-db", domain, "--seed", "17", "--users", "500", "--out", str(db))
    store, tasks = tmp / f"{domain}-{db.stem}.duckdb", tmp / f"{domain}-{db.stem}.json"
    _t2t("generate", "--domain", domain, "--n", str(n), "--seed", "17", "--db", str(db), "--store", str(store),
         "--json")
    _t2t("export", "--store", str(store), "--format", "tau2", "--where", "verified", "--out", str(tasks))
    report = json.loads(_t2t("audit", str(tasks), "--domain", domain, "--db", str(db), "--json"))
    d = report["diversity"]
    return {"domain": domain, "db": db.name, "n": n, "verified": d["by_condition"],
            "problems": {k: v for k, v in report["counts"].items() if v != 0},
            "writes_per_task": d["writes_per_task"], "distinct_write_sequences": d["distinct_write_sequences"],
            "write_tool_mix": d["write_tool_mix"], "gold_length": d["gold_length"],
            "customers": [d["distinct_customers"], d["max_tasks_per_customer"]],
            "communicate_share": d["communicate_share"], "handoff_tasks": d["handoff_tasks"],
            "generic_tool_tasks": d["generic_tool_tasks"], "infeasible_by_tool": d["by_condition_and_tool"].get(
                "infeasible", {}), "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", nargs="+", default=["retail", "airline"])
    parser.add_argument("--n", type=int, default=120)
    parser.add_argument("--reference", type=Path, default=REPO.parent / "shared" / "reference")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for domain in args.domains:
            reference = args.reference / f"tau2-{domain}" / "db.json"
            for db in ([reference] if reference.is_file() else []) + [None]:
                print(json.dumps(measure(domain, db, args.n, Path(folder))), flush=True)


if __name__ == "__main__":
    main()
