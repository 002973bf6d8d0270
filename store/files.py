"""Reading task and rollout files given on the command line, with per-item problems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from signatures.models import Message, Task, ToolCall
from store.tau2 import Tau2FormatError, task_from_tau2


class InputFileError(ValueError):
    """A whole input file is unusable (missing, unreadable, not JSON)."""


class ItemProblem(BaseModel):
    """One bad entry of an input file: which item, which field, what is wrong."""

    item_id: str
    field: str
    problem: str

    def line(self) -> str:
        return f"task {self.item_id}: {self.field}: {self.problem}"


class RecordedRollout(BaseModel):
    """A line of a rollouts file: the tool calls (and optionally messages) an agent made."""

    task_id: str
    tool_calls: list[ToolCall]
    messages: list[Message] = []


def _read_entries(path: str | Path) -> list[Any]:
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: no such file")
    if p.is_dir():
        raise InputFileError(f"{p}: is a directory, expected a JSON file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{p}: cannot read: {exc}") from None
    stripped = text.lstrip()
    if not stripped:
        raise InputFileError(f"{p}: file is empty")
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{p}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        return list(data)
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{p}: invalid JSON on line {number}: {exc.msg}") from None
    return entries


def load_tasks(path: str | Path, *, strict: bool = False, domain: str | None = None) -> tuple[list[Task], list[ItemProblem]]:
    """Tasks from a tau2 tasks.json list or a JSON-lines file of tau2 or t2t tasks.

    Bad tasks are reported as problems and skipped; with ``strict`` the first one raises.
    """
    tasks: list[Task] = []
    problems: list[ItemProblem] = []
    for index, entry in enumerate(_read_entries(path)):
        try:
            if isinstance(entry, dict) and "scenario" in entry:
                tasks.append(Task.model_validate(entry))
            else:
                tasks.append(task_from_tau2(entry, domain=domain))
        except Tau2FormatError as exc:
            problem = ItemProblem(item_id=exc.task_id if exc.task_id != "?" else f"#{index}", field=exc.field,
                                  problem=str(exc).split(": ", 2)[-1])
        except ValidationError as exc:
            err = exc.errors()[0]
            item = entry.get("id", f"#{index}") if isinstance(entry, dict) else f"#{index}"
            problem = ItemProblem(item_id=str(item), field=".".join(str(x) for x in err["loc"]), problem=err["msg"])
        else:
            continue
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
            problem = ItemProblem(item_id=str(item), field=".".join(str(x) for x in err["loc"]), problem=err["msg"])
            if strict:
                raise InputFileError(problem.line()) from None
            problems.append(problem)
            out.append(None)
    return out, problems
