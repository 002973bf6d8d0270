"""Supervised fine-tuning of a local model on successful rollouts (`t2t finetune`).

Data: fine-tuning chat records (``{"messages": [...], "tools": [...]}``, what `t2t export
--format sft` writes), selected from a store by SQL or read from a JSONL file. Each record is
rendered by `trajectory2task.programs.lm.chat_format.ChatFormat` with the base model's tokenizer, the
rendering `LocalLM` prompts with at inference, and tokenized piece by piece: labels are the
token ids on the assistant's turns (its calls, its words, its end-of-turn marker) and -100
elsewhere, so the loss falls on the agent's own output only.

A data file is checked line by line before anything loads (`SftRecord`): roles system, user,
assistant or tool; content text or null; tool calls and tool schemas as OpenAI writes them;
a line at most ``MAX_RECORD_CHARS`` characters and ``MAX_RECORD_DEPTH`` levels deep. Any
other line is a `DataError` naming ``file:line``.

Training: TRL's `SFTTrainer` on the tokenized examples, LoRA through peft by default
(``method="full"`` trains every weight). A loss, gradient norm or trained weight that stops
being a finite number fails the run (`TrainingFailed`) instead of saving a broken model. The
output directory is written in a private temporary directory beside it (named for the
process, so a later run can remove what a killed one left: `sweep_leftovers`) and renamed
into place at the end, with the modes the user's umask gives: an interrupted run leaves no
half-written model. It holds the adapter (or the full model), the tokenizer, with
``merge`` the merged model under ``merged/``, and ``t2t_finetune.json`` naming the base, so
``local/DIR`` loads it (`trajectory2task.programs.lm.local`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from trajectory2task.programs.lm.local import FINETUNE_META, require_train_extra
from trajectory2task.store.records import LossPoint

Method = Literal["lora", "full"]
Device = Literal["cpu", "cuda"]
MERGED_DIR = "merged"
MAX_EPOCHS = 1000  # passes over the data; more is a typo, not a plan
MAX_STEPS = 10_000_000
TEMP_MARK = ".t2t-tmp-"  # in the name of the private directory an output is written in
TRAIN_PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate")


class FinetuneConfig(BaseModel):
    """What a run trains and how (recorded with the run)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # every float a finite number

    base: str  # a GGUF file, a model directory or a t2t finetune output
    output: str
    method: Method = "lora"
    merge: bool = False
    epochs: float = Field(default=3.0, gt=0, le=MAX_EPOCHS)
    max_steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)  # overrides epochs
    learning_rate: float | None = Field(default=None, gt=0, le=1)  # None: 2e-4 for LoRA, 1e-5 full
    batch_size: int = Field(default=1, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_length: int | None = Field(default=None, ge=16)  # tokens; longer examples are cut
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    seed: int = 0
    device: Device = "cpu"
    threads: int | None = Field(default=None, ge=1)
    logging_steps: int = Field(default=1, ge=1)

    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 2e-4 if self.method == "lora" else 1e-5


def allowed_range(field: str) -> str | None:
    """A FinetuneConfig number field's allowed values in words, read from its constraints
    (e.g. 'a finite number above 0 and at most 1000'); None for other fields."""
    info = FinetuneConfig.model_fields.get(field)
    if info is None:
        return None
    words = {"gt": "above", "ge": "at least", "lt": "below", "le": "at most"}
    bounds = [f"{words[key]} {getattr(item, key):g}" for item in info.metadata for key in words
              if getattr(item, key, None) is not None]
    kind = "a whole number" if int in (info.annotation, *get_args(info.annotation)) else "a finite number"
    return f"{kind} {' and '.join(bounds)}" if bounds else None


class Example(BaseModel):
    input_ids: list[int]
    labels: list[int]


class TrainOutcome(BaseModel):
    losses: list[LossPoint]
    n_examples: int
    output: str
    merged_output: str | None
    trained_tokens: int


class DataError(ValueError):
    """Unusable training data; the message is one line."""


class TrainingFailed(DataError):
    """Training ran but gave no usable model (the loss or the weights stopped being finite),
    or the model could not be written; nothing is left at the output."""


# A record line longer than this is refused before it is parsed: parsing JSON costs many
# times its size in memory, and no conversation worth training on comes near it.
MAX_RECORD_CHARS = 4 * 1024 * 1024
# Levels of lists and objects a record may nest (tool schemas are the deepest part of a real
# one, a dozen levels at most); deeper ones would overflow the renderer's recursion.
MAX_RECORD_DEPTH = 64


class _SftModel(BaseModel):
    # types exactly as JSON has them (no "7" for 7); keys this reader does not use are kept
    model_config = ConfigDict(extra="allow", strict=True)


class SftFunctionCall(_SftModel):
    name: str = Field(min_length=1)
    arguments: str | dict[str, Any] = "{}"  # JSON text of an object (OpenAI's form), or the object


class SftToolCall(_SftModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: SftFunctionCall


class SftMessage(_SftModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[SftToolCall] | None = None
    tool_call_id: str | None = None


class SftFunctionSchema(_SftModel):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class SftTool(_SftModel):
    type: Literal["function"] = "function"
    function: SftFunctionSchema


class SftRecord(_SftModel):
    """One line of a fine-tuning file: OpenAI chat fine-tuning messages, optional tool schemas
    (what `t2t export --format sft` writes); other keys are kept and ignored."""

    messages: list[SftMessage] = Field(min_length=1)
    tools: list[SftTool] | None = None


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(number, line) for each line split at line feeds only (JSON text may hold other line
    breaks, such as U+2028, inside strings), without building a list of them all."""
    start, number = 0, 1
    while start <= len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        yield number, text[start:end]
        start, number = end + 1, number + 1


def _record_problem(record: Any) -> str | None:
    """What makes a parsed line no training record (None: it is one)."""
    from pydantic import ValidationError

    from trajectory2task.store.files import json_depth

    if json_depth(record, MAX_RECORD_DEPTH) > MAX_RECORD_DEPTH:
        return f"nested more than {MAX_RECORD_DEPTH} levels deep"
    if not isinstance(record, dict):
        return "a record is a JSON object with 'messages'"
    try:
        parsed = SftRecord.model_validate(record)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in err["loc"]).lstrip(".")
        return f"{where or 'record'}: {err['msg']}"
    for index, message in enumerate(parsed.messages):
        for number, call in enumerate(message.tool_calls or []):
            if message.role != "assistant":
                return f"messages[{index}].tool_calls: only an assistant message makes tool calls"
            arguments = call.function.arguments
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments) if arguments.strip() else {}
                except (ValueError, RecursionError):
                    return f"messages[{index}].tool_calls[{number}].function.arguments: not JSON text"
            if not isinstance(arguments, dict) or json_depth(arguments, MAX_RECORD_DEPTH) > MAX_RECORD_DEPTH:
                return (f"messages[{index}].tool_calls[{number}].function.arguments: must be a JSON object "
                        f"(nested at most {MAX_RECORD_DEPTH} levels)")
    return None


def read_sft_file(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a `t2t export --format sft` file (`SftRecord`, one per line; blank lines
    skipped). A line that is no record, or longer than ``MAX_RECORD_CHARS``, is a `DataError`
    naming ``file:line``."""
    from trajectory2task.store.files import InputFileError, read_input_text

    try:
        text = read_input_text(str(path), "--data")
    except InputFileError as exc:
        raise DataError(str(exc)) from None
    records = []
    for number, line in _lines(text):
        if not line.strip():
            continue
        if len(line) > MAX_RECORD_CHARS:
            raise DataError(f"{path}:{number}: the line is {len(line)} characters long, more than the "
                            f"{MAX_RECORD_CHARS} a record may be")
        try:
            record = json.loads(line)
        except RecursionError:
            raise DataError(f"{path}:{number}: JSON nested more than {MAX_RECORD_DEPTH} levels deep") from None
        except ValueError as exc:
            raise DataError(f"{path}:{number}: not JSON ({str(exc).splitlines()[0]})") from None
        problem = _record_problem(record)
        if problem is not None:
            raise DataError(f"{path}:{number}: {problem}")
        records.append(record)
    return records


def build_examples(tokenizer: Any, records: Sequence[dict[str, Any]], max_length: int | None = None,
                   ) -> list[Example]:
    """Tokenized examples with labels on the assistant's turns only (see module doc)."""
    from trajectory2task.programs.lm.chat_format import ChatFormat

    chat = ChatFormat(tokenizer)
    examples = []
    for record in records:
        for segments in chat.training_segments(record["messages"], record.get("tools")):
            ids: list[int] = []
            labels: list[int] = []
            for text, trainable in segments:
                piece = tokenizer(text, add_special_tokens=False)["input_ids"]
                ids += piece
                labels += piece if trainable else [-100] * len(piece)
            if max_length is not None:
                ids, labels = ids[:max_length], labels[:max_length]
            if any(label != -100 for label in labels):
                examples.append(Example(input_ids=ids, labels=labels))
    return examples


class LossWatch:
    """What the loss callback saw: the logged points, and the first step whose loss or
    gradient norm was not a finite number (training stops there)."""

    def __init__(self) -> None:
        self.losses: list[LossPoint] = []
        self.diverged: str | None = None


def _loss_recorder(watch: LossWatch, progress: Callable[[str], None], total: int) -> Any:
    from transformers import TrainerCallback

    class LossRecorder(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if not logs or "loss" not in logs:
                return
            step = int(state.global_step)
            for key in ("loss", "grad_norm"):
                value = logs.get(key)
                if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                    watch.diverged = watch.diverged or f"the {key.replace('_', ' ')} was {value} at step {step}"
            if watch.diverged is not None:
                control.should_training_stop = True
                return
            point = LossPoint(step=step, loss=float(logs["loss"]),
                              epoch=float(logs["epoch"]) if logs.get("epoch") is not None else None)
            watch.losses.append(point)
            progress(f"step {point.step}/{total} loss {point.loss:.4f}")

    return LossRecorder()


def _nonfinite_weight(model: Any) -> str | None:
    """The name of a trained weight that is not finite everywhere (None: all are)."""
    import torch

    for name, parameter in model.named_parameters():
        if parameter.requires_grad and not bool(torch.isfinite(parameter.detach()).all()):
            return name
    return None


def check_output_paths(output: Path, base: str, data: Path | None, store: Path | None) -> None:
    """Refuse an ``output`` that would replace or sit inside the base model, the training data
    or the store (``--force`` swaps the whole output directory out), or that holds one of them."""
    out = output.expanduser().resolve()
    named = [("--base", Path(base).expanduser().resolve())]
    if data is not None:
        named.append(("--data", data.expanduser().resolve()))
    if store is not None:
        named.append(("the store", store.expanduser().resolve()))
    for flag, other in named:
        if other == out or out in other.parents:
            raise DataError(f"--output {output} would replace {flag} {other.name!r}: choose another directory")
        if other in out.parents and other.is_dir():
            raise DataError(f"--output {output} lies inside {flag} {other.name!r}: choose another directory")


def _load_base(config: FinetuneConfig) -> tuple[Any, Any]:
    from trajectory2task.programs.lm.local import ModelLoadError, load_tokenizer_and_model

    try:
        tokenizer, model = load_tokenizer_and_model(config.base, config.device)
    except ModelLoadError as exc:
        raise DataError(f"--base: {exc}") from None
    if hasattr(model, "merge_and_unload"):  # a t2t finetune adapter as the base: train on top of its merge
        model = model.merge_and_unload()
    model.train()
    return tokenizer, model


def temp_dir_beside(target: Path, run_id: str) -> Path:
    """A new private directory next to ``target`` (same file system: the final rename is
    atomic), named for the process writing it so a later run can tell a leftover."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}{TEMP_MARK}{os.getpid()}-{run_id[:12]}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(mode=0o700)
    return tmp


def process_alive(pid: int) -> bool:
    """Whether a process of this id runs on this machine (a reused id reads as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OSError:
        return True
    return True


def sweep_leftovers(target: Path) -> tuple[list[Path], list[Path]]:
    """The temporary directories earlier runs left beside ``target`` (killed before they could
    remove them): (removed, kept). One whose process (named in it) is gone is removed; one
    of a process still running, or of an older naming that does not say, is kept."""
    removed: list[Path] = []
    kept: list[Path] = []
    prefix = f".{target.name}{TEMP_MARK}"
    try:
        entries = [p for p in target.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed, kept
    for path in sorted(entries):
        pid_text = path.name[len(prefix):].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not process_alive(int(pid_text)):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink(
                missing_ok=True)
            (kept if path.exists() or path.is_symlink() else removed).append(path)
        else:
            kept.append(path)
    return removed, kept


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def move_into_place(tmp: Path, target: Path, replace: bool) -> None:
    """Rename ``tmp`` to ``target``; with ``replace`` an existing target is swapped out first.
    The private directory and what the writers made in it (some of them privately) get the
    modes the user's own files would have: 0o777 / 0o666 less the umask."""
    mask = _current_umask()
    for directory, _, files in os.walk(tmp):
        os.chmod(directory, 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o666 & ~mask)
    old = None
    if target.exists() or target.is_symlink():
        if not replace:
            raise FileExistsError(f"{target} exists (pass --force to replace it)")
        old = target.parent / f".{target.name}.t2t-old-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def train(config: FinetuneConfig, records: Sequence[dict[str, Any]], run_id: str,
          progress: Callable[[str], None] = lambda line: None, replace: bool = False) -> TrainOutcome:
    """Fine-tune ``config.base`` on ``records`` and write ``config.output`` (see module doc)."""
    require_train_extra("t2t finetune", TRAIN_PACKAGES)
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # progress is ours, one line a step; no bars on stderr
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.device == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda: no CUDA device is visible to torch")
    started = time.perf_counter()
    tokenizer, model = _load_base(config)
    examples = build_examples(tokenizer, records, config.max_length)
    if not examples:
        raise DataError("no training example: the selected conversations have no assistant turn"
                        + (" within --max-length" if config.max_length else ""))
    progress(f"{len(records)} conversation(s) -> {len(examples)} example(s), "
             f"{sum(len(e.input_ids) for e in examples)} tokens, "
             f"{sum(sum(1 for t in e.labels if t != -100) for e in examples)} of them trained on")
    target = Path(config.output)
    tmp = temp_dir_beside(target, run_id)
    try:
        steps_per_epoch = math.ceil(len(examples) / (config.batch_size * config.grad_accum))
        total = config.max_steps or math.ceil(steps_per_epoch * config.epochs)
        with warnings.catch_warnings():  # TRL's own defaults touch names transformers deprecates: not the user's to fix
            warnings.simplefilter("ignore", FutureWarning)
            args = SFTConfig(
                output_dir=str(tmp / "trainer"), max_steps=config.max_steps or -1, num_train_epochs=config.epochs,
                per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
                learning_rate=config.lr(), logging_steps=config.logging_steps, save_strategy="no",
                report_to="none", max_length=None, seed=config.seed, use_cpu=config.device == "cpu",
                dataloader_num_workers=0, disable_tqdm=True, lr_scheduler_type="linear", warmup_steps=0, bf16=False,
                fp16=False,
            )
        peft_config = None
        if config.method == "lora":
            from peft import LoraConfig

            peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                     target_modules="all-linear", task_type="CAUSAL_LM")
        watch = LossWatch()
        dataset = Dataset.from_list([e.model_dump() for e in examples])
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft_config, callbacks=[_loss_recorder(watch, progress, total)])
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # progress goes through `progress`, one line a step
        trainer.train()
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        trained = trainer.model
        # a diverged run ends with weights of NaN or inf: a model that is no model, not to be saved
        bad_weight = _nonfinite_weight(trained)
        if watch.diverged is not None or bad_weight is not None:
            why = watch.diverged or f"the weight {bad_weight} is no longer a finite number"
            raise TrainingFailed(f"training diverged: {why} (try a lower --lr; nothing was written to {target})")
        merged_output = _save(config, trained, tokenizer, watch.losses, run_id, tmp, target, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(f"wrote {target} in {time.perf_counter() - started:.1f} s")
    return TrainOutcome(losses=watch.losses, n_examples=len(examples), output=str(target),
                        merged_output=merged_output, trained_tokens=sum(len(e.input_ids) for e in examples))


def _save(config: FinetuneConfig, trained: Any, tokenizer: Any, losses: list[LossPoint], run_id: str, tmp: Path,
          target: Path, replace: bool) -> str | None:
    """Write the model into ``tmp`` and rename it to ``target``; the merged model's path, if any.
    A failed write (a full disk, a file size limit) is a `TrainingFailed` in one line: the
    writers (safetensors, torch, tokenizers) each raise their own kind of error for it."""
    merged_output = None
    try:
        trained.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if config.merge and config.method == "lora":
            merged = trained.merge_and_unload()
            merged.save_pretrained(str(tmp / MERGED_DIR))
            tokenizer.save_pretrained(str(tmp / MERGED_DIR))
            merged_output = str(target / MERGED_DIR)
        elif config.merge:
            merged_output = str(target)  # a full fine-tune is its own merged model
        meta = {"run_id": run_id, "base": str(Path(config.base).expanduser().resolve()), "method": config.method,
                "merged": MERGED_DIR if merged_output and config.method == "lora" else None,
                "losses": [p.model_dump() for p in losses], "config": config.model_dump()}
        (tmp / FINETUNE_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        move_into_place(tmp, target, replace)
    except FileExistsError:
        raise
    except Exception as exc:
        raise TrainingFailed(f"--output {target}: could not write the model: {_one_line(exc)}") from None
    return merged_output
