"""Reading task and rollout files given on the command line, with per-item problems."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from trajectory2task.signatures.models import Message, Task, ToolCall
from trajectory2task.store.tau2 import Tau2FormatError, task_from_tau2


class InputFileError(ValueError):
    """A whole input file is unusable (missing, unreadable, not JSON)."""


class ItemProblem(BaseModel):
    """One bad entry of an input file: which item, which field, what is wrong."""

    entry_id: str
    field: str
    problem: str

    def line(self) -> str:
        return f"task {self.entry_id}: {self.field}: {self.problem}"


class RecordedRollout(BaseModel):
    """A line of a rollouts file: the tool calls (and optionally messages) an agent made."""

    task_id: str
    tool_calls: list[ToolCall]
    messages: list[Message] = []


# Input files are read whole; above this they are refused instead of filling memory.
MAX_INPUT_BYTES = 512 * 1024 * 1024


def read_input_bytes(path: str | Path, what: str = "file", limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of a regular file, at most `limit` of them.

    Opened without blocking and checked after opening, so a FIFO, a device such as
    /dev/zero, or a directory is refused instead of hanging or reading forever."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InputFileError(f"{p}: no such file") from None
    except OSError as exc:
        raise InputFileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise InputFileError(f"{p}: is a directory, expected a {what}")
        if not stat.S_ISREG(mode):
            raise InputFileError(f"{p}: is not a regular file, expected a {what}")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise InputFileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InputFileError(f"{p}: larger than {limit // (1024 * 1024)} MiB, the most an input file may be")
    return data


def read_input_text(path: str | Path, what: str = "file", limit: int = MAX_INPUT_BYTES) -> str:
    """A regular file's text, which must be UTF-8 (see read_input_bytes)."""
    data = read_input_bytes(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _json_value(text: str, where: str) -> Any:
    """json.loads, with every way it can fail (syntax, nesting deeper than Python's
    recursion allows, integers longer than Python converts) as one InputFileError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise InputFileError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with more digits than int() accepts
        raise InputFileError(f"{where}: unreadable JSON value: {str(exc).splitlines()[0]}") from None


def _read_entries(path: str | Path) -> list[Any]:
    p = Path(path)
    text = read_input_text(p, "JSON file")
    stripped = text.lstrip()
    if not stripped:
        raise InputFileError(f"{p}: file is empty")
    if stripped.startswith("["):
        data = _json_value(text, str(p))
        if not isinstance(data, list):
            raise InputFileError(f"{p}: expected a JSON list of entries")
        return data
    entries = []
    for number, line in enumerate(text.split("\n"), 1):  # JSON lines end at \n only
        if not line.strip():
            continue
        entries.append(_json_value(line, f"{p}: line {number}"))
    return entries


# tau2-bench's reward types: what a task's `reward_basis` may name.
REWARD_BASIS = frozenset({"DB", "ENV_ASSERTION", "NL_ASSERTION", "ACTION", "COMMUNICATE"})


def _task_refusal(task: Task, seen: set[str]) -> tuple[str, str] | None:
    """(field, problem) when a task that parsed still cannot be checked faithfully."""
    if task.id in seen:
        return "id", "the same id as an earlier task in the file"
    unknown = [basis for basis in task.reward_basis if basis not in REWARD_BASIS]
    if unknown:
        return "reward_basis", f"unknown value(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(REWARD_BASIS))}"
    state = task.initial_state
    if state and (not isinstance(state, dict) or any(state.values())):
        # the verifier replays on the given database as it is; a task that changes it first
        # (initialization_data, initialization_actions, message_history) would be judged wrongly
        return "initial_state", "tasks that set up their own initial state are not supported (it would be ignored)"
    return None


def load_tasks(path: str | Path, *, strict: bool = False, domain: str | None = None) -> tuple[list[Task], list[ItemProblem]]:
    """Tasks from a tau2 tasks.json list or a JSON-lines file of tau2 or t2t tasks.

    Bad tasks are reported as problems and skipped; with ``strict`` the first one raises.
    Also refused, one problem each: a repeated task id, an unknown `reward_basis` value,
    and a tau2 `initial_state` (which this verifier would not apply).
    """
    tasks: list[Task] = []
    problems: list[ItemProblem] = []
    seen: set[str] = set()
    for index, entry in enumerate(_read_entries(path)):
        try:
            if isinstance(entry, dict) and "scenario" in entry:
                task = Task.model_validate(entry)
            else:
                task = task_from_tau2(entry, domain=domain)
        except Tau2FormatError as exc:
            problem = ItemProblem(entry_id=exc.task_id if exc.task_id != "?" else f"#{index}", field=exc.field,
                                  problem=str(exc).split(": ", 2)[-1])
        except ValidationError as exc:
            err = exc.errors()[0]
            item = entry.get("id", f"#{index}") if isinstance(entry, dict) else f"#{index}"
            problem = ItemProblem(entry_id=str(item), field=".".join(str(x) for x in err["loc"]), problem=err["msg"])
        else:
            refusal = _task_refusal(task, seen)
            if refusal is None:
                seen.add(task.id)
                tasks.append(task)
                continue
            problem = ItemProblem(entry_id=task.id, field=refusal[0], problem=refusal[1])
        if strict:
            raise InputFileError(problem.line())
        problems.append(problem)
    return tasks, problems


def load_rollouts(path: str | Path, *, strict: bool = False) -> tuple[list[RecordedRollout | None], list[ItemProblem]]:
    """Recorded rollouts, one per line, in input order; a bad line gives None and a problem."""
    out: list[RecordedRollout | None] = []
    problems: list[ItemProblem] = []
    for index, entry in enumerate(_read_entries(path)):
        try:
            out.append(RecordedRollout.model_validate(entry))
        except ValidationError as exc:
            err = exc.errors()[0]
            item = entry.get("task_id", f"line {index + 1}") if isinstance(entry, dict) else f"line {index + 1}"
            problem = ItemProblem(entry_id=str(item), field=".".join(str(x) for x in err["loc"]), problem=err["msg"])
            if strict:
                raise InputFileError(problem.line()) from None
            problems.append(problem)
            out.append(None)
    return out, problems
