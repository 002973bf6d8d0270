"""Generic helpers of exploration and task writing: fact checks and trajectory replay.

What a domain knows (where ids sit in observations, how to build a write, which facts a
task must state) comes from its generation kit (``trajectory2task.domains.kit``); this module holds what
works the same for every domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trajectory2task.domains import Environment
from trajectory2task.domains.kit import ExplorationKit, KitError, RequiredFact
from trajectory2task.signatures.models import Step, UserScenario

# ---------------------------------------------------------------- facts


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def scenario_text(scenario: UserScenario) -> str:
    """Everything the simulated user may say: the fields it reads its facts from."""
    parts = [scenario.persona, scenario.reason_for_call, scenario.known_info, scenario.unknown_info,
             scenario.task_instructions, *scenario.withheld_info, scenario.revised_request]
    return "\n".join(p for p in parts if p)


def missing_facts(text: str, facts: Sequence[RequiredFact]) -> list[RequiredFact]:
    """The facts none of whose alternatives appears in the text (case and spacing ignored)."""
    haystack = _normal(text)
    return [f for f in facts if not any(_normal(a) in haystack for a in f.alternatives if a.strip())]


# ---------------------------------------------------------------- replay


def trajectory_replays(env: Environment[Any], steps: Sequence[Step], end_state_hash: str) -> str | None:
    """None when the steps, replayed from the initial state, give the same observations and
    end state; else what differed. Every call runs again (none is answered from the replay tree),
    so a tool that reads hidden state shows here."""
    episode = env.episode(cached=False)
    for index, step in enumerate(steps):
        result = episode.call(step.call.name, step.call.arguments)
        if result.error or step.error:
            return f"step {index} ({step.call.name}) is an error on replay: {result.output[:120]}"
        if result.output != step.observation:
            return f"step {index} ({step.call.name}) gives a different observation on replay"
    if episode.state_hash() != end_state_hash:
        return "replay ends in a different state"
    return None


# ---------------------------------------------------------------- the domain hooks

def baseline_kit(env: Environment[Any]) -> ExplorationKit:
    """The domain's exploration kit; the offline baselines cannot run without one."""
    kit = env.domain.kit
    if kit is None:
        raise KitError(f"domain '{env.domain.name}' has no generation kit, which the offline baselines need; "
                       "generate with an LM (--lm) or add a kit (docs/domains.md: 'Adding a domain')")
    return kit.exploration


def lm_kit(env: Environment[Any]) -> ExplorationKit:
    """What the LM programs use: the domain's kit, or the domain-general one."""
    from trajectory2task.domains.generic_kit import generic_exploration

    return env.domain.kit.exploration if env.domain.kit is not None else generic_exploration(env)
