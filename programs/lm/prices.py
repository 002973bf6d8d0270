"""The one price table of LM calls: what an estimate (``--estimate``) multiplies its token
counts by and what the usage ledger (``trajectory2task.programs.lm.accounting``) records per call.

The rates are DSPy's bundled model map (a snapshot of LiteLLM's ``model_prices_and_context_window``
that DSPy prices its own calls from), read without importing LiteLLM. A model the map does not
price has no rates: its cost is None, "unknown", never $0. A model the map prices at zero
costs $0, and so does a ``local/PATH`` model (generated in this process).

Only input and output tokens are priced: a provider's discount for cached prompt tokens is not
modelled, so a recorded cost is an upper bound of the bill, as the estimate is.
"""

from __future__ import annotations

import os
import threading

from pydantic import BaseModel, ConfigDict

__all__ = ["TokenRates", "call_cost", "ensure_local_cost_map", "token_rates"]


def ensure_local_cost_map() -> None:
    """Make LiteLLM (and DSPy's model metadata) read the bundled model map instead of
    fetching it over the network on import, unless the user already chose a value."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


ensure_local_cost_map()


class TokenRates(BaseModel):
    """USD per token of one model."""

    model_config = ConfigDict(frozen=True)

    prompt: float
    completion: float

    def cost(self, prompt_tokens: int | float, completion_tokens: int | float) -> float:
        return prompt_tokens * self.prompt + completion_tokens * self.completion


_RATES: dict[str, TokenRates | None] = {}
_rates_lock = threading.Lock()


def token_rates(model: str) -> TokenRates | None:
    """The rates of ``model`` (a LiteLLM model string; one without a provider is looked up as
    OpenAI's), or None when the map prices neither its input nor its output. Looked up once
    per model."""
    if not model:
        return None
    if model in _RATES:  # every recorded call asks: no lock once the model is known
        return _RATES[model]
    with _rates_lock:
        if model not in _RATES:
            ensure_local_cost_map()
            from trajectory2task.programs.lm.dspy_private import model_rates
            from trajectory2task.programs.lm.local import is_local_model

            # a local/PATH model generates in this process: nobody bills its tokens
            prompt, completion = (0.0, 0.0) if is_local_model(model) else model_rates(model)
            # half a price is no price: a bill from the input side alone would look complete
            _RATES[model] = (TokenRates(prompt=prompt, completion=completion)
                             if prompt is not None and completion is not None else None)
        return _RATES[model]


def call_cost(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """USD for one call's tokens, or None when ``model`` has no known price."""
    rates = token_rates(model)
    return None if rates is None else rates.cost(prompt_tokens, completion_tokens)
