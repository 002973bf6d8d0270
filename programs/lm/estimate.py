"""Estimates of a run's LM calls, tokens and cost, from prompts rendered without calling a model.

The rendering is each program's business (``trajectory2task.programs.generation.estimate`` for generation,
``trajectory2task.programs.loop.estimate`` for rollouts); here are the figures they fill in, a tokenizer and
LiteLLM's prices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from trajectory2task.programs.lm.prices import ensure_local_cost_map

Tokenizer = Callable[[list[dict[str, Any]]], int]


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
        """USD where LiteLLM prices every role's model, else None."""
        total = 0.0
        for role in self.roles:
            price = token_prices(self.models.get(role.role, ""))
            if price is None:
                return None
            prompt, completion = self.tokens(role, upper)
            total += prompt * price[0] + completion * price[1]
        return total


def token_prices(model: str) -> tuple[float, float] | None:
    """USD per (prompt, completion) token from LiteLLM's model map, or None when it has no price."""
    if not model:
        return None
    ensure_local_cost_map()
    import litellm

    litellm.suppress_debug_info = True  # else it prints a provider list for every model it does not know
    try:
        prompt, completion = litellm.cost_per_token(model=model, prompt_tokens=1, completion_tokens=1)
    except Exception:  # noqa: BLE001 - LiteLLM raises for a model it does not know
        return None
    return (float(prompt), float(completion)) if prompt or completion else None


# LiteLLM's tokenizers that ship inside it; any other Hugging Face one it would download
_BUNDLED_TOKENIZERS = frozenset({"anthropic", "deepseek"})


def counting_model(model: str) -> tuple[str, bool]:
    """(the model LiteLLM counts tokens as, whether that is an approximation). An estimate
    downloads nothing: where LiteLLM would fetch the model's tokenizer from the Hugging Face
    hub (Llama, Cohere), tokens are counted with its default tokenizer (tiktoken's
    cl100k_base, bundled) instead, and the estimate says so."""
    if not model:
        return "", False
    ensure_local_cost_map()
    import litellm

    try:
        from litellm.utils import huggingface_tokenizer_kind
    except ImportError:  # a LiteLLM without the lookup: forbid its downloads outright
        litellm.disable_hf_tokenizer_download = True
        return model, False
    kind = huggingface_tokenizer_kind(model)
    if kind is None or kind in _BUNDLED_TOKENIZERS:
        return model, False
    return "", True


def litellm_tokenizer(model: str) -> Tokenizer:
    """Count with LiteLLM's tokenizer for ``model`` (its default one for a model it does not
    know, or whose tokenizer it would download: `counting_model`)."""
    import litellm

    counted, _ = counting_model(model)
    return lambda messages: int(litellm.token_counter(model=counted, messages=messages))


def litellm_tool_tokenizer(model: str, tools: list[dict[str, Any]]) -> Tokenizer:
    """`litellm_tokenizer` for calls that also send ``tools`` (OpenAI function schemas)."""
    import litellm

    counted, _ = counting_model(model)
    return lambda messages: int(litellm.token_counter(model=counted, messages=messages, tools=tools))


def adapter_for(structured: str) -> Any:
    """The adapter a role's typed calls go through (``trajectory2task.programs.lm.session.LMSession.install_adapter``):
    the structured one formats as DSPy's JSON adapter does; ``off`` is DSPy's text format."""
    import dspy

    from trajectory2task.programs.lm.structured import StructuredAdapter

    return dspy.ChatAdapter() if structured == "off" else StructuredAdapter()
