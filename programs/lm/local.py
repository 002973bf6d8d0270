"""A local model as a DSPy LM: ``local/PATH`` runs a transformers model in this process.

PATH is one of

- a GGUF file (transformers dequantizes it: ``from_pretrained(dir, gguf_file=name)``),
- a Hugging Face model directory (config, weights, tokenizer),
- a `t2t finetune` output directory: a LoRA adapter (loaded onto its base with peft), or a
  fully fine-tuned model; ``t2t_finetune.json`` there names the base.

`LocalLM` is a ``dspy.LM`` on DSPy's engine interface: `LocalChatEngine` answers
``complete(Request) -> Response``. It takes DSPy's canonical request as the chat-completions
body the api_base engine would send (`trajectory2task.programs.lm.http_engine.chat_body`: messages with
assistant ``tool_calls`` and ``tool`` results, ``tools``; ``tool_choice`` and
``response_format`` are ignored), renders it with `trajectory2task.programs.lm.chat_format` (the rendering
`t2t finetune` trains on), generates, and reads the completion back as an OpenAI chat reply
(``content``, ``tool_calls``, ``usage``). DSPy runs its callbacks around every call, so
``build_lm``'s ledger records each one in ``lm_calls`` like any other LM's.

One model (`LocalModel`) is loaded per (path, device) and shared by every copy of the LM
(DSPy copies an LM per rollout); generation holds a lock, so concurrent rollouts take turns,
and the async engine generates on a worker thread, off the event loop. The key/value cache
of the last few conversations is kept: a rollout's next turn repeats its previous prompt, so
only the new tokens are computed.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import dspy
from dspy import lm15

from trajectory2task.programs.lm.chat_format import ChatFormat

LOCAL_PREFIX = "local/"
FINETUNE_META = "t2t_finetune.json"
DEFAULT_MAX_NEW_TOKENS = 256
TRAIN_EXTRA_HINT = "pip install 'trajectory2task[train]'"


class TrainExtraMissing(ImportError):
    """The training packages are not installed; the message is one line saying what to install."""


def require_train_extra(what: str, packages: tuple[str, ...] = ("torch", "transformers", "peft")) -> None:
    """Raise `TrainExtraMissing` unless the packages (of the train extra) import."""
    missing = []
    for name in packages:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise TrainExtraMissing(f"{what} needs the training packages ({', '.join(missing)} missing): "
                                f"{TRAIN_EXTRA_HINT}")


def is_local_model(model: str) -> bool:
    return model.startswith(LOCAL_PREFIX)


def local_path(model: str) -> str:
    return model[len(LOCAL_PREFIX):]


def check_model_path(path: str) -> Path:
    """A ``local/PATH`` that exists and is a GGUF file or a model directory, else ValueError."""
    p = Path(path).expanduser()
    if not path:
        raise ValueError("local/PATH: no path given (e.g. local/./model.gguf or local/./my-finetune)")
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise ValueError(f"local/{path}: a model file must be GGUF (.gguf); or give a model directory")
        return p
    if p.is_dir():
        if not any((p / n).is_file() for n in ("config.json", "adapter_config.json", FINETUNE_META)):
            raise ValueError(f"local/{path}: not a model directory (no config.json or adapter_config.json)")
        _refuse_custom_code(p)
        return p
    raise ValueError(f"local/{path}: no such model file or directory")


def _dtype(torch: Any, device: str) -> Any:
    return torch.float32 if device == "cpu" else torch.bfloat16


class ModelLoadError(ValueError):
    """A model path that cannot be loaded safely; the message is one line."""


# Every transformers/peft load: never run code shipped in a model directory (``auto_map``),
# never reach the hub (a base named by hub id must be downloaded by the user beforehand).
SAFE_LOAD = {"trust_remote_code": False, "local_files_only": True}
MAX_ADAPTER_DEPTH = 4


def _refuse_custom_code(p: Path) -> None:
    """A directory whose config or tokenizer config maps to its own Python code is refused up front:
    transformers would otherwise ask on stdout (corrupting --json) or fail on a closed stdin."""
    for name in ("config.json", "tokenizer_config.json", "adapter_config.json"):
        f = p / name
        if not f.is_file():
            continue
        if f.stat().st_size > 16 << 20:
            raise ModelLoadError(f"{f}: larger than 16 MiB, not a model config")
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ModelLoadError(f"{f}: not a JSON config ({str(exc).splitlines()[0][:120]})") from None
        if not isinstance(data, dict):
            raise ModelLoadError(f"{f}: not a JSON object")
        if data.get("auto_map"):
            raise ModelLoadError(f"{p}: the model needs its own Python code ({name} has auto_map); "
                                 "t2t never runs code from a model directory")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def load_tokenizer_and_model(path: str | os.PathLike[str], device: str = "cpu",
                             _seen: tuple[Path, ...] = ()) -> tuple[Any, Any]:
    """(tokenizer, model) for a GGUF file, a model directory or a `t2t finetune` output.

    Nothing is downloaded and no code from the directory runs (`SAFE_LOAD`); anything that
    cannot be loaded is a `ModelLoadError` with one line."""
    require_train_extra("a local model")
    import torch

    p = Path(path).expanduser()
    resolved = p.resolve()
    if resolved in _seen or len(_seen) >= MAX_ADAPTER_DEPTH:
        raise ModelLoadError(f"{p}: the adapter's base chain loops or is deeper than {MAX_ADAPTER_DEPTH} "
                             "(an adapter cannot be its own base)")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device cuda: no CUDA device is visible to torch (use cpu)")
    if not p.exists():
        raise ModelLoadError(f"{p}: no such model file or directory (a hub id is not downloaded; "
                             "download the model and give its directory)")
    if p.is_dir():
        _refuse_custom_code(p)
    try:
        return _load(p, device, torch, (*_seen, resolved))
    except (ModelLoadError, TrainExtraMissing):
        raise
    except Exception as exc:  # transformers, peft, gguf and torch raise many kinds for a bad directory
        raise ModelLoadError(f"{p}: cannot load the model: {type(exc).__name__}: {_first_line(exc)}") from None


def _load(p: Path, device: str, torch: Any, seen: tuple[Path, ...]) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = _dtype(torch, device)
    if p.is_file():  # GGUF
        tokenizer = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name, **SAFE_LOAD)
        model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=dtype, **SAFE_LOAD)
        # The tensors are dequantized on load; the GGUF quantizer left attached would make Trainer
        # refuse to train and save_pretrained write a quantization config the weights no longer have.
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
    elif (p / "adapter_config.json").is_file():
        from peft import PeftModel

        base_tokenizer, base = load_tokenizer_and_model(_adapter_base(p), device, seen)
        del base_tokenizer  # the adapter directory carries the tokenizer it was trained with
        tokenizer = AutoTokenizer.from_pretrained(str(p), **SAFE_LOAD)
        model = PeftModel.from_pretrained(base, str(p), local_files_only=True)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(p), **SAFE_LOAD)
        # safetensors only: a pickle (.bin) checkpoint can run code when unpickled
        model = AutoModelForCausalLM.from_pretrained(str(p), dtype=dtype, use_safetensors=True, **SAFE_LOAD)
    model.to(device)
    model.eval()
    return tokenizer, model


def _adapter_base(adapter_dir: Path) -> str:
    meta = adapter_dir / FINETUNE_META
    base = None
    if meta.is_file():
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ModelLoadError(f"{meta}: not JSON") from None
        base = data.get("base") if isinstance(data, dict) else None
    if not base:
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not base or not isinstance(base, str):
        raise ModelLoadError(f"{adapter_dir}: the adapter does not name its base model")
    base_path = Path(base).expanduser()
    if not base_path.is_absolute():
        base_path = adapter_dir / base_path if (adapter_dir / base_path).exists() else base_path
    if not base_path.exists():
        raise ModelLoadError(f"{adapter_dir}: its base {base!r} is not a local file or directory "
                             "(t2t downloads nothing: download the base and point the adapter at it)")
    return str(base_path)


class _Cached:
    """A conversation's key/value cache and the token ids it covers."""

    def __init__(self, ids: list[int], cache: Any) -> None:
        self.ids = ids
        self.cache = cache


