"""Exploration: a valid multi-turn tool-call trajectory from one seed entity.

Two explorers with one contract, ``explore(env, seed, ...) -> ExplorationResult``:

- ``Explorer``, a DSPy module: one ``dspy.Predict(ProposeExplorationCall)`` proposes each
  call; Python executes it on the episode, shows the observation (kept steps) or the error
  (the next proposal's ``previous_error``) and loops until the goal's writes are done or
  the step limit is reached.
- ``BaselineExplorer``: a seeded random walk over the tool graph, reading to discover
  entities and then writing, with arguments grounded in earlier observations.

Both keep only calls that succeeded, and both accept a trajectory only when it holds a
write, changes the state, and replays from the initial state to the same observations and
end state.
"""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import dspy
from pydantic import BaseModel, Field

from trajectory2task.domains import Environment, Episode
from trajectory2task.domains.common_tools import CALCULATOR_TOOL
from trajectory2task.domains.kit import Call, ExplorationKit, Knowledge, Seed
from trajectory2task.programs.binding import Bound, as_prediction
from trajectory2task.programs.generation.grounding import baseline_kit, lm_kit, trajectory_replays
from trajectory2task.programs.generation.reask import Answer, Reask, Verdict
from trajectory2task.programs.generation.steps import Steps, arun_steps, run_steps
from trajectory2task.programs.generation.prompting import compact_tools, shown_steps
from trajectory2task.programs.lm.accounting import first_line
from trajectory2task.programs.verification.coherence import pointless_pairs
from trajectory2task.signatures.generation import ProposeExplorationCall, exploration_signature
from trajectory2task.signatures.models import Provenance, Step, ToolCall, Trajectory


class ExplorationResult(BaseModel):
    """A trajectory, or why there is none; the dropped (failed) proposals either way."""

    trajectory: Trajectory | None = None
    dropped: list[Step] = Field(default_factory=list)
    proposals: int = 0
    rejected_reason: str | None = None


class ExplorationError(RuntimeError):
    """The LM gave no usable proposal after the allowed attempts (its output did not parse)."""


def _call_key(call: ToolCall) -> str:
    return call.name + json.dumps(call.arguments, sort_keys=True)


def _necessary_writes(env: Environment[Any], steps: list[Step], end_state_hash: str) -> tuple[list[Step], str]:
    """The steps without any write that a later one undoes or overwrites (a second address
    change): the trajectory ends in the same state without it, so no task could require it.
    The remaining calls are run again, so every observation is the one the agent would see."""
    index = 0
    while index < len(steps):
        if env.tools[steps[index].call.name].kind == "write":
            episode = env.episode()
            start = index  # a sum worked out for this write goes with it
            while start > 0 and steps[start - 1].call.name == CALCULATOR_TOOL:
                start -= 1
            rest = steps[:start] + steps[index + 1:]
            replayed = []
            for step in rest:
                result = episode.call(step.call.name, step.call.arguments)
                replayed.append(Step(call=step.call, observation=result.output, error=result.error))
            if episode.state_hash() == end_state_hash and not any(s.error for s in replayed):
                steps = replayed
                continue
        index += 1
    return steps, end_state_hash


def _without_pointless_writes(env: Environment[Any], steps: list[Step], end_state_hash: str) -> tuple[list[Step], str]:
    """The trajectory cut just before the first write that makes an earlier one pointless
    (overwrites or cancels its record without needing it, or cancels what the walk created):
    a task that required both would ask a customer for something no customer wants."""
    while True:
        pairs = pointless_pairs(env, [s.call for s in steps])
        if not pairs:
            return steps, end_state_hash
        cut = pairs[0][1]
        while cut > 0 and steps[cut - 1].call.name == CALCULATOR_TOOL:  # a sum worked out for it goes too
            cut -= 1
        steps = steps[:cut]
        episode = env.episode()
        for step in steps:
            episode.call(step.call.name, step.call.arguments)
        end_state_hash = episode.state_hash()


