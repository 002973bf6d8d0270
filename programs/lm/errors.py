"""LM failures in words a user can act on: the kind of a failure (`ErrorKind`, from DSPy's
exception types and the HTTP status), `explain`'s one line naming the flag to change, and
`first_line` of any exception. DSPy is imported only to classify an error, so code that
only reports one (an offline run, a Ray worker's start) never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from trajectory2task.programs.lm.config import redact_url

if TYPE_CHECKING:
    from trajectory2task.programs.lm.config import LMSettings

ErrorKind = Literal["unreachable", "wrong_url", "context_overflow", "timeout", "rate_limit", "server_error",
                    "auth", "bad_request", "unparsable", "other"]

# what to change, per kind (the CLI's flags; the env variables are in docs/generation.md)
_ADVICE: dict[str, str] = {
    "unreachable": "is the server running? check --api-base",
    "wrong_url": "check --api-base: OpenAI-compatible servers usually serve under /v1",
    "context_overflow": "use a model with a larger window, raise the server's context (llama.cpp --n_ctx), "
                        "or lower --max-tokens",
    "timeout": "raise --timeout",
    "rate_limit": "lower --concurrency or raise --retries",
    "server_error": "see the server's log; --retries sets how often a call is retried",
    "auth": "check --api-key / T2T_API_KEY",
    "bad_request": "the server refused the request",
    "unparsable": "the model's output did not fit the signature; try --structured on",
    "other": "",
}


def error_kind(exc: BaseException) -> ErrorKind:
    """The kind of an LM failure, from DSPy's exception types (and the HTTP status)."""
    from dspy.utils import exceptions as x

    if isinstance(exc, x.AdapterParseError):
        return "unparsable"
    if isinstance(exc, x.ContextWindowExceededError):
        return "context_overflow"
    if isinstance(exc, x.LMTimeoutError):
        return "timeout"
    if isinstance(exc, x.LMTransportError):
        text = str(exc).lower()
        return "timeout" if "timed out" in text or "timeout" in text else "unreachable"
    if isinstance(exc, x.LMRateLimitError):
        return "rate_limit"
    if isinstance(exc, x.LMAuthError):
        return "auth"
    if isinstance(exc, x.LMServerError):
        return "server_error"
    status = getattr(exc, "status", None)
    text = str(exc).lower()
    if "is not json" in text:
        return "server_error"  # a 200 whose body is not JSON: a gateway or the server broke it
    if status == 404 or "404" in text and "not found" in text:
        return "wrong_url"
    if isinstance(exc, x.LMInvalidRequestError) or status in (400, 413, 422):
        if any(w in text for w in ("context", "n_ctx", "too long", "maximum length", "exceeds")):
            return "context_overflow"
        return "bad_request"
    if isinstance(exc, x.LMProviderError) and "not json" in text:
        return "server_error"  # a 200 whose body is not JSON: a gateway or the server broke it
    if isinstance(exc, (ConnectionError, OSError)):
        return "unreachable"
    return "other"


def first_line(exc: BaseException, limit: int = 240) -> str:
    """An exception's first non-blank line (its type's name when it has none), cut to ``limit``."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]


def explain(kind: str, detail: str, settings: LMSettings | None = None, prompt_tokens: int | None = None) -> str:
    """One line: what failed, why, and what to change."""
    advice = _ADVICE.get(kind, "")
    where = ""
    if settings is not None:
        where = f" ({settings.model}" + (f" at {redact_url(settings.api_base)}" if settings.api_base else "") + ")"
        if kind == "timeout":
            advice = f"raise --timeout (now {settings.timeout_s:g} s)"
        if kind == "context_overflow" and prompt_tokens:
            advice = f"the prompt is ~{prompt_tokens} tokens; " + advice
    return f"{kind}{where}: {detail}" + (f" -- {advice}" if advice else "")