class LocalModel:
    """One loaded model: renders, generates, parses. Thread-safe (one generation at a time)."""

    KEEP_CACHES = 4
    MIN_REUSE = 32  # shorter shared prefixes are recomputed

    def __init__(self, path: str, device: str = "cpu", threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.path = path
        self.device = device
        self.tokenizer, self.model = load_tokenizer_and_model(path, device)
        self.format = ChatFormat(self.tokenizer)
        self.lock = threading.Lock()
        self.caches: list[_Cached] = []
        self.stop_ids = self._stop_ids()

    def _stop_ids(self) -> list[int]:
        ids = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
            tid = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(tid, int) and tid >= 0 and tid != self.tokenizer.unk_token_id:
                ids.add(tid)
        return sorted(ids)

    def _take_cache(self, ids: list[int]) -> tuple[Any, int]:
        """The kept cache sharing the longest prefix with ``ids``, cropped to it (or None)."""
        best, best_len = None, 0
        for entry in self.caches:
            n = 0
            # the cache holds all but the last generated token; at least one new token goes in
            limit = min(len(entry.ids), entry.cache.get_seq_length(), len(ids) - 1)
            while n < limit and entry.ids[n] == ids[n]:
                n += 1
            if n > best_len:
                best, best_len = entry, n
        if best is None or best_len < self.MIN_REUSE:
            return None, 0
        self.caches.remove(best)
        have = best.cache.get_seq_length()
        if have > best_len:
            best.cache.crop(best_len - have)  # negative: remove that many tokens from the end
        return best.cache, best_len

    def generate(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, max_new_tokens: int,
                 temperature: float | None) -> tuple[str, int, int]:
        """(completion text, prompt tokens, completion tokens)."""
        import torch

        prompt = self.format.render(messages, tools, add_generation_prompt=True)
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        sample = bool(temperature and temperature > 0)
        with self.lock, torch.inference_mode():
            cache, reused = self._take_cache(ids)
            try:
                out, cache = self._run(ids, cache, max_new_tokens, sample, temperature)
            except Exception:
                if cache is None:
                    raise
                out, cache = self._run(ids, None, max_new_tokens, sample, temperature)  # a stale cache: start over
            new = out[len(ids):]
            if cache is not None:
                self.caches.append(_Cached(list(ids) + list(new), cache))
                del self.caches[:-self.KEEP_CACHES]
        while new and new[-1] in self.stop_ids:
            new = new[:-1]
        text = self.tokenizer.decode(new, skip_special_tokens=False)
        for special in self.tokenizer.all_special_tokens:  # end markers, padding; tool-call tags stay
            if special not in ("<tool_call>", "</tool_call>"):
                text = text.replace(special, "")
        return text, len(ids), len(out) - len(ids)

    def _run(self, ids: list[int], cache: Any, max_new_tokens: int, sample: bool,
             temperature: float | None) -> tuple[list[int], Any]:
        import torch
        from transformers import DynamicCache

        cache = cache if cache is not None else DynamicCache()
        input_ids = torch.tensor([ids], device=self.device)
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=sample, **{_cache_name(): cache},
                                      attention_mask=torch.ones_like(input_ids), eos_token_id=self.stop_ids or None,
                                      pad_token_id=self.tokenizer.pad_token_id or (self.stop_ids or [0])[0],
                                      return_dict_in_generate=True)
        if sample:
            kwargs["temperature"] = float(temperature or 1.0)
        else:  # greedy; the model's own sampling defaults would only warn here
            kwargs.update(temperature=None, top_p=None, top_k=None)
        result = self.model.generate(input_ids, **kwargs)
        return result.sequences[0].tolist(), getattr(result, _cache_name())


