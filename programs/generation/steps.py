"""One control flow for a program's sync and async paths.

A program's loop (the explorer's proposals, the adaptation's wording, a re-ask's attempt) is
written once, as a generator that yields each LM request and receives its
answer; an answer that raises is thrown into the generator at its ``yield``, so the loop
catches what it retries where it asks. `run_steps` answers with a plain call (the offline
baselines, DSPy's ``__call__``); `arun_steps` awaits the answer (DSPy's ``acall``), so many
items share one event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

Result = TypeVar("Result")
Steps = Generator[Any, Any, Result]


def run_steps(steps: Steps[Result], answer: Callable[[Any], Any]) -> Result:
    """Drive ``steps`` to its return value, answering each request with ``answer(request)``."""
    try:
        request = next(steps)
        while True:
            try:
                reply = answer(request)
            except Exception as exc:  # noqa: BLE001 - the loop decides what it retries
                request = steps.throw(exc)
                continue
            request = steps.send(reply)
    except StopIteration as done:
        return done.value


async def arun_steps(steps: Steps[Result], answer: Callable[[Any], Awaitable[Any]]) -> Result:
    """`run_steps` with an awaited ``answer``."""
    try:
        request = next(steps)
        while True:
            try:
                reply = await answer(request)
            except Exception as exc:  # noqa: BLE001 - the loop decides what it retries
                request = steps.throw(exc)
                continue
            request = steps.send(reply)
    except StopIteration as done:
        return done.value
