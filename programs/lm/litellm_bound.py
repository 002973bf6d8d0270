"""The reply bound on LiteLLM's HTTP client (engine "litellm": a custom model name declared
function-calling, and every provider DSPy routes through LiteLLM).

LiteLLM reads a reply to its end, and httpx inflates gzip/deflate after that, with no size
limit: an endless or 2 MB-gzip reply grows to gigabytes. LiteLLM's public hook for the HTTP
client is ``litellm.client_session`` / ``litellm.aclient_session``; t2t sets them to httpx
clients whose transport reads at most the bound of body and inflates it under the same bound
(`trajectory2task.programs.lm.http_engine.inflate`), so what LiteLLM sees is a plain
identity body. A session the user set themselves is left alone. The environment's proxy
settings still apply: each request goes direct or through its proxy as ``proxied`` says.
"""

from __future__ import annotations

import asyncio
import urllib.request
import weakref
from typing import Any

import httpx

from trajectory2task.programs.lm.http_engine import ReplyError, inflate, proxied

_DROPPED = {b"content-encoding", b"content-length", b"transfer-encoding"}


def _refused(request: httpx.Request, why: str) -> httpx.Response:
    """What LiteLLM gets in place of a reply past the bound: a 502 whose error message says so
    (an exception raised here would reach the user as the SDK's bare "Connection error.")."""
    return httpx.Response(502, json={"error": {"message": why, "type": "t2t_reply_bound"}}, request=request)


def _proxy_for(url: str) -> str | None:
    proxies = urllib.request.getproxies()
    scheme = httpx.URL(url).scheme
    return proxies.get(scheme) or proxies.get("all") if proxied(url) else None


def _plain(request: httpx.Request, response: httpx.Response, body: bytes, cap: int) -> httpx.Response:
    try:
        inflated = inflate(body, response.headers.get("content-encoding"), cap)
    except ReplyError as exc:  # too large once inflated, or not valid gzip
        return _refused(request, str(exc))
    headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _DROPPED]
    return httpx.Response(response.status_code, headers=headers, content=inflated,
                          extensions=response.extensions)


def _too_large(cap: int) -> str:
    return f"the server's reply body exceeds {cap:,} bytes, t2t's bound on an LM reply (T2T_MAX_REPLY_BYTES raises it)"


class BoundedTransport(httpx.BaseTransport):
    """Reads each reply whole, at most ``cap`` bytes before and after inflation."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._inner: dict[str | None, httpx.HTTPTransport] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        proxy = _proxy_for(str(request.url))
        inner = self._inner.get(proxy) or self._inner.setdefault(proxy, httpx.HTTPTransport(proxy=proxy))
        response = inner.handle_request(request)
        body = bytearray()
        try:
            for chunk in response.stream:  # type: ignore[union-attr]
                body += chunk
                if len(body) > self.cap:
                    return _refused(request, _too_large(self.cap))
        finally:
            response.close()
        return _plain(request, response, bytes(body), self.cap)

    def close(self) -> None:
        for inner in self._inner.values():
            inner.close()


class AsyncBoundedTransport(httpx.AsyncBaseTransport):
    """`BoundedTransport` for LiteLLM's async calls. Its connections belong to one event loop
    and LiteLLM's session serves every loop of the process (each `t2t` run starts its own), so
    each loop gets its own pool."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._inner: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str | None, httpx.AsyncHTTPTransport]] = (
            weakref.WeakKeyDictionary())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        proxy = _proxy_for(str(request.url))
        pools = self._inner.setdefault(asyncio.get_running_loop(), {})
        inner = pools.get(proxy) or pools.setdefault(proxy, httpx.AsyncHTTPTransport(proxy=proxy))
        response = await inner.handle_async_request(request)
        body = bytearray()
        try:
            async for chunk in response.stream:  # type: ignore[union-attr]
                body += chunk
                if len(body) > self.cap:
                    return _refused(request, _too_large(self.cap))
        finally:
            await response.aclose()
        return _plain(request, response, bytes(body), self.cap)

    async def aclose(self) -> None:
        for inner in self._inner.pop(asyncio.get_running_loop(), {}).values():
            await inner.aclose()


_installed: dict[str, Any] = {}  # the clients t2t set, and the cap they hold under "cap"


def bound_litellm_replies(cap: int, timeout_s: float | None = None) -> None:
    """Give LiteLLM bounded HTTP clients (idempotent; the newest cap wins; a session the user
    set is kept). ``timeout_s`` is the client's default; LiteLLM passes each call's own."""
    import litellm

    for name, make in (("client_session", lambda: httpx.Client(transport=BoundedTransport(cap), timeout=timeout_s)),
                       ("aclient_session", lambda: httpx.AsyncClient(transport=AsyncBoundedTransport(cap),
                                                                     timeout=timeout_s))):
        current = getattr(litellm, name)
        if current is not None and current is not _installed.get(name):
            continue  # the user's own client
        if current is not None and _installed.get("cap") == cap:
            continue
        _installed[name] = make()
        setattr(litellm, name, _installed[name])
    _installed["cap"] = cap
