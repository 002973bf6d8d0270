"""Killing Ray workers at a moment when no LM reply is on its way to them (the Ray LM fault tests).

`HeldAnswers` wraps a scripted server's responder: from request ``first`` on, it holds every
answer until `HeldAnswers.release`. Once each unfinished item (or rollout) waits on a held
answer, no reply is in transit: the reply of every call made so far has reached its worker,
and a held one never will if its worker is killed before the release. `KillWhenAllWait` kills
the workers at that moment (`InterruptWhenAllWait` interrupts the driver, which ends them),
from a thread of its own, and records how many answers were held then: the requests whose
reply never reached a worker. Every other request the server saw is
an LM call a worker completed, which the store's ``lm_calls`` (or the driver's ledger) must hold.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any


class HeldAnswers:
    """A responder that holds every answer from request ``first`` on until `release` (then answers
    as ``responder`` does); ``held`` counts the requests it held."""

    def __init__(self, responder: Callable[[dict[str, Any]], Any], first: int) -> None:
        self.responder = responder
        self.first = first
        self.lock = threading.Lock()
        self.seen = 0
        self.held = 0
        self.released = threading.Event()

    def __call__(self, body: dict[str, Any]) -> Any:
        with self.lock:
            hold = self.seen >= self.first and not self.released.is_set()
            self.seen += 1
            self.held += hold
        if hold:
            self.released.wait(60)
        return self.responder(body)

    def holding(self) -> int:
        with self.lock:
            return self.held

    def release(self) -> None:
        self.released.set()


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie has: its sockets are closed)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


class WhenAllWait(threading.Thread):
    """Waits until each of the ``unfinished()`` items waits on one of ``answers``' held answers,
    then does the fault (`act`). ``lost``: the answers held then (their replies never reach a
    worker the fault ends); ``error``: why it gave up, if it did."""

    def __init__(self, answers: HeldAnswers, unfinished: Callable[[], int], timeout_s: float = 120) -> None:
        super().__init__(daemon=True)
        self.answers, self.unfinished, self.timeout_s = answers, unfinished, timeout_s
        self.lost = 0
        self.error: str | None = None

    def _all_wait(self) -> bool:
        held = self.answers.holding()
        return held > 0 and held == self.unfinished()

    def act(self, deadline: float) -> None:
        raise NotImplementedError

    def run(self) -> None:
        try:
            deadline = time.monotonic() + self.timeout_s
            while not self._all_wait():
                if time.monotonic() > deadline:
                    self.error = f"never all waiting: {self.answers.holding()} held, {self.unfinished()} unfinished"
                    return
                time.sleep(0.02)
            # what the workers sent before their held calls (their calls to the run's log) leaves them;
            # 0.3 s once fell short in a full run of the Ray tests, with the machine busy
            time.sleep(1.0)
            if not self._all_wait():
                self.error = "a held answer or an unfinished item came or went while all waited"
                return
            self.lost = self.answers.holding()
            self.act(deadline)
        except Exception as exc:  # told to the test, which fails with it
            self.error = f"{type(exc).__name__}: {exc}"


class KillWhenAllWait(WhenAllWait):
    """Kills the processes ``pids()`` names (the run's workers) once all wait, waits until they
    are gone and releases the answers (``killed``: the process ids)."""

    def __init__(self, answers: HeldAnswers, unfinished: Callable[[], int], pids: Callable[[], list[int]],
                 timeout_s: float = 120) -> None:
        super().__init__(answers, unfinished, timeout_s)
        self.pids = pids
        self.killed: list[int] = []

    def act(self, deadline: float) -> None:
        self.killed = self.pids()
        for pid in self.killed:
            os.kill(pid, signal.SIGKILL)
        while not all(_gone(pid) for pid in self.killed):
            if time.monotonic() > deadline:
                self.error = "a killed worker did not go"
                return
            time.sleep(0.02)

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.answers.release()


class InterruptWhenAllWait(WhenAllWait):
    """Interrupts this process (SIGINT: a Ctrl-C in the driver) once all wait; the answers stay
    held (the caller releases them once the run has stopped and ended its workers)."""

    def act(self, deadline: float) -> None:
        del deadline
        os.kill(os.getpid(), signal.SIGINT)