def _cache_name() -> str:
    """What generate calls its key/value cache: ``cache`` in newer transformers, else
    ``past_key_values``."""
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    return "cache" if "cache" in getattr(GenerateDecoderOnlyOutput, "__dataclass_fields__", {}) else "past_key_values"


_models: dict[tuple[str, str], LocalModel] = {}
_models_lock = threading.Lock()


def model_for(path: str, device: str = "cpu", threads: int | None = None) -> LocalModel:
    key = (str(Path(path).expanduser().resolve()), device)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model = _models[key] = LocalModel(path, device, threads)
        return model


class LocalChatEngine:
    """``complete(Request) -> Response`` with a `LocalModel` (see module doc)."""

    # what DSPy's adapters ask an engine (dspy.clients.capabilities)
    supports_function_calling = True  # tools are rendered into the prompt by chat_format, for any model
    supports_reasoning = False
    supports_response_schema = False
    supported_params: frozenset[str] = frozenset({"max_tokens", "temperature"})

    def __init__(self, model: LocalModel) -> None:
        self.model = model

    def complete(self, request: lm15.Request) -> lm15.Response:
        from trajectory2task.programs.lm.http_engine import chat_body

        body = chat_body(request)
        max_new = int(body.get("max_tokens") or DEFAULT_MAX_NEW_TOKENS)
        text, prompt_tokens, completion_tokens = self.model.generate(
            body["messages"], body.get("tools"), max_new, body.get("temperature"))
        parsed = self.model.format.parse(text)
        message: dict[str, Any] = {"role": "assistant", "content": parsed.content}
        if parsed.tool_calls:
            message["tool_calls"] = [{"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments}}
                                     for c in parsed.tool_calls]
        finish = "tool_calls" if parsed.tool_calls else ("length" if completion_tokens >= max_new else "stop")
        reply = {"id": f"local-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "model": request.model,
                 "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                 "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                           "total_tokens": prompt_tokens + completion_tokens}}
        return lm15.response_from_openai_chat(reply, model=request.model)

    def stream(self, request: lm15.Request) -> Iterator[Any]:
        yield from lm15.response_to_events(self.complete(request))

    def dump_state(self) -> dict[str, Any]:
        return {"path": self.model.path, "device": self.model.device}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> LocalChatEngine:
        return cls(model_for(state["path"], state.get("device", "cpu")))