def _accept(env: Environment[Any], steps: list[Step], dropped: list[Step], proposals: int, *, trajectory_id: str,
            seed_entity: str, goal: str, end_state_hash: str, provenance: Provenance) -> ExplorationResult:
    """The checks every explorer applies before a trajectory is kept."""

    def reject(reason: str) -> ExplorationResult:
        return ExplorationResult(dropped=dropped, proposals=proposals, rejected_reason=reason)

    steps, end_state_hash = _necessary_writes(env, steps, end_state_hash)
    steps, end_state_hash = _without_pointless_writes(env, steps, end_state_hash)
    if not any(env.tools[s.call.name].kind == "write" for s in steps):
        return reject("no successful write within the step limit")
    if end_state_hash == env.initial_hash():
        return reject("the writes leave the database unchanged")
    mismatch = trajectory_replays(env, steps, end_state_hash)
    if mismatch is not None:
        return reject(f"trajectory does not replay: {mismatch}")
    trajectory = Trajectory(id=trajectory_id, domain=env.domain.name, steps=steps, seed_entity=seed_entity, goal=goal,
                            initial_state_hash=env.initial_hash(), end_state_hash=end_state_hash,
                            provenance=provenance)
    return ExplorationResult(trajectory=trajectory, dropped=dropped, proposals=proposals)


class _Walk:
    """One exploration's episode, kept steps, dropped steps and knowledge."""

    def __init__(self, env: Environment[Any], grounding: ExplorationKit) -> None:
        self.env = env
        self.episode: Episode[Any] = env.episode()
        self.knowledge = Knowledge(grounding.hints)
        self.steps: list[Step] = []
        self.dropped: list[Step] = []
        self.tried: set[str] = set()
        self.writes = 0

    def run(self, call: ToolCall) -> Step:
        self.tried.add(_call_key(call))
        result = self.episode.call(call.name, call.arguments)
        step = Step(call=ToolCall(name=call.name, arguments=call.arguments), observation=result.output,
                    error=result.error)
        if result.error:
            self.dropped.append(step)  # a failing call changed nothing: leave it out of the trajectory
        else:
            self.steps.append(step)
            self.knowledge.absorb(step.call, result.output)
            if self.env.tools[call.name].kind == "write":
                self.writes += 1
        return step


def _plan(env: Environment[Any], grounding: ExplorationKit, walk: _Walk, rng: random.Random, max_writes: int,
          target_write: str | None) -> tuple[int, list[str | None], Seed]:
    """How many writes, which write tool each is meant to be, and the seed entity: drawn in
    one order for both explorers, so a seed gives the LM and the baseline the same customer.

    The intended tools are drawn up front so that the walk reads until it can make them and
    rarer writes (item exchanges) occur as often as the data allows; the seed entity is drawn
    among those the first intended write applies to."""
    target = rng.randint(1, max_writes)
    write_tools = sorted(t for t in grounding.write_builders if t in env.tools)
    intended: list[str | None] = [rng.choice(write_tools) if write_tools else None for _ in range(target)]
    if target_write is not None:
        intended[0] = target_write
    return target, intended, grounding.sample_seed(walk.episode, rng, for_write=intended[0])


def _goal(target_writes: int, target_write: str | None = None) -> str:
    first = f" The first write must be a call of {target_write}." if target_write else ""
    return (f"Serve this customer: identify them, look up what you need, then make {target_writes} successful "
            f"write call(s) that change the database and that the policy allows.{first}")


