"""What one command needs around its LMs: a ledger every LM records into, the structured
adapter installed, and a check of each endpoint before the first call.

`LMSession.build(role, settings)` builds the role's `dspy.LM` with the ledger's callback
(``trajectory2task.programs.lm.accounting``). `preflight` opens a connection to each ``api_base`` and asks it
for ``/models``: a server that is down, or a base URL missing its ``/v1``, is reported in one
line before any LM call is made (and before DSPy's retries spend seconds on it).
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from trajectory2task.programs.lm.accounting import CallLedger
from trajectory2task.programs.lm.build import build_lm
from trajectory2task.programs.lm.config import LMSettings, check_api_base, redact_url


class EndpointError(RuntimeError):
    """An endpoint that cannot serve: one line saying what to change."""


def _warn_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class LMSession:
    """The LMs of one command run, all recording into one `CallLedger`."""

    def __init__(self, cache: bool = False, warn: Callable[[str], None] | None = _warn_stderr) -> None:
        self.ledger = CallLedger()
        self.cache = cache
        self.warn = warn
        self.settings: dict[str, LMSettings] = {}
        self.lms: list[Any] = []

    def build(self, role: str, settings: LMSettings) -> Any:
        self.settings[role] = settings
        lm = build_lm(settings, cache=self.cache, role=role, ledger=self.ledger, warn=self.warn)
        self.lms.append(lm)
        return lm

    @staticmethod
    def install_adapter() -> None:
        """Make the structured adapter the default for programs that name none (the typed
        generation and user-simulator signatures). Global: worker threads see it too."""
        import dspy

        from trajectory2task.programs.lm.structured import STRUCTURED_ADAPTER

        dspy.settings.configure(adapter=STRUCTURED_ADAPTER)

    def preflight(self, timeout_s: float = 3.0) -> None:
        """Check each endpoint once; where it is llama-cpp-python's server, tell the roles its
        structured-output dialect (it answers the OpenAI one with a 500, which DSPy retries)."""
        from trajectory2task.programs.lm.accounting import role_of

        kinds: dict[str, str | None] = {}
        for s in self.settings.values():
            if s.api_base and s.api_base not in kinds:
                kinds[s.api_base] = check_endpoint(s.api_base, timeout_s)
        for lm in self.lms:
            tag = role_of(lm)
            if tag is not None and kinds.get(tag.settings.api_base or "") == LLAMA_CPP_PYTHON and tag.dialect is None:
                tag.dialect = "json_object_schema"


LLAMA_CPP_PYTHON = "llama-cpp-python"


def _get(url: str, timeout_s: float) -> tuple[int, Any]:
    """(HTTP status, JSON body or None) of GET url; status 0 when no HTTP answer came."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout_s) as response:
            try:
                return int(response.status), json.loads(response.read(65536) or b"null")
            except ValueError:
                return int(response.status), None
    except urllib.error.HTTPError as exc:
        return int(exc.code), None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException):  # no usable HTTP answer
        return 0, None


def _server_kind(models: Any) -> str | None:
    """Which server a /models answer comes from, where it tells (llama-cpp-python's says
    ``owned_by: "me"`` and lists the GGUF path)."""
    data = models.get("data") if isinstance(models, dict) else None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        first = data[0]
        if first.get("owned_by") == "me" or str(first.get("id", "")).endswith(".gguf"):
            return LLAMA_CPP_PYTHON
    return None


def check_endpoint(api_base: str, timeout_s: float = 3.0) -> str | None:
    """Raise `EndpointError` when nothing listens at ``api_base`` or its path is missing /v1;
    return the server's kind where its /models tells it."""
    try:
        check_api_base(api_base)
    except ValueError as exc:
        raise EndpointError(f"wrong_url: --api-base {redact_url(str(api_base))!r}: {exc}") from None
    parts = urlsplit(api_base)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise EndpointError(f"unreachable: nothing answers at {parts.hostname}:{port} ({why}) -- is the server "
                            f"running? check --api-base") from None
    base = api_base.rstrip("/")
    status, models = _get(base + "/models", timeout_s)
    if status == 404 and not base.endswith("/v1") and _get(base + "/v1/models", timeout_s)[0] == 200:
        shown = redact_url(base)
        raise EndpointError(f"wrong_url: {shown} has no /models but {shown}/v1 does -- use --api-base {shown}/v1")
    return _server_kind(models) if status == 200 else None


