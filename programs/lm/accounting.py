"""Every LM call accounted, through one mechanism: a DSPy LM callback.

`build_lm(settings, role=..., ledger=...)` attaches an `LMRole` to the LM's instance-level
callbacks. DSPy runs it around every ``lm(...)`` and ``await lm.acall(...)``, whoever calls:
our programs, DSPy's adapters, its optimizers (their ``lm.copy()`` keeps the callback).
`on_lm_end` turns the call into one `LMCall` row: tokens from the history entry DSPy wrote
for it (found by identity of the outputs list, so concurrent calls on one LM do not mix),
their cost from the one price table (``trajectory2task.programs.lm.prices``), latency measured between start and end, and, for a call that raised, the error
as one classified line. Rows collect in a `CallLedger`, which commands drain into the
store's ``lm_calls``. `UsageRecorder` and `usage_of` read the same rows from any LM, one
t2t did not build (``DummyLM``) from its history.

A failed call's error is classified by ``trajectory2task.programs.lm.errors``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from dspy.utils.callback import BaseCallback

from trajectory2task.programs.lm.errors import error_kind, explain, first_line
from trajectory2task.programs.lm.prices import call_cost
from trajectory2task.programs.lm.tokens import estimate_tokens
from trajectory2task.signatures.models import LMCall, TokenUsage

if TYPE_CHECKING:
    from trajectory2task.programs.lm.config import LMSettings

class CallLedger:
    """Thread-safe collection of `LMCall` rows, with running totals for a progress line.

    ``take()`` hands over the rows collected so far (each row once); totals and the first
    error line of each kind stay for the run's summary. Functions given to ``on_call`` are
    called after each recorded call (from whichever thread made it) with the progress line:
    the commands' live line is fed from here, not from their own counting.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: list[tuple[LMRole | None, LMCall]] = []
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost = 0.0  # USD of the calls with a known price
        self.unpriced: Counter[str] = Counter()  # model -> its calls with no known price (not in cost)
        self.errors: Counter[str] = Counter()
        self.first_errors: dict[str, str] = {}  # kind -> the first line explaining it
        self.warnings: list[str] = []
        self._listeners: list[Callable[[str], None]] = []

    def on_call(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def add(self, tag: LMRole | None, call: LMCall, kind: str | None = None, line: str | None = None,
            keep: bool = True) -> None:
        with self._lock:
            if keep:
                self._rows.append((tag, call))
            self.calls += 1
            self.prompt_tokens += call.prompt_tokens
            self.completion_tokens += call.completion_tokens
            if call.cost is None:
                self.unpriced[call.model] += 1
            else:
                self.cost += call.cost
            if kind is not None:
                self.errors[kind] += 1
                self.first_errors.setdefault(kind, line or kind)
            progress = self.progress_line() if self._listeners else ""
        for listener in self._listeners:
            listener(progress)

    def add_rows(self, calls: list[LMCall], *, keep: bool = True) -> None:
        """Rows recorded elsewhere (a rollout worker process's copy of this ledger), untagged:
        ``take()`` hands them over, ``take(tag)`` does not. ``keep=False`` only counts them
        (totals, errors, the live line): rows already on their way to the store."""
        for call in calls:
            kind = call.error.split(":", 1)[0] if call.error else None
            self.add(None, call, kind, f"{call.role}: {call.error}" if call.error else None, keep=keep)

    def warn_once(self, line: str) -> bool:
        with self._lock:
            if line in self.warnings:
                return False
            self.warnings.append(line)
            return True

    def take(self, tag: LMRole | None = None) -> list[LMCall]:
        """The rows not taken yet (only those of ``tag`` when given)."""
        with self._lock:
            if tag is None:
                out, self._rows = [c for _, c in self._rows], []
                return out
            out = [c for t, c in self._rows if t is tag]
            self._rows = [(t, c) for t, c in self._rows if t is not tag]
            return out

    def progress_line(self) -> str:
        errors = ", ".join(f"{k} {n}" for k, n in sorted(self.errors.items())) or "none"
        cost = f"{self.cost:.4f}" if self.cost >= 0.01 or not self.cost else f"{self.cost:.6f}"  # cents show
        price = f"${cost}"
        if self.unpriced:  # said as unknown, never folded into the sum as $0
            unknown = (f"cost unknown for {sum(self.unpriced.values())} calls of "
                       f"{', '.join(sorted(self.unpriced))} (no known price)")
            price = f"{price} + {unknown}" if self.cost else unknown
        return (f"LM calls {self.calls}, tokens {self.prompt_tokens}+{self.completion_tokens}, "
                f"{price}, errors: {errors}")

    def reasons(self, limit: int = 3) -> list[str]:
        """The first explaining line of each error kind seen, most frequent kind first."""
        kinds = [k for k, _ in self.errors.most_common() if k in self.first_errors]
        return [self.first_errors[k] for k in kinds[:limit]]


class CallRecorder(BaseCallback):
    """A DSPy callback recording every call of its LM (and of the LM's copies, which share
    it) in ``ledger`` as the call ends: tokens and cost from DSPy's history entry, latency,
    and the error of a failed call (not a call its own run cut short: a cancellation or an
    interrupt, whose reply never came). What a plain ``dspy.LM`` given to the Python API carries
    (``recording``); an LM t2t builds for a role carries an `LMRole`."""

    def __init__(self, role: str, ledger: CallLedger) -> None:
        self.role = role
        self.ledger = ledger
        self._lock = threading.Lock()
        self._started: dict[str, tuple[float, Any, int]] = {}

    # DSPy calls these around every LM call
    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        estimate = self._prompt_estimate(inputs)
        with self._lock:
            self._started[call_id] = (time.perf_counter(), instance, estimate)

    def _prompt_estimate(self, inputs: dict[str, Any]) -> int:
        del inputs
        return 0

    def _failure_line(self, kind: str, detail: str, estimate: int) -> str:
        """The one line the ledger keeps for the first failure of this kind."""
        del estimate
        return f"{self.role}: {kind}: {detail}"

    def _model(self, instance: Any) -> str:
        return str(getattr(instance, "model", None) or "")

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        with self._lock:
            started, instance, estimate = self._started.pop(call_id, (time.perf_counter(), None, 0))
        latency = time.perf_counter() - started
        if exception is not None and not isinstance(exception, Exception):
            # cut short by its own run (cancelled as the run stops, interrupted): no reply came,
            # as with a call held when its worker was killed; not an LM failure
            return
        model = self._model(instance)
        if exception is not None:
            kind = error_kind(exception)
            detail = first_line(exception)
            # a failed call's usage never arrives: no tokens are known to be billed
            self.ledger.add(self.tag(), LMCall(role=self.role, model=model, cost=0.0, latency_s=latency,
                                               error=f"{kind}: {detail}"), kind,
                            self._failure_line(kind, detail, estimate))
            return
        record = _record_of(_history_entry(instance, outputs) or {}, self.role, model)
        self.ledger.add(self.tag(), record.model_copy(update={"latency_s": latency}))

    def tag(self) -> LMRole | None:
        """What the ledger files this recorder's rows under (``take(tag)``): an `LMRole`'s own."""
        return None


def recording(lm: Any, role: str, ledger: CallLedger, *, built_too: bool = False) -> Any:
    """A copy of ``lm`` whose calls (and those of its copies) ``ledger`` records as ``role``;
    ``lm`` itself is left as it was. An LM t2t built for a role records into its own ledger
    already: it is returned as it is, unless ``built_too`` (its calls are then recorded in
    both ledgers: a caller's own ledger and a run's)."""
    if role_of(lm) is not None and not built_too:
        return lm
    copy = lm.copy()
    copy.callbacks = [*(getattr(lm, "callbacks", None) or []), CallRecorder(role, ledger)]
    return copy


class LMRole(CallRecorder):
    """The callback every LM built for a role carries: records its calls in a ledger and
    holds what the role's adapter needs to know (its settings, the structured-output dialect
    found to work). Copies of the LM share it."""

    def __init__(self, role: str, settings: LMSettings, ledger: CallLedger,
                 warn: Any = None) -> None:
        super().__init__(role, ledger)
        self.settings = settings
        self.warn = warn  # called with a one-line warning (e.g. a prompt that will not fit)
        self.dialect: str | None = None  # structured output: the response_format shape this endpoint took

    def _prompt_estimate(self, inputs: dict[str, Any]) -> int:
        prompt = inputs.get("messages") or inputs.get("prompt")
        estimate = estimate_tokens(prompt)
        window = self.settings.context_window
        if window and estimate + (self.settings.max_tokens or 0) > window:
            line = (f"t2t: warning: {self.role} prompt ~{estimate} tokens + max_tokens "
                    f"{self.settings.max_tokens or 0} exceeds the {window}-token window of {self.settings.model}")
            if self.ledger.warn_once(line) and self.warn is not None:
                self.warn(line)
        return estimate

    def _failure_line(self, kind: str, detail: str, estimate: int) -> str:
        return f"{self.role}: {explain(kind, detail, self.settings, estimate)}"

    def _model(self, instance: Any) -> str:
        return str(getattr(instance, "model", None) or self.settings.model)

    def tag(self) -> LMRole | None:
        return self


def _as_int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _record_of(entry: Mapping[str, Any], role: str, model: str | None = None) -> LMCall:
    """The row of one call from its DSPy history entry, priced from the one price table
    (``prices.call_cost``), not from the cost DSPy or LiteLLM recorded: an estimate and the
    ledger then use the same rates. ``model``: the LM's model string (else the entry's)."""
    usage = entry.get("usage") or {}
    if not isinstance(usage, Mapping):
        usage = dict(usage) if hasattr(usage, "keys") else {}
    model = model or str(entry.get("model") or "")
    prompt, completion = _as_int(usage.get("prompt_tokens")), _as_int(usage.get("completion_tokens"))
    return LMCall(role=role, model=model, prompt_tokens=prompt, completion_tokens=completion,
                  cost=call_cost(model, prompt, completion))


def _history_entry(lm: Any, outputs: Any) -> dict[str, Any] | None:
    """The history entry DSPy recorded for the call that returned ``outputs``."""
    history = getattr(lm, "history", None) or []
    for entry in reversed(history[-64:]):
        if entry.get("outputs") is outputs:
            return entry
    return None


def role_of(lm: Any) -> LMRole | None:
    """The `LMRole` an LM carries, if t2t built it."""
    for callback in getattr(lm, "callbacks", None) or []:
        if isinstance(callback, LMRole):
            return callback
    return None


# ---------------------------------------------------------------------------- usage of an LM


class UsageRecorder:
    """Collects per-call usage; thread-safe. An LM built with a ledger (``build_lm(role=...,
    ledger=...)``) hands over its callback's records, failed calls and latency included;
    any other LM (e.g. ``DummyLM`` in tests) is read from ``dspy.LM.history``.

    ``drain(lm, role)`` returns the records of calls made since the previous drain of that LM
    (it remembers the last entry it saw by uuid, so DSPy trimming old history is harmless
    unless more than ``max_history_size`` calls happen between two drains). History itself
    is not modified.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_seen: dict[int, str | None] = {}
        self.records: list[LMCall] = []

    def drain(self, lm: Any, role: str) -> list[LMCall]:
        tag = role_of(lm)
        if tag is not None:  # the LM's callback recorded every call, failed ones included
            new = tag.ledger.take(tag)
            with self._lock:
                self.records.extend(new)
            return new
        history = list(getattr(lm, "history", []) or [])
        with self._lock:
            last = self._last_seen.get(id(lm))
            start = 0
            if last is not None:
                for i in range(len(history) - 1, -1, -1):
                    if history[i].get("uuid") == last:
                        start = i + 1
                        break
            new = [_record_of(entry, role) for entry in history[start:]]
            if history:
                self._last_seen[id(lm)] = history[-1].get("uuid")
            self.records.extend(new)
            return new

    def add(self, record: LMCall) -> None:
        """Add a record made elsewhere (e.g. a failed call with ``error`` set)."""
        with self._lock:
            self.records.append(record)

    def total(self, role: str | None = None) -> TokenUsage:
        with self._lock:
            records = [r for r in self.records if role is None or r.role == role]
        return sum((TokenUsage(prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens, cost=r.cost)
                    for r in records), TokenUsage())


def usage_of(lm: Any) -> TokenUsage:
    """Total usage over every call in ``lm.history``."""
    total = TokenUsage()
    for entry in list(getattr(lm, "history", []) or []):
        r = _record_of(entry, "")
        total = total + TokenUsage(prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens, cost=r.cost)
    return total
