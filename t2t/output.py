"""Printing: rich tables for people, one JSON object per line for programs.

Text that comes from the store or from input files can hold control characters; on a
terminal an escape sequence would act instead of being shown, so every such text goes
through `terminal_text` before it is printed for people. JSON output escapes them itself.
"""

from __future__ import annotations

import codecs
import json
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

# Rich loads on first use: a command that prints JSON lines (`t2t replay --json`) never needs
# it. `console` (stdout) and `err_console` (stderr) are made when first asked for.
_consoles: dict[bool, Console] = {}


def _console(stderr: bool = False) -> Console:
    if stderr not in _consoles:
        from rich.console import Console

        _consoles[stderr] = Console(stderr=stderr)
    return _consoles[stderr]


def __getattr__(name: str) -> Any:
    if name in ("console", "err_console"):
        return _console(stderr=name == "err_console")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# C0 and C1 control characters, DEL, and the bidirectional overrides that reorder what a
# terminal shows; each is printed as its Python escape (\x1b, \u202e, ...).
_CONTROL_CODES = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F,
                  *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ESCAPE_ALL = {code: chr(code).encode("unicode_escape").decode("ascii") if code < 0x100 else f"\\u{code:04x}"
               for code in _CONTROL_CODES}
_ESCAPE_KEEP_LINES = {code: text for code, text in _ESCAPE_ALL.items() if code not in (0x0A, 0x09)}


def terminal_text(value: Any, keep_newlines: bool = False) -> str:
    """`value` as text safe to show on a terminal: control characters escaped (newlines
    and tabs kept when `keep_newlines`)."""
    return str(value).translate(_ESCAPE_KEEP_LINES if keep_newlines else _ESCAPE_ALL)


def _stdout_takes_unicode() -> bool:
    try:
        return codecs.lookup(sys.stdout.encoding or "ascii").name.startswith("utf")
    except LookupError:
        return False


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None, which strict JSON can hold."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def print_json_line(obj: Any) -> None:
    """One line of strict JSON (never NaN or Infinity) on stdout. On an ASCII-only stdout,
    JSON's own \\u escapes keep the line valid JSON."""
    ascii_only = not _stdout_takes_unicode()
    try:
        text = json.dumps(obj, ensure_ascii=ascii_only, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(obj), ensure_ascii=ascii_only, allow_nan=False)
    sys.stdout.write(text + "\n")


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=None if title is None else escape(terminal_text(title)), show_lines=False)
    for column in columns:
        table.add_column(escape(terminal_text(column)), overflow="fold")
    for row in rows:
        table.add_row(*["" if v is None else escape(terminal_text(v)) for v in row])
    _console().print(table)


def print_text(text: Any, keep_newlines: bool = False) -> None:
    """One plain line (or block) for people: no rich markup, control characters escaped."""
    _console().print(terminal_text(text, keep_newlines), markup=False, highlight=False)


def print_rule(title: str) -> None:
    """A horizontal rule with a title, between sections printed for people."""
    from rich.markup import escape

    _console().rule(escape(terminal_text(title)))


def print_error_line(text: str) -> None:
    """A one-line message on stderr (progress notes, skipped items)."""
    print(terminal_text(text), file=sys.stderr)


def progress(description: str, total: int | None):
    """A rich progress bar on stderr, so stdout stays clean for --json output. Shown on a
    terminal only: in a log or a pipe its last frame would read like a line of output."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=_console(stderr=True), transient=False, disable=not _console(stderr=True).is_terminal)
