"""A local OpenAI-compatible chat-completions server for tests and benchmarks.

No network beyond 127.0.0.1, standard library only (so the CLI mode starts fast and
imports nothing heavy). Tests script what the "LM" answers, either as a fixed list of
replies or with a function of the request body:

    with ScriptedLLMServer(replies=[Text(chat_fields(answer="4"))]) as server:
        lm = build_lm(LMSettings(model="openai/gpt-4o-mini", api_base=server.base_url))
        ...
        assert len(server.requests) == 1

Reply kinds: ``Text`` (assistant content), ``ToolCalls`` (OpenAI tool calls; a raw string
as arguments sends invalid JSON on purpose), ``Fault`` (an HTTP error status; 429 and 5xx
carry ``Retry-After: 0`` by default so client retries do not sleep), ``Hang`` (waits, then
answers: drives client timeouts), ``Malformed`` (200 with a body that is not JSON).

When a ``replies`` script runs out, the server does NOT repeat the last reply: it answers
HTTP 400 with a body saying "scripted replies exhausted" (a non-retryable client error, so
the test fails at once and loudly) and appends the message to ``server.errors``. The same
happens when a responder raises. Tests can assert ``server.errors == []``.

Every response is written with ONE ``wfile.write`` of headers plus body, and the socket has
TCP_NODELAY: writing headers and body separately makes Nagle's algorithm meet the client's
delayed ACK and costs ~40 ms per call.

For speed benchmarks run the server in another process: ``run_in_subprocess(latency_s=0.1)``
or ``python -m tests.llm_server --port 0 --latency 0.1 [--mode text|tools]`` (prints the
port on stdout, serves until killed or stdin closes when ``--stdin-eof`` is given).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Union

import orjson  # a fraction of json's CPU: the server shares the benchmark machine's cores

__all__ = [
    "Fault",
    "Hang",
    "Malformed",
    "Reply",
    "ScriptedLLMServer",
    "SubprocessLLMServer",
    "Text",
    "ToolCalls",
    "chat_fields",
    "default_responder",
    "output_field_names",
    "run_in_subprocess",
    "tools_responder",
]


# ---------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class Text:
    """An assistant message with this content (finish_reason "stop")."""

    content: str


@dataclass(frozen=True)
class ToolCalls:
    """An assistant message with tool calls (finish_reason "tool_calls").

    Each call is ``(name, arguments)``; a dict is sent as its JSON, a str is sent verbatim
    (use it to send arguments that are not valid JSON).
    """

    calls: list[tuple[str, dict[str, Any] | str]]
    content: str | None = None


@dataclass(frozen=True)
class Fault:
    """An HTTP error. ``retry_after`` (seconds) becomes a Retry-After header when not None;
    it defaults to 0 so that client retries of 429/5xx do not back off for real in tests."""

    status: int
    body: str = '{"error": {"message": "injected fault", "type": "server_error", "code": null}}'
    retry_after: float | None = 0


@dataclass(frozen=True)
class Hang:
    """Wait ``seconds`` (interrupted by ``stop()``), then answer ``Text(content)``."""

    seconds: float
    content: str = "[[ ## answer ## ]]\nlate\n\n[[ ## completed ## ]]"


@dataclass(frozen=True)
class Malformed:
    """HTTP 200 with ``raw`` as the body (Content-Type application/json, but not JSON)."""

    raw: str = '{"id": "chatcmpl-broken", "choices": [ {"message": '


Reply = Union[Text, ToolCalls, Fault, Hang, Malformed]
Responder = Callable[[dict[str, Any]], "Reply | str"]


def chat_fields(**fields: Any) -> str:
    """A reply in DSPy ChatAdapter format: ``[[ ## name ## ]]`` blocks then ``completed``.

    Non-string values are sent as JSON (what ChatAdapter parses for typed fields).
    """
    parts = []
    for name, value in fields.items():
        text = value if isinstance(value, str) else json.dumps(value)
        parts.append(f"[[ ## {name} ## ]]\n{text}")
    parts.append("[[ ## completed ## ]]")
    return "\n\n".join(parts)


_OUTPUT_BLOCK = re.compile(r"Your output fields are:\n(.*?)(?:\n\n|\Z)", re.S)
_FIELD_LINE = re.compile(r"^\d+\. `([A-Za-z_][A-Za-z0-9_]*)`", re.M)


def output_field_names(body: dict[str, Any]) -> list[str]:
    """Output field names that a DSPy ChatAdapter system message asks for (may be empty)."""
    for message in body.get("messages") or []:
        if message.get("role") != "system":
            continue
        content = message.get("content")
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            continue
        block = _OUTPUT_BLOCK.search(content)
        if block:
            return _FIELD_LINE.findall(block.group(1))
    return []


def default_responder(body: dict[str, Any]) -> Reply:
    """Deterministic: every requested ChatAdapter output field gets the text "ok" (or
    ``answer`` alone when the request is not from a ChatAdapter)."""
    names = output_field_names(body) or ["answer"]
    return Text(chat_fields(**{name: "ok" for name in names}))


def tools_responder() -> Responder:
    """Every other call (1st, 3rd, ...) is a tool call to ``get_order_details``; the others
    answer like ``default_responder``. The alternation counts calls server-wide."""
    counter = itertools.count()
    lock = threading.Lock()

    def respond(body: dict[str, Any]) -> Reply:
        with lock:
            n = next(counter)
        if n % 2 == 0:
            return ToolCalls([("get_order_details", {"order_id": "#W0000000"})])
        return default_responder(body)

    return respond


# ---------------------------------------------------------------------------- server


def _approx_tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def _prompt_text(body: dict[str, Any]) -> str:
    chunks = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            chunks.append(content)
        elif isinstance(content, list):
            chunks.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return "\n".join(chunks)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse pooled connections
    server: _HTTPServer
    # wbufsize stays 0 (unbuffered socket writer): every response is built as one bytes
    # object and handed to ONE write(), i.e. one sendall(); nothing is written piecemeal.
    wbufsize = 0

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    def _send(self, status: int, body: bytes, *, content_type: str = "application/json",
              extra: dict[str, str] | None = None) -> None:
        reason = self.responses.get(status, ("",))[0]
        head = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}",
                f"Content-Length: {len(body)}", "Connection: keep-alive"]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        self._stop_counting()  # before the write: once the client has the answer it may send the next
        try:
            self.wfile.write(data)  # the one write
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            self.close_connection = True

    def _error(self, status: int, message: str) -> None:
        payload = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
        self._send(status, json.dumps(payload).encode())

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send(200, b'{"object": "list", "data": [{"id": "scripted", "object": "model"}]}')
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:  # noqa: N802
        srv = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.split("?")[0].rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._error(404, f"no route {self.path}")
            return
        try:
            body = orjson.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body is not a JSON object")
        except ValueError as exc:
            self._error(400, f"request body is not JSON: {exc}")
            return
        index = srv._record(body)
        self._counted = True
        try:
            self._serve(srv, body, index)
        finally:
            self._stop_counting()

    def _stop_counting(self) -> None:
        """This request is no longer in flight (once: the answer or the handler's end)."""
        if getattr(self, "_counted", False):
            self._counted = False
            self.server.owner._left()

    def _serve(self, srv: ScriptedLLMServer, body: dict[str, Any], index: int) -> None:
        if body.get("stream"):
            srv._fail(f"request {index}: stream=true is not supported by ScriptedLLMServer")
            self._error(400, "ScriptedLLMServer: stream=true is not supported")
            return
        if srv.latency_s > 0:
            srv._stopping.wait(srv.latency_s)
        try:
            reply = srv._next_reply(body, index)
        except Exception as exc:  # a script or responder bug: loud, not retryable
            message = f"ScriptedLLMServer: {exc}"
            srv._fail(f"request {index}: {message}\n{traceback.format_exc()}")
            self._error(400, message)
            return
        self._answer(reply, body, index)

    def _answer(self, reply: Reply, body: dict[str, Any], index: int) -> None:
        if isinstance(reply, Fault):
            extra = {} if reply.retry_after is None else {"Retry-After": f"{reply.retry_after:g}"}
            self._send(reply.status, reply.body.encode(), extra=extra)
            return
        if isinstance(reply, Malformed):
            self._send(200, reply.raw.encode())
            return
        if isinstance(reply, Hang):
            self.server.owner._stopping.wait(reply.seconds)
            reply = Text(reply.content)
        message: dict[str, Any] = {"role": "assistant"}
        if isinstance(reply, Text):
            message["content"] = reply.content
            finish = "stop"
            completion_text = reply.content
        elif isinstance(reply, ToolCalls):
            message["content"] = reply.content
            message["tool_calls"] = [
                {"id": f"call_{index}_{i}", "type": "function",
                 "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
                for i, (name, args) in enumerate(reply.calls)
            ]
            finish = "tool_calls"
            completion_text = json.dumps(message["tool_calls"])
        else:
            self._error(400, f"ScriptedLLMServer: unknown reply type {type(reply).__name__}")
            return
        prompt_tokens = _approx_tokens(_prompt_text(body))
        completion_tokens = _approx_tokens(completion_text or "")
        n = body.get("n") or 1
        payload = {
            "id": f"chatcmpl-{index}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "scripted"),
            "choices": [{"index": i, "message": message, "finish_reason": finish, "logprobs": None}
                        for i in range(n)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens * n,
                      "total_tokens": prompt_tokens + completion_tokens * n},
        }
        self._send(200, orjson.dumps(payload))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for a Hang
    allow_reuse_address = True
    request_queue_size = 256  # the default 5 drops SYNs under many client threads (1 s retransmits)
    owner: ScriptedLLMServer


class ScriptedLLMServer:
    """OpenAI-compatible ``POST /v1/chat/completions`` on 127.0.0.1, scripted per test.

    Give ``replies`` (served in order; an exhausted script answers 400, see the module
    docstring) or a ``responder`` called with each request body (it may return a plain str,
    meaning ``Text``); with neither, ``default_responder``. ``latency_s`` delays every
    answer. ``requests`` holds every request body received, in arrival order;
    ``max_in_flight`` the most requests it was answering at once.
    """

    def __init__(self, responder: Responder | None = None, replies: list[Reply] | None = None,
                 latency_s: float = 0.0, host: str = "127.0.0.1", port: int = 0) -> None:
        if responder is not None and replies is not None:
            raise ValueError("give either responder or replies, not both")
        self._responder = responder
        self._replies = list(replies) if replies is not None else None
        self.latency_s = latency_s
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._errors: list[str] = []
        self._in_flight = 0
        self.max_in_flight = 0  # the most chat requests being answered at once
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> ScriptedLLMServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((self._host, self._port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="ScriptedLLMServer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wakes Hang and latency waits
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- introspection
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server is not running")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A snapshot of every request body received, in order."""
        with self._lock:
            return list(self._requests)

    @property
    def errors(self) -> list[str]:
        """Script problems answered with 400 (exhausted replies, responder exceptions)."""
        with self._lock:
            return list(self._errors)

    def reset(self, replies: list[Reply] | None = None) -> None:
        """Forget received requests and errors; optionally load a new reply script."""
        with self._lock:
            self._requests.clear()
            self._errors.clear()
            self.max_in_flight = self._in_flight
            if replies is not None:
                self._replies = list(replies)
                self._responder = None

    # -- internals (called from handler threads)
    def _record(self, body: dict[str, Any]) -> int:
        with self._lock:
            self._requests.append(body)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            return len(self._requests) - 1

    def _left(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _fail(self, message: str) -> None:
        with self._lock:
            self._errors.append(message)

    def _next_reply(self, body: dict[str, Any], index: int) -> Reply:
        if self._replies is not None:
            with self._lock:
                if not self._replies:
                    raise RuntimeError(f"scripted replies exhausted at request {index} "
                                       f"(the script has fewer replies than the client made calls)")
                return self._replies.pop(0)
        reply = (self._responder or default_responder)(body)
        return Text(reply) if isinstance(reply, str) else reply


# ---------------------------------------------------------------------------- subprocess


@dataclass
class SubprocessLLMServer:
    """A server running in a child process (``run_in_subprocess``); requests are not recorded."""

    process: subprocess.Popen[str]
    port: int
    _closed: bool = field(default=False, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> SubprocessLLMServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_in_subprocess(latency_s: float = 0.0, mode: str = "text", timeout_s: float = 10.0) -> SubprocessLLMServer:
    """Start ``python tests/llm_server.py`` in a child process and wait for its port.

    ``mode`` is "text" (``default_responder``) or "tools" (``tools_responder``). Use as a
    context manager, or call ``.stop()``.
    """
    if mode not in ("text", "tools"):
        raise ValueError(f"mode must be 'text' or 'tools', not {mode!r}")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--port", "0",
           "--latency", str(latency_s), "--mode", mode]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip():
            break
        if proc.poll() is not None:
            break
    try:
        port = int(line.strip())
    except ValueError:
        proc.kill()
        raise RuntimeError(f"llm server subprocess did not report a port (got {line!r})") from None
    return SubprocessLLMServer(proc, port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible server on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--mode", choices=("text", "tools"), default="text",
                        help="text: fixed 'ok' fields; tools: every other call is a get_order_details tool call")
    args = parser.parse_args(argv)
    responder = tools_responder() if args.mode == "tools" else default_responder
    server = ScriptedLLMServer(responder=responder, latency_s=args.latency, port=args.port).start()
    print(server.port, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
