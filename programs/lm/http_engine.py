"""A lean DSPy engine for self-hosted OpenAI-compatible endpoints (``--api-base``).

DSPy 3.4's own HTTP path spends ~1 ms of client CPU on every call beyond the request
conversion DSPy always does: a proxy lookup that scans the whole environment per request,
backend selection and routing per call (in a worker thread), advisory pricing (in another).
A rollout engine with 128 calls in flight on one event loop cannot afford it. This module
plugs into DSPy's engine extension point (``dspy.LM(model, engine=..., async_engine=...)``,
the ``complete(Request) -> Response`` contract of ``dspy.clients.engines.base``): DSPy keeps
its cache, retries (``num_retries``, the server's ``Retry-After``), callbacks, history and
usage; the engine makes one HTTP attempt and raises ``dspy.lm15`` errors, which DSPy turns
into its ``LM*Error`` classes as for its own engines.

What it sends: the chat-completions JSON a self-hosted server takes (messages, tools,
``tool_choice``, ``response_format``, ``max_tokens`` spelled so llama.cpp obeys it, sampling
knobs), to ``<api_base>/chat/completions`` over keep-alive HTTP/1.1 connections (standard
library only: asyncio streams for the async engine, one ``http.client`` connection per
thread for the sync one). The reply is read by DSPy's own ``dspy.lm15.response_from_openai_chat``.

What it reads: at most ``max_reply_bytes`` of body (default 32 MiB, ``T2T_MAX_REPLY_BYTES``;
``trajectory2task.programs.lm.config.reply_cap``), after gzip/deflate inflation too, whether the
server sends a Content-Length, chunks or a stream to the end of the connection; at most 100
header lines of 64 KiB in all; and the whole exchange, a trickle included, within the call's
timeout. A reply over a bound fails the call with one line (DSPy does not retry it).

What it does not do: proxies (``build_lm`` uses DSPy's engine when a proxy variable applies
to the endpoint; resolved once, at build time), streaming deltas (a stream is the whole
response as events), media parts and built-in tools (refused with a one-line error).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import socket
import ssl
import threading
import urllib.request
import weakref
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit

import orjson
from dspy import lm15

from trajectory2task.programs.lm.config import DEFAULT_MAX_REPLY_BYTES, check_api_base, redact_url

__all__ = ["AsyncOpenAIChatEngine", "Endpoint", "OpenAIChatEngine", "ReplyError", "chat_body", "engines_for",
           "inflate", "proxied", "read_reply", "response_of"]

MAX_HEADER_BYTES = 64 * 1024  # the status line and every header line together
MAX_HEADER_LINES = 100  # http.client's own bound, for the async engine too


class ReplyError(Exception):
    """A reply this engine will not read: over a size bound, malformed, or in an encoding it
    does not take. The engines turn it into ``lm15.ProviderError`` (not retried)."""

# words of a 400 that mean the prompt did not fit (llama.cpp, vLLM, OpenAI spellings)
_CONTEXT_WORDS = ("context length", "context_length", "maximum context", "n_ctx", "too long", "exceeds the context",
                  "context window")


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach one OpenAI-compatible server."""

    api_base: str
    api_key: str | None = None
    timeout_s: float = 60.0
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES

    def __post_init__(self) -> None:
        try:
            check_api_base(self.api_base)
        except ValueError as exc:
            raise ValueError(f"api_base {redact_url(str(self.api_base))!r}: {exc}") from None
        if not (isinstance(self.timeout_s, (int, float)) and math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError("timeout_s must be a positive number of seconds")
        if not (isinstance(self.max_reply_bytes, int) and self.max_reply_bytes > 0):
            raise ValueError("max_reply_bytes must be a positive number of bytes")

    @property
    def shown(self) -> str:
        """The base URL as error lines show it (credentials redacted)."""
        return redact_url(self.api_base)

    @property
    def tls(self) -> bool:
        return urlsplit(self.api_base).scheme == "https"

    @property
    def host(self) -> str:
        return urlsplit(self.api_base).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.api_base)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def path(self) -> str:
        return urlsplit(self.api_base).path.rstrip("/") + "/chat/completions"

    def headers(self, length: int) -> str:
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Content-Type: application/json",
                 "Accept: application/json", "Accept-Encoding: identity", f"Content-Length: {length}",
                 "Connection: keep-alive",
                 "User-Agent: t2t-dspy-engine"]
        if self.api_key:
            lines.append(f"Authorization: Bearer {self.api_key}")
        return "\r\n".join(lines) + "\r\n\r\n"


