"""LM configuration per role: the settings of each role's LM and the layers they are read from.

Building a ``dspy.LM`` from them is ``trajectory2task.programs.lm.build``; recording its calls is
``trajectory2task.programs.lm.accounting``.

Roles: explorer, writer, adapter, user (simulator), agent, judge. Each role may name its own
LiteLLM model string; a role without one falls back to the ``default`` entry; with no model
at all, ``LMConfig.for_role`` returns None and callers run the offline baselines.

Sources, highest precedence first (a whole source beats a lower one field by field; within a
source, a role's own setting beats that source's default):

1. ``flags``: ``{"lm": ..., "<role>_lm": ..., "<knob>": ..., "<role>_<knob>": ...}`` with a knob
   of ``KNOB_FIELDS`` (api_base, api_key, timeout, retries, max_tokens, temperature,
   structured, context_window, max_concurrent, engine); None or "" means not given; '-' may stand for '_'.
2. environment: ``T2T_LM``, ``T2T_<ROLE>_LM``, ``T2T_<KNOB>``, ``T2T_<ROLE>_<KNOB>`` (upper-case,
   e.g. ``T2T_AGENT_LM``, ``T2T_TIMEOUT``, ``T2T_WRITER_MAX_TOKENS``).
3. a config file, TOML (``tomllib``) or JSON (by suffix ``.json``)::

       [lm.default]
       model = "openai/gpt-4o-mini"
       [lm.agent]
       model = "hosted_vllm/qwen3-8b"
       api_base = "http://localhost:8000/v1"
       function_calling = true

   Any ``LMSettings`` field may appear in a file; env and flags carry the model and the knobs.

Every value is checked as its source is read (``check_knob``: the numeric knobs against
``KNOB_RANGES``, ``api_base`` by ``check_api_base``), so a bad one is one `LMConfigError` line
that names its flag, variable or file and the allowed range, before any run starts.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "KNOB_FIELDS",
    "KNOB_RANGES",
    "ROLES",
    "LMConfig",
    "LMConfigError",
    "LMSettings",
    "check_api_base",
    "load_lm_config",
    "redact_url",
    "reply_cap",
]

ROLES: tuple[str, ...] = ("explorer", "writer", "adapter", "user", "agent", "judge")
DEFAULT = "default"


class LMConfigError(ValueError):
    """A configuration problem, with a one-line message fit for the CLI."""


# ---------------------------------------------------------------------------- knob values

_CREDENTIALS = re.compile(r"(?<=//)[^/?#@]*@")


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``: safe for error lines and logs
    (works on malformed URLs too, which is when they get printed)."""
    return _CREDENTIALS.sub("***@", url)


def check_api_base(url: Any) -> str:
    """``url`` when it is an http(s) base URL a client can connect to; else ValueError saying
    what is allowed (the message does not repeat the URL: callers show it redacted)."""
    allowed = "allowed: an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000/v1"
    if not isinstance(url, str):
        raise ValueError(f"not text; {allowed}")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):  # a space or CR/LF would split the request line
        raise ValueError(f"has a space or control character; {allowed}")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL; {allowed}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"the port is outside 1-65535; {allowed}")
    return url


@dataclass(frozen=True)
class KnobRange:
    """The values a numeric knob may take (inclusive bounds unless ``low_open``)."""

    kind: type  # int or float
    low: float
    high: float
    unit: str = ""
    low_open: bool = False

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a finite number"
        def num(x: float) -> str:
            return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"

        return f"{what}{self.unit} {'>' if self.low_open else '>='} {num(self.low)} and <= {num(self.high)}"

    def check(self, value: Any) -> int | float:
        """The value as ``kind``, or ValueError naming the allowed range."""
        parsed: int | float | None = None
        if isinstance(value, bool):
            parsed = None  # True is an int to Python, not a count to a user
        elif self.kind is int:
            if isinstance(value, int):
                parsed = value
            elif isinstance(value, str) and re.fullmatch(r"[+-]?\d{1,30}", value.strip()):
                parsed = int(value.strip())
        elif isinstance(value, (int, float)):
            parsed = float(value)
        elif isinstance(value, str) and len(value) <= 100:
            try:
                parsed = float(value.strip())
            except ValueError:
                parsed = None
        ok = parsed is not None and math.isfinite(parsed) and (parsed > self.low if self.low_open
                                                                 else parsed >= self.low) and parsed <= self.high
        if not ok:
            raise ValueError(f"must be {self.describe()}")
        assert parsed is not None
        return parsed


