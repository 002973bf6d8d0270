"""Task writing: a general Task from a valid Trajectory.

Two writers with one contract, ``write(trajectory, env, provenance) -> WritingResult``:

- ``TaskWriter``, a DSPy module: one ``dspy.Predict(WriteTask)`` writes the user scenario
  and the communicate info;
- ``BaselineWriter``: template sentences per write tool (from the domain's grounding).

Code, not the LM, decides what the task is: the gold actions are the trajectory's calls
(reads included, as tau2 does), the expected end state is the trajectory's, and the
scenario is accepted only when it states every fact the agent must learn from the user
(identity, order ids, items, payment method, addresses, reason), as computed from the
trajectory by the domain's grounding.
"""

from __future__ import annotations

from typing import Any

import dspy
from pydantic import BaseModel, Field

from trajectory2task.domains import Environment
from trajectory2task.domains.kit import Claim, ExplorationKit, RequiredFact, TrajectoryFacts
from trajectory2task.programs.binding import Bound, as_prediction
from trajectory2task.programs.generation.grounding import baseline_kit, lm_kit, missing_facts, scenario_text
from trajectory2task.programs.generation.prompting import shown_steps
from trajectory2task.programs.lm.accounting import first_line
from trajectory2task.programs.generation.reask import Answer, Reask, Verdict
from trajectory2task.signatures.generation import WriteTask
from trajectory2task.signatures.models import Action, Provenance, Task, TaskDescription, Trajectory, UserScenario

GENERAL_INSTRUCTIONS = ("Tell the agent what you want and answer its questions with the details above; give only "
                        "what it asks for. Confirm when the agent asks you to. Do not invent details that are not "
                        "written here.")


class WritingResult(BaseModel):
    """A general task, or why the written scenario was rejected."""

    task: Task | None = None
    rejected_reason: str | None = None
    missing: list[RequiredFact] = Field(default_factory=list)


class WriterError(RuntimeError):
    """The LM gave no output that parses after the allowed attempts."""


def general_task_id(trajectory: Trajectory) -> str:
    return f"{trajectory.id}-general"


def _task(trajectory: Trajectory, env: Environment[Any], scenario: UserScenario, communicate_info: list[str],
          provenance: Provenance | None, claims: list[Claim]) -> Task:
    task_id = general_task_id(trajectory)
    gold = [Action(name=s.call.name, arguments=dict(s.call.arguments), action_id=f"{task_id}_{i}",
                   requestor="assistant") for i, s in enumerate(trajectory.steps)]
    writes = [s.call.name for s in trajectory.steps if env.tools[s.call.name].kind == "write"]
    prov = (provenance or trajectory.provenance).model_copy(update={"trajectory_id": trajectory.id})
    return Task(
        id=task_id,
        domain=trajectory.domain,
        condition="general",
        scenario=scenario.model_copy(update={"domain": trajectory.domain}),
        gold_actions=gold,
        expected_state_hash=trajectory.end_state_hash,
        initial_state_hash=env.initial_hash(),
        communicate_info=communicate_info,
        reward_basis=["DB", "COMMUNICATE"] if communicate_info else ["DB"],
        description=TaskDescription(purpose=general_purpose(writes, communicate_info)),
        claims=claims,
        provenance=prov,
    )


def general_purpose(writes: list[str], communicate_info: list[str]) -> str:
    """What a general task is, in one line: the writes the user asks for, and what the agent must say."""
    asked = ", then ".join(w.replace("_", " ") for w in writes) or "information only"
    told = f"; the agent must tell the user {', '.join(communicate_info)}" if communicate_info else ""
    return f"general: the user asks for {len(writes)} change(s): {asked}{told}."


def check_scenario(scenario: UserScenario, facts: TrajectoryFacts) -> list[RequiredFact]:
    """The required facts the scenario does not state."""
    return missing_facts(scenario_text(scenario), facts.all_facts())


class BaselineWriter:
    """Templates per write tool: the scenario states each write as one sentence with its facts."""

    name = "baseline_writer"

    def __init__(self, grounding: ExplorationKit | None = None) -> None:
        self.grounding = grounding

    def write(self, trajectory: Trajectory, env: Environment[Any],
              provenance: Provenance | None = None) -> WritingResult:
        grounding = self.grounding or baseline_kit(env)
        facts = grounding.describe(env, trajectory.steps, trajectory.seed_entity)
        requests = [r.sentence for r in facts.requests]
        reason = requests[0] + ("" if len(requests) == 1 else " " + " ".join(
            f"Then, {s[0].lower()}{s[1:]}" for s in requests[1:]))
        scenario = UserScenario(reason_for_call=reason, known_info=facts.known_info or None,
                                unknown_info=facts.unknown_info, task_instructions=GENERAL_INSTRUCTIONS)
        missing = check_scenario(scenario, facts)
        if missing:  # a template that misses a fact is a bug in the grounding's templates
            return WritingResult(rejected_reason=_missing_reason(missing), missing=missing)
        return WritingResult(task=_task(trajectory, env, scenario, facts.all_communicate(), provenance,
                                        facts.all_claims()))


def _missing_reason(missing: list[RequiredFact]) -> str:
    return "scenario does not state: " + "; ".join(f.prompt_line() for f in missing)


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
            return WritingResult(rejected_reason=_missing_reason(missing), missing=missing)
        # the general condition has no withheld details and no change of mind
        scenario = prediction.scenario.model_copy(update={"withheld_info": [], "change_trigger": None,
                                                          "revised_request": None})
        # communicate info is gated by substring checks: keep only what the agent can learn from a tool
        info = [i for i in (prediction.communicate_info or []) if isinstance(i, str) and _observed(i, trajectory)]
        said = [c for c in (prediction.claims or []) if isinstance(c, Claim)]  # checked by the verifier
        return WritingResult(task=_task(trajectory, env, scenario, info, provenance, facts.all_claims() + said))

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