class BaselineExplorer:
    """Seeded random walk: identify the seed customer, read to discover their entities,
    then write with arguments built from what was observed. Deterministic for a seed."""

    name = "baseline_explorer"

    def __init__(self, max_steps: int = 20, max_writes: int = 3, grounding: ExplorationKit | None = None) -> None:
        self.max_steps = max_steps
        self.max_writes = max_writes
        self.grounding = grounding

    def explore(self, env: Environment[Any], seed: int, trajectory_id: str | None = None,
                provenance: Provenance | None = None, target_write: str | None = None,
                goal: str | None = None) -> ExplorationResult:
        """Explore from a seed entity drawn with ``seed``. ``target_write`` makes the first
        write that tool when the data allows; ``goal`` is recorded as the trajectory's goal."""
        grounding = self.grounding or baseline_kit(env)
        rng = random.Random(seed)
        # its own stream: whether a sum goes through `calculate` leaves the walk itself as it was
        sums = random.Random(f"{seed}:calculate")
        walk = _Walk(env, grounding)
        target, intended, start = _plan(env, grounding, walk, rng, self.max_writes, target_write)
        write_tools = sorted(t for t in grounding.write_builders if t in env.tools)
        walk.run(rng.choice(grounding.seed_calls(start.customer)))
        for call in start.first_reads:  # an order seed: look the order up before wandering
            walk.run(call)
        proposals, reads = 1 + len(start.first_reads), 0
        while proposals < self.max_steps and walk.writes < target:
            read_calls = [c for c in self._read_candidates(env, grounding, walk.knowledge)
                          if _call_key(c) not in walk.tried]
            wanted = self._write_candidates(env, grounding, walk, rng, [intended[walk.writes]])
            if wanted and (not read_calls or rng.random() < min(0.9, 0.3 * reads)):
                call = wanted[0]
            elif read_calls:
                call = rng.choice(read_calls)
                reads += 1
            else:
                fallback = self._write_candidates(env, grounding, walk, rng, write_tools)
                if not fallback:
                    break
                call = rng.choice(fallback)
            proposals += self._calculate_first(env, grounding, walk, sums, call)
            walk.run(call)
            proposals += 1
        return _accept(env, walk.steps, walk.dropped, proposals,
                       trajectory_id=trajectory_id or f"traj-{seed}", seed_entity=start.entity,
                       goal=goal or _goal(target, target_write), end_state_hash=walk.episode.state_hash(),
                       provenance=provenance or Provenance(source="baseline", seed=seed))

    @staticmethod
    def _calculate_first(env: Environment[Any], grounding: ExplorationKit, walk: _Walk, sums: random.Random,
                         call: ToolCall) -> int:
        """Before a write whose amount the task will ask for, work the sum out with the
        `calculate` tool about half the time (an agent may also do it in its head); the
        number of calls made."""
        if grounding.calculations is None or CALCULATOR_TOOL not in env.tools \
                or env.tools[call.name].kind != "write":
            return 0
        made = 0
        for calculation in grounding.calculations(walk.episode, Call(name=call.name, arguments=call.arguments)):
            if sums.random() < 0.5:
                sum_call = calculation.call()
                walk.run(ToolCall(name=sum_call.name, arguments=sum_call.arguments))
                made += 1
        return made

    @staticmethod
    def _read_candidates(env: Environment[Any], grounding: ExplorationKit, knowledge: Knowledge) -> list[ToolCall]:
        """Read calls whose required arguments are all ids already observed (by argument name)."""
        out = []
        for name in grounding.walk_reads:
            spec = env.tools.get(name)
            if spec is None:
                continue
            required = spec.parameters.get("required", [])
            pools = [knowledge.known(arg) for arg in required]
            if not required or not all(pools):
                continue
            for values in itertools.islice(itertools.product(*pools), 50):
                out.append(ToolCall(name=name, arguments=dict(zip(required, values))))
        return out

    @staticmethod
    def _write_candidates(env: Environment[Any], grounding: ExplorationKit, walk: _Walk, rng: random.Random,
                          tools: list[str]) -> list[ToolCall]:
        out = []
        for name in tools:
            builder = grounding.write_builders.get(name)
            if builder is None or name not in env.tools:
                continue
            arguments = builder(walk.knowledge, rng)
            if arguments is not None:
                call = ToolCall(name=name, arguments=arguments)
                if _call_key(call) not in walk.tried:
                    out.append(call)
        return out


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
        walk = _Walk(env, grounding)
        target, _, start = _plan(env, grounding, walk, rng, self.max_writes, target_write)
        instruction = _goal(target, target_write)
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
        return _accept(env, walk.steps, walk.dropped, proposals,
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
