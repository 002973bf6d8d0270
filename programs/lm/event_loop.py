"""The event loop rollouts and generation items run on.

DSPy 3.4's async LM call hands its request preparation, its pricing and its cache steps to
``asyncio.to_thread``: pure-Python work of well under a millisecond, which holds the GIL
anyway. Each hand-off costs a worker thread's turn at the GIL and a wake-up write to the
loop's self-pipe (a system call, ~0.1 ms on this machine), twice or more per LM call: the
rollout benchmark's profile showed three socket sends per call where one carries the request
(``benchmarks/bench_rollouts.py --profile``). `run` uses a loop that runs those hand-offs, and only
those (functions of ``dspy.clients.execution``), at once on its own thread, in the caller's
context. Anything else handed to the default executor still gets a thread: a DNS lookup, a
proxy's connect, a credential refresh, a local model's forward pass.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import gc
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from trajectory2task.programs.lm.dspy_private import EXECUTION_MODULE

T = TypeVar("T")

# DSPy's in-process steps of an LM call (prepare, cache lookup and store, pricing)
INLINE_MODULES = frozenset({EXECUTION_MODULE})


def _handed_off(func: Callable[..., Any]) -> Callable[..., Any]:
    """The function ``asyncio.to_thread`` wrapped (``partial(context.run, f, ...)``), else `func`."""
    if (isinstance(func, functools.partial) and func.args
            and isinstance(getattr(func.func, "__self__", None), contextvars.Context)):
        return func.args[0]
    return func


class InlineHandoffLoop(asyncio.SelectorEventLoop):
    """A selector event loop on which DSPy's hand-offs to the default executor run at once: the
    future comes back done, with no thread, no GIL hand-off and no self-pipe write. Other work,
    and any call to an explicit executor, goes to a thread as on any loop."""

    def run_in_executor(self, executor: concurrent.futures.Executor | None, func: Callable[..., T],
                        *args: Any) -> asyncio.Future[T]:
        if executor is not None or getattr(_handed_off(func), "__module__", None) not in INLINE_MODULES:
            return super().run_in_executor(executor, func, *args)
        future: asyncio.Future[T] = self.create_future()
        try:
            future.set_result(func(*args))
        except Exception as exc:  # delivered to the awaiting coroutine, as from a thread
            future.set_exception(exc)
        return future


# A long run keeps what it makes (a generate run's tasks, a bench's rollouts): left in the
# collector's oldest generation, each full collection walks all of it again, and in a one-process
# run of 1,000 items those scans grew from 0.26 s to 1.1 s per 200 items. Every this many kept
# results, what survives is frozen too.
FREEZE_EVERY = 100
_lock = threading.RLock()  # a finalizer run by the collection below may end a run of its own
_open = 0  # frozen_heap blocks open: the outermost one unfreezes
_kept = 0


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """What exists now frozen out of the garbage collector's scans (``gc.freeze``) for the
    block: each full collection otherwise walks the domain's database and the programs again,
    stalling every rollout in flight (and a Ray run's driver between two stored items). Blocks
    nest (a run inside a run): the heap is unfrozen when the outermost ends."""
    global _open, _kept
    with _lock:
        if _open == 0:
            _kept = 0
        _open += 1
        gc.freeze()
    try:
        yield
    finally:
        with _lock:
            _open -= 1
            if _open == 0:
                gc.unfreeze()


def result_kept() -> None:
    """A run inside `frozen_heap` keeps one more result: every `FREEZE_EVERY`, the young
    garbage is collected and what lives on is frozen as well. Outside a block, nothing."""
    global _kept
    with _lock:
        if _open == 0:
            return
        _kept += 1
        if _kept % FREEZE_EVERY:
            return
        gc.collect(1)  # the cycles an item left behind go now, not frozen with what it kept
        gc.freeze()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` on an `InlineHandoffLoop`, inside `frozen_heap`."""
    with frozen_heap(), asyncio.Runner(loop_factory=InlineHandoffLoop) as runner:
        return runner.run(coro)
