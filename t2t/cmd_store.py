"""Commands over the store: read-only SQL and exports."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from trajectory2task.errors import UserError
from trajectory2task.output import console, print_json_line, print_table
from trajectory2task.settings import store_path

StoreOpt = Annotated[Optional[str], typer.Option("--store", help="Store file (default $T2T_STORE or ./t2t.duckdb).")]


def sql(query: Annotated[str, typer.Argument(help="One SELECT statement.")], store: StoreOpt = None,
        json_out: Annotated[bool, typer.Option("--json", help="One JSON object per row (strict JSON).")] = False,
        csv_out: Annotated[bool, typer.Option("--csv", help="CSV with a header row, LF line endings.")] = False
        ) -> None:
    """Run one read-only SELECT over the store and print the result."""
    from trajectory2task.store import read_only_query

    if json_out and csv_out:
        raise UserError("--json and --csv exclude each other")
    path = store_path(store)
    if not path.exists():
        raise UserError(f"{path}: no store here yet (run t2t generate, or pass --store)")
    columns, rows = read_only_query(path, query)
    if json_out:
        for row in rows:
            print_json_line({c: _jsonable(v) for c, v in zip(columns, row)})
    elif csv_out:
        # LF, not csv's default CRLF: a value captured from a line must not end in \r
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        print_table(None, columns, rows)
        console.print(f"{len(rows)} row(s)")


def _jsonable(value: Any) -> Any:
    """A DuckDB value as strict JSON: NaN and infinities become null, BLOBs base64 text,
    and every type JSON has no form for (dates, intervals, UUIDs, ...) its text."""
    import base64
    import decimal
    import math

    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def export(out: Annotated[Path, typer.Option("--out", help="File to write (never the store itself).")],
           format: Annotated[str, typer.Option("--format", help="tau2, parquet or sft.")] = "tau2",
           where: Annotated[Optional[str], typer.Option(
               "--where", help="SQL filter over tasks_latest (tau2, parquet) or sft_rollouts (sft).")] = None,
           condition: Annotated[Optional[str], typer.Option(help="Only this condition.")] = None,
           model: Annotated[Optional[str], typer.Option(help="sft: only rollouts of this agent model.")] = None,
           force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
           store: StoreOpt = None) -> None:
    """Export selected tasks (tau2 tasks.json, Parquet) or successful rollouts (sft chat JSONL)."""
    from trajectory2task.usecases import EXPORT_FORMATS, export as run_export

    if format not in EXPORT_FORMATS:
        raise UserError(f"unknown export format '{format}' (use tau2, parquet or sft)")
    if model and format != "sft":
        raise UserError("--model selects rollouts: it applies to --format sft only")
    path = store_path(store)
    if not path.exists():
        raise UserError(f"{path}: no store here yet (run t2t generate, or pass --store)")
    n = run_export(path, out, format, where=where, condition=condition, model=model, replace=force)
    console.print(f"wrote {n} record(s) to {out}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("sql")(sql)
    app.command("export")(export)
