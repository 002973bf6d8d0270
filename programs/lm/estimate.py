"""Estimates of a run's LM calls, tokens and cost, from prompts rendered without calling a model.

The rendering is each program's business (``trajectory2task.programs.generation.estimate`` for generation,
``trajectory2task.programs.loop.estimate`` for rollouts); here are the figures they fill in. Tokens are
counted by ``trajectory2task.programs.lm.tokens``; the cost is priced by
``trajectory2task.programs.lm.prices``, the table the usage ledger records calls with.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from trajectory2task.programs.lm.prices import token_rates


class RolePrompts(BaseModel):
    """One role's calls on the sampled items: how many, and their prompt and answer sizes."""

    role: str
    calls_per_item: float  # planned, per unit of the run (an item, a rollout): what the sample asks
    max_calls_per_item: int  # with every re-ask and turn the programs allow
    prompt_tokens: list[int] = Field(default_factory=list)  # one per rendered call
    completion_tokens: list[int] = Field(default_factory=list)

    @property
    def mean_prompt(self) -> float:
        return sum(self.prompt_tokens) / len(self.prompt_tokens) if self.prompt_tokens else 0.0

    @property
    def max_prompt(self) -> int:
        return max(self.prompt_tokens, default=0)

    @property
    def mean_completion(self) -> float:
        return sum(self.completion_tokens) / len(self.completion_tokens) if self.completion_tokens else 0.0


class RunEstimate(BaseModel):
    """What a run of ``units`` units (generation items, rollouts) would send, per role and in all."""

    units: int
    sampled: int
    roles: list[RolePrompts]
    models: dict[str, str] = Field(default_factory=dict)  # role -> model, for the cost

    def calls(self, upper: bool = False) -> float:
        return self.units * sum(r.max_calls_per_item if upper else r.calls_per_item for r in self.roles)

    def tokens(self, role: RolePrompts, upper: bool = False) -> tuple[float, float]:
        """(prompt, completion) tokens of a role over the run; the bound takes the largest prompt."""
        calls = self.units * (role.max_calls_per_item if upper else role.calls_per_item)
        return calls * (role.max_prompt if upper else role.mean_prompt), calls * role.mean_completion

    def cost(self, upper: bool = False) -> float | None:
        """USD where every role's model has a known price (``prices.token_rates``), else None."""
        if self.unpriced_models():
            return None
        total = 0.0
        for role in self.roles:
            rates = token_rates(self.models.get(role.role, ""))
            assert rates is not None  # unpriced_models() is empty
            total += rates.cost(*self.tokens(role, upper))
        return total

    def unpriced_models(self) -> list[str]:
        """The roles' models without a known price (a role without a model counts as one, named '')."""
        return sorted({self.models.get(r.role, "") for r in self.roles
                       if token_rates(self.models.get(r.role, "")) is None})


def adapter_for(structured: str) -> Any:
    """The adapter a role's typed calls go through (``trajectory2task.programs.lm.session.LMSession.install_adapter``):
    the structured one formats as DSPy's JSON adapter does; ``off`` is DSPy's text format."""
    import dspy

    from trajectory2task.programs.lm.structured import StructuredAdapter

    return dspy.ChatAdapter() if structured == "off" else StructuredAdapter()
