"""Wall time of the README's main command, offline: `t2t generate --domain retail --n 40`.

Runs the real command in a subprocess (interpreter start, imports, database generation,
exploration, writing, adaptation, verification and the store included), several times,
each into a fresh store, and prints the median. Target: under 60 s on these machines.

    python benchmarks/bench_generate.py [--n 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
    for key in [k for k in env if k.startswith("T2T_")]:
        del env[key]  # offline: no model configured
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            store = Path(tmp) / f"run{i}.duckdb"
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "trajectory2task.cli", "generate", "--domain", "retail", "--n",
                                   str(args.n), "--store", str(store), "--json"],
                                  env=env, capture_output=True, text=True)
            seconds.append(time.perf_counter() - start)
            if done.returncode != 0:
                raise SystemExit(f"t2t generate failed: {done.stderr.strip()}")
    print(json.dumps({"n": args.n, "runs": args.repeat, "median_s": round(statistics.median(seconds), 2),
                      "max_s": round(max(seconds), 2), "target_s": 60}, indent=2))


if __name__ == "__main__":
    main()
