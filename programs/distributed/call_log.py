"""The LM calls a Ray run's workers made, kept outside the workers so that a worker's death loses none.

A worker records each LM call as it ends (the role's `CallLedger`, or DSPy's history of an LM t2t
did not build). Were the calls to travel only inside the item (or rollout) they came back with,
a worker killed mid-run would take with it the calls it had made for the items it never
returned: made and paid for, yet never in the store's ``lm_calls``. So a run with LMs starts one
`CallLog` actor (a named actor, one per run, no CPU) and each worker sends it its calls as they
end (`CallSender.send`: one small fire-and-forget actor call per LM call, nothing against the
call itself). Before an output leaves the worker, the worker waits until everything it sent
has arrived (`CallSender.arrived`): when the driver sees an output, every call made for it is in
the log. The driver takes the log's calls once per batch of outputs (`CallLog.take`) and stores
them with that batch; at the run's end, or when it stops (a worker lost too often, an error, an
interrupt), it takes them once more, so the calls a dead worker completed for the items it never
returned are stored too. Each call is sent once and taken once: none is stored twice.

What a kill can still lose is a call whose reply had not reached its worker, or whose reply
came in the last instant before the kill (its send not yet out of the process). A call cut short
when the run stops (its task cancelled at an interrupt) got no reply either: it is not recorded,
not even as a failure (`trajectory2task.programs.lm.accounting.CallRecorder`).

Offline runs have no LM calls, and no log: they pay nothing for it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from dspy.utils.callback import BaseCallback

from trajectory2task.signatures.models import LMCall


class CallLog:
    """The LM calls sent by a run's workers and not yet taken by the driver. Run as a Ray actor
    (``ray.remote(CallLog)``): a plain one, whose methods run one at a time, so that a `take`
    sees every `add` that finished before it."""

    def __init__(self) -> None:
        self._calls: list[LMCall] = []

    def add(self, calls: list[LMCall]) -> None:
        self._calls.extend(calls)

    def take(self) -> list[LMCall]:
        """The calls added since the last take (each call once)."""
        out, self._calls = self._calls, []
        return out


class CallSender:
    """A worker's side of the run's `CallLog` (``log``, an actor handle): `send` hands over the
    calls ``take()`` returns (those recorded since the last take) without waiting; `arrived`
    waits until every send before it has reached the log. Thread-safe: an LM call may end on
    any thread of the worker."""

    def __init__(self, log: Any, take: Callable[[], list[LMCall]]) -> None:
        self.log = log
        self.take = take
        # a take and its send are one step: a call taken by one thread is never missed by an
        # `arrived` that another thread's send has not registered yet
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self._sent: dict[int, Any] = {}  # sends not yet seen to arrive: number -> their ObjectRef

    def send(self) -> None:
        """Send the calls recorded since the last send (nothing when there are none)."""
        with self._lock:
            calls = self.take()
            if calls:
                self._sent[next(self._numbers)] = self.log.add.remote(calls)

    async def arrived(self) -> None:
        """Send what is left, then wait until every call sent so far is in the log. Raises
        Ray's error when the log is gone (the calls could not be kept: the caller fails)."""
        self.send()
        with self._lock:
            waiting = dict(self._sent)
        if waiting:
            await asyncio.gather(*waiting.values())
        with self._lock:
            for number in waiting:
                self._sent.pop(number, None)


class SendAfterEachCall(BaseCallback):
    """A DSPy callback that sends a worker's recorded calls to the log as each LM call ends: the
    last of an LM's callbacks (`send_after_each_call`), so the role's ledger (or DSPy's history)
    has recorded the call when it runs."""

    def __init__(self, sender: CallSender) -> None:
        self.sender = sender

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        del call_id, outputs, exception
        self.sender.send()


def send_after_each_call(lms: Iterable[Any], sender: CallSender) -> None:
    """Give each LM (each once: roles may share one) a last callback sending to ``sender``; in a
    new list, so that no LM sharing the old one gets it."""
    hook = SendAfterEachCall(sender)
    for lm in {id(lm): lm for lm in lms}.values():
        lm.callbacks = [*(getattr(lm, "callbacks", None) or []), hook]


def start_call_log(ray: Any) -> Any:
    """A run's `CallLog` actor, named ``t2t-call-log-<random hex>`` (one per run, so that runs
    sharing a cluster never share a log); it takes no CPU."""
    return ray.remote(num_cpus=0)(CallLog).options(name=f"t2t-call-log-{uuid.uuid4().hex}").remote()


def last_calls(ray: Any, log: Any) -> list[LMCall]:
    """The calls the log still holds as its run ends, and the log ended; none when the log is
    already gone (a run ending on an error must not raise another in its cleanup)."""
    try:
        calls: list[LMCall] = ray.get(log.take.remote())
        return calls
    except ray.exceptions.RayError:
        return []
    finally:
        ray.kill(log)
