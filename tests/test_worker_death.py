"""`bench --processes N` (a local Ray) dies with its driver: a SIGKILLed bench leaves no Ray
process behind (the actors calling the LM, the raylet, the GCS), nothing holding the store open.
The actors belong to the driver and Ray ends the processes it started with the process that
started them; this checks that it does, and that `--resume` then finishes the run with every
rollout stored once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli import REPO, run_t2t
from tests.closed_loop import environment, is_user_request, make_tasks, store_tasks, user_reply
from tests.llm_server import ScriptedLLMServer
from trajectory2task.store import TaskStore, read_only_query

pytest.importorskip("ray")
pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the workers")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def _children(parent: int) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == parent and stat[0] != "Z":
                out.add(int(entry.name))
    return out


def _descendants(root: int) -> set[int]:
    out: set[int] = set()
    frontier = {root}
    while frontier:
        found = set().union(*(_children(pid) for pid in frontier)) - out
        out |= found
        frontier = found
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


NODE_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"  # a zombie has exited; only its reaping is left


def test_workers_exit_when_the_bench_parent_is_killed(tmp_path):
    store = tmp_path / "t2t.duckdb"
    tasks = make_tasks(environment())
    with TaskStore(store) as ts:
        store_tasks(ts, tasks)

    def responder(body):
        assert is_user_request(body)
        return user_reply("Please help me. ###STOP###")

    # every user-simulator call takes 60 s: the actors are mid-call when the driver dies
    with ScriptedLLMServer(responder=responder, latency_s=60) as server:
        env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
        bench = subprocess.Popen(
            [sys.executable, "-m", "trajectory2task.cli", "bench", "--agent-lm", "oracle", "--user-lm",
             "openai/gpt-4o-mini", "--api-base", server.base_url, "--processes", "2", "--store", str(store),
             "--timeout", "120"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and len(server.requests) < 2:
                assert bench.poll() is None, bench.stderr.read().decode() if bench.stderr else ""
                time.sleep(0.1)
            ray_processes = {pid: _cmdline(pid) for pid in _descendants(bench.pid)}
            actors = [pid for pid, cmd in ray_processes.items() if cmd.startswith("ray::RolloutActor")]
            assert len(actors) == 2 and len(server.requests) >= 2, "the actors never started calling the LM"
            bench.send_signal(signal.SIGKILL)
            bench.wait(timeout=10)
            # Ray's per-node helpers (dashboard and runtime-env agents) poll for their raylet and go
            # later on their own; they run no rollout and hold no store
            watched = [pid for pid, cmd in ray_processes.items() if not cmd.startswith(NODE_AGENTS)]
            gone_by = time.monotonic() + 30
            while time.monotonic() < gone_by and any(_alive(pid) for pid in watched):
                time.sleep(0.05)
            left = [(pid, ray_processes[pid]) for pid in watched if _alive(pid)]
            calls_at_death = len(server.requests)
            time.sleep(1.0)
            calls_after = len(server.requests)
        finally:
            if bench.poll() is None:
                bench.kill()
                bench.wait()
            for pid in _descendants(bench.pid) | set(locals().get("ray_processes", ())):  # none left behind
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
    assert left == [], f"Ray process(es) {left} outlived their SIGKILLed driver"
    assert calls_after == calls_at_death  # nothing calls the LM any more
    # nothing holds the store: --resume finishes the run, every rollout stored once
    run_id = re.search(r"--resume (\w+)", bench.stderr.read().decode() if bench.stderr else "")
    assert run_id is not None
    with ScriptedLLMServer(responder=responder) as fast:
        done = run_t2t("bench", "--resume", run_id.group(1), "--api-base", fast.base_url, "--store", str(store),
                       "--json")
    assert done.returncode in (0, 1), done.stderr  # 1: the user stops at once, so the oracle fails
    _, rows = read_only_query(store, "SELECT count(*), count(DISTINCT rollout_id) FROM rollouts WHERE run_id = ?",
                              [run_id.group(1)])
    assert rows == [(len(tasks), len(tasks))]
