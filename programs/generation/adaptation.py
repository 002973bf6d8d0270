"""The LM intent adaptation, :class:`IntentAdaptation`: the wording step of the adaptation
(`trajectory2task.programs.generation.adapting`) asked of an LM, one ``dspy.Predict`` per
condition signature. Code proposes, the LM words, code checks: the control flow, the checks
and the offline wording (:class:`~trajectory2task.programs.generation.adapting.BaselineAdaptation`)
live in ``adapting``, which imports no DSPy.

LM errors (after DSPy's own retries) and unparseable LM output propagate as exceptions,
for the caller to retry or record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dspy

from trajectory2task.domains import Environment
from trajectory2task.domains.kit import Claim
from trajectory2task.programs.binding import Bound, as_prediction
from trajectory2task.programs.generation.adapting import (
    AdaptationContext,
    AdaptationResult,
    WordingRequest,
    adaptation_steps,
    worded,
)
from trajectory2task.programs.generation.prompting import ADAPTATION_OBSERVATION_CHARS, shown_steps
from trajectory2task.programs.generation.reask import Reask
from trajectory2task.programs.generation.steps import arun_steps, run_steps
from trajectory2task.signatures.adaptation import AdaptAmbiguous, AdaptChanging, AdaptInfeasible
from trajectory2task.signatures.adaptation_facts import (
    AmbiguityFacts,
    ChangeFacts,
    InfeasibilityFacts,
    InfeasibleCandidate,
    TaskBrief,
)
from trajectory2task.signatures.models import Action, Task, Trajectory, UserScenario

# ---------------------------------------------------------------- the LM adaptation


MAX_LM_INFEASIBLE_CANDIDATES = 4  # each costs ~250 tokens of a small model's window


def _one_per_rule(candidates: Sequence[InfeasibleCandidate]) -> list[InfeasibleCandidate]:
    seen: set[str] = set()
    out = []
    for candidate in candidates:
        if candidate.rule not in seen:
            seen.add(candidate.rule)
            out.append(candidate)
    return out


async def _aword(wording: IntentAdaptation, request: WordingRequest) -> Any:
    """The LM's words for a request, with DSPy's async LM calls."""
    if request.condition == "ambiguous":
        return await wording.aword_ambiguous(request.ctx, request.facts)
    if request.condition == "changing":
        return await wording.aword_changing(request.ctx, request.facts)
    return await wording.aword_infeasible(request.ctx, request.facts)


class IntentAdaptation(dspy.Module):
    """Adapts tasks with an LM: one ``dspy.Predict`` per condition, checked by code.

    A wording that does not parse is asked again (``attempts`` in all,
    `trajectory2task.programs.generation.reask.Reask`: each ask with its own rollout id);
    after that the last parse error is raised."""

    def __init__(self, lm: dspy.BaseLM | None = None, attempts: int = 2, env: Environment[Any] | None = None) -> None:
        super().__init__()
        self.environment: Bound[Environment[Any]] = Bound(env)  # not saved, shared by copies
        self.ambiguous = dspy.Predict(AdaptAmbiguous)
        self.changing = dspy.Predict(AdaptChanging)
        self.infeasible = dspy.Predict(AdaptInfeasible)
        # kept out of the predictors so that saved state holds no LM; None: dspy.settings.lm
        self.adaptation_lm = lm
        self.attempts = max(1, attempts)

    def adapt(self, task: Task, trajectory: Trajectory, condition: str, env: Environment[Any],
              seed: int, prefer_write: str | None = None) -> AdaptationResult:
        steps = adaptation_steps(task, trajectory, condition, env, seed, prefer_write)
        with dspy.context(**({"lm": self.adaptation_lm} if self.adaptation_lm is not None else {})):
            return run_steps(steps, lambda request: worded(self, request))

    async def aadapt(self, task: Task, trajectory: Trajectory, condition: str, env: Environment[Any],
                     seed: int, prefer_write: str | None = None) -> AdaptationResult:
        """`adapt` with DSPy's async LM calls (``acall``)."""
        steps = adaptation_steps(task, trajectory, condition, env, seed, prefer_write)
        with dspy.context(**({"lm": self.adaptation_lm} if self.adaptation_lm is not None else {})):
            return await arun_steps(steps, lambda request: _aword(self, request))

    def forward(self, task: Task, trajectory: Trajectory, condition: str, seed: int = 0,
                env: Environment[Any] | None = None, prefer_write: str | None = None) -> dspy.Prediction:
        """``Prediction(task, rejected_reason, detail, result)``: ``task`` adapted to
        ``condition`` on the bound environment (or ``env``)."""
        env = self.environment.get(env, "IntentAdaptation")
        return as_prediction(self.adapt(task, trajectory, condition, env, seed, prefer_write))

    async def aforward(self, task: Task, trajectory: Trajectory, condition: str, seed: int = 0,
                       env: Environment[Any] | None = None, prefer_write: str | None = None) -> dspy.Prediction:
        env = self.environment.get(env, "IntentAdaptation")
        return as_prediction(await self.aadapt(task, trajectory, condition, env, seed, prefer_write))

    def _ask(self, predict: dspy.Predict, inputs: dict[str, Any]) -> dspy.Prediction:
        return Reask(predict, self.attempts)(**inputs).parsed()

    async def _aask(self, predict: dspy.Predict, inputs: dict[str, Any]) -> dspy.Prediction:
        return (await Reask(predict, self.attempts).acall(**inputs)).parsed()

    # Wording: each condition's words from one prediction, called (word_*) or awaited (aword_*)
    @staticmethod
    def _inputs(ctx: AdaptationContext, facts: Any) -> dict[str, Any]:
        """The prediction's inputs. No policy: code found the facts, and each refused write
        comes with the rule and the fact that refuse it."""
        return dict(task=TaskBrief.of(ctx.parent), facts=facts,
                    trajectory=shown_steps(ctx.trajectory.steps, ADAPTATION_OBSERVATION_CHARS))

    @staticmethod
    def _ambiguous_words(out: Any) -> tuple[UserScenario, list[str], list[Claim]]:
        return out.scenario, list(out.withheld_info), _lm_claims(out)

    @staticmethod
    def _changing_words(out: Any) -> tuple[UserScenario, str, str, list[Claim]]:
        return out.scenario, out.change_trigger, out.revised_request, _lm_claims(out)

    @staticmethod
    def _infeasible_words(out: Any) -> tuple[Action, UserScenario, str, list[Claim]]:
        return out.forbidden_action, out.scenario, out.explanation, _lm_claims(out)

    @staticmethod
    def _shown_candidates(facts: InfeasibilityFacts) -> InfeasibilityFacts:
        """One candidate per rule, the first few; their claims are code's business, not the LM's."""
        shown = [c.model_copy(update={"claims": []}) for c in _one_per_rule(facts.candidates)]
        return facts.model_copy(update={"candidates": shown[:MAX_LM_INFEASIBLE_CANDIDATES]})

    def word_ambiguous(self, ctx: AdaptationContext, facts: AmbiguityFacts) -> tuple[UserScenario, list[str], list[Claim]]:
        return self._ambiguous_words(self._ask(self.ambiguous, self._inputs(ctx, facts)))

    async def aword_ambiguous(self, ctx: AdaptationContext, facts: AmbiguityFacts) -> tuple[UserScenario, list[str],
                                                                                   list[Claim]]:
        return self._ambiguous_words(await self._aask(self.ambiguous, self._inputs(ctx, facts)))

    def word_changing(self, ctx: AdaptationContext, facts: ChangeFacts) -> tuple[UserScenario, str, str, list[Claim]]:
        return self._changing_words(self._ask(self.changing, self._inputs(ctx, facts)))

    async def aword_changing(self, ctx: AdaptationContext, facts: ChangeFacts) -> tuple[UserScenario, str, str, list[Claim]]:
        return self._changing_words(await self._aask(self.changing, self._inputs(ctx, facts)))

    def word_infeasible(self, ctx: AdaptationContext, facts: InfeasibilityFacts) -> tuple[Action, UserScenario, str,
                                                                                 list[Claim]]:
        return self._infeasible_words(self._ask(self.infeasible, self._inputs(ctx, self._shown_candidates(facts))))

    async def aword_infeasible(self, ctx: AdaptationContext, facts: InfeasibilityFacts) -> tuple[Action, UserScenario, str,
                                                                                        list[Claim]]:
        return self._infeasible_words(await self._aask(self.infeasible, self._inputs(ctx, self._shown_candidates(facts))))


def _lm_claims(prediction: Any) -> list[Claim]:
    """The claims an LM prediction lists (a prediction without the field lists none)."""
    claims = getattr(prediction, "claims", None) or []
    return [c for c in claims if isinstance(c, Claim)]