# Ranges of the numeric knobs, checked as each source is read (flag, variable, file), so a
# bad value is one line naming where it came from instead of a run whose every call fails.
KNOB_RANGES: dict[str, KnobRange] = {
    "timeout_s": KnobRange(float, 0, 86_400, " of seconds", low_open=True),  # at most a day per call
    "num_retries": KnobRange(int, 0, 100),
    "max_tokens": KnobRange(int, 1, 1 << 20),  # no model answers with more than a Mi-token
    "temperature": KnobRange(float, 0, 2),  # OpenAI's range; the servers t2t targets take the same
    "context_window": KnobRange(int, 1, 1 << 24),
    "max_concurrent": KnobRange(int, 1, 4_096),
}


DEFAULT_MAX_REPLY_BYTES = 32 * 1024 * 1024
# T2T_MAX_REPLY_BYTES: the most bytes of one LM reply body read (after inflation), at least a
# KiB (an answer must fit) and at most 1 GiB
REPLY_CAP_RANGE = KnobRange(int, 1024, 1 << 30, " of bytes")


def reply_cap(environ: Mapping[str, str] | None = None) -> int:
    """The bound on an LM reply body: ``T2T_MAX_REPLY_BYTES`` when set, else 32 MiB."""
    raw = (os.environ if environ is None else environ).get("T2T_MAX_REPLY_BYTES", "")
    if not raw.strip():
        return DEFAULT_MAX_REPLY_BYTES
    try:
        return int(REPLY_CAP_RANGE.check(raw))
    except ValueError as exc:
        raise LMConfigError(f"T2T_MAX_REPLY_BYTES {raw[:60]!r}: {exc}") from None


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def check_knob(field: str, value: Any) -> Any:
    """``value`` for the ``LMSettings`` field, parsed and range-checked; ValueError (a short
    phrase, no field name) when it is not allowed. Fields without a check pass unchanged."""
    if value is None:
        return None
    if field in KNOB_RANGES:
        return KNOB_RANGES[field].check(value)
    if field == "api_base":
        return check_api_base(value)
    if field in ("model", "api_key") and (not isinstance(value, str) or _has_control(value)):
        # the key goes into an HTTP header: a CR/LF would add headers of the value's choosing
        raise ValueError("must be text without control characters")
    if field in _CHOICES and value not in _CHOICES[field]:
        raise ValueError(f"must be one of {', '.join(_CHOICES[field])}")
    if field == "function_calling" and not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


_CHOICES: dict[str, tuple[str, ...]] = {"structured": ("auto", "on", "off"), "engine": ("api_base", "dspy")}


