"""Hostile input on the LM surfaces: endpoints that send too much or too slowly, malformed
--api-base URLs, out-of-range LM knobs, unbounded count flags, conflicting --resume flags,
an estimate that would download a tokenizer."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli import run_t2t
from trajectory2task.programs.lm.config import (DEFAULT_MAX_REPLY_BYTES, LMConfigError, LMSettings, build_lm,
                                                load_lm_config, redact_url, reply_cap)

MiB = 1024 * 1024

# ---------------------------------------------------------------------------- a server that misbehaves

OK_BODY = json.dumps({"id": "x", "object": "chat.completion", "model": "m", "choices": [
    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()


class HostileServer:
    """Accepts connections, reads one request head and body, then runs ``behave(sock)``."""

    def __init__(self, behave: Callable[[socket.socket], None]) -> None:
        self.behave = behave
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    piece = conn.recv(65536)
                    if not piece:
                        return
                    data += piece
                head, _, rest = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.behave(conn)
            except OSError:  # the client gave up: that is what these tests want
                pass

    def __enter__(self) -> HostileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.listener.close()
        self.thread.join(timeout=5)


def _forever(conn: socket.socket, head: bytes, piece: bytes, chunked: bool = False, pause: float = 0.0) -> None:
    conn.sendall(head)
    frame = (b"%x\r\n" % len(piece) + piece + b"\r\n") if chunked else piece
    for _ in range(100_000):  # ~100 GB at most; the client hangs up long before
        conn.sendall(frame)
        if pause:
            time.sleep(pause)


def content_length_huge(conn: socket.socket) -> None:
    _forever(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n",
             b"\x00" * 65536)


def chunked_forever(conn: socket.socket) -> None:
    _forever(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"a" * 65536, chunked=True)


def no_length_forever(conn: socket.socket) -> None:
    _forever(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n", b" " * 65536)


def headers_forever(conn: socket.socket) -> None:
    _forever(conn, b"HTTP/1.1 200 OK\r\n", b"X-Filler: " + b"a" * 1000 + b"\r\n")


def one_long_header(conn: socket.socket) -> None:
    _forever(conn, b"HTTP/1.1 200 OK\r\nX-Long: ", b"a" * 65536)


def trickle(conn: socket.socket) -> None:
    # a byte every 50 ms: no single read ever waits as long as the timeout
    for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 200:  # 10 s in all
        conn.sendall(bytes([byte]))
        time.sleep(0.05)


def _bomb(coding: str, size: int) -> bytes:
    raw = b" " * size  # spaces: valid JSON padding, and they compress ~1000:1
    if coding == "gzip":
        return gzip.compress(raw, 9)
    return zlib.compress(raw, 9)


def compressed(coding: str, size: int) -> Callable[[socket.socket], None]:
    body = _bomb(coding, size)

    def behave(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: %s\r\n"
                     b"Content-Length: %d\r\n\r\n" % (coding.encode(), len(body)) + body)
    return behave


def gzip_ok(conn: socket.socket) -> None:
    body = gzip.compress(OK_BODY)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def _request():
    from dspy import lm15

    return lm15.Request(model="openai/m", messages=(lm15.Message.user("hi"),))


def _engines(base_url: str, cap: int, timeout_s: float = 20.0):
    from trajectory2task.programs.lm.http_engine import Endpoint, engines_for

    return engines_for(Endpoint(api_base=base_url, timeout_s=timeout_s, max_reply_bytes=cap))


def _call(kind: str, engines: dict, request):
    if kind == "sync":
        return engines["engine"].complete(request)
    return asyncio.run(engines["async_engine"].complete(request))


BOUNDED = [content_length_huge, chunked_forever, no_length_forever, headers_forever, one_long_header,
           compressed("gzip", 64 * MiB), compressed("deflate", 64 * MiB)]


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("behave", BOUNDED, ids=["content-length", "chunked", "to-eof", "many-headers",
                                                 "long-header", "gzip-bomb", "deflate-bomb"])
def test_an_endless_or_inflating_reply_fails_in_bounded_memory(kind, behave):
    from dspy import lm15

    cap = 1 * MiB
    with HostileServer(behave) as server:
        engines = _engines(server.base_url, cap)
        tracemalloc.start()
        started = time.monotonic()
        try:
            with pytest.raises(lm15.ProviderError) as caught:
                _call(kind, engines, _request())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert time.monotonic() - started < 15
    assert peak < 8 * MiB, f"{peak / MiB:.1f} MiB held for a reply bounded to 1 MiB"
    message = str(caught.value)
    assert "\n" not in message.strip()
    assert ("1,048,576 bytes" in message and "T2T_MAX_REPLY_BYTES" in message) or "65,536 bytes" in message \
        or "header" in message, message
    assert not isinstance(caught.value, (lm15.TimeoutError, lm15.TransportError))  # not retried: it would recur


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_trickled_reply_ends_at_the_call_timeout(kind):
    from dspy import lm15

    with HostileServer(trickle) as server:
        engines = _engines(server.base_url, DEFAULT_MAX_REPLY_BYTES, timeout_s=1.0)
        started = time.monotonic()
        with pytest.raises(lm15.TimeoutError, match="timed out after 1 s"):
            _call(kind, engines, _request())
    assert time.monotonic() - started < 5  # the trickle would last 10 s


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_gzip_reply_within_the_bound_is_read(kind):
    with HostileServer(gzip_ok) as server:
        response = _call(kind, _engines(server.base_url, MiB), _request())
    assert "hi" in json.dumps(response.model_dump() if hasattr(response, "model_dump") else str(response)) or \
        "hi" in str(response)


def test_the_reply_bound_through_dspy_and_the_variable(monkeypatch):
    """T2T_MAX_REPLY_BYTES reaches the engine build_lm makes; the failed call is one LMError."""
    from dspy.utils.exceptions import LMError

    monkeypatch.setenv("T2T_MAX_REPLY_BYTES", "65536")
    with HostileServer(no_length_forever) as server:
        lm = build_lm(LMSettings(model="openai/m", api_base=server.base_url, num_retries=0, timeout_s=20))
        with pytest.raises(LMError, match="65,536 bytes"):
            lm("hi")


@pytest.mark.parametrize("value", ["0", "12", "-1", "1e9", "inf", "lots", str(2 << 30)])
def test_a_bad_reply_bound_is_refused_at_load(value):
    with pytest.raises(LMConfigError, match="T2T_MAX_REPLY_BYTES .*must be an integer of bytes >= 1,024"):
        load_lm_config(flags={"lm": "openai/x"}, environ={"T2T_MAX_REPLY_BYTES": value})
    assert reply_cap({"T2T_MAX_REPLY_BYTES": "4096"}) == 4096
    assert reply_cap({}) == 32 * MiB


# ---------------------------------------------------------------------------- --api-base and knobs at the CLI

BAD_URLS = ["localhost:8000/v1", "file:///etc/passwd", "ftp://127.0.0.1/v1", "/v1", "http://127.0.0.1:99999/v1",
            "http://127.0.0.1:8000/v1\r\nX-Evil: 1", "http://127.0.0.1:8000/ v1", "http://:8000/v1"]


def _one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stdout
    assert len(lines) == 1 and lines[0].startswith("t2t: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_bad_api_base_is_one_line_naming_the_flag(tmp_path, url):
    store = tmp_path / "s.duckdb"
    line = _one_error_line(run_t2t("generate", "--lm", "openai/m", "--api-base", url, "--n", "1",
                                   "--store", str(store)))
    assert "--api-base" in line and "http:// or https://" in line
    assert not store.exists()


def test_credentials_in_the_url_are_never_printed(tmp_path):
    url = "http://alice:hunter2@127.0.0.1:99999/v1"
    line = _one_error_line(run_t2t("generate", "--lm", "openai/m", "--api-base", url, "--n", "1",
                                   "--store", str(tmp_path / "s.duckdb")))
    assert "hunter2" not in line and "alice" not in line and "***@" in line
    # and where a run would record the settings
    assert "hunter2" not in json.dumps(LMSettings(model="openai/m", api_base=url.replace("99999", "1")).redacted())
    assert redact_url("https://u:p@h/v1") == "https://***@h/v1" and redact_url("http://h/v1") == "http://h/v1"


@pytest.mark.parametrize(("args", "env", "expect"), [
    (["--timeout", "inf"], {}, "--timeout 'inf': must be a finite number of seconds > 0 and <= 86,400"),
    (["--timeout", "nan"], {}, "--timeout 'nan'"),
    (["--timeout", "1e999"], {}, "--timeout '1e999'"),
    (["--timeout", "-3"], {}, "--timeout '-3'"),
    (["--timeout", "writer=inf"], {}, "--timeout (writer) 'inf'"),
    ([], {"T2T_TIMEOUT": "inf"}, "T2T_TIMEOUT 'inf': must be a finite number"),
    ([], {"T2T_WRITER_TIMEOUT": "1e999"}, "T2T_WRITER_TIMEOUT '1e999'"),
    (["--max-tokens", "0"], {}, "--max-tokens '0': must be an integer >= 1 and <= 1,048,576"),
    (["--max-tokens", "-1"], {}, "--max-tokens '-1'"),
    (["--temperature", "nan"], {}, "--temperature 'nan': must be a finite number >= 0 and <= 2"),
    (["--temperature", "3"], {}, "--temperature '3'"),
    (["--retries", "1000000"], {}, "--retries '1000000': must be an integer >= 0 and <= 100"),
    (["--context-window", "0"], {}, "--context-window '0'"),
    (["--max-concurrent", "0"], {}, "--max-concurrent '0'"),
    ([], {"T2T_MAX_REPLY_BYTES": "5"}, "T2T_MAX_REPLY_BYTES '5'"),
])
def test_out_of_range_knobs_are_one_line_with_the_range(tmp_path, args, env, expect):
    store = tmp_path / "s.duckdb"
    line = _one_error_line(run_t2t("generate", "--lm", "openai/m", "--n", "1", "--store", str(store), *args,
                                   env=env))
    assert expect in line
    assert not store.exists()


@pytest.mark.parametrize(("name", "text", "expect"), [
    ("inf.toml", "[lm.default]\nmodel = 'openai/m'\ntimeout_s = inf\n", "[lm.default] timeout_s inf: must be"),
    ("nan.toml", "[lm.writer]\ntemperature = nan\n[lm.default]\nmodel = 'openai/m'\n",
     "[lm.writer] temperature nan"),
    ("big.json", '{"lm": {"default": {"model": "openai/m", "timeout_s": 1e999}}}', "timeout_s inf"),
    ("neg.json", '{"lm": {"default": {"model": "openai/m", "max_tokens": -2}}}', "max_tokens -2"),
    ("deep.json", "[" * 200_000 + "]" * 200_000, "nested too deeply"),
    ("deep.toml", "x = " + "[" * 200_000 + "]" * 200_000, "nested too deeply"),
])
def test_a_bad_lm_config_is_one_line(tmp_path, name, text, expect):
    path = tmp_path / name
    path.write_text(text)
    line = _one_error_line(run_t2t("generate", "--lm-config", str(path), "--n", "1",
                                   "--store", str(tmp_path / "s.duckdb")))
    assert expect in line


def test_knob_bounds_hold_for_settings_built_in_code():
    from pydantic import ValidationError

    for bad in ({"timeout_s": float("inf")}, {"temperature": float("nan")}, {"max_tokens": 0},
                {"api_base": "ftp://h/v1"}, {"api_key": "sk\r\nX-Evil: 1"}):
        with pytest.raises(ValidationError):
            LMSettings(model="openai/m", **bad)
    assert LMSettings(model="openai/m", timeout_s="0.5", max_tokens="64").max_tokens == 64


# ---------------------------------------------------------------------------- count flags


@pytest.mark.parametrize("args", [
    ["optimize", "--program", "agent", "--metric", "pass^k", "--k", "1000000000"],
    ["optimize", "--trials", "1000000000"], ["optimize", "--candidates", "1000000000"],
    ["optimize", "--max-demos", "1000000000"], ["optimize", "--max-metric-calls", "1000000000"],
    ["optimize", "--threads", "1000000000"], ["sweep", "--trials", "1000000000"], ["sweep", "--n", "1000000000"],
    ["bench", "--max-turns", "1000000000"],
])
def test_every_count_flag_is_bounded(tmp_path, args):
    line = _one_error_line(run_t2t(*args, "--store", str(tmp_path / "s.duckdb")))
    assert f"Invalid value for '{args[-2]}'" in line and "less than or equal to" in line
    assert not (tmp_path / "s.duckdb").exists()
