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
from trajectory2task.programs.lm.build import build_lm
from trajectory2task.programs.lm.config import (DEFAULT_MAX_REPLY_BYTES, LMConfigError, LMSettings, load_lm_config,
                                                redact_url, reply_cap)

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


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("behave", BOUNDED, ids=["content-length", "chunked", "to-eof", "many-headers",
                                                 "long-header", "gzip-bomb", "deflate-bomb"])
def test_dspys_own_engine_reads_replies_under_the_same_bound(monkeypatch, kind, behave):
    """engine "dspy" (T2T_ENGINE=dspy; also what runs behind a proxy): DSPy's native engine, not
    t2t's, reads the reply, and still stops at T2T_MAX_REPLY_BYTES, inflated or not."""
    from dspy.utils.exceptions import LMError

    monkeypatch.setenv("T2T_MAX_REPLY_BYTES", str(MiB))
    with HostileServer(behave) as server:
        lm = build_lm(LMSettings(model="openai/m", api_base=server.base_url, num_retries=0, timeout_s=20,
                                 engine="dspy"))
        assert lm.dspy_engine_lm is None  # no lean engine in front: DSPy's own reads the body
        tracemalloc.start()
        started = time.monotonic()
        try:
            with pytest.raises(LMError) as caught:
                lm("hi") if kind == "sync" else asyncio.run(lm.acall("hi"))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert time.monotonic() - started < 15
    assert peak < 8 * MiB, f"{peak / MiB:.1f} MiB held for a reply bounded to 1 MiB"
    message = str(caught.value).strip()
    assert "\n" not in message
    assert "1,048,576 bytes" in message and "T2T_MAX_REPLY_BYTES" in message or "head" in message, message


@pytest.mark.parametrize("behave", [no_length_forever, compressed("gzip", 64 * MiB)], ids=["to-eof", "gzip-bomb"])
def test_behind_a_proxy_the_reply_is_bounded_too(monkeypatch, behave):
    """A configured proxy keeps DSPy's engine (t2t's connects directly); the hostile server
    here is the proxy, so every byte of the reply comes from it."""
    from dspy.utils.exceptions import LMError

    monkeypatch.setenv("T2T_MAX_REPLY_BYTES", str(MiB))
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with HostileServer(behave) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url.rsplit("/v1", 1)[0])
        monkeypatch.setenv("http_proxy", proxy.base_url.rsplit("/v1", 1)[0])
        lm = build_lm(LMSettings(model="openai/m", api_base="http://llm.example.test:8000/v1", num_retries=0,
                                 timeout_s=20))
        assert lm.dspy_engine_lm is None  # the lean engine stepped aside for the proxy
        tracemalloc.start()
        try:
            with pytest.raises(LMError, match="exceeds 1,048,576 bytes"):
                lm("hi")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 8 * MiB


def test_dspys_own_engine_reads_a_reply_within_the_bound(monkeypatch):
    monkeypatch.setenv("T2T_MAX_REPLY_BYTES", str(MiB))
    with HostileServer(gzip_ok) as server:
        lm = build_lm(LMSettings(model="openai/m", api_base=server.base_url, num_retries=0, timeout_s=20,
                                 engine="dspy"))
        assert lm("hi") and asyncio.run(lm.acall("hi"))


def _litellm_lm(base_url: str):
    # a custom model name declared function-calling: DSPy's LiteLLM engine, whichever t2t engine is asked
    lm = build_lm(LMSettings(model="openai/custom-x", api_base=base_url, num_retries=0, timeout_s=20,
                             function_calling=True))
    assert lm.engine == "litellm"
    return lm


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("behave", [content_length_huge, chunked_forever, no_length_forever,
                                    compressed("gzip", 64 * MiB)],
                         ids=["content-length", "chunked", "to-eof", "gzip-bomb"])
def test_litellms_client_reads_replies_under_the_same_bound(monkeypatch, kind, behave):
    from dspy.utils.exceptions import LMError

    monkeypatch.setenv("T2T_MAX_REPLY_BYTES", str(MiB))
    with HostileServer(behave) as server:
        lm = _litellm_lm(server.base_url)
        tracemalloc.start()
        try:
            with pytest.raises(LMError, match=r"exceeds 1,048,576 bytes, t2t's bound .*T2T_MAX_REPLY_BYTES") as caught:
                lm("hi") if kind == "sync" else asyncio.run(lm.acall("hi"))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 32 * MiB, f"{peak / MiB:.1f} MiB held for a reply bounded to 1 MiB"
    assert "\n" not in str(caught.value).strip()


