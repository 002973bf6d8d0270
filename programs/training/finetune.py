"""Supervised fine-tuning of a local model on successful rollouts (`t2t finetune`).

Data: fine-tuning chat records (``{"messages": [...], "tools": [...]}``, what `t2t export
--format sft` writes), selected from a store by SQL or read from a JSONL file. Each record is
rendered by `trajectory2task.programs.lm.chat_format.ChatFormat` with the base model's tokenizer, the
rendering `LocalLM` prompts with at inference, and tokenized piece by piece: labels are the
token ids on the assistant's turns (its calls, its words, its end-of-turn marker) and -100
elsewhere, so the loss falls on the agent's own output only.

Training: TRL's `SFTTrainer` on the tokenized examples, LoRA through peft by default
(``method="full"`` trains every weight). The output directory is written in a private
temporary directory beside it and renamed into place at the end: an interrupted run leaves
no half-written model. It holds the adapter (or the full model), the tokenizer, with
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trajectory2task.programs.lm.local import FINETUNE_META, require_train_extra
from trajectory2task.store.records import LossPoint

Method = Literal["lora", "full"]
Device = Literal["cpu", "cuda"]
MERGED_DIR = "merged"
TRAIN_PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate")


class FinetuneConfig(BaseModel):
    """What a run trains and how (recorded with the run)."""

    model_config = ConfigDict(extra="forbid")

    base: str  # a GGUF file, a model directory or a t2t finetune output
    output: str
    method: Method = "lora"
    merge: bool = False
    epochs: float = Field(default=3.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)  # overrides epochs
    learning_rate: float | None = Field(default=None, gt=0)  # None: 2e-4 for LoRA, 1e-5 full
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


def read_sft_file(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a `t2t export --format sft` file; a malformed line is a `DataError`."""
    from trajectory2task.store.files import InputFileError, read_input_text

    try:
        text = read_input_text(str(path), "--data")
    except InputFileError as exc:
        raise DataError(str(exc)) from None
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{path}:{number}: not JSON ({exc})") from None
        messages = record.get("messages") if isinstance(record, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise DataError(f"{path}:{number}: a record needs 'messages', a list of chat messages with a role")
        tools = record.get("tools")
        if tools is not None and not isinstance(tools, list):
            raise DataError(f"{path}:{number}: 'tools' must be a list of tool schemas")
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


def _loss_recorder(losses: list[LossPoint], progress: Callable[[str], None], total: int) -> Any:
    from transformers import TrainerCallback

    class LossRecorder(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs and isinstance(logs["loss"], (int, float)) and math.isfinite(logs["loss"]):
                point = LossPoint(step=int(state.global_step), loss=float(logs["loss"]),
                                  epoch=float(logs["epoch"]) if logs.get("epoch") is not None else None)
                losses.append(point)
                progress(f"step {point.step}/{total} loss {point.loss:.4f}")

    return LossRecorder()


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


def temp_dir_beside(target: Path) -> Path:
    """A new private directory next to ``target`` (same file system: the final rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.t2t-tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(mode=0o700)
    return tmp


def move_into_place(tmp: Path, target: Path, replace: bool) -> None:
    """Rename ``tmp`` to ``target``; with ``replace`` an existing target is swapped out first."""
    old = None
    if target.exists() or target.is_symlink():
        if not replace:
            raise FileExistsError(f"{target} exists (pass --force to replace it)")
        old = target.parent / f".{target.name}.t2t-old-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


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
    tmp = temp_dir_beside(target)
    try:
        steps_per_epoch = math.ceil(len(examples) / (config.batch_size * config.grad_accum))
        total = config.max_steps or math.ceil(steps_per_epoch * config.epochs)
        args = SFTConfig(
            output_dir=str(tmp / "trainer"), max_steps=config.max_steps or -1, num_train_epochs=config.epochs,
            per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
            learning_rate=config.lr(), logging_steps=config.logging_steps, save_strategy="no", report_to="none",
            max_length=None, seed=config.seed, use_cpu=config.device == "cpu", dataloader_num_workers=0,
            disable_tqdm=True, lr_scheduler_type="linear", warmup_steps=0, bf16=False, fp16=False,
        )
        peft_config = None
        if config.method == "lora":
            from peft import LoraConfig

            peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                     target_modules="all-linear", task_type="CAUSAL_LM")
        losses: list[LossPoint] = []
        dataset = Dataset.from_list([e.model_dump() for e in examples])
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft_config, callbacks=[_loss_recorder(losses, progress, total)])
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # progress goes through `progress`, one line a step
        trainer.train()
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        trained = trainer.model
        trained.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        merged_output = None
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(f"wrote {target} in {time.perf_counter() - started:.1f} s")
    return TrainOutcome(losses=losses, n_examples=len(examples), output=str(target), merged_output=merged_output,
                        trained_tokens=sum(len(e.input_ids) for e in examples))
