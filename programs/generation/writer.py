"""Task writing: a general Task from a valid Trajectory.

Two writers with one contract, ``write(trajectory, env, provenance) -> WritingResult``:

- ``TaskWriter`` (here), a DSPy module: one ``dspy.Predict(WriteTask)`` writes the user
  scenario and the communicate info;
- ``BaselineWriter`` (`trajectory2task.programs.generation.writing`, which imports no DSPy):
  template sentences per write tool (from the domain's grounding).

Code, not the LM, decides what the task is (`writing.written_task`): the gold actions are the
trajectory's calls (reads included, as tau2 does), the expected end state is the
trajectory's, and the scenario is accepted only when it states every fact the agent must
learn from the user (identity, order ids, items, payment method, addresses, reason), as
computed from the trajectory by the domain's grounding (`writing.check_scenario`).
"""

from __future__ import annotations

from typing import Any

import dspy

from trajectory2task.domains import Environment
from trajectory2task.domains.kit import Claim, ExplorationKit, TrajectoryFacts
from trajectory2task.programs.binding import Bound, as_prediction
from trajectory2task.programs.generation.writing import (
    WriterError,
    WritingResult,
    check_scenario,
    missing_reason,
    written_task,
)
from trajectory2task.programs.generation.grounding import lm_kit
from trajectory2task.programs.generation.prompting import shown_steps
from trajectory2task.programs.lm.errors import first_line
from trajectory2task.programs.generation.reask import Answer, Reask, Verdict
from trajectory2task.signatures.generation import WriteTask
from trajectory2task.signatures.models import Provenance, Trajectory, UserScenario

def _observed(info: str, trajectory: Trajectory) -> bool:
    wanted = info.lower().replace(",", "")
    return bool(wanted) and any(wanted in s.observation.lower().replace(",", "") for s in trajectory.steps)


class TaskWriter(dspy.Module):
    """LM writer: one Predict writes the scenario; code checks it states the required facts.

    Up to ``attempts`` predictions are made (`trajectory2task.programs.generation.reask.Reask`); an output that does not parse or misses a fact is asked again, with what was
    wrong in ``previous_error``. After that: a rejection naming the facts the closest
    attempt missed, or ``WriterError`` (no output parsed at all).
    """

    name = "writer"

    def __init__(self, env: Environment[Any] | None = None, attempts: int = 2,
                 grounding: ExplorationKit | None = None) -> None:
        super().__init__()
        self.write_task = dspy.Predict(WriteTask)
        self.attempts = attempts
        self.grounding = grounding
        self.environment: Bound[Environment[Any]] = Bound(env)  # not saved, shared by copies

    def _reask(self, trajectory: Trajectory, env: Environment[Any]) -> tuple[Reask, TrajectoryFacts, dict[str, Any]]:
        from dspy.utils.exceptions import AdapterParseError

        grounding = self.grounding or lm_kit(env)
        facts = grounding.describe(env, trajectory.steps, trajectory.seed_entity)
        required = [f.prompt_line() for f in facts.all_facts()]

        def judge(prediction: dspy.Prediction) -> Verdict:
            scenario = prediction.scenario
            if not isinstance(scenario, UserScenario):
                return Verdict(0.0, "Your answer had no scenario object.")
            missing = check_scenario(scenario, facts)
            if not missing:
                return Verdict(1.0)
            # parsed beats unparsed, and more facts stated beats fewer
            return Verdict(0.5 + 0.49 * (1 - len(missing) / len(required)),
                           "The scenario did not state these required facts verbatim: "
                           + "; ".join(f.prompt_line() for f in missing))

        reask = Reask(self.write_task, self.attempts, judge, feedback_field="previous_error",
                      unreadable=(AdapterParseError, ValueError))
        inputs = dict(trajectory=shown_steps(trajectory.steps), required_facts=required, previous_error="")
        return reask, facts, inputs

    def _result(self, answer: Answer, trajectory: Trajectory, env: Environment[Any], facts: TrajectoryFacts,
                provenance: Provenance | None) -> WritingResult:
        prediction = answer.prediction
        if prediction is None or not isinstance(prediction.scenario, UserScenario):
            detail = first_line(answer.unreadable) if answer.unreadable else f"no scenario in {prediction!r}"[:200]
            raise WriterError(f"writer output did not parse after {answer.attempts} attempts: {detail}")
        missing = check_scenario(prediction.scenario, facts)
        if missing:
            return WritingResult(rejected_reason=missing_reason(missing), missing=missing)
        # the general condition has no withheld details and no change of mind
        scenario = prediction.scenario.model_copy(update={"withheld_info": [], "change_trigger": None,
                                                          "revised_request": None})
        # communicate info is gated by substring checks: keep only what the agent can learn from a tool
        info = [i for i in (prediction.communicate_info or []) if isinstance(i, str) and _observed(i, trajectory)]
        said = [c for c in (prediction.claims or []) if isinstance(c, Claim)]  # checked by the verifier
        return WritingResult(task=written_task(trajectory, env, scenario, info, provenance, facts.all_claims() + said))

    def forward(self, trajectory: Trajectory, env: Environment[Any] | None = None,
                provenance: Provenance | None = None) -> dspy.Prediction:
        """``Prediction(task, rejected_reason, missing, result)`` for ``trajectory`` on the bound
        environment (or ``env``)."""
        env = self.environment.get(env, "TaskWriter")
        reask, facts, inputs = self._reask(trajectory, env)
        return as_prediction(self._result(reask(**inputs), trajectory, env, facts, provenance))

    async def aforward(self, trajectory: Trajectory, env: Environment[Any] | None = None,
                       provenance: Provenance | None = None) -> dspy.Prediction:
        env = self.environment.get(env, "TaskWriter")
        reask, facts, inputs = self._reask(trajectory, env)
        return as_prediction(self._result(await reask.acall(**inputs), trajectory, env, facts, provenance))

    def write(self, trajectory: Trajectory, env: Environment[Any],
              provenance: Provenance | None = None) -> WritingResult:
        return self(trajectory=trajectory, env=env, provenance=provenance).result

    async def awrite(self, trajectory: Trajectory, env: Environment[Any],
                     provenance: Provenance | None = None) -> WritingResult:
        return (await self.acall(trajectory=trajectory, env=env, provenance=provenance)).result