def test_litellms_client_reads_a_gzip_reply_within_the_bound(monkeypatch):
    monkeypatch.setenv("T2T_MAX_REPLY_BYTES", str(MiB))
    with HostileServer(gzip_ok) as server:
        lm = _litellm_lm(server.base_url)
        # each asyncio.run is a new event loop: LiteLLM's one session must serve them all
        assert lm("hi") and asyncio.run(lm.acall("hi")) and asyncio.run(lm.acall("hi again"))


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


# ---------------------------------------------------------------------------- generate --resume and refusals


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory) -> tuple[Path, str]:
    store = tmp_path_factory.mktemp("resume") / "t2t.duckdb"
    done = run_t2t("generate", "--n", "2", "--seed", "3", "--users", "60", "--store", str(store), "--json",
                   env={"T2T_LM": ""})
    assert done.returncode == 0, done.stderr
    return store, json.loads(done.stdout.strip().splitlines()[-1])["run_id"]


def _runs(store: Path) -> list[tuple]:
    from trajectory2task.store import read_only_query

    return read_only_query(store, "SELECT run_id, status, created_at FROM run_events ORDER BY ALL")[1]


@pytest.mark.parametrize(("args", "flag", "recorded"), [
    (["--n", "50"], "--n", "2"), (["--domain", "airline"], "--domain", "retail"), (["--seed", "4"], "--seed", "3"),
    (["--users", "70"], "--users", "60"), (["--conditions", "general"], "--conditions", "general,ambiguous"),
    (["--guided"], "--guided", "off"),
])
def test_resume_refuses_a_flag_that_would_change_the_run(offline_run, args, flag, recorded):
    store, run_id = offline_run
    before = _runs(store)
    line = _one_error_line(run_t2t("generate", "--resume", run_id, "--store", str(store), *args,
                                   env={"T2T_LM": ""}))
    assert f"the run was made with {flag} {recorded}" in line and f"drop {flag}" in line
    assert _runs(store) == before


def test_resume_with_the_runs_own_values_goes_on(offline_run):
    store, run_id = offline_run
    done = run_t2t("generate", "--resume", run_id, "--n", "2", "--seed", "3", "--domain", "retail",
                   "--store", str(store), "--json", env={"T2T_LM": ""})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["run_id"] == run_id


def test_a_failed_resume_creates_no_store(tmp_path):
    store = tmp_path / "new.duckdb"
    line = _one_error_line(run_t2t("generate", "--resume", "abc", "--store", str(store), env={"T2T_LM": ""}))
    assert "no generate run 'abc'" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--programs", "missing"], ["--db", "/nonexistent/db.json"],
                                  ["--domain", "no_such_domain_xyz"]])
def test_a_refused_generate_leaves_no_store_file(tmp_path, args):
    _one_error_line(run_t2t("generate", "--n", "1", "--store", str(tmp_path / "s.duckdb"), *args,
                            env={"T2T_LM": ""}))
    assert list(tmp_path.iterdir()) == []


def test_a_domain_without_a_kit_leaves_no_store_file(tmp_path):
    import os

    from tests.test_domain_package import PACKAGE, _db
    import textwrap

    root = tmp_path / "outside"
    (root / "rentals_pkg").mkdir(parents=True)
    for name, text in PACKAGE.items():
        (root / "rentals_pkg" / name).write_text(textwrap.dedent(text).lstrip())
    db = tmp_path / "rentals.json"
    db.write_text(json.dumps(_db()))
    store = tmp_path / "work" / "t2t.duckdb"
    store.parent.mkdir()
    line = _one_error_line(run_t2t("generate", "--domain", "rentals_pkg", "--db", str(db), "--n", "2",
                                   "--store", str(store),
                                   env={"PYTHONPATH": os.pathsep.join([str(root), str(Path.cwd())]), "T2T_LM": ""}))
    assert "has no generation kit" in line
    assert list(store.parent.iterdir()) == []


