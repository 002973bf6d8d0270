"""Re-asking a predictor until its answer is accepted: a plain ``dspy.Module`` holding it.

`Reask` asks its predictor up to ``attempts`` times; a judge gives each answer a `Verdict`
(reward 1.0: accepted; less: how close it came). The first accepted answer is returned, else
the best one. The loop is DSPy's best-of-N idea, built on DSPy's public surface only
(``Module``, ``Predict``, ``settings.trace``, the ``rollout_id`` request config):

- every attempt after a plain LM's first has its own ``rollout_id`` (DSPy's cache keys on it,
  so a re-ask is never answered with the reply that failed); another trial of the same asks
  shifts them by ``rollout_offset``;
- a re-ask shows the model what failed: the judge's feedback fills the next attempt's
  feedback input (``previous_error``) when the signature has one;
- each attempt asks the program's own LM at its configured temperature (the sweeps tune it);
- an unreadable answer is judged 0 with the parse error as feedback; an LM call failure
  stops the asking and is raised as it came (its error kind is what the run reports);
  nothing is printed (stdout carries ``--json``);
- the predictor is the program's own, so a trace names it (optimizers bootstrap demos from
  it); only the returned attempt's trace reaches the caller's, held to ``max_trace_size``;
- ``aforward`` is the same loop with awaited asks, on the event loop generation items and
  rollouts share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dspy

from trajectory2task.programs.generation.steps import Steps, arun_steps, run_steps
from trajectory2task.programs.lm.errors import first_line


@dataclass(frozen=True)
class Verdict:
    """A judge's word on one attempt: its reward (1.0: accepted) and, when it is not
    accepted, why, in a sentence the model reads on the next attempt."""

    reward: float
    feedback: str = ""


Judge = Callable[[dspy.Prediction], Verdict]


def accept(_: dspy.Prediction) -> Verdict:
    """The judge of a re-ask on unreadable output only: anything that parsed is accepted."""
    return Verdict(1.0)


@dataclass
class _Asking:
    """What the attempts of one re-ask share."""

    feedback: str | None = None  # the feedback input of the next attempt; None: the caller's own
    unreadable: Exception | None = None  # the last answer that did not parse
    failure: Exception | None = None  # an LM call failure: no further attempt calls the LM
    attempts: int = 0


_NO_ANSWER = Verdict(0.0)


@dataclass(frozen=True)
class _Tried:
    """One attempt's outcome."""

    answer: dspy.Prediction | None
    verdict: Verdict


def _cap_trace() -> None:
    """Hold the trace to ``max_trace_size``, as Predict does for its own entries (outside an
    optimizer the caller's trace is DSPy's global one, which would otherwise grow for ever)."""
    trace, limit = dspy.settings.trace, dspy.settings.max_trace_size
    if trace is not None and len(trace) > limit:
        del trace[:len(trace) - limit]


@dataclass
class Answer:
    """What a `Reask` returns: the returned attempt's prediction (None when no attempt
    parsed), its verdict, how many attempts asked the LM, and the last parse error."""

    prediction: dspy.Prediction | None
    verdict: Verdict
    attempts: int
    unreadable: Exception | None = field(default=None)

    @property
    def accepted(self) -> bool:
        return self.prediction is not None and self.verdict.reward >= 1.0

    def parsed(self) -> dspy.Prediction:
        """The returned prediction, or the last parse error when no attempt parsed."""
        if self.prediction is None:
            assert self.unreadable is not None
            raise self.unreadable
        return self.prediction


