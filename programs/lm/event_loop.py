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


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """What exists now frozen out of the garbage collector's scans (``gc.freeze``) for the
    block: each full collection otherwise walks the domain's database and the programs again,
    stalling every rollout in flight (and a Ray run's driver between two stored items)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` on an `InlineHandoffLoop`, inside `frozen_heap`."""
    with frozen_heap(), asyncio.Runner(loop_factory=InlineHandoffLoop) as runner:
        return runner.run(coro)
