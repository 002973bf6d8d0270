"""Every use of DSPy beyond its public surface, in one module, each with its reason.

DSPy 3.4 offers no public way to do these; each is checked by ``tests/test_dspy_private.py``,
which fails when a DSPy release renames, removes or reshapes one, so an upgrade shows at once
what to redo. Nothing else in the package imports a private DSPy name.
"""

from __future__ import annotations

import inspect
from typing import Any

import dspy

# The JSON schema DSPy's JSONAdapter sends as `response_format` for a signature. Our structured
# adapter sends the same schema in other endpoints' dialects (llama.cpp, vLLM), so it must be
# the one DSPy parses against; DSPy exposes it only through these helpers.
from dspy.adapters.json_adapter import _get_structured_outputs_response_format as structured_outputs_format
from dspy.adapters.json_adapter import _has_open_ended_mapping as has_open_ended_mapping

# The ChatAdapter steps the agent's adapter (trajectory2task.programs.loop.agent.AgentAdapter)
# overrides: native tool calls planned into the request, and tool calls read back from the
# reply. DSPy has no public hook between formatting and the LM call.
CHAT_ADAPTER_HOOKS: dict[str, tuple[str, ...]] = {
    "_call_preprocess": ("self", "lm", "lm_kwargs", "signature", "inputs"),
    "_call_postprocess": ("self", "processed_signature", "original_signature", "outputs", "lm", "lm_kwargs"),
}

# The module whose functions run DSPy's in-process steps of an LM call (prepare, cache, pricing):
# trajectory2task.programs.lm.event_loop runs them inline instead of on a worker thread.
EXECUTION_MODULE = "dspy.clients.execution"


def model_rates(model: str) -> tuple[float | None, float | None]:
    """(input, output) USD per token for ``model`` in DSPy's bundled model map, the rates its
    own cost accounting uses (no public lookup by model name)."""
    from dspy.clients.model_metadata import model_info, rate

    provider, _, name = model.partition("/") if "/" in model else ("openai", "", model)
    info = model_info(provider, name) or {}
    return rate(info, "input_cost_per_token"), rate(info, "output_cost_per_token")


def hook_parameters(name: str) -> tuple[str, ...]:
    """The parameters DSPy's ChatAdapter has for hook ``name`` (for the compatibility test)."""
    return tuple(inspect.signature(getattr(dspy.ChatAdapter, name)).parameters)


def execution_module() -> Any:
    import importlib

    return importlib.import_module(EXECUTION_MODULE)
