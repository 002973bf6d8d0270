"""A role's ``max_concurrent`` bound held across a whole Ray cluster.

One process bounds a role's LM calls with a `CallLimiter` (``trajectory2task.programs.lm.limits``).
Workers on several machines cannot share a semaphore, so a Ray run starts one `CallSlots`
actor (a named actor, one per run) holding a counter per bounded role, and each worker's
bounded LMs take their slot from it (`ClusterLimiter`): at most ``max_concurrent`` calls of the
role are in flight in the whole cluster, not per worker. A slot costs two small actor calls
around an LM call (about a millisecond on one machine), nothing against the call itself.

A worker killed while it holds slots would keep them for good; the driver, which sees the
worker die, hands them back (`CallSlots.release_holder`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

from trajectory2task.programs.lm.limits import CallLimiter


class CallSlots:
    """The slots of each bounded role (``bounds``: role -> max calls in flight). Run as an async
    Ray actor (``ray.remote(CallSlots)``): its methods run on the actor's event loop, one at a
    time between awaits, so the counts need no lock."""

    def __init__(self, bounds: dict[str, int]) -> None:
        if any(limit < 1 for limit in bounds.values()):
            raise ValueError("a concurrency bound must be at least 1")
        self.bounds = dict(bounds)
        self._free = {role: asyncio.Semaphore(limit) for role, limit in self.bounds.items()}
        self._held: Counter[tuple[str, str]] = Counter()  # (holder, role) -> slots held
        self._gone: set[str] = set()
        self.most: Counter[str] = Counter()  # role -> the most slots in use at once (what tests check)

    async def acquire(self, role: str, holder: str) -> None:
        await self._free[role].acquire()
        if holder in self._gone:  # granted after its worker was declared dead: nobody will release it
            self._free[role].release()
            return
        self._held[(holder, role)] += 1
        self.most[role] = max(self.most[role], self.in_use(role))

    async def release(self, role: str, holder: str) -> None:
        if self._held[(holder, role)] > 0:
            self._held[(holder, role)] -= 1
            self._free[role].release()

    async def release_holder(self, holder: str) -> int:
        """Hand back every slot ``holder`` (a worker now dead) held; returns how many."""
        self._gone.add(holder)
        freed = 0
        for (who, role), count in list(self._held.items()):
            if who == holder and count:
                for _ in range(count):
                    self._free[role].release()
                freed += count
                self._held[(who, role)] = 0
        return freed

    def in_use(self, role: str) -> int:
        return sum(count for (_, r), count in self._held.items() if r == role)

    async def peak(self) -> dict[str, int]:
        """Role -> the most of its slots ever in use at once."""
        return dict(self.most)


class ClusterLimiter(CallLimiter):
    """A `CallLimiter` whose slots are a `CallSlots` actor's: set as a worker's LM ``limiter``."""

    def __init__(self, limit: int, slots: Any, role: str, holder: str) -> None:
        super().__init__(limit)
        self.slots = slots  # the CallSlots actor handle
        self.role = role
        self.holder = holder

    @contextlib.asynccontextmanager
    async def _async_slot(self) -> AsyncIterator[None]:
        await self.slots.acquire.remote(self.role, self.holder)
        try:
            yield
        finally:
            await self.slots.release.remote(self.role, self.holder)

    @contextlib.contextmanager
    def _thread_slot(self) -> Iterator[None]:
        import ray

        ray.get(self.slots.acquire.remote(self.role, self.holder))
        try:
            yield
        finally:
            ray.get(self.slots.release.remote(self.role, self.holder))

    def for_loop(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._async_slot()

    @property
    def for_threads(self) -> contextlib.AbstractContextManager[Any]:
        return self._thread_slot()
