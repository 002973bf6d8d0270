"""`t2t finetune`: supervised fine-tuning of a local model on successful rollouts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer

from trajectory2task.errors import UserError
from trajectory2task.output import console, err_console, print_json_line, terminal_text
from trajectory2task.settings import store_path


def finetune(
    base: Annotated[str, typer.Option("--base", help="Base model: a GGUF file, a Hugging Face model directory, or "
                                                     "a t2t finetune output directory.")],
    output: Annotated[Path, typer.Option("--output", help="Directory to write (written beside, renamed at the end).")],
    store: Annotated[Optional[str], typer.Option("--store", help="Store file (default $T2T_STORE or ./t2t.duckdb): "
                                                                 "the data's source, and where the run is recorded.")] = None,
    where: Annotated[Optional[str], typer.Option(
        "--where", help="SQL filter over rollouts_latest choosing the passing rollouts to train on "
                        "(e.g. \"agent_model = 'oracle'\").")] = None,
    condition: Annotated[Optional[str], typer.Option("--condition", help="Only rollouts of this condition.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Only rollouts of this agent model.")] = None,
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="Train on this JSONL file (from t2t export --format sft) instead of the store's rollouts.")] = None,
    method: Annotated[str, typer.Option("--method", help="lora (default) or full.")] = "lora",
    merge: Annotated[bool, typer.Option("--merge", help="Also save the merged model (LoRA) under DIR/merged.")] = False,
    epochs: Annotated[float, typer.Option("--epochs", help="Passes over the data (at most 1000).")] = 3.0,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after this many optimizer steps "
                                                                         "(overrides --epochs).", min=1)] = None,
    learning_rate: Annotated[Optional[float], typer.Option(
        "--lr", help="Learning rate, above 0 and at most 1. [default: 2e-4 for LoRA, 1e-5 full]")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Examples per device step.", min=1)] = 1,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="Steps accumulated per optimizer step.", min=1)] = 1,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Cut examples to this many tokens. "
                                                                           "[default: no cut]", min=16)] = None,
    lora_r: Annotated[int, typer.Option("--lora-r", help="LoRA rank.", min=1)] = 16,
    lora_alpha: Annotated[int, typer.Option("--lora-alpha", help="LoRA alpha.", min=1)] = 32,
    seed: Annotated[int, typer.Option("--seed", help="Training seed.")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads for torch.", min=1)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --output if it exists.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the run record as one JSON object.")] = False,
) -> None:
    """Fine-tune a local model on successful rollouts (LoRA by default); the run is recorded in the store."""
    from trajectory2task.programs.lm.local import TrainExtraMissing, check_model_path, require_train_extra
    from trajectory2task.programs.training.finetune import TRAIN_PACKAGES

    try:  # first: without the extra nothing else can be done
        require_train_extra("t2t finetune", TRAIN_PACKAGES)
    except TrainExtraMissing as exc:
        raise UserError(str(exc)) from None
    from pydantic import ValidationError

    from trajectory2task.programs.training.finetune import (DataError, FinetuneConfig, allowed_range, check_output_paths,
                                                            read_sft_file, train)
    from trajectory2task.store import TaskStore
    from trajectory2task.store.records import FinetuneRun

    if method not in ("lora", "full"):
        raise UserError(f"--method {method!r}: use lora or full")
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r}: use cpu or cuda")
    if data is not None and (where or condition or model):
        raise UserError("--data trains on a file: --where, --condition and --model select from the store instead")
    try:
        check_model_path(base)
    except ValueError as exc:
        raise UserError(f"--base: {str(exc).removeprefix('local/')}") from None
    if output.is_symlink() and not output.exists():
        raise UserError(f"--output {output} is a symbolic link to nothing ({os.readlink(output)}): "
                        "remove it or choose another directory")
    if output.exists() and not force:
        raise UserError(f"{output} exists (pass --force to replace it)")
    if output.exists() and not output.is_dir():
        raise UserError(f"{output} exists and is not a directory")
    try:
        config = FinetuneConfig(base=base, output=str(output), method=method, merge=merge, epochs=epochs,  # type: ignore[arg-type]
                                max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size,
                                grad_accum=grad_accum, max_length=max_length, lora_r=lora_r, lora_alpha=lora_alpha,
                                seed=seed, device=device, threads=threads)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        allowed = allowed_range(field)
        raise UserError(f"{_FLAGS.get(field, field)} {first.get('input')!r}: {first['msg'].lower()}"
                        + (f" (allowed: {allowed})" if allowed else "")) from None
    if device == "cuda":
        _require_cuda()
    path = store_path(store)
    if data is None and not path.exists():
        raise UserError(f"{path}: no store here yet (run t2t generate and t2t bench, or pass --store or --data)")
    try:
        check_output_paths(output, base, data, path)
    except DataError as exc:
        raise UserError(str(exc)) from None
    with TaskStore(path) as ts:
        _clean_up_after_killed_runs(ts, output)
        if data is not None:
            try:
                records = read_sft_file(data)
            except DataError as exc:
                raise UserError(str(exc)) from None
            source, sql, params = str(data), None, []
        else:
            from trajectory2task.store.sft import sft_records

            sql, params = ts.selection(where, condition, model)
            records = sft_records(ts, sql, params)
            source = "store"
        if not records:
            raise UserError("no passing rollout matches the selection: nothing to train on "
                            "(see t2t sql \"SELECT agent_model, condition, count(*) FROM rollouts_latest "
                            "WHERE pass GROUP BY ALL\")")
        # the process is recorded so that a later run can tell this one was killed (see _clean_up_after_killed_runs)
        run_id = ts.start_run("finetune", {**config.model_dump(), "data_source": source, "data_sql": sql,
                                           "data_params": params, "process": _this_process()})
        progress(f"run {run_id}: {len(records)} conversation(s), {config.method} on {config.base}")

        started = time.perf_counter()
        record = dict(run_id=run_id, base=config.base, method=config.method, config=config.model_dump(),
                      data_source=source, data_sql=sql, data_params=params, n_rows=len(records))
        try:
            outcome = train(config, records, run_id, progress, replace=force)
        except (DataError, FileExistsError) as exc:
            ts.add_finetune_run(FinetuneRun(**record, n_examples=0, status="failed", error=str(exc),
                                            wall_s=time.perf_counter() - started))
            ts.finish_run(run_id, "failed")
            raise UserError(str(exc)) from None
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            status = "interrupted" if interrupted else "failed"
            with _signals_deferred():  # a second Ctrl-C must not cut the record short
                ts.add_finetune_run(FinetuneRun(**record, n_examples=0, status=status,
                                                error=f"{type(exc).__name__}: {exc}"[:2000],
                                                wall_s=time.perf_counter() - started))
                ts.finish_run(run_id, status)
            if interrupted:
                # the interrupt can land after the rename that puts the model in place
                what = "it was written before the interrupt" if _written_by(output, run_id) else "nothing was written"
                print(f"t2t: error: interrupted: finetune run {run_id} recorded as interrupted; "
                      f"{terminal_text(str(output))}: {what}", file=sys.stderr, flush=True)
                raise SystemExit(130) from None
            raise
        run = FinetuneRun(**record, n_examples=outcome.n_examples, losses=outcome.losses, output=outcome.output,
                          merged_output=outcome.merged_output, status="finished", wall_s=time.perf_counter() - started)
        ts.add_finetune_run(run)
        ts.finish_run(run_id, "finished")
    if json_out:
        print_json_line(json.loads(run.model_dump_json()))
        return
    first, last = (outcome.losses[0].loss, outcome.losses[-1].loss) if outcome.losses else (None, None)
    losses = f"loss {first:.4f} -> {last:.4f} over {len(outcome.losses)} logged step(s)" if first is not None else "no loss logged"
    console.print(f"finetune run {run_id}: {outcome.n_examples} example(s), {losses}; wrote {outcome.output}"
                  + (f" (merged: {outcome.merged_output})" if outcome.merged_output else "")
                  + f"; benchmark it with: t2t bench --agent-lm local/{outcome.output}", markup=False, highlight=False,
                  soft_wrap=True)


# FinetuneConfig's fields as the flags that set them, for error lines
_FLAGS = {"epochs": "--epochs", "learning_rate": "--lr", "max_steps": "--max-steps", "batch_size": "--batch-size",
          "grad_accum": "--grad-accum", "max_length": "--max-length", "lora_r": "--lora-r",
          "lora_alpha": "--lora-alpha", "threads": "--threads", "seed": "--seed", "device": "--device"}


def progress(line: str) -> None:
    err_console.print(f"t2t finetune: {line}", markup=False, highlight=False, soft_wrap=True)


def _written_by(output: Path, run_id: str) -> bool:
    """Whether ``output`` holds the model this run wrote (its metadata names the run)."""
    from trajectory2task.programs.lm.local import FINETUNE_META

    try:
        return json.loads((output / FINETUNE_META).read_text(encoding="utf-8")).get("run_id") == run_id
    except (OSError, ValueError, AttributeError):
        return False


def _require_cuda() -> None:
    """Refuse --device cuda before anything is recorded or loaded when torch sees no GPU."""
    import torch

    if not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to torch (use --device cpu)")


def _this_process() -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _process_gone(process: object) -> bool:
    """Whether a run's recorded process is known to have ended (same host, no such pid)."""
    from trajectory2task.programs.training.finetune import process_alive

    if not isinstance(process, dict) or process.get("host") != socket.gethostname():
        return False  # another machine's run, or one recorded before processes were: cannot tell
    pid = process.get("pid")
    return isinstance(pid, int) and pid != os.getpid() and not process_alive(pid)


