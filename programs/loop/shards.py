"""Rollouts sharded over forked worker processes (`RolloutEngine.run_many(workers=N)`).

Why processes: one event loop runs every rollout's Python (DSPy's adapters and request
building, HTTP, the pipeline) on one core, ~1-2 ms of CPU per LM call; at 128 calls in flight
against a 100 ms server that is the bound, not the server. Each worker is a fork of this
process (the engine, its environment, agents and user simulator as they are, nothing
pickled on the way in) running its shard of the jobs on its own event loop with its share of
the concurrency. Each finished rollout, with the LM calls the worker's ledger recorded since
the last one, comes back over a pipe; the parent calls ``on_result`` (the store lives
here: DuckDB has one writer) and adds the calls to its own ledger.

A worker that dies reports its unfinished jobs as crashes; the batch goes on. A worker dies
with its parent: on Linux the kernel sends it SIGKILL when the parent goes
(``PR_SET_PDEATHSIG``); elsewhere a watchdog thread sees it re-parented and exits. Either way
it stops calling the LM at once and never blocks on a pipe nobody reads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from trajectory2task.programs.lm import event_loop

if TYPE_CHECKING:
    from trajectory2task.programs.loop.rollout import RolloutCrash, RolloutEngine, RolloutJob, RolloutResult
    from trajectory2task.signatures.models import Task


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with(parent: int) -> None:
    """End this process when ``parent`` is gone (SIGKILL from the kernel on Linux, plus a
    watchdog everywhere: it also covers a parent that died before the prctl took effect)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still holds
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)  # no cleanup: the parent owns the store; nothing here is worth finishing
            threading.Event().wait(0.5)

    threading.Thread(target=watch, name="t2t-parent-watchdog", daemon=True).start()


def _worker(engine: RolloutEngine, tasks: dict[str, Task], jobs: Sequence[RolloutJob], concurrency: int,
            ledger: Any, conn: Connection, parent: int, siblings: Sequence[Connection] = ()) -> None:
    _die_with(parent)
    for other in siblings:  # read ends of earlier workers' pipes, inherited by the fork: held open
        other.close()       # here they would keep a dead parent's pipes writable and full
    def send(result: RolloutResult) -> None:
        calls = ledger.take() if ledger is not None else []
        conn.send_bytes(pickle.dumps(("result", result, calls)))

    try:
        _, crashes = event_loop.run(engine.arun_many(tasks, jobs, concurrency, send))
        conn.send_bytes(pickle.dumps(("done", crashes, ledger.take() if ledger is not None else [])))
    except BaseException as exc:  # reported by the parent as crashes of the jobs not done
        conn.send_bytes(pickle.dumps(("failed", f"{type(exc).__name__}: {exc}", [])))
    finally:
        conn.close()


def run_sharded(engine: RolloutEngine, tasks: dict[str, Task], jobs: Sequence[RolloutJob], concurrency: int,
                on_result: Callable[[RolloutResult], None] | None, workers: int,
                ledger: Any = None) -> tuple[list[RolloutResult], list[RolloutCrash]]:
    from trajectory2task.programs.loop.rollout import RolloutCrash

    if "fork" not in multiprocessing.get_all_start_methods():
        raise RuntimeError("workers > 1 needs the fork start method, which this platform lacks; use workers=1")
    engine.warm(tasks[j.task_id] for j in jobs)  # the gold replays, done once and inherited
    context = multiprocessing.get_context("fork")
    per_worker = max(1, math.ceil(concurrency / workers))
    shards = [list(jobs[i::workers]) for i in range(workers)]
    results: list[RolloutResult] = []
    crashes: list[RolloutCrash] = []
    pending: dict[Connection, tuple[Any, set[str]]] = {}
    parent = os.getpid()
    try:
        for shard in shards:
            parent_end, child_end = context.Pipe(duplex=False)
            process = context.Process(target=_worker, args=(engine, tasks, shard, per_worker, ledger, child_end,
                                                            parent, [parent_end, *pending]),
                                      daemon=True)
            process.start()
            child_end.close()
            pending[parent_end] = (process, {job.rollout_id for job in shard})
        by_id = {job.rollout_id: job for job in jobs}
        while pending:
            for conn in wait(list(pending)):
                process, left = pending[conn]
                try:
                    kind, payload, calls = pickle.loads(conn.recv_bytes())
                except EOFError:
                    kind, payload, calls = "failed", f"worker process {process.pid} exited ({process.exitcode})", []
                if calls and ledger is not None:
                    ledger.add_rows(calls)
                if kind == "result":
                    left.discard(payload.rollout.id)
                    results.append(payload)
                    if on_result is not None:
                        on_result(payload)
                    continue
                if kind == "done":
                    crashes.extend(payload)
                else:
                    crashes.extend(RolloutCrash(job=by_id[rid], error=f"worker failed: {payload}") for rid in sorted(left))
                conn.close()
                process.join()
                del pending[conn]
    finally:
        for conn, (process, _) in pending.items():  # a Ctrl-C or a failing on_result: stop the rest
            if process.is_alive():
                process.terminate()
            process.join()
            conn.close()
    return results, crashes


__all__ = ["run_sharded"]
