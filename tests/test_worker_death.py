"""`bench --processes N` workers die with their parent: a SIGKILLed bench leaves no worker
calling the LM or holding the store open."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli import REPO
from tests.closed_loop import environment, is_user_request, make_tasks, store_tasks, user_reply
from tests.llm_server import ScriptedLLMServer
from trajectory2task.store import TaskStore

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists() or
                                "fork" not in __import__("multiprocessing").get_all_start_methods(),
                                reason="needs fork and /proc to find the workers")


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


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"  # a zombie has exited; only its reaping is left


def test_workers_exit_when_the_bench_parent_is_killed(tmp_path):
    store = tmp_path / "t2t.duckdb"
    with TaskStore(store) as ts:
        store_tasks(ts, make_tasks(environment()))

    def responder(body):
        assert is_user_request(body)
        return user_reply("Please help me. ###STOP###")

    # every user-simulator call takes 60 s: the workers are mid-call when the parent dies
    with ScriptedLLMServer(responder=responder, latency_s=60) as server:
        env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
        bench = subprocess.Popen(
            [sys.executable, "-m", "trajectory2task.cli", "bench", "--agent-lm", "oracle", "--user-lm",
             "openai/gpt-4o-mini", "--api-base", server.base_url, "--processes", "2", "--store", str(store),
             "--timeout", "120"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            workers: set[int] = set()
            while time.monotonic() < deadline and (len(workers) < 2 or len(server.requests) < 2):
                assert bench.poll() is None, bench.stderr.read().decode() if bench.stderr else ""
                workers = _children(bench.pid)
                time.sleep(0.1)
            assert len(workers) >= 2 and len(server.requests) >= 2, "the workers never started calling the LM"
            bench.send_signal(signal.SIGKILL)
            bench.wait(timeout=10)
            gone_by = time.monotonic() + 5
            while time.monotonic() < gone_by and any(_alive(pid) for pid in workers):
                time.sleep(0.05)
            left = [pid for pid in workers if _alive(pid)]
        finally:
            if bench.poll() is None:
                bench.kill()
                bench.wait()
            for pid in _children(bench.pid) | workers:  # do not leave them behind if the test fails
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
    assert left == [], f"worker(s) {left} outlived their SIGKILLed parent"
