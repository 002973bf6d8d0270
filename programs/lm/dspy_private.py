"""Every use of DSPy beyond its public surface, in one module, each with its reason.

DSPy 3.4 offers no public way to do these; each is checked by ``tests/test_dspy_private.py``,
which fails when a DSPy release renames, removes or reshapes one, so an upgrade shows at once
what to redo. Nothing else in the package imports a private DSPy name.
"""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import BaseModel

# DSPy is imported where each function runs, not here: the event loop reads this module's
# EXECUTION_MODULE, and a run with no LM (offline generation, a Ray worker's start) need not
# pay DSPy's import (about half a second).


# The JSON schema DSPy's JSONAdapter sends as `response_format` for a signature. Our structured
# adapter sends the same schema in other endpoints' dialects (llama.cpp, vLLM), so it must be
# the one DSPy parses against; DSPy exposes it only through these helpers.
def structured_outputs_format(signature: Any, use_native_function_calling: bool = True) -> type[BaseModel]:
    """The pydantic model of the JSON DSPy's JSONAdapter asks ``signature``'s outputs in."""
    from dspy.adapters.json_adapter import _get_structured_outputs_response_format

    return _get_structured_outputs_response_format(signature, use_native_function_calling)


def has_open_ended_mapping(signature: Any) -> bool:
    """Whether an output of ``signature`` is a mapping with free keys (no strict schema)."""
    from dspy.adapters.json_adapter import _has_open_ended_mapping

    return _has_open_ended_mapping(signature)


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
    import dspy

    return tuple(inspect.signature(getattr(dspy.ChatAdapter, name)).parameters)


def execution_module() -> Any:
    import importlib

    return importlib.import_module(EXECUTION_MODULE)


# The reply bound on DSPy's own HTTP engine (T2T_ENGINE=dspy, and every call behind an HTTP proxy,
# where t2t's lean engine steps aside). DSPy 3.4's native engine reads a reply body, inflated
# from gzip/deflate, to its end with no size limit, and takes no transport a caller could wrap
# (the router builds its own). Every body chunk it reads passes through the two response classes
# below, after decoding; counting there bounds the body. One 64 KiB read of gzip can inflate to
# ~64 MiB before it gets there, so the inflater is fed 1 KiB at a time (at most ~1 MiB out each)
# and stops once one read's output passes the limit: memory stays near twice the limit.
LM15_REPLY_HOOKS: dict[str, tuple[str, ...]] = {  # module.Class.method -> its parameters
    "_types.TransportResponse.__iter__": ("self",),
    "_types.AsyncTransportResponse._iter": ("self",),
    "_http11._Inflater.decompress": ("self", "data"),
}
_INFLATE_STEP = 1024
_reply_limit: list[int] = []  # the bound in force (the newest one asked for); empty: not installed
_originals: dict[str, Any] = {}  # DSPy's own functions the bound wraps


def reply_hook_parameters() -> dict[str, tuple[str, ...]]:
    """The parameters DSPy's own functions behind ``LM15_REPLY_HOOKS`` have (for the
    compatibility test; read before the bound wraps them, or from the wrapped originals)."""
    from dspy._vendor.lm15.transports import _http11, _types

    modules = {"_types": _types, "_http11": _http11}
    found = {}
    for path in LM15_REPLY_HOOKS:
        module, cls, method = path.split(".")
        function = _originals.get(path) or getattr(getattr(modules[module], cls), method)
        found[path] = tuple(inspect.signature(function).parameters)
    return found


def bound_dspy_engine_replies(limit: int) -> None:
    """Fail any reply body DSPy's native engine reads past ``limit`` bytes (after inflation)
    with one ``dspy.lm15.ProviderError`` (not retried: the same reply would come again).
    Idempotent; the newest limit wins, for every LM of the process."""
    from dspy import lm15
    from dspy._vendor.lm15.transports import _http11, _types

    if _reply_limit:
        _reply_limit[0] = limit
        return
    _reply_limit.append(limit)

    def too_large(read: int) -> Exception:
        return lm15.ProviderError(f"the server's reply body exceeds {_reply_limit[0]:,} bytes, t2t's bound on an "
                                  f"LM reply (T2T_MAX_REPLY_BYTES raises it); {read:,} bytes read",
                                  provider="openai")

    _originals.update({"_types.TransportResponse.__iter__": _types.TransportResponse.__iter__,
                       "_types.AsyncTransportResponse._iter": _types.AsyncTransportResponse._iter,
                       "_http11._Inflater.decompress": _http11._Inflater.decompress})
    inflate = _http11._Inflater.decompress

    def bounded_inflate(self: Any, data: bytes) -> bytes:
        out: list[bytes] = []
        size = 0
        for start in range(0, len(data), _INFLATE_STEP):
            piece = inflate(self, data[start:start + _INFLATE_STEP])
            size += len(piece)
            if size > _reply_limit[0]:
                raise too_large(size)
            out.append(piece)
        return b"".join(out)

    sync_iter = _types.TransportResponse.__iter__
    async_iter = _types.AsyncTransportResponse._iter

    def bounded_iter(self: Any) -> Any:
        read = 0
        for chunk in sync_iter(self):
            read += len(chunk)
            if read > _reply_limit[0]:
                self.close()
                raise too_large(read)
            yield chunk

    async def bounded_aiter(self: Any) -> Any:
        read = 0
        async for chunk in async_iter(self):
            read += len(chunk)
            if read > _reply_limit[0]:
                await self.aclose()
                raise too_large(read)
            yield chunk

    _types.TransportResponse.__iter__ = bounded_iter  # type: ignore[method-assign]
    _types.AsyncTransportResponse._iter = bounded_aiter  # type: ignore[method-assign]
    _http11._Inflater.decompress = bounded_inflate  # type: ignore[method-assign]
