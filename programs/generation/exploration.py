"""Exploration without an LM: the walk every explorer takes, the checks a kept trajectory
passes, and ``BaselineExplorer``, a seeded random walk over the tool graph, reading to
discover entities and then writing, with arguments grounded in earlier observations.

Every explorer keeps only calls that succeeded, and accepts a trajectory only when it holds
a write, changes the state, and replays from the initial state to the same observations and
end state (`accept_trajectory`). The LM explorer (``explorer.Explorer``) walks the same way;
this module imports no DSPy, so an offline run (and a Ray worker's start) never loads it.
"""
from __future__ import annotations

import itertools
import json
import random
from typing import Any

from pydantic import BaseModel, Field

from trajectory2task.domains import Environment, Episode
from trajectory2task.domains.common_tools import CALCULATOR_TOOL
from trajectory2task.domains.kit import Call, ExplorationKit, Knowledge, Seed
from trajectory2task.programs.generation.grounding import baseline_kit, trajectory_replays
from trajectory2task.programs.verification.coherence import pointless_pairs
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


def accept_trajectory(env: Environment[Any], steps: list[Step], dropped: list[Step], proposals: int, *,
                      trajectory_id: str, seed_entity: str, goal: str, end_state_hash: str,
                      provenance: Provenance) -> ExplorationResult:
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


class Walk:
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


def plan_walk(env: Environment[Any], grounding: ExplorationKit, walk: Walk, rng: random.Random, max_writes: int,
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


def exploration_goal(target_writes: int, target_write: str | None = None) -> str:
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
        walk = Walk(env, grounding)
        target, intended, start = plan_walk(env, grounding, walk, rng, self.max_writes, target_write)
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
        return accept_trajectory(env, walk.steps, walk.dropped, proposals,
                       trajectory_id=trajectory_id or f"traj-{seed}", seed_entity=start.entity,
                       goal=goal or exploration_goal(target, target_write), end_state_hash=walk.episode.state_hash(),
                       provenance=provenance or Provenance(source="baseline", seed=seed))

    @staticmethod
    def _calculate_first(env: Environment[Any], grounding: ExplorationKit, walk: Walk, sums: random.Random,
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
    def _write_candidates(env: Environment[Any], grounding: ExplorationKit, walk: Walk, rng: random.Random,
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
