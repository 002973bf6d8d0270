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
        if os.fstat(fd).st_size > limit:  # refused before reading (the read below still stops at the limit)
            raise InputFileError(f"{p}: larger than {_size_text(limit)}, the most an input file may be")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise InputFileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InputFileError(f"{p}: larger than {_size_text(limit)}, the most an input file may be")
    return data


def _size_text(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 and n % (1024 * 1024) == 0 else f"{n} bytes"


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


# How deep one task or rollout entry may nest (objects and lists), counted from the entry
# itself. Real entries are a dozen levels deep at most; far deeper values parse, but the
# store's and the verifier's serializers stop at their own depth limits mid-run.
MAX_ENTRY_DEPTH = 64


def json_depth(value: Any, limit: int) -> int:
    """How many levels of lists and dicts ``value`` nests, counted without recursion and
    only up to ``limit + 1`` (enough to tell it is over)."""
    depth = 0
    level = [value]
    while level and depth <= limit:
        children = []
        for item in level:
            if isinstance(item, dict):
                children.extend(item.values())
            elif isinstance(item, list):
                children.extend(item)
        if not children and not any(isinstance(item, (dict, list)) for item in level):
            break
        depth += 1
        level = children
    return depth


def _too_deep(entry: Any) -> str | None:
    if json_depth(entry, MAX_ENTRY_DEPTH) > MAX_ENTRY_DEPTH:
        return f"nested more than {MAX_ENTRY_DEPTH} levels deep, the most an entry may be"
    return None


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


def _entry_name(entry: Any, key: str, fallback: str) -> str:
    """How a problem names an entry: its id when it has a plain one."""
    value = entry.get(key) if isinstance(entry, dict) else None
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else fallback


def _parse_task(entry: Any, index: int, domain: str | None) -> Task | ItemProblem:
    deep = _too_deep(entry)
    if deep is not None:
        return ItemProblem(entry_id=_entry_name(entry, "id", f"#{index}"), field="task", problem=deep)
    try:
        if isinstance(entry, dict) and "scenario" in entry:
            return Task.model_validate(entry)
        return task_from_tau2(entry, domain=domain)
    except Tau2FormatError as exc:
        return ItemProblem(entry_id=exc.task_id if exc.task_id != "?" else f"#{index}", field=exc.field,
                           problem=str(exc).split(": ", 2)[-1])
    except ValidationError as exc:
        err = exc.errors()[0]
        return ItemProblem(entry_id=_entry_name(entry, "id", f"#{index}"),
                           field=".".join(str(x) for x in err["loc"]), problem=err["msg"])


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
        parsed = _parse_task(entry, index, domain)
        if isinstance(parsed, ItemProblem):
            problem = parsed
        else:
            refusal = _task_refusal(parsed, seen)
            if refusal is None:
                seen.add(parsed.id)
                tasks.append(parsed)
                continue
            problem = ItemProblem(entry_id=parsed.id, field=refusal[0], problem=refusal[1])
        if strict:
            raise InputFileError(problem.line())
        problems.append(problem)
    return tasks, problems


def load_rollouts(path: str | Path, *, strict: bool = False) -> tuple[list[RecordedRollout | None], list[ItemProblem]]:
    """Recorded rollouts, one per line, in input order; a bad line gives None and a problem."""
    out: list[RecordedRollout | None] = []
    problems: list[ItemProblem] = []
    for index, entry in enumerate(_read_entries(path)):
        item = _entry_name(entry, "task_id", f"line {index + 1}")
        deep = _too_deep(entry)
        if deep is not None:
            problem = ItemProblem(entry_id=item, field="rollout", problem=deep)
        else:
            try:
                out.append(RecordedRollout.model_validate(entry))
                continue
            except ValidationError as exc:
                err = exc.errors()[0]
                problem = ItemProblem(entry_id=item, field=".".join(str(x) for x in err["loc"]), problem=err["msg"])
        if strict:
            raise InputFileError(problem.line()) from None
        problems.append(problem)
        out.append(None)
    return out, problems
