"""Exploration: a valid multi-turn tool-call trajectory from one seed entity.

Two explorers with one contract, ``explore(env, seed, ...) -> ExplorationResult``:

- ``Explorer`` (here), a DSPy module: one ``dspy.Predict(ProposeExplorationCall)`` proposes
  each call; Python executes it on the episode, shows the observation (kept steps) or the
  error (the next proposal's ``previous_error``) and loops until the goal's writes are done
  or the step limit is reached.
- ``BaselineExplorer`` (`trajectory2task.programs.generation.exploration`, which imports no
  DSPy): a seeded random walk over the tool graph.

Both walk with `exploration.Walk` and keep a trajectory only when `exploration.accept_trajectory`
does: a write, a changed state, and a replay from the initial state to the same observations
and end state.
"""

from __future__ import annotations

import json
import random
from typing import Any

import dspy
from pydantic import BaseModel

from trajectory2task.domains import Environment
from trajectory2task.domains.kit import ExplorationKit
from trajectory2task.programs.binding import Bound, as_prediction
from trajectory2task.programs.generation.exploration import (
    ExplorationError,
    ExplorationResult,
    Walk,
    accept_trajectory,
    exploration_goal,
    plan_walk,
)
from trajectory2task.programs.generation.grounding import lm_kit
from trajectory2task.programs.generation.reask import Answer, Reask, Verdict
from trajectory2task.programs.generation.steps import Steps, arun_steps, run_steps
from trajectory2task.programs.generation.prompting import compact_tools, shown_steps
from trajectory2task.programs.lm.errors import first_line
from trajectory2task.signatures.generation import ProposeExplorationCall, exploration_signature
from trajectory2task.signatures.models import Provenance, ToolCall


class Explorer(dspy.Module):
    """LM explorer: one Predict proposes each call; code executes, filters and validates.

    The proposal's tool name is typed as a ``Literal`` of the domain's tools (built per
    domain, ``trajectory2task.signatures.generation.exploration_signature``), so constrained decoding can
    only name a tool the domain has. An output that does not parse is asked again
    (``parse_attempts`` in all per proposal); after that ``ExplorationError`` is raised. LM
    call failures (after the LM's own retries) propagate as DSPy's ``LMError``. ``explore``
    calls the LM synchronously, ``aexplore`` awaits it (DSPy's ``acall``); both run the
    same loop (`_walk`).
    """

    name = "explorer"

    def __init__(self, max_steps: int = 12, max_writes: int = 2, parse_attempts: int = 2,
                 grounding: ExplorationKit | None = None, env: Environment[Any] | None = None) -> None:
        super().__init__()
        self.environment: Bound[Environment[Any]] = Bound(env)  # not saved, shared by copies
        self.propose = dspy.Predict(ProposeExplorationCall)
        self.max_steps = max_steps
        self.max_writes = max_writes
        self.parse_attempts = parse_attempts
        self.grounding = grounding

    def _walk(self, env: Environment[Any], seed: int, trajectory_id: str | None, provenance: Provenance | None,
              target_write: str | None, goal: str | None) -> Steps[ExplorationResult]:
        """The exploration loop: yields each proposal's inputs, receives the proposed call."""
        grounding = self.grounding or lm_kit(env)
        rng = random.Random(seed)
        walk = Walk(env, grounding)
        target, _, start = plan_walk(env, grounding, walk, rng, self.max_writes, target_write)
        instruction = exploration_goal(target, target_write)
        # the optimizer may have rewritten the instruction: type the tool names on the current signature
        signature = exploration_signature(self.propose.signature, tuple(env.tools))
        tools = compact_tools(env)
        previous_error = ""
        proposals = 0
        while proposals < self.max_steps and walk.writes < target:
            call = yield dict(signature=signature, domain_summary=env.domain.summary, policy=env.policy, tools=tools,
                              seed_entity=start.description, exploration_goal=instruction,
                              trajectory=shown_steps(walk.steps), previous_error=previous_error)
            proposals += 1
            step = walk.run(call)
            previous_error = (f"{call.name}({json.dumps(call.arguments, sort_keys=True)}) failed: {step.observation}"
                              if step.error else "")
        return accept_trajectory(env, walk.steps, walk.dropped, proposals,
                       trajectory_id=trajectory_id or f"traj-{seed}", seed_entity=start.entity,
                       goal=goal or instruction, end_state_hash=walk.episode.state_hash(),
                       provenance=provenance or Provenance(source="lm", seed=seed))

    def forward(self, seed: int, target_write: str | None = None, env: Environment[Any] | None = None,
                trajectory_id: str | None = None, provenance: Provenance | None = None,
                goal: str | None = None) -> dspy.Prediction:
        """``Prediction(trajectory, dropped, proposals, rejected_reason, result)``: one walk from
        ``seed`` on the bound environment (or ``env``)."""
        env = self.environment.get(env, "Explorer")
        return as_prediction(run_steps(self._walk(env, seed, trajectory_id, provenance, target_write, goal),
                                       self._propose))

    async def aforward(self, seed: int, target_write: str | None = None, env: Environment[Any] | None = None,
                       trajectory_id: str | None = None, provenance: Provenance | None = None,
                       goal: str | None = None) -> dspy.Prediction:
        env = self.environment.get(env, "Explorer")
        return as_prediction(await arun_steps(self._walk(env, seed, trajectory_id, provenance, target_write, goal),
                                              self._apropose))

    def explore(self, env: Environment[Any], seed: int, trajectory_id: str | None = None,
                provenance: Provenance | None = None, target_write: str | None = None,
                goal: str | None = None) -> ExplorationResult:
        return self(env=env, seed=seed, trajectory_id=trajectory_id, provenance=provenance,
                    target_write=target_write, goal=goal).result

    async def aexplore(self, env: Environment[Any], seed: int, trajectory_id: str | None = None,
                       provenance: Provenance | None = None, target_write: str | None = None,
                       goal: str | None = None) -> ExplorationResult:
        return (await self.acall(env=env, seed=seed, trajectory_id=trajectory_id, provenance=provenance,
                                 target_write=target_write, goal=goal)).result

    def _reask(self) -> Reask:
        """Up to ``parse_attempts`` asks until one is a tool call (`Reask`, each ask
        with its own rollout id); a re-ask is told why the last answer was not one."""
        from dspy.utils.exceptions import AdapterParseError

        return Reask(self.propose, self.parse_attempts, _is_tool_call, feedback_field="previous_error",
                     unreadable=(AdapterParseError, ValueError))

    def _propose(self, inputs: dict[str, Any]) -> ToolCall:
        return self._proposed(self._reask()(**inputs))

    async def _apropose(self, inputs: dict[str, Any]) -> ToolCall:
        return self._proposed(await self._reask().acall(**inputs))

    def _proposed(self, answer: Answer) -> ToolCall:
        if not answer.accepted:
            detail = (first_line(answer.unreadable) if answer.prediction is None and answer.unreadable
                      else answer.verdict.feedback)
            raise ExplorationError(f"explorer output did not parse after {answer.attempts} attempts: {detail[:200]}")
        call = answer.prediction.tool_call
        return ToolCall(name=call.name, arguments=dict(getattr(call, "arguments", None) or {}))


def _is_tool_call(prediction: dspy.Prediction) -> Verdict:
    call = prediction.tool_call
    if isinstance(call, BaseModel) and getattr(call, "name", None):
        return Verdict(1.0)
    return Verdict(0.0, f"Your answer was not a tool call: {call!r}"[:300])