def proxied(api_base: str) -> bool:
    """Whether the environment's proxy settings route ``api_base`` through a proxy (this
    engine connects directly, so the caller then keeps DSPy's own engine)."""
    proxies = urllib.request.getproxies()
    scheme = urlsplit(api_base).scheme
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(urlsplit(api_base).hostname or "")


# ---------------------------------------------------------------------------- request -> JSON


def _refuse(what: str) -> lm15.UnsupportedFeatureError:
    return lm15.UnsupportedFeatureError(f"the api_base engine cannot send {what}; use a text-only request",
                                        feature=what)


def _text_of(parts: Any, where: str) -> str:
    chunks = []
    for part in parts:
        if isinstance(part, lm15.TextPart):
            chunks.append(part.text)
        elif isinstance(part, (lm15.ThinkingPart, lm15.CitationPart)):
            continue  # the model's own reasoning and citations are not sent back
        else:
            raise _refuse(f"{getattr(part, 'type', type(part).__name__)} parts in {where}")
    return "".join(chunks)


def _messages(request: lm15.Request) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else _text_of(request.system, "the system prompt")
        out.append({"role": "system", "content": system})
    for message in request.messages:
        if message.role == "tool" or any(isinstance(p, lm15.ToolResultPart) for p in message.parts):
            for part in message.parts:
                if not isinstance(part, lm15.ToolResultPart):
                    raise _refuse("a tool message with parts other than tool results")
                out.append({"role": "tool", "tool_call_id": part.id, "content": _text_of(part.content, "a tool result")})
            continue
        calls = [p for p in message.parts if isinstance(p, lm15.ToolCallPart)]
        text = _text_of([p for p in message.parts if not isinstance(p, lm15.ToolCallPart)], f"a {message.role} message")
        row: dict[str, Any] = {"role": message.role, "content": text}
        if calls:
            row["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.name, "arguments": json.dumps(c.input)}} for c in calls]
        out.append(row)
    return out


def _tool_choice(choice: lm15.ToolChoice) -> Any:
    if choice.mode in ("auto", "none") and not choice.allowed:
        return choice.mode
    if choice.mode == "required" and not choice.allowed:
        return "required"
    if len(choice.allowed) == 1 and choice.mode in ("required", "auto"):
        return {"type": "function", "function": {"name": choice.allowed[0]}}
    raise _refuse(f"tool_choice {choice.mode!r} restricted to {list(choice.allowed)}")


def chat_body(request: lm15.Request) -> dict[str, Any]:
    """The chat-completions JSON body for a canonical request (the model id without its
    ``provider/`` prefix, as LiteLLM sends it)."""
    _, slash, rest = request.model.partition("/")
    body: dict[str, Any] = {"model": rest if slash and rest else request.model, "messages": _messages(request)}
    if request.tools:
        tools = []
        for tool in request.tools:
            if not isinstance(tool, lm15.FunctionTool):
                raise _refuse(f"the built-in tool {tool.name!r}")
            # OpenAI's key order (a local model renders the tools as JSON text, as it was trained on)
            function: dict[str, Any] = {"name": tool.name}
            if tool.description is not None:
                function["description"] = tool.description
            function["parameters"] = tool.parameters
            tools.append({"type": "function", "function": function})
        body["tools"] = tools
    config = request.config
    if config.max_tokens is not None:
        body["max_tokens"] = config.max_tokens  # llama.cpp ignores max_completion_tokens
    for name in ("temperature", "top_p", "top_k", "seed", "frequency_penalty", "presence_penalty"):
        value = getattr(config, name)
        if value is not None:
            body[name] = value
    if config.stop:
        body["stop"] = list(config.stop)
    if config.logprobs is not None:
        body["logprobs"] = True
        if config.logprobs:
            body["top_logprobs"] = config.logprobs
    if config.response_format is not None:
        fmt = config.response_format
        if fmt["type"] == "json_object":
            body["response_format"] = {"type": "json_object"}
        else:
            inner = {"name": fmt.get("name") or "response", "schema": fmt["schema"]}
            if "strict" in fmt:
                inner["strict"] = fmt["strict"]
            body["response_format"] = {"type": "json_schema", "json_schema": inner}
    if config.tool_choice is not None:
        body["tool_choice"] = _tool_choice(config.tool_choice)
        if config.tool_choice.parallel is not None:
            body["parallel_tool_calls"] = config.tool_choice.parallel
    if config.reasoning is not None or config.cache is not None or config.probabilities is not None:
        raise _refuse("reasoning, prompt-cache or probability settings")
    if config.service_tier is not None:
        body["service_tier"] = config.service_tier
    if config.user_id is not None:  # the caller's end-user id, OpenAI's "user"
        body["user"] = config.user_id
    if config.store is not None:
        body["store"] = config.store
    body.update(config.extensions or {})
    return body


# ---------------------------------------------------------------------------- reply -> Response


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        value = float(headers.get("retry-after", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def http_error(status: int, raw: bytes, headers: Mapping[str, str]) -> lm15.ProviderError:
    """The ``dspy.lm15`` error for an HTTP failure: its message is the server's own (the
    ``error.message`` of an OpenAI-style body, else the first 500 characters)."""
    text = raw.decode("utf-8", "replace").strip()
    message = text[:500] or f"HTTP {status}"
    try:
        data = json.loads(text)
        error = data.get("error") if isinstance(data, dict) else None
        detail = error.get("message") if isinstance(error, dict) else error if isinstance(error, str) else None
        if detail:
            message = str(detail)[:500]
    except ValueError:
        pass
    message = f"HTTP {status}: {message}"
    meta: dict[str, Any] = {"provider": "openai", "status": status, "retry_after": _retry_after(headers)}
    if status in (401, 403):
        return lm15.AuthError(message, **meta)
    if status == 429:
        return lm15.RateLimitError(message, **meta)
    if status in (408, 504):
        return lm15.TimeoutError(message, **meta)
    if status in (400, 404, 409, 413, 422):
        if status in (400, 413) and any(word in message.lower() for word in _CONTEXT_WORDS):
            return lm15.ContextLengthError(message, **meta)
        return lm15.InvalidRequestError(message, **meta)
    if 500 <= status <= 599:
        return lm15.ServerError(message, **meta)
    return lm15.ProviderError(message, **meta)


def _too_large(what: str, cap: int) -> ReplyError:
    return ReplyError(f"the server's {what} exceeds {cap:,} bytes, t2t's bound on an LM reply "
                      "(T2T_MAX_REPLY_BYTES raises it)")


def inflate(raw: bytes, encoding: str | None, cap: int) -> bytes:
    """The body under its Content-Encoding (identity, gzip or deflate), inflated to at most
    ``cap`` bytes: a small bomb cannot become gigabytes."""
    coding = (encoding or "").strip().lower()
    if coding in ("", "identity"):
        return raw
    if coding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif coding == "deflate":
        # zlib-wrapped as the RFC says, or the raw stream some servers send
        inflater = zlib.decompressobj(zlib.MAX_WBITS if raw[:1] == b"\x78" else -zlib.MAX_WBITS)
    else:
        raise ReplyError(f"the reply is in content-encoding {coding[:40]!r}; t2t reads identity, gzip or deflate")
    try:
        out = inflater.decompress(raw, cap + 1)
    except zlib.error as exc:
        raise ReplyError(f"the reply is not valid {coding}: {exc}") from None
    if len(out) > cap or inflater.unconsumed_tail:
        raise _too_large("inflated reply body", cap)
    return out


def response_of(request: lm15.Request, status: int, raw: bytes, headers: Mapping[str, str]) -> lm15.Response:
    if not 200 <= status < 300:
        raise http_error(status, raw, headers)
    try:
        body = orjson.loads(raw)  # several times faster than json on every reply
    except ValueError:
        raise lm15.ProviderError(f"the response body is not JSON: {raw[:200]!r}", provider="openai",
                                 status=status) from None
    if not isinstance(body, dict):
        raise lm15.ProviderError("the response body is not JSON object", provider="openai", status=status)
    try:
        return lm15.response_from_openai_chat(body, model=request.model)
    except lm15.ProviderError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:  # a JSON object of another shape
        raise lm15.ProviderError(f"the response is not an OpenAI chat completion ({type(exc).__name__}: "
                                 f"{str(exc)[:200]})", provider="openai", status=status) from None


async def _line(reader: asyncio.StreamReader, what: str) -> bytes:
    try:
        return await reader.readline()
    except ValueError:  # the stream's limit (MAX_HEADER_BYTES) ran out before a newline
        raise ReplyError(f"the server's {what} is longer than {MAX_HEADER_BYTES:,} bytes") from None


async def read_reply(reader: asyncio.StreamReader, cap: int) -> tuple[int, dict[str, str], bytes, bool]:
    """One HTTP/1.1 reply from ``reader``: (status, headers, body inflated, whether the
    connection stays usable). Raises `ReplyError` for a reply over a bound or malformed,
    ``ConnectionResetError`` / ``asyncio.IncompleteReadError`` for one cut short."""
    status_line = await _line(reader, "status line")
    if not status_line:
        raise ConnectionResetError("the server closed the connection")
    fields = status_line.split(None, 2)
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not (fields[1].isdigit() and len(fields[1]) == 3):
        raise ReplyError(f"the server's reply is not HTTP: {status_line[:80]!r}")
    status = int(fields[1])
    headers: dict[str, str] = {}
    size = len(status_line)
    for _ in range(MAX_HEADER_LINES + 1):
        line = await _line(reader, "headers")
        if line in (b"\r\n", b"\n", b""):
            break
        size += len(line)
        if size > MAX_HEADER_BYTES:
            raise ReplyError(f"the server's headers are longer than {MAX_HEADER_BYTES:,} bytes")
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    else:
        raise ReplyError(f"the server sent more than {MAX_HEADER_LINES} header lines")
    keep = headers.get("connection", "").lower() != "close" and not fields[0].endswith(b"1.0")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        total = 0
        while True:
            text = (await _line(reader, "chunk size")).split(b";")[0].strip() or b"0"
            try:
                length = int(text, 16)
            except ValueError:
                raise ReplyError(f"the server sent a malformed chunk size {text[:40]!r}") from None
            if length < 0:
                raise ReplyError("the server sent a negative chunk size")
            if length == 0:
                for _ in range(MAX_HEADER_LINES + 1):  # trailers
                    if (await _line(reader, "trailers")) in (b"\r\n", b"\n", b""):
                        break
                else:
                    raise ReplyError(f"the server sent more than {MAX_HEADER_LINES} trailer lines")
                break
            total += length
            if total > cap:
                raise _too_large("chunked reply body", cap)
            chunks.append(await reader.readexactly(length))
            await reader.readexactly(2)
        body = b"".join(chunks)
    elif "content-length" in headers:
        text = headers["content-length"]
        if not (text.isdigit() and len(text) <= 20):
            raise ReplyError(f"the server sent a malformed Content-Length {text[:40]!r}")
        if int(text) > cap:
            raise _too_large(f"reply body ({int(text):,} bytes by its Content-Length)", cap)
        body = await reader.readexactly(int(text))
    else:  # the body runs to the end of the connection
        parts: list[bytes] = []
        total = 0
        while piece := await reader.read(65536):
            total += len(piece)
            if total > cap:
                raise _too_large("reply body", cap)
            parts.append(piece)
        body, keep = b"".join(parts), False
    return status, headers, inflate(body, headers.get("content-encoding"), cap), keep


# ---------------------------------------------------------------------------- async engine


class _Connection:
    """One keep-alive HTTP/1.1 connection on an event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def exchange(self, head: bytes, payload: bytes, cap: int) -> tuple[int, dict[str, str], bytes, bool]:
        """Send one request; (status, headers, body, whether the connection stays usable)."""
        self.writer.write(head + payload)
        return await read_reply(self.reader, cap)

    def close(self) -> None:
        self.writer.close()


class _EngineBase:
    """What both engines share: the endpoint, the capability hints DSPy's adapters read
    (``dspy.clients.capabilities``; set by ``engines_for``) and the state DSPy saves."""

    supports_function_calling = False
    supports_reasoning = False
    supports_response_schema = False
    supported_params: frozenset[str] = frozenset()

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def dump_state(self) -> dict[str, Any]:
        e = self.endpoint
        return {"api_base": e.shown, "timeout_s": e.timeout_s, "max_reply_bytes": e.max_reply_bytes}  # never the key

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> Self:
        return cls(Endpoint(api_base=state["api_base"], timeout_s=state.get("timeout_s", 60.0),
                            max_reply_bytes=state.get("max_reply_bytes", DEFAULT_MAX_REPLY_BYTES)))


class AsyncOpenAIChatEngine(_EngineBase):
    """``async complete(Request) -> Response`` against one endpoint: one attempt per call
    (DSPy retries), idle connections pooled per event loop."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self._lock = threading.Lock()
        self._idle: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[_Connection]] = (
            weakref.WeakKeyDictionary())
        self._ssl = ssl.create_default_context() if endpoint.tls else None

    def _pool(self) -> list[_Connection]:
        loop = asyncio.get_running_loop()
        with self._lock:
            pool = self._idle.get(loop)
            if pool is None:
                pool = self._idle[loop] = []
            return pool

    async def _open(self) -> _Connection:
        e = self.endpoint
        # the reader's limit bounds a line: the status line, a header, a chunk size
        reader, writer = await asyncio.open_connection(e.host, e.port, ssl=self._ssl, limit=MAX_HEADER_BYTES)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Connection(reader, writer)

    async def _send(self, payload: bytes) -> tuple[int, dict[str, str], bytes]:
        head = self.endpoint.headers(len(payload)).encode("latin-1")
        pool = self._pool()
        cap = self.endpoint.max_reply_bytes
        while pool:  # a pooled connection the server has since closed: try the next, then a new one
            connection = pool.pop()
            try:
                status, headers, body, keep = await connection.exchange(head, payload, cap)
            except (ConnectionError, asyncio.IncompleteReadError):
                connection.close()
                continue
            except BaseException:  # a bad reply, a timeout or a cancellation mid-exchange: the connection is spent
                connection.close()
                raise
            (pool.append if keep else lambda c: c.close())(connection)
            return status, headers, body
        connection = await self._open()
        try:
            status, headers, body, keep = await connection.exchange(head, payload, cap)
        except BaseException:
            connection.close()
            raise
        (pool.append if keep else lambda c: c.close())(connection)
        return status, headers, body

    async def complete(self, request: lm15.Request) -> lm15.Response:
        payload = orjson.dumps(chat_body(request))
        e = self.endpoint
        try:
            async with asyncio.timeout(e.timeout_s):
                status, headers, raw = await self._send(payload)
        except TimeoutError:
            raise lm15.TimeoutError(f"request to {e.shown} timed out after {e.timeout_s:g} s",
                                    provider="openai") from None
        except ReplyError as exc:
            raise lm15.ProviderError(f"{e.host}:{e.port}: {exc}", provider="openai") from None
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            raise lm15.TransportError(f"cannot reach {e.host}:{e.port}: {exc or type(exc).__name__}",
                                      provider="openai") from None
        return response_of(request, status, raw, headers)

    async def stream(self, request: lm15.Request) -> AsyncIterator[Any]:
        for event in lm15.response_to_events(await self.complete(request)):
            yield event

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            pool = self._idle.pop(loop, [])
        for connection in pool:
            connection.close()


# ---------------------------------------------------------------------------- sync engine


class OpenAIChatEngine(_EngineBase):
    """``complete(Request) -> Response`` for calls from threads: one keep-alive
    ``http.client`` connection per thread."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            e = self.endpoint
            cls = http.client.HTTPSConnection if e.tls else http.client.HTTPConnection
            connection = cls(e.host, e.port, timeout=e.timeout_s)
            self._local.connection = connection
        return connection

    def _send(self, payload: bytes) -> tuple[int, dict[str, str], bytes]:
        e = self.endpoint
        # http.client's socket timeout bounds each read, not the call: a server trickling a
        # byte a second would never time out. At the deadline the socket is shut down.
        expired = threading.Event()
        connection = self._connection()  # this thread's (the timer runs in another)

        def expire() -> None:
            expired.set()
            sock = connection.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        timer = threading.Timer(e.timeout_s, expire)
        timer.daemon = True
        timer.start()
        try:
            reply = self._exchange(payload, expired)
        except (lm15.TransportError, lm15.ProviderError):
            if not expired.is_set():
                raise
            reply = None
        finally:
            timer.cancel()
        if expired.is_set():  # whatever was read after the shutdown is cut short, not a reply
            self.close()
            raise lm15.TimeoutError(f"request to {e.shown} timed out after {e.timeout_s:g} s", provider="openai")
        assert reply is not None
        return reply

    def _exchange(self, payload: bytes, expired: threading.Event) -> tuple[int, dict[str, str], bytes]:
        e = self.endpoint
        headers = {"Content-Type": "application/json", "Accept": "application/json", "Accept-Encoding": "identity",
                   "User-Agent": "t2t-dspy-engine"}
        if e.api_key:
            headers["Authorization"] = f"Bearer {e.api_key}"
        cap = e.max_reply_bytes
        for fresh in (False, True):  # a kept-alive connection the server closed: once more, on a new one
            connection = self._connection()
            reused = connection.sock is not None
            try:
                connection.request("POST", e.path, body=payload, headers=headers)
                response = connection.getresponse()
                if response.length is not None and response.length > cap:
                    raise _too_large(f"reply body ({response.length:,} bytes by its Content-Length)", cap)
                raw = response.read(cap + 1)  # chunked or to the end of the connection: at most cap + 1
                if len(raw) > cap:
                    raise _too_large("reply body", cap)
                raw = inflate(raw, response.getheader("content-encoding"), cap)
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine) as exc:
                connection.close()
                if reused and not fresh and not expired.is_set():
                    continue
                raise lm15.TransportError(f"cannot reach {e.host}:{e.port}: {exc}", provider="openai") from None
            except TimeoutError:
                connection.close()
                raise lm15.TimeoutError(f"request to {e.shown} timed out after {e.timeout_s:g} s",
                                        provider="openai") from None
            except ReplyError as exc:
                connection.close()
                raise lm15.ProviderError(f"{e.host}:{e.port}: {exc}", provider="openai") from None
            except http.client.HTTPException as exc:  # a header line too long, too many, a body cut short
                connection.close()
                raise lm15.ProviderError(f"{e.host}:{e.port}: malformed reply: {type(exc).__name__}: "
                                         f"{str(exc)[:200]}", provider="openai") from None
            except OSError as exc:
                connection.close()
                raise lm15.TransportError(f"cannot reach {e.host}:{e.port}: {exc}", provider="openai") from None
            if response.will_close:
                connection.close()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, raw
        raise AssertionError("unreachable")

    def complete(self, request: lm15.Request) -> lm15.Response:
        payload = orjson.dumps(chat_body(request))
        status, headers, raw = self._send(payload)
        return response_of(request, status, raw, headers)

    def stream(self, request: lm15.Request) -> Iterator[Any]:
        yield from lm15.response_to_events(self.complete(request))

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()


def engines_for(endpoint: Endpoint, like: Any = None, function_calling: bool | None = None) -> dict[str, Any]:
    """``dspy.LM`` keyword arguments that send its calls through these engines.

    DSPy asks a custom engine, not its model maps, what the model can do (the
    ``supports_*`` hints adapters read): they are copied from ``like`` (the same model on
    DSPy's own engine), ``function_calling`` overriding the map's answer when given."""
    hints: dict[str, Any] = {}
    if like is not None:
        hints = {"supports_function_calling": bool(like.supports_function_calling),
                 "supports_reasoning": bool(like.supports_reasoning),
                 "supports_response_schema": bool(like.supports_response_schema),
                 "supported_params": frozenset(like.supported_params)}
    if function_calling is not None:
        hints["supports_function_calling"] = function_calling
    pair = {"engine": OpenAIChatEngine(endpoint), "async_engine": AsyncOpenAIChatEngine(endpoint)}
    for engine in pair.values():
        for name, value in hints.items():
            setattr(engine, name, value)
    return pair
