"""Property-based fuzzing (hypothesis) of the LM knob parsers (flags, T2T_ variables, config
files, ROLE=VALUE flag values) and of the api_base engine's reply reader (arbitrary bytes as
an HTTP reply, arbitrary JSON as a completion). Each either accepts a value inside its
documented range or refuses it with one line of a known error type; nothing else escapes.
Bounded in examples so the file runs in seconds (issue 29)."""

from __future__ import annotations

import asyncio
import json
import math
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trajectory2task.errors import UserError
from trajectory2task.lm_options import knob_flags
from trajectory2task.programs.lm.config import ROLES, LMConfigError, LMSettings, load_lm_config

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# The documented ranges (README, LM knobs), written out here rather than read from the code under test
WITHIN = {
    "timeout_s": lambda v: isinstance(v, float | int) and math.isfinite(v) and 0 < v <= 86_400,
    "num_retries": lambda v: isinstance(v, int) and 0 <= v <= 100,
    "max_tokens": lambda v: v is None or (isinstance(v, int) and 1 <= v <= 1 << 20),
    "temperature": lambda v: v is None or (isinstance(v, float | int) and math.isfinite(v) and 0 <= v <= 2),
    "context_window": lambda v: v is None or (isinstance(v, int) and 1 <= v <= 1 << 24),
    "max_concurrent": lambda v: v is None or (isinstance(v, int) and 1 <= v <= 4_096),
    "api_base": lambda v: v is None or (v.split("://")[0].lower() in ("http", "https")
                                        and not any(c.isspace() or ord(c) < 0x20 for c in v)),
    "structured": lambda v: v in ("auto", "on", "off"),
    "engine": lambda v: v in ("api_base", "dspy"),
}
FLAG_OF = {"timeout_s": "timeout", "num_retries": "retries", "max_tokens": "max_tokens", "temperature": "temperature",
           "context_window": "context_window", "max_concurrent": "max_concurrent", "api_base": "api_base",
           "structured": "structured", "engine": "engine"}

NUMBERS = st.one_of(st.integers(-10**30, 10**30).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["inf", "-inf", "nan", "1e999", "-0", "0x10", "1_000", " 3 ", "+5", "1e3",
                                     "٣", "3.0", "", "  "]))
URLS = st.one_of(
    st.builds(lambda scheme, host, port, path: f"{scheme}{host}{port}{path}",
              st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "file://", "", "//", "http:/"]),
              st.sampled_from(["127.0.0.1", "localhost", "u:p@h", "[::1]", "", "h\r\nX: y", "a b", "ex.com"]),
              st.sampled_from(["", ":0", ":1", ":8000", ":65535", ":65536", ":99999", ":-1", ":x"]),
              st.sampled_from(["", "/v1", "/v1/", "/ v1", "/v1?x=1", "/v1#f", "/\x00"])),
    st.text(max_size=40))
VALUES = st.one_of(NUMBERS, URLS, st.text(max_size=20))


def _check_resolved(settings_: LMSettings) -> None:
    for field, ok in WITHIN.items():
        assert ok(getattr(settings_, field)), (field, getattr(settings_, field))


def _one_line(exc: Exception) -> str:
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text, text
    return text


@FUZZ
@given(field=st.sampled_from(sorted(FLAG_OF)), value=VALUES, role=st.sampled_from(("", *ROLES)))
def test_a_flag_value_is_in_range_or_one_line_naming_the_flag(field, value, role):
    knob = FLAG_OF[field]
    key = f"{role}_{knob}" if role else knob
    try:
        config = load_lm_config(flags={"lm": "openai/m", key: value}, environ={})
    except LMConfigError as exc:
        assert _one_line(exc).startswith("--" + knob.replace("_", "-"))
        return
    _check_resolved(config.for_role(role or "agent"))


@FUZZ
@given(field=st.sampled_from(sorted(FLAG_OF)), value=VALUES, role=st.sampled_from(("", *ROLES)))
def test_a_variable_is_in_range_or_one_line_naming_the_variable(field, value, role):
    name = "T2T_" + (f"{role.upper()}_" if role else "") + FLAG_OF[field].upper()
    try:
        config = load_lm_config(flags={"lm": "openai/m"}, environ={name: value})
    except LMConfigError as exc:
        assert _one_line(exc).startswith(name)
        return
    _check_resolved(config.for_role(role or "agent"))


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                         max_size=3),
                           max_leaves=8)


@FUZZ
@given(values=st.dictionaries(st.sampled_from(sorted(LMSettings.model_fields)), st.one_of(JSON_VALUES, VALUES),
                              max_size=4),
       scope=st.sampled_from(("default", *ROLES)))