def test_cache_dir_places_dspys_cache(tmp_path, monkeypatch):
    import dspy

    from trajectory2task.errors import UserError
    from trajectory2task.lm_options import configure_cache

    monkeypatch.delenv("T2T_NO_CACHE", raising=False)
    monkeypatch.delenv("T2T_CACHE_DIR", raising=False)
    previous = dspy.cache
    try:
        assert configure_cache(False, str(tmp_path / "c")) is True
        assert Path(dspy.cache.disk_cache_dir) == tmp_path / "c" and (tmp_path / "c").is_dir()
        monkeypatch.setenv("T2T_CACHE_DIR", str(tmp_path / "env"))
        configure_cache(False, None)
        assert Path(dspy.cache.disk_cache_dir) == tmp_path / "env"
        (tmp_path / "file").write_text("x")
        with pytest.raises(UserError, match="--cache-dir .*not a directory"):
            configure_cache(False, str(tmp_path / "file"))
        assert configure_cache(True, str(tmp_path / "unused")) is False
        assert not (tmp_path / "unused").exists() and not dspy.cache.enable_disk_cache
    finally:
        dspy.cache = previous
    assert "--cache-dir" in run_t2t("generate", "--help").stdout


# ---------------------------------------------------------------------------- bench's domain


@pytest.fixture(scope="module")
def airline_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("airline") / "t2t.duckdb"
    done = run_t2t("generate", "--domain", "airline", "--n", "1", "--conditions", "general", "--store", str(store),
                   env={"T2T_LM": ""})
    assert done.returncode == 0, done.stderr
    return store


def test_bench_without_domain_runs_the_stores_own_domain(airline_store):
    from trajectory2task.store import read_only_query

    done = run_t2t("bench", "--store", str(airline_store), "--tasks", "TRUE", "--json")
    assert done.returncode == 0, done.stderr
    assert "another database" not in done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    config = read_only_query(airline_store, "SELECT config FROM runs WHERE run_id = ?", [summary["run_id"]])[1]
    assert json.loads(config[0][0])["domain"] == "airline"
    assert summary["rollouts"] > 0 and summary["calibration"] == []


def test_bench_with_the_wrong_domain_names_the_tasks_domain(airline_store):
    line = _one_error_line(run_t2t("bench", "--store", str(airline_store), "--tasks", "TRUE", "--domain", "retail"))
    assert "airline tasks, not retail ones: pass --domain airline" in line


# ---------------------------------------------------------------------------- --estimate downloads nothing


def test_estimate_counts_a_hub_model_without_downloading_its_tokenizer(monkeypatch):
    import litellm.utils

    from trajectory2task.programs.lm.tokens import counting_model, litellm_tokenizer

    loads: list[str] = []

    def no_download(kind):
        loads.append(kind)
        raise OSError("offline")

    monkeypatch.setattr(litellm.utils, "_load_huggingface_tokenizer", no_download)
    model = "huggingface/meta-llama/Meta-Llama-3-8B-Instruct"
    messages = [{"role": "user", "content": "How many tokens is this sentence?"}]
    assert counting_model(model) == ("", True) and counting_model("openai/gpt-4o-mini")[1] is False
    assert litellm_tokenizer(model)(messages) == litellm_tokenizer("")(messages) > 0
    assert loads == []
    litellm.token_counter(model=model, messages=messages)  # LiteLLM on its own would fetch one
    assert loads == ["llama3"]


def test_generate_estimate_says_the_count_is_approximate(tmp_path):
    done = run_t2t("generate", "--lm", "huggingface/meta-llama/Meta-Llama-3-8B-Instruct", "--estimate", "--n", "2",
                   "--json", "--store", str(tmp_path / "s.duckdb"), env={"HF_HUB_OFFLINE": "0"})
    assert done.returncode == 0, done.stderr
    assert "an approximation: t2t does not download the model's own tokenizer" in done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["approximate_tokenizer"] == ["huggingface/meta-llama/Meta-Llama-3-8B-Instruct"]
    assert out["prompt_tokens"] > 0 and not (tmp_path / "s.duckdb").exists()


def test_bench_keeps_no_url_credentials_in_the_store(airline_store):
    from trajectory2task.store import read_only_query
    from tests.llm_server import ScriptedLLMServer

    with ScriptedLLMServer() as server:
        url = server.base_url.replace("http://", "http://alice:hunter2@")
        done = run_t2t("bench", "--store", str(airline_store), "--tasks", "TRUE", "--api-base", url, "--json")
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    run_id = json.loads(done.stdout.strip().splitlines()[-1])["run_id"]
    config = json.loads(read_only_query(airline_store, "SELECT config FROM runs WHERE run_id = ?", [run_id])[1][0][0])
    assert config["api_base"].startswith("http://***@127.0.0.1:")
    line = _one_error_line(run_t2t("bench", "--store", str(airline_store), "--resume", run_id))
    assert "carried credentials" in line and "pass --api-base again" in line