class Reask(dspy.Module):
    """Up to ``attempts`` asks of ``predict`` until ``judge`` accepts one (see the module
    docstring). Called with the predictor's inputs (and ``config``, as a Predict takes it);
    returns an `Answer`, or raises the LM call failure that stopped the asking.

    Built per call around the program's own predictor, so it adds no parameter to the
    program (saved state and optimizers see the predictor under its own name)."""

    def __init__(self, predict: dspy.Predict, attempts: int, judge: Judge = accept,
                 feedback_field: str | None = None, unreadable: tuple[type[Exception], ...] | None = None,
                 rollout_offset: int = 0) -> None:
        from dspy.utils.exceptions import AdapterParseError

        super().__init__()
        self.predict = predict
        self.attempts = max(1, attempts)
        self.judge = judge
        self.feedback_field = feedback_field
        self.unreadable = unreadable or (AdapterParseError,)
        self.rollout_offset = rollout_offset

    def _rollout_ids(self) -> range:
        """One rollout id per attempt, from the LM's own (a plain LM has none: 0)."""
        lm = self.predict.lm or dspy.settings.lm
        if lm is None:
            raise ValueError("No LM is loaded: configure one with dspy.configure(lm=dspy.LM(...)) "
                             "or set it on the program with program.set_lm(lm)")
        start = (lm.kwargs.get("rollout_id") or 0) + self.rollout_offset
        return range(start, start + self.attempts)

    def _ask(self, asking: _Asking, inputs: dict[str, Any], rollout_id: int) -> Steps[_Tried]:
        if asking.failure is not None:
            return _Tried(None, _NO_ANSWER)
        asking.attempts += 1
        if self.feedback_field and asking.feedback is not None:
            inputs = {**inputs, self.feedback_field: asking.feedback}
        if rollout_id:  # the first ask of a plain LM has none: the cached call
            inputs = {**inputs, "config": {**inputs.get("config", {}), "rollout_id": rollout_id}}
        try:
            answer = yield inputs
        except self.unreadable as exc:
            asking.unreadable = exc
            asking.feedback = "Your answer could not be read: " + first_line(exc, 300)
            return _Tried(None, _NO_ANSWER)
        except Exception as exc:  # noqa: BLE001 - an LM call failure ends the asking; _answer raises it
            asking.failure = exc
            return _Tried(None, _NO_ANSWER)
        verdict = self.judge(answer)
        asking.feedback = verdict.feedback
        return _Tried(answer, verdict)

    def forward(self, **inputs: Any) -> Answer:
        asking, best = _Asking(), _Best()
        for rollout_id in self._rollout_ids():
            with dspy.context(trace=[]):
                tried = run_steps(self._ask(asking, inputs, rollout_id), lambda request: self.predict(**request))
                trace = dspy.settings.trace.copy()
            if best.offer(tried, trace):
                break
        return best.answer(asking)

    async def aforward(self, **inputs: Any) -> Answer:
        asking, best = _Asking(), _Best()
        predict = self.predict
        for rollout_id in self._rollout_ids():
            with dspy.context(trace=[]):
                tried = await arun_steps(self._ask(asking, inputs, rollout_id),
                                         lambda request: predict.acall(**request))
                trace = dspy.settings.trace.copy()
            if best.offer(tried, trace):
                break
        return best.answer(asking)


class _Best:
    """The best attempt so far and its trace; only it reaches the caller's trace."""

    def __init__(self) -> None:
        self.tried: _Tried | None = None
        self.trace: list[Any] = []

    def offer(self, tried: _Tried, trace: list[Any]) -> bool:
        """Keep ``tried`` when it beats the best; True when it is accepted (stop asking)."""
        if self.tried is None or tried.verdict.reward > self.tried.verdict.reward:
            self.tried, self.trace = tried, trace
        return tried.verdict.reward >= 1.0

    def answer(self, asking: _Asking) -> Answer:
        if asking.failure is not None:
            raise asking.failure
        assert self.tried is not None  # every attempt returns an outcome
        if self.trace and dspy.settings.trace is not None:
            dspy.settings.trace.extend(self.trace)
            _cap_trace()
        return Answer(prediction=self.tried.answer, verdict=self.tried.verdict, attempts=asking.attempts,
                      unreadable=asking.unreadable)