def _clean_up_after_killed_runs(ts: object, output: Path) -> None:
    """What a killed (SIGKILL, power loss) run leaves: its run 'started' for ever, and a
    temporary directory beside its output. Runs whose process is gone are marked
    'abandoned'; leftovers beside this run's output are removed (those of live processes
    are named and kept)."""
    from trajectory2task.programs.training.finetune import sweep_leftovers

    _, rows = ts.query("SELECT run_id, config FROM runs_status "  # type: ignore[attr-defined]
                       "WHERE kind = 'finetune' AND status IN ('started', 'resumed')")
    for run_id, config in rows:
        process = (json.loads(config) if isinstance(config, str) else config or {}).get("process")
        if _process_gone(process):
            ts.add_run_event(run_id, "abandoned", {  # type: ignore[attr-defined]
                "why": f"process {process['pid']} on {process['host']} ended without finishing the run"})
            progress(f"run {run_id} was left 'started' by process {process['pid']}, which is gone: "
                     "marked abandoned")
    removed, kept = sweep_leftovers(output)
    for path in removed:
        progress(f"removed {path.name}, left beside {output.name} by a run that was killed")
    for path in kept:
        progress(f"kept {path.name}: a run that may still be going is writing it (remove it once it is not)")


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT held back (and then delivered) while a record is being written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
