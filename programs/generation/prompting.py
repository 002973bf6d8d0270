"""What each generation role is shown, sized to fit a small model's window.

Measured on SmolLM2 (8,192 tokens) the explorer's first prompt was ~9.3k tokens: the policy,
all tool schemas as OpenAI JSON (half the prompt) and the seed; the writer's ~9.6k, mostly
observations. Here the roles get:

- the tools as one line each: name, parameters with their types, the description's first line
  (``compact_tools``); the full schemas stay what the agent gets in ``bench``;
- the trajectory with observations cut to a budget (``shown_steps``): the newest in full as far
  as the budget goes, older ones to their first characters, each cut saying how much is left out.

``t2t prompts`` (``trajectory2task.programs.generation.estimate``) measures what each role sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trajectory2task.signatures.models import Step

# the observation characters the newest steps may show in full (the explorer and the writer;
# the adaptation, which also gets the code's findings, less), and what an older one keeps
OBSERVATION_BUDGET_CHARS = 3000
ADAPTATION_OBSERVATION_CHARS = 1500
OLD_OBSERVATION_CHARS = 120


def _type_of(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    """A JSON-schema type in a few characters: string, integer, array[string], object{a,b}."""
    if "$ref" in schema:
        schema = defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
    if "anyOf" in schema:
        kinds = [_type_of(s, defs) for s in schema["anyOf"] if s.get("type") != "null"]
        return "|".join(kinds) or "null"
    if "enum" in schema:
        return "|".join(str(v) for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array[{_type_of(schema.get('items', {}), defs)}]"
    if kind == "object" and schema.get("properties"):
        return "object{" + ",".join(schema["properties"]) + "}"
    return str(kind)


def compact_tools(env: Any) -> list[str]:
    """Each tool of the domain as one line: ``name(arg: type, opt?: type) -- what it does``."""
    lines = []
    for spec in env.domain.tools:
        schema = spec.parameters
        required = set(schema.get("required", []))
        defs = schema.get("$defs", {})
        args = ", ".join(f"{name}{'' if name in required else '?'}: {_type_of(prop, defs)}"
                         for name, prop in schema.get("properties", {}).items())
        first = " ".join(spec.description.strip().split("\n\n")[0].split())  # the first paragraph, one line
        lines.append(f"{spec.name}({args}) [{spec.kind}] -- {first}")
    return lines


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters not shown]"


def shown_steps(steps: Sequence[Step], budget_chars: int = OBSERVATION_BUDGET_CHARS) -> list[Step]:
    """The steps with their observations cut to ``budget_chars`` in all, newest first in full."""
    shown: list[Step] = []
    left = budget_chars
    for step in reversed(steps):
        if len(step.observation) <= left:
            observation = step.observation
            left -= len(observation)
        else:
            observation = _cut(step.observation, max(left, OLD_OBSERVATION_CHARS))
            left = 0
        shown.append(step if observation is step.observation else step.model_copy(update={"observation": observation}))
    shown.reverse()
    return shown
