"""Commands over the store: read-only SQL and exports."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from t2t.errors import UserError
from t2t.output import console, print_json_line, print_table
from t2t.settings import store_path

StoreOpt = Annotated[Optional[str], typer.Option("--store", help="Store file (default $T2T_STORE or ./t2t.duckdb).")]


def sql(query: Annotated[str, typer.Argument(help="One read-only SQL statement.")], store: StoreOpt = None,
        json_out: Annotated[bool, typer.Option("--json", help="One JSON object per row.")] = False,
        csv_out: Annotated[bool, typer.Option("--csv", help="CSV with a header row.")] = False) -> None:
    """Run a read-only SQL query over the store and print the result."""
    from store import read_only_query

    path = store_path(store)
    if not path.exists():
        raise UserError(f"{path}: no store here yet (run t2t generate, or pass --store)")
    columns, rows = read_only_query(path, query)
    if json_out:
        for row in rows:
            print_json_line({c: _jsonable(v) for c, v in zip(columns, row)})
    elif csv_out:
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        print_table(None, columns, rows)
        console.print(f"{len(rows)} row(s)")


def _jsonable(value):
    import datetime
    import decimal
    import uuid

    if isinstance(value, (datetime.date, datetime.datetime, datetime.time, uuid.UUID)):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def export(out: Annotated[Path, typer.Option("--out", help="File to write.")],
           format: Annotated[str, typer.Option("--format", help="tau2, parquet or sft.")] = "tau2",
           where: Annotated[Optional[str], typer.Option(
               "--where", help="SQL filter over tasks_latest (tau2, parquet) or sft_rollouts (sft).")] = None,
           condition: Annotated[Optional[str], typer.Option(help="Only this condition.")] = None,
           model: Annotated[Optional[str], typer.Option(help="sft: only rollouts of this agent model.")] = None,
           store: StoreOpt = None) -> None:
    """Export selected tasks (tau2 tasks.json, Parquet) or successful rollouts (sft chat JSONL)."""
    from store import TaskStore

    path = store_path(store)
    if not path.exists():
        raise UserError(f"{path}: no store here yet (run t2t generate, or pass --store)")
    clauses = [f"({where})"] if where else []
    if condition:
        clauses.append(f"condition = '{condition.replace(chr(39), chr(39) * 2)}'")
    if model:
        clauses.append(f"agent_model = '{model.replace(chr(39), chr(39) * 2)}'")
    filter_sql = " AND ".join(clauses) or None
    with TaskStore(path) as ts:
        if format == "tau2":
            n = ts.export_tau2(filter_sql, out)
        elif format == "parquet":
            n = ts.export_parquet(filter_sql, out)
        elif format == "sft":
            from store.sft import export_sft

            n = export_sft(ts, filter_sql, out)
        else:
            raise UserError(f"unknown export format '{format}' (use tau2, parquet or sft)")
    console.print(f"wrote {n} record(s) to {out}")


def register(app: typer.Typer) -> None:
    app.command("sql")(sql)
    app.command("export")(export)