class LMSettings(BaseModel):
    """How to reach one LM. ``model`` is any LiteLLM model string."""

    model_config = ConfigDict(extra="forbid")

    model: str
    api_base: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_s: float = 60  # ranges: KNOB_RANGES, checked by _in_range
    num_retries: int = 3
    # JSON-schema constrained decoding for typed outputs (trajectory2task.programs.lm.structured): "auto" tries
    # the endpoint's dialects and falls back to plain parsing; "on" requires it; "off" never sends it
    structured: Literal["auto", "on", "off"] = "auto"
    # the model's window in tokens, when known: a prompt that will not fit is reported before the call
    context_window: int | None = None
    # at most this many calls of the role in flight at once (trajectory2task.programs.lm.limits); None: no bound
    # beyond the command's own (--workers, --concurrency)
    max_concurrent: int | None = None
    # None: ask the model maps (DSPy's for OpenAI-compatible models, else LiteLLM's).
    # True/False: explicit, for local models with custom names (vLLM, Ollama, ...).
    function_calling: bool | None = None
    # at an api_base: "api_base" sends the calls through t2t's lean DSPy engine
    # (trajectory2task.programs.lm.http_engine; ~0.4 ms of client CPU a call instead of ~1 ms), "dspy" through
    # DSPy's own engines as chosen by engine="auto"
    engine: Literal["api_base", "dspy"] = "api_base"

    @field_validator("model")
    @classmethod
    def _model_nonempty(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("model must be a non-empty LiteLLM model string")
        return check_knob("model", value)

    @field_validator("api_base", "api_key", "temperature", "max_tokens", "timeout_s", "num_retries",
                     "context_window", "max_concurrent", "structured", "engine", mode="before")
    @classmethod
    def _in_range(cls, value: Any, info: Any) -> Any:
        return check_knob(info.field_name, value)

    def redacted(self) -> dict[str, Any]:
        """The settings without the API key or URL credentials, for run records and logs."""
        out = self.model_dump(exclude={"api_key"})
        if self.api_base:
            out["api_base"] = redact_url(self.api_base)
        return out


class LMConfig(BaseModel):
    """Resolved settings per role (and ``default``); roles without a model are absent."""

    model_config = ConfigDict(extra="forbid")

    roles: dict[str, LMSettings] = Field(default_factory=dict)

    def for_role(self, role: str) -> LMSettings | None:
        """The role's settings, else the default's, else None (offline baseline)."""
        if role not in ROLES and role != DEFAULT:
            raise ValueError(f"unknown LM role {role!r}; roles are {', '.join(ROLES)}")
        return self.roles.get(role) or self.roles.get(DEFAULT)

    @property
    def offline(self) -> bool:
        """True when no role has a model: everything runs on the offline baselines."""
        return not self.roles


# ---------------------------------------------------------------------------- loading

_SCOPES = (DEFAULT, *ROLES)
# flag / env name (T2T_<NAME>, T2T_<ROLE>_<NAME>) -> LMSettings field
KNOB_FIELDS: dict[str, str] = {
    "api_base": "api_base", "api_key": "api_key", "timeout": "timeout_s", "retries": "num_retries",
    "max_tokens": "max_tokens", "temperature": "temperature", "structured": "structured",
    "context_window": "context_window", "max_concurrent": "max_concurrent", "engine": "engine",
}
_KNOB_OF = {field: knob for knob, field in KNOB_FIELDS.items()}
Layer = dict[str, dict[str, Any]]  # scope -> field -> value


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _flag_layer(flags: Mapping[str, str | None]) -> Layer:
    layer: Layer = {}
    suffix_field = {"lm": "model", "model": "model", **KNOB_FIELDS}
    for raw_key, value in flags.items():
        key = raw_key.strip().lower().replace("-", "_").lstrip("_")
        scope, field = DEFAULT, suffix_field.get(key)
        if field is None:
            for role in ROLES:
                if key.startswith(role + "_") and key[len(role) + 1:] in suffix_field:
                    scope, field = role, suffix_field[key[len(role) + 1:]]
                    break
        if field is None:
            raise LMConfigError(f"unknown LM flag {raw_key!r}; use lm, {', '.join(KNOB_FIELDS)} or the same "
                                f"prefixed with <role>_, a role in {', '.join(ROLES)}")
        if not _blank(value):
            if field == "model":  # --lm, --writer-lm, ...
                where = "--lm" if scope == DEFAULT else f"--{scope}-lm"
            else:  # --timeout, --timeout writer=...
                where = f"--{_KNOB_OF[field].replace('_', '-')}" + (f" ({scope})" if scope != DEFAULT else "")
            layer.setdefault(scope, {})[field] = _checked(field, str(value).strip(), where)
    return layer


def _env_layer(environ: Mapping[str, str]) -> Layer:
    layer: Layer = {}
    names = {"model": "LM", **{field: knob.upper() for knob, field in KNOB_FIELDS.items()}}
    for scope in _SCOPES:
        prefix = "T2T_" if scope == DEFAULT else f"T2T_{scope.upper()}_"
        for field, name in names.items():
            value = environ.get(prefix + name)
            if not _blank(value):
                layer.setdefault(scope, {})[field] = _checked(field, value.strip(), prefix + name)  # type: ignore[union-attr]
    return layer


def _file_layer(path: str | os.PathLike[str]) -> Layer:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise LMConfigError(f"cannot read LM config {p}: {exc.strerror or exc}") from None
    kind = "JSON" if p.suffix.lower() == ".json" else "TOML"
    try:
        data = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise LMConfigError(f"LM config {p} is not valid {kind}: {exc}") from None
    except RecursionError:  # the parsers recurse per nesting level; a config is two levels deep
        raise LMConfigError(f"LM config {p}: {kind} nested too deeply; it holds [lm.<role>] tables of "
                            "settings") from None
    section = data.get("lm", {}) if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise LMConfigError(f"LM config {p}: 'lm' must be a table of roles")
    layer: Layer = {}
    allowed = set(LMSettings.model_fields)
    for scope, values in section.items():
        if scope not in _SCOPES:
            raise LMConfigError(f"LM config {p}: unknown role [lm.{scope}]; use default or one of {', '.join(ROLES)}")
        if not isinstance(values, dict):
            raise LMConfigError(f"LM config {p}: [lm.{scope}] must be a table")
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise LMConfigError(f"LM config {p}: [lm.{scope}] has unknown keys {unknown}; "
                                f"allowed: {sorted(allowed)}")
        layer[scope] = {k: _checked(k, v, f"LM config {p}: [lm.{scope}] {k}") for k, v in values.items()
                        if not _blank(v)}
    return layer


def _checked(field: str, value: Any, where: str) -> Any:
    """``check_knob`` with the source named: one line the CLI prints as is."""
    try:
        return check_knob(field, value)
    except ValueError as exc:
        shown = redact_url(value) if isinstance(value, str) else value
        if isinstance(shown, str) and len(shown) > 60:
            shown = shown[:60] + "..."
        if field == "api_key":
            shown = "(the key)"  # never printed
        elif not isinstance(shown, (str, int, float, bool)):
            shown = type(shown).__name__
        raise LMConfigError(f"{where} {shown!r}: {exc}") from None


def load_lm_config(flags: Mapping[str, str | None] | None = None, config_path: str | os.PathLike[str] | None = None,
                   environ: Mapping[str, str] | None = None) -> LMConfig:
    """Resolve per-role LM settings from flags > environment > config file (see module doc).

    ``environ`` defaults to ``os.environ``. Each field of each role takes the first value found
    in: flags[role], flags[default], env[role], env[default], file[role], file[default].
    A role ends up in ``roles`` only when it resolves to a model.
    """
    reply_cap(environ)  # refused here, before any run starts, not at the first reply
    layers: list[Layer] = [
        _flag_layer(flags or {}),
        _env_layer(os.environ if environ is None else environ),
        _file_layer(config_path) if config_path is not None else {},
    ]
    roles: dict[str, LMSettings] = {}
    for scope in _SCOPES:
        merged: dict[str, Any] = {}
        for layer in reversed(layers):  # lowest precedence first; later updates win
            merged.update(layer.get(DEFAULT, {}))
            if scope != DEFAULT:
                merged.update(layer.get(scope, {}))
        if _blank(merged.get("model")):
            continue
        try:
            roles[scope] = LMSettings(**merged)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise LMConfigError(f"LM settings for {scope}: {where}: {first['msg']}") from None
    return LMConfig(roles=roles)
