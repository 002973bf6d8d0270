"""Whole-process start time of commands that need no store, LM or training (issue target:
`t2t domains` under 0.3 s). Runs each command `--repeat` times and prints min / median / max
seconds as one JSON object per command.

    python benchmarks/bench_start.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

COMMANDS = (["domains"], ["domain", "show", "retail"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    for command in COMMANDS:
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "trajectory2task.cli", *command], check=True,
                           stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - started)
        print(json.dumps({"command": "t2t " + " ".join(command), "min_s": round(min(times), 3),
                          "median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3)}))


if __name__ == "__main__":
    main()
