"""Re-asking a predictor until its answer is accepted, on DSPy's ``dspy.BestOfN``.

`Reask` is a ``dspy.BestOfN`` whose reward is a judge's `Verdict` on one attempt (1.0:
accepted; less: how close it came) and whose threshold is 1.0: the first accepted attempt is
returned, else the best. BestOfN gives every attempt its own ``rollout_id`` (DSPy's cache
keys on it, so a re-ask is never answered with the reply that failed) and hands only the
returned attempt's trace to the optimizers. The attempt module (`Attempt`) makes up for what
DSPy 3.4.1's BestOfN does not do for re-asking here, and `Reask` adds its async path:

- a re-ask shows the model what failed: the judge's feedback fills the next attempt's
  feedback input (``previous_error``) when the signature has one;
- BestOfN copies the LM at ``temperature=1.0`` for each attempt; an attempt takes only the
  copy's ``rollout_id`` and asks the program's own LM, at its configured temperature (the
  sweeps tune it; a benchmarked agent keeps its own), into its history and callbacks
  (usage accounting reads them);
- an attempt never raises, so BestOfN's catch-and-``print`` path (stdout, where ``--json``
  goes) never runs: an unreadable answer is judged 0 with the parse error as feedback, an
  LM call failure stops the asking and `Reask` raises it as it came;
- an attempt shares the caller's predictor instead of BestOfN's deep copy of it, so a trace
  names the program's own predictor (optimizers bootstrap demos from it) and no copy of a
  large judge (an environment) is made per attempt;
- BestOfN has no ``aforward``: `Reask.aforward` is its loop with awaited attempts, so
  re-asks run on the event loop that generation items and rollouts share.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dspy

from trajectory2task.programs.generation.steps import Steps, arun_steps, run_steps
from trajectory2task.programs.lm.accounting import first_line


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
    """What the attempts of one re-ask share (BestOfN hands it to every attempt)."""

    feedback: str | None = None  # the feedback input of the next attempt; None: the caller's own
    unreadable: Exception | None = None  # the last answer that did not parse
    failure: Exception | None = None  # an LM call failure: no further attempt calls the LM
    attempts: int = 0


_NO_ANSWER = Verdict(0.0)


@dataclass(frozen=True)
class _Tried:
    """One attempt's outcome, as BestOfN's reward function and selection see it."""

    answer: dspy.Prediction | None
    verdict: Verdict


class Attempt(dspy.Module):
    """One attempt of a `Reask`: the predictor's answer and the judge's verdict on it."""

    def __init__(self, predict: dspy.Predict, judge: Judge, feedback_field: str | None,
                 unreadable: tuple[type[Exception], ...], rollout_offset: int = 0) -> None:
        super().__init__()
        self.rollout_offset = rollout_offset
        self.predict = predict
        self.judge = judge
        self.feedback_field = feedback_field
        self.unreadable = unreadable
        self.rollout_id: int | None = None

    def deepcopy(self) -> Attempt:
        """A copy that shares the predictor (see the module docstring)."""
        return copy.copy(self)

    def set_lm(self, lm: dspy.BaseLM) -> None:
        """BestOfN hands each attempt a copy of the LM with its own ``rollout_id`` (at
        ``temperature=1.0``); the attempt takes the rollout id and asks the program's own LM
        with it, at that LM's temperature, into its history and callbacks."""
        self.rollout_id = (lm.kwargs.get("rollout_id") or 0) + self.rollout_offset

    def get_lm(self) -> dspy.BaseLM | None:
        return self.predict.lm

    def _ask(self, asking: _Asking, inputs: dict[str, Any], rollout_id: int | None) -> Steps[_Tried]:
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
        except Exception as exc:  # noqa: BLE001 - an LM call failure is raised by Reask, after BestOfN
            asking.failure = exc
            return _Tried(None, _NO_ANSWER)
        verdict = self.judge(answer)
        asking.feedback = verdict.feedback
        return _Tried(answer, verdict)

    def forward(self, asking: _Asking, **inputs: Any) -> _Tried:
        """BestOfN's call, on its copy of this attempt (``set_lm`` gave it the rollout id)."""
        return run_steps(self._ask(asking, inputs, self.rollout_id), lambda request: self.predict(**request))

    async def aforward(self, asking: _Asking, rollout_id: int, **inputs: Any) -> _Tried:
        """`Reask.aforward`'s call: the rollout id comes as an argument, so no copy is made."""
        predict = self.predict
        return await arun_steps(self._ask(asking, inputs, rollout_id + self.rollout_offset),
                                lambda request: predict.acall(**request))


