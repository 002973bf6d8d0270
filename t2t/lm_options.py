"""The LM knobs every LM command takes: timeout, retries, max tokens, temperature, structured
output, context window, calls in flight. Each flag takes one value for every role, or ``ROLE=VALUE`` pairs
(``--timeout 120``, ``--timeout writer=300,agent=60``, ``--timeout 60,explorer=300``); the
same knobs come from ``T2T_<KNOB>`` / ``T2T_<ROLE>_<KNOB>`` and the config file."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from trajectory2task.errors import UserError

_PER_ROLE = "One value, or ROLE=VALUE pairs separated by commas."

TimeoutOpt = Annotated[Optional[str], typer.Option(
    "--timeout", help=f"Seconds an LM call may take before it is retried (env T2T_TIMEOUT). \\[default: 60] {_PER_ROLE}")]
RetriesOpt = Annotated[Optional[str], typer.Option(
    "--retries", help=f"Retries of a failing LM call (env T2T_RETRIES). \\[default: 3] {_PER_ROLE}")]
MaxTokensOpt = Annotated[Optional[str], typer.Option(
    "--max-tokens", help=f"Output token limit per call (env T2T_MAX_TOKENS). {_PER_ROLE}")]
TemperatureOpt = Annotated[Optional[str], typer.Option(
    "--temperature", help=f"Sampling temperature (env T2T_TEMPERATURE). {_PER_ROLE}")]
StructuredOpt = Annotated[Optional[str], typer.Option(
    "--structured", help="JSON-schema constrained decoding of typed outputs: auto (when the endpoint takes it), "
                         f"on, off (env T2T_STRUCTURED). \\[default: auto] {_PER_ROLE}")]
ContextOpt = Annotated[Optional[str], typer.Option(
    "--context-window", help=f"The model's window in tokens: a prompt that will not fit is said before the call. "
                             f"{_PER_ROLE}")]
MaxConcurrentOpt = Annotated[Optional[str], typer.Option(
    "--max-concurrent", help=f"LM calls of a role in flight at once (env T2T_MAX_CONCURRENT). \\[default: no bound "
                             f"beyond --workers / --concurrency] {_PER_ROLE}")]
NoCacheOpt = Annotated[bool, typer.Option(
    "--no-cache", help="Do not use DSPy's LM cache (on by default for generation: a re-run costs nothing; "
                       "env T2T_NO_CACHE=1).")]
CacheDirOpt = Annotated[Optional[str], typer.Option(
    "--cache-dir", help="Directory of DSPy's on-disk LM cache (env T2T_CACHE_DIR). \\[default: "
                        "$DSPY_CACHEDIR, else ~/.dspy_cache]")]


def knob_flags(roles: tuple[str, ...], **values: Optional[str]) -> dict[str, str]:
    """Flag values -> ``load_lm_config`` flags (``timeout`` or ``writer_timeout``, ...)."""
    out: dict[str, str] = {}
    for knob, value in values.items():
        if value is None or not value.strip():
            continue
        flag = "--" + knob.replace("_", "-")
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            if "=" in part:
                role, _, v = (x.strip() for x in part.partition("="))
                if role not in roles:
                    raise UserError(f"{flag}: unknown role {role!r}; roles here are {', '.join(roles)}")
                out[f"{role}_{knob}"] = v
            else:
                out[knob] = part
    return out


def add_knobs(flags: dict[str, Any], roles: tuple[str, ...], *, timeout: Optional[str] = None,
              retries: Optional[str] = None, max_tokens: Optional[str] = None, temperature: Optional[str] = None,
              structured: Optional[str] = None, context_window: Optional[str] = None,
              max_concurrent: Optional[str] = None) -> dict[str, Any]:
    flags.update(knob_flags(roles, timeout=timeout, retries=retries, max_tokens=max_tokens,
                            temperature=temperature, structured=structured, context_window=context_window,
                            max_concurrent=max_concurrent))
    return flags


def cache_wanted(no_cache: bool) -> bool:
    import os

    return not no_cache and os.environ.get("T2T_NO_CACHE", "").strip().lower() not in ("1", "true", "yes", "on")


def configure_cache(no_cache: bool, cache_dir: Optional[str]) -> bool:
    """Whether LM calls are cached, with DSPy's cache placed: on disk in ``--cache-dir`` /
    ``T2T_CACHE_DIR`` when given (DSPy's own default otherwise, ``$DSPY_CACHEDIR`` or
    ``~/.dspy_cache``); with no cache nothing is written at all (not even an empty directory)."""
    import os
    from pathlib import Path

    import dspy

    wanted = cache_wanted(no_cache)
    where = cache_dir if cache_dir is not None else os.environ.get("T2T_CACHE_DIR") or None
    if not wanted:
        dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
        return False
    if where is not None:
        flag = "--cache-dir" if cache_dir is not None else "T2T_CACHE_DIR"
        path = Path(where).expanduser()
        if not where.strip() or (path.exists() and not path.is_dir()):
            raise UserError(f"{flag} {where!r}: not a directory")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{flag} {where!r}: cannot create it: {exc.strerror or exc}") from None
        dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=str(path))
    return True