class AsyncLocalChatEngine(LocalChatEngine):
    """`LocalChatEngine` awaited: generation is CPU/GPU-bound, so it runs on a worker thread
    and the event loop goes on with other rollouts' turns."""

    async def complete(self, request: lm15.Request) -> lm15.Response:  # type: ignore[override]
        return await asyncio.to_thread(LocalChatEngine.complete, self, request)

    async def stream(self, request: lm15.Request) -> AsyncIterator[Any]:  # type: ignore[override]
        for event in lm15.response_to_events(await self.complete(request)):
            yield event


class LocalLM(dspy.LM):
    """``local/PATH`` as a DSPy LM (see module doc). Copies share the loaded model."""

    def __init__(self, model: str, *, device: str | None = None, threads: int | None = None,
                 temperature: float | None = None, max_tokens: int | None = None,
                 callbacks: list[Any] | None = None, **kwargs: Any) -> None:
        path = local_path(model) if is_local_model(model) else model
        check_model_path(path)
        for unused in ("cache", "num_retries", "timeout", "api_base", "api_key", "extra_body"):
            kwargs.pop(unused, None)  # in-process: nothing to cache, retry, time out or reach
        self.device = device or os.environ.get("T2T_LOCAL_DEVICE") or "cpu"
        self.local_model = model_for(path, self.device, threads)
        super().__init__(model=LOCAL_PREFIX + path if not is_local_model(model) else model, temperature=temperature,
                         max_tokens=max_tokens, cache=False, callbacks=callbacks, num_retries=0,
                         engine=LocalChatEngine(self.local_model), async_engine=AsyncLocalChatEngine(self.local_model),
                         **kwargs)