def _cap_trace() -> None:
    """Hold the trace to ``max_trace_size``, as Predict does for its own entries: BestOfN
    extends the caller's trace (outside an optimizer, DSPy's global one) without a bound."""
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


class Reask(dspy.BestOfN):
    """Up to ``attempts`` asks of ``predict`` until ``judge`` accepts one (see the module
    docstring). Called with the predictor's inputs (and ``config``, as a Predict takes it);
    returns an `Answer`, or raises the LM call failure that stopped the asking.

    Built per call around the program's own predictor, so it adds no parameter to the
    program (saved state and optimizers see the predictor under its own name).
    ``rollout_offset`` is added to every attempt's rollout id (another trial of the same
    asks gets rollout ids of its own)."""

    def __init__(self, predict: dspy.Predict, attempts: int, judge: Judge = accept,
                 feedback_field: str | None = None, unreadable: tuple[type[Exception], ...] | None = None,
                 rollout_offset: int = 0) -> None:
        from dspy.utils.exceptions import AdapterParseError

        super().__init__(module=Attempt(predict, judge, feedback_field, unreadable or (AdapterParseError,),
                                        rollout_offset),
                         N=max(1, attempts), reward_fn=lambda _inputs, attempt: attempt.verdict.reward, threshold=1.0)

    def _lm(self) -> dspy.BaseLM:
        """The LM BestOfN copies per attempt; none is an error in the caller's terms (BestOfN
        itself would fail on ``None.kwargs``)."""
        lm = self.module.get_lm() or dspy.settings.lm
        if lm is None:
            raise ValueError("No LM is loaded: configure one with dspy.configure(lm=dspy.LM(...)) "
                             "or set it on the program with program.set_lm(lm)")
        return lm

    def forward(self, **inputs: Any) -> Answer:
        self._lm()
        asking = _Asking()
        best = super().forward(asking=asking, **inputs)
        _cap_trace()
        return self._answer(asking, best)

    async def aforward(self, **inputs: Any) -> Answer:
        """BestOfN's ``forward`` with each attempt awaited (DSPy 3.4.1 has no async BestOfN)."""
        asking = _Asking()
        module, reward_fn, threshold = self.module, self.reward_fn, self.threshold
        start = self._lm().kwargs.get("rollout_id", 0)
        best, best_trace, best_reward = None, None, -float("inf")
        for rollout_id in range(start, start + self.N):
            with dspy.context(trace=[]):
                # BestOfN copies the attempt and the LM per rollout id; an attempt takes only the id
                tried = await module.aforward(asking, rollout_id, **inputs)
                trace = dspy.settings.trace.copy()
                reward = reward_fn(inputs, tried)
            if reward > best_reward:
                best, best_trace, best_reward = tried, trace, reward
            if reward >= threshold:
                break
        if best_trace and dspy.settings.trace is not None:
            dspy.settings.trace.extend(best_trace)
            _cap_trace()
        return self._answer(asking, best)

    @staticmethod
    def _answer(asking: _Asking, best: _Tried | None) -> Answer:
        if asking.failure is not None:
            raise asking.failure
        assert best is not None  # every attempt returns a prediction
        return Answer(prediction=best.answer, verdict=best.verdict, attempts=asking.attempts,
                      unreadable=asking.unreadable)
