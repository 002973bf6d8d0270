"""Token counts where a count must be guessed, before any call: one home for both ways.

- ``estimate_tokens``: characters / ``CHARS_PER_TOKEN``, the cheap guess the usage ledger's
  callback makes before every call (a prompt that will not fit the model's window is warned
  about); it must cost nothing per call.
- ``litellm_tokenizer``: LiteLLM's tokenizer for the model, what ``--estimate`` counts the
  rendered prompts with; it downloads nothing (``counting_model``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from trajectory2task.programs.lm.prices import ensure_local_cost_map

__all__ = ["CHARS_PER_TOKEN", "Tokenizer", "counting_model", "estimate_tokens", "litellm_tokenizer",
           "litellm_tool_tokenizer"]

Tokenizer = Callable[[list[dict[str, Any]]], int]

# characters per token for the before-the-call check: t2t's prompts are JSON-heavy (schemas,
# observations); SmolLM2's tokenizer gave 9,261 tokens for the explorer's first prompt of
# ~17,200 characters (1.86 a token). Erring low makes the warning come early, not late.
CHARS_PER_TOKEN = 2


def estimate_tokens(messages: Any) -> int:
    """A rough prompt size for checks made before a call (see CHARS_PER_TOKEN)."""
    if not isinstance(messages, list):
        return len(str(messages or "")) // CHARS_PER_TOKEN
    chars = 0
    for m in messages:
        content = m.get("content") if isinstance(m, Mapping) else None
        chars += len(content) if isinstance(content, str) else len(str(content or ""))
        chars += len(str(m.get("tool_calls") or "")) if isinstance(m, Mapping) else 0
    return chars // CHARS_PER_TOKEN


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
