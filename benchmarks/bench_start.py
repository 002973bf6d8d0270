"""Whole-process start time of commands that need no store, LM or training (issue target:
`t2t domains` under 0.3 s). Runs the installed `t2t` script (the one beside this Python, as a
user's shell finds it) `--repeat` times per command and prints min / median / max seconds as one
JSON object per command.

The package's bytecode is compiled first, as installing it does: where PYTHONDONTWRITEBYTECODE
is set and the package is an editable checkout, Python would otherwise compile every module
of ours from source on every start (about 0.1 s more here), which an installed `t2t` never
does. `--no-compile` leaves the bytecode cache as it is, to time that case.

    python benchmarks/bench_start.py [--repeat 10] [--no-compile]
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (["domains"], ["domain", "show", "retail"])
# the package's folders (pyproject maps each to a subpackage of trajectory2task)
PACKAGES = ("trajectory2task", "trajectory2task.domains", "trajectory2task.signatures", "trajectory2task.programs",
            "trajectory2task.optimize", "trajectory2task.store")


def compile_package() -> None:
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(folder, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true", help="time with the bytecode cache as it is")
    args = parser.parse_args()
    script = Path(sys.executable).parent / "t2t"
    if not script.is_file():
        raise SystemExit(f"no t2t script beside {sys.executable}: install the package into this environment first")
    if not args.no_compile:
        compile_package()
    for command in COMMANDS:
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            subprocess.run([str(script), *command], check=True,
                           stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - started)
        print(json.dumps({"command": "t2t " + " ".join(command), "min_s": round(min(times), 3),
                          "median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
                          "bytecode_compiled_first": not args.no_compile,
                          "load_average": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
