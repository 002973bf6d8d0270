"""A bound on a role's LM calls in flight (the ``max_concurrent`` knob).

`BoundedLM` is a ``dspy.LM`` whose public calls (``lm(...)`` and ``await lm.acall(...)``) each
take a slot of its `CallLimiter` first; DSPy's callbacks run inside the slot, so the ledger's
latency is the call's own, not the wait for a slot. Copies of the LM (``lm.copy()``, which
DSPy's optimizers make) share the limiter. Awaited calls wait on an ``asyncio.Semaphore`` of
their event loop, calls from threads on a ``threading.BoundedSemaphore``: the bound holds
among the async calls of each loop and among the threads (t2t runs a role on one of the two).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from typing import Any

import dspy


class CallLimiter:
    """At most ``limit`` calls in flight. A subclass may hold its slots elsewhere (a Ray run's
    cluster-wide slots: ``trajectory2task.programs.distributed.slots``): `BoundedLM` needs only
    the two context managers."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a concurrency limit must be at least 1")
        self.limit = limit
        self._threads = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())

    def for_loop(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """This event loop's semaphore (an asyncio primitive belongs to one loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            semaphore = self._loops.get(loop)
            if semaphore is None:
                semaphore = self._loops[loop] = asyncio.Semaphore(self.limit)
            return semaphore

    @property
    def for_threads(self) -> contextlib.AbstractContextManager[Any]:
        return self._threads


class BoundedLM(dspy.LM):
    """A ``dspy.LM`` with its calls bounded by ``limiter`` (None: unbounded)."""

    limiter: CallLimiter | None = None
    # the same LM on DSPy's own engines, when this one runs on t2t's api_base engine
    # (trajectory2task.programs.lm.build.build_lm): for requests DSPy's canonical form cannot carry
    dspy_engine_lm: dspy.LM | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.limiter is None:
            return super().__call__(*args, **kwargs)
        with self.limiter.for_threads:
            return super().__call__(*args, **kwargs)

    def update_history(self, entry: dict[str, Any]) -> None:
        if entry.get("cost") is None and entry.get("usage"):
            from trajectory2task.programs.lm.http_engine import OpenAIChatEngine
            from trajectory2task.programs.lm.prices import call_cost

            if isinstance(self.engine, OpenAIChatEngine):  # DSPy prices no custom engine's calls
                usage = entry["usage"]
                entry["cost"] = call_cost(self.model, int(usage.get("prompt_tokens") or 0),
                                          int(usage.get("completion_tokens") or 0))
        super().update_history(entry)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        if self.limiter is None:
            return await super().acall(*args, **kwargs)
        async with self.limiter.for_loop():
            return await super().acall(*args, **kwargs)