def test_a_json_config_is_in_range_or_one_line(tmp_path, values, scope):
    path = tmp_path / "lm.json"
    tables = {"default": {"model": "openai/m"}}
    tables[scope] = {**tables.get(scope, {}), **values}
    path.write_text(json.dumps({"lm": tables}))
    try:
        config = load_lm_config(config_path=path, environ={})
    except LMConfigError as exc:
        _one_line(exc)
        return
    resolved = config.for_role("agent" if scope == "default" else scope)
    if resolved is None:  # the default's model was set blank: no LM, the offline baselines
        assert scope == "default" and not str(values.get("model") or "").strip()
        return
    _check_resolved(resolved)


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.sampled_from(["[" * 5000, "{" * 5000, "a = " + "[" * 5000]).map(
    lambda t: t + "]" * 10)), suffix=st.sampled_from([".json", ".toml"]))
def test_any_config_text_is_a_config_or_one_line(tmp_path, text, suffix):
    path = tmp_path / f"lm{suffix}"
    path.write_text(text)
    try:
        load_lm_config(config_path=path, environ={})
    except LMConfigError as exc:
        _one_line(exc)


@FUZZ
@given(value=st.text(max_size=40), knob=st.sampled_from(["timeout", "retries", "max_tokens", "temperature"]))
def test_role_value_pairs_parse_or_refuse(value, knob):
    try:
        flags = knob_flags(ROLES, **{knob: value})
    except UserError as exc:
        _one_line(exc)
        return
    try:
        load_lm_config(flags={"lm": "openai/m", **flags}, environ={})
    except LMConfigError as exc:
        _one_line(exc)


# ---------------------------------------------------------------------------- the reply reader

CAP = 4096


def _read(raw: bytes):
    from trajectory2task.programs.lm.http_engine import read_reply

    async def go():
        reader = asyncio.StreamReader(limit=65536)
        reader.feed_data(raw)
        reader.feed_eof()
        return await read_reply(reader, CAP)
    return asyncio.run(go())


def _request():
    from dspy import lm15

    return lm15.Request(model="openai/m", messages=(lm15.Message.user("hi"),))


def _clean(raw: bytes) -> None:
    """What the engines do with a reply: read it, then make a Response of it; only the errors
    the engines translate into ``lm15`` errors may come out."""
    from dspy import lm15

    from trajectory2task.programs.lm.http_engine import ReplyError, response_of

    try:
        status, headers, body, _ = _read(raw)
    except (ReplyError, ConnectionError, asyncio.IncompleteReadError):
        return
    assert len(body) <= CAP
    try:
        response_of(_request(), status, body, headers)
    except lm15.LM15Error:
        pass


HEAD_LINES = st.sampled_from([b"Content-Length: 5", b"Content-Length: -1", b"Content-Length: 99999999999",
                              b"Content-Length: x", b"Transfer-Encoding: chunked", b"Content-Encoding: gzip",
                              b"Content-Encoding: deflate", b"Content-Encoding: br", b"Connection: close",
                              b"X: " + b"a" * 70000, b"no colon", b""])
BODIES = st.one_of(st.binary(max_size=300), st.sampled_from([
    b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", b"-5\r\nx\r\n", b"ffffffffffff\r\n", zlib.compress(b" " * 100_000),
    zlib.compress(b'{"choices": []}'), b'{"choices": [{"message": {"content": 1}}]}', b'{"id": []}', b"[]",
    b"null", b'{"choices": "x"}', b'{"choices": [null]}']))


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=400))
def test_arbitrary_bytes_as_a_reply_give_a_known_error(raw):
    _clean(raw)


@settings(max_examples=300, deadline=None)
@given(status=st.sampled_from([b"200", b"404", b"500", b"999", b"20", b"abc", b""]),
       version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"ICY", b""]),
       heads=st.lists(HEAD_LINES, max_size=5), body=BODIES)
def test_shaped_replies_give_a_response_or_a_known_error(status, version, heads, body):
    _clean(version + b" " + status + b" OK\r\n" + b"".join(h + b"\r\n" for h in heads) + b"\r\n" + body)


@settings(max_examples=200, deadline=None)
@given(body=JSON_VALUES)
def test_any_json_as_a_completion_gives_a_response_or_a_provider_error(body):
    from dspy import lm15

    from trajectory2task.programs.lm.http_engine import response_of

    raw = json.dumps(body).encode()
    try:
        response_of(_request(), 200, raw, {})
    except lm15.LM15Error:
        pass


@settings(max_examples=150, deadline=None)
@given(raw=st.one_of(st.binary(max_size=200), st.sampled_from([zlib.compress(b"x" * 50_000), b"\x78\x9c",
                                                               b"\x1f\x8b\x08\x00"])),
       coding=st.sampled_from(["gzip", "deflate", "x-gzip", "identity", "", "br", "GZIP "]))
def test_inflation_is_bounded_or_refused(raw, coding):
    from trajectory2task.programs.lm.http_engine import ReplyError, inflate

    try:
        out = inflate(raw, coding, CAP)
    except ReplyError as exc:
        _one_line(exc)
        return
    assert len(out) <= max(CAP, len(raw))


@pytest.mark.parametrize("value", ["inf", "nan", "1e999", "-1"])
def test_the_fuzzed_refusals_include_the_issues_values(value):
    with pytest.raises(LMConfigError, match="--timeout"):
        load_lm_config(flags={"lm": "openai/m", "timeout": value}, environ={})
