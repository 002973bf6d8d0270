"""Building a ``dspy.LM`` for a role's settings (``trajectory2task.programs.lm.config.LMSettings``).

How calls behave (dspy 3.4.1 / litellm 1.110, measured against ``tests/llm_server.py``):

- DSPy owns retries (``num_retries``), on both of its engines; LiteLLM is called with
  ``num_retries=0``. Retried: 429, 5xx, timeouts and transport errors. The wait before a retry
  is the server's ``Retry-After`` when given, else 1 s, 2 s, 4 s, ... (capped at 60 s). 4xx
  other than 429 is not retried. After the last retry the ``dspy.utils.exceptions.LM*Error``
  of the last attempt is raised (e.g. ``LMServerError``, ``LMRateLimitError``,
  ``LMTimeoutError``, ``LMInvalidRequestError``), all subclasses of ``LMError``.
- A 200 whose body is not JSON: DSPy's native engine raises ``LMProviderError`` at once (not
  retried); the LiteLLM engine sees an ``InternalServerError`` and DSPy retries it
  (``LMServerError`` if it persists).
- ``engine="auto"`` (what ``build_lm`` uses unless it must register function calling) sends
  OpenAI-compatible models through DSPy's own HTTP client and never imports LiteLLM
  (~2.7 s import); other providers go through LiteLLM.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from trajectory2task.programs.lm.config import LMConfigError, LMSettings, reply_cap
from trajectory2task.programs.lm.prices import ensure_local_cost_map

if TYPE_CHECKING:
    import dspy

__all__ = ["build_lm", "supports_native_tools"]

# the key sent to an api_base given without one: local servers need none, the clients insist
LOCAL_DUMMY_KEY = "sk-local"

ensure_local_cost_map()

_register_lock = threading.Lock()
# extra dspy.LM arguments that only DSPy's own engines take (a custom engine refuses them)
_DSPY_ENGINE_KEYS = {"engine", "async_engine", "api_base", "api_key", "base_url", "timeout", "headers",
                     "extra_headers", "extra_body"}


def _provider_of(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "openai"


def _register_function_calling(model: str) -> None:
    """Tell LiteLLM's model map that ``model`` supports function calling (chat mode)."""
    import litellm

    with _register_lock:
        if litellm.supports_function_calling(model=model):
            return
        litellm.register_model({model: {
            "litellm_provider": _provider_of(model),
            "mode": "chat",
            "supports_function_calling": True,
            "supports_tool_choice": True,
        }})


