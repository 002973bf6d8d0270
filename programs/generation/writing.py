"""Task writing without an LM: how a general Task is made from a valid Trajectory and its
written scenario, the check that a scenario states every fact the agent must learn from the
user, and ``BaselineWriter``, template sentences per write tool (from the domain's
grounding). The LM writer (``writer.TaskWriter``) writes the scenario instead; the task is
made and checked here for both. This module imports no DSPy, so an offline run (and a Ray
worker's start) never loads it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from trajectory2task.domains import Environment
from trajectory2task.domains.kit import Claim, ExplorationKit, RequiredFact, TrajectoryFacts
from trajectory2task.programs.generation.grounding import baseline_kit, missing_facts, scenario_text
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


def written_task(trajectory: Trajectory, env: Environment[Any], scenario: UserScenario, communicate_info: list[str],
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
            return WritingResult(rejected_reason=missing_reason(missing), missing=missing)
        return WritingResult(task=written_task(trajectory, env, scenario, facts.all_communicate(), provenance,
                                        facts.all_claims()))


def missing_reason(missing: list[RequiredFact]) -> str:
    return "scenario does not state: " + "; ".join(f.prompt_line() for f in missing)