def build_lm(settings: LMSettings, *, cache: bool = False, role: str | None = None, ledger: Any = None,
             warn: Any = None, **extra: Any) -> dspy.LM:
    """A ``dspy.LM`` for these settings (``cache=False`` by default: tests stay deterministic).

    With ``role`` and ``ledger`` (a ``trajectory2task.programs.lm.accounting.CallLedger``), the LM carries an
    ``LMRole`` callback: every call it (or a copy of it) makes is recorded in the ledger with
    tokens, cost, latency and error; ``warn`` gets one-line warnings (a prompt that will not fit).

    Token limit. At an ``api_base`` (a local or self-hosted OpenAI-compatible server) the limit
    is sent as ``max_tokens`` in the request body: DSPy's own client otherwise sends
    ``max_completion_tokens``, which llama-cpp-python ignores (outputs then run to the end of
    the context).

    ``api_base`` without ``api_key`` sends the dummy key ``sk-local``: OpenAI-compatible local
    servers need none, but the clients refuse to run without one.

    Function calling. ``dspy.ChatAdapter(use_native_function_calling=True)`` sends OpenAI
    ``tools`` only when ``lm.supports_function_calling`` is true, and otherwise SILENTLY falls
    back to describing the tools in the prompt text. That property comes from DSPy's bundled
    model map for OpenAI-compatible models on its native engine (``openai/gpt-4o-mini``: yes,
    even at a local ``api_base``), else from LiteLLM's map; any custom name
    (``openai/my-local-model``, ``hosted_vllm/qwen3-8b``) is unknown and therefore false.

    - ``function_calling=True``: when the maps do not already say so, the model is registered
      in LiteLLM's map with ``supports_function_calling`` and the LM is built with
      ``engine="litellm"`` (DSPy's native engine reads only its own bundled map), so that
      ``tools`` really are sent. Raises ``RuntimeError`` if the capability still is not seen.
    - ``function_calling=False``: the LM is unchanged; pass
      ``use_native_function_calling=supports_native_tools(settings)`` to the adapter.
    - ``None``: whatever the maps say; check ``lm.supports_function_calling``.

    Concurrency. With ``max_concurrent`` the LM is a ``trajectory2task.programs.lm.limits.BoundedLM``: at most
    that many of its calls (and its copies') are in flight at once.

    ``extra`` goes to ``dspy.LM`` unchanged (e.g. ``callbacks``).

    Local models. ``local/PATH`` (a GGUF file, a model directory, a `t2t finetune` output)
    builds a `trajectory2task.programs.lm.local.LocalLM` that generates in this process; endpoint knobs
    (api_base, timeout, retries, max_concurrent) do not apply to it.
    """
    ensure_local_cost_map()
    from trajectory2task.programs.lm.local import is_local_model
    from trajectory2task.programs.lm.limits import BoundedLM, CallLimiter

    if is_local_model(settings.model):
        return _build_local(settings, role, ledger, warn, **extra)

    api_key = settings.api_key or (LOCAL_DUMMY_KEY if settings.api_base else None)
    common: dict[str, Any] = dict(
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
        cache=cache,
        num_retries=settings.num_retries,
    )
    if role is not None and ledger is not None:
        from trajectory2task.programs.lm.accounting import LMRole

        common["callbacks"] = [*extra.pop("callbacks", []), LMRole(role, settings, ledger, warn)]
    # DSPy's own engines take the connection settings; the api_base engine owns them itself
    kwargs: dict[str, Any] = dict(common, timeout=settings.timeout_s)
    if settings.api_base:
        kwargs["api_base"] = settings.api_base
    if api_key:
        kwargs["api_key"] = api_key
    if settings.api_base and settings.max_tokens is not None:
        kwargs["extra_body"] = {"max_tokens": settings.max_tokens}
    kwargs.update(extra)
    # DSPy's own engine (T2T_ENGINE=dspy, a proxy, the structured twin) reads replies under the same bound
    from trajectory2task.programs.lm.dspy_private import bound_dspy_engine_replies

    bound_dspy_engine_replies(reply_cap())
    lm = BoundedLM(settings.model, **kwargs)
    if settings.api_base and settings.engine == "api_base" and not set(extra) & _DSPY_ENGINE_KEYS:
        from trajectory2task.programs.lm.http_engine import Endpoint, engines_for, proxied

        if not proxied(settings.api_base):  # the lean engine connects directly; a proxy keeps DSPy's
            endpoint = Endpoint(api_base=settings.api_base, api_key=api_key, timeout_s=settings.timeout_s,
                                max_reply_bytes=reply_cap())
            # the model's capabilities as DSPy's maps give them (the engine declares them to
            # DSPy); function_calling=True declares tools without registering with LiteLLM
            if not (settings.function_calling and not lm.supports_function_calling):
                # (a custom model name declared function-calling keeps LiteLLM, below, whose map
                # can be told so)
                engines = engines_for(endpoint, like=lm, function_calling=settings.function_calling)
                twin, lm = lm, BoundedLM(settings.model, **common, **extra, **engines)
                lm.dspy_engine_lm = twin  # for what DSPy's canonical request cannot carry (structured.lm_for)
    if settings.function_calling and not lm.supports_function_calling:
        _register_function_calling(settings.model)
        kwargs["engine"] = "litellm"
        from trajectory2task.programs.lm.litellm_bound import bound_litellm_replies

        bound_litellm_replies(reply_cap(), settings.timeout_s)
        lm = BoundedLM(settings.model, **kwargs)
        if not lm.supports_function_calling:
            raise RuntimeError(f"function_calling=True but DSPy still sees no function calling for "
                               f"{settings.model!r} after registering it with LiteLLM")
    if settings.max_concurrent is not None:
        lm.limiter = CallLimiter(settings.max_concurrent)
        if getattr(lm, "dspy_engine_lm", None) is not None:
            lm.dspy_engine_lm.limiter = lm.limiter  # one bound for the role, whichever engine
    return lm


def _build_local(settings: LMSettings, role: str | None, ledger: Any, warn: Any, **extra: Any) -> dspy.LM:
    """``local/PATH``: a model run in this process (`trajectory2task.programs.lm.local.LocalLM`), with the same
    ledger callback as any other LM. A missing path or missing training packages is a config
    error (one line at the command line)."""
    from trajectory2task.programs.lm.local import LocalLM, TrainExtraMissing

    callbacks = list(extra.pop("callbacks", []))
    if role is not None and ledger is not None:
        from trajectory2task.programs.lm.accounting import LMRole

        callbacks.append(LMRole(role, settings, ledger, warn))
    try:
        return LocalLM(settings.model, temperature=settings.temperature, max_tokens=settings.max_tokens,
                       callbacks=callbacks, **extra)
    except (TrainExtraMissing, ValueError, OSError) as exc:
        raise LMConfigError(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from None


def supports_native_tools(settings: LMSettings) -> bool:
    """Whether an LM built from ``settings`` gets native OpenAI ``tools`` (see ``build_lm``):
    the explicit ``function_calling`` when set, else what the model maps say. Use it as
    ``dspy.ChatAdapter(use_native_function_calling=supports_native_tools(settings))``."""
    if settings.function_calling is not None:
        return settings.function_calling
    from trajectory2task.programs.lm.local import is_local_model

    if is_local_model(settings.model):
        return True  # LocalLM renders tools for any model (without loading it here)
    return bool(build_lm(settings).supports_function_calling)
