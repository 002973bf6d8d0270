"""TaskStore: one DuckDB file, append-only tables, atomic batch writes, SQL views, exports."""

from __future__ import annotations

import functools
import json
import os
import stat
import subprocess
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pydantic_core import to_json

from trajectory2task.signatures.models import Message, Rollout, Step, Task, ToolCall, Trajectory, Verdict

from . import schema
from .errors import StoreError
from .records import FinetuneRun, LMCall, Trial
from .outfile import output_file
from .sqlcheck import FILTER_SLOT, check_read_only_sql, confine_filter

VERDICT_KINDS = ("static", "rollout")

class _FileState:
    """What every TaskStore of this process on one database file shares: the write lock
    (writers must not interleave), and what the writers learnt of the file, kept only while
    one of them has it open. DuckDB lets no other process open a file a process writes, and
    every write of this process goes through a TaskStore under the lock, so what they learnt
    stays true until the last one closes or a transaction rolls back."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.writers = 0
        self.next_seqs: dict[str, int] = {}  # table -> its next seq
        self.key_index: dict[str, set[int]] = {}  # table -> its superseding column's values, hashed
        self.runs: set[str] = set()  # run ids found committed

    def forget(self) -> None:
        self.next_seqs.clear()
        self.key_index.clear()
        self.runs.clear()


_FILE_STATES: dict[str, _FileState] = {}
_FILE_STATES_GUARD = threading.Lock()


def _state_for(path: Path) -> _FileState:
    key = str(path.resolve())
    with _FILE_STATES_GUARD:
        return _FILE_STATES.setdefault(key, _FileState())


def _writer_closed(state: _FileState) -> None:
    with state.lock:
        state.writers -= 1
        if state.writers == 0:  # another process may write the file now
            state.forget()


def _json(value: Any) -> str:
    return to_json(value, fallback=str).decode()


def _json_or_none(value: Any) -> str | None:
    return None if value is None else _json(value)


# Every connection to a store runs with these: SQL run through it (the user's included)
# cannot read or write files, attach databases, or install or load extensions, and cannot
# change these settings back. Exports fetch rows and write the file from Python.
SAFE_SETTINGS: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}

_DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file
_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_store_file(path: Path) -> None:
    """Refuse a path that exists but is not a DuckDB database file (by its header), without
    blocking on a FIFO or reading a device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return
    except OSError as e:
        raise StoreError(f"cannot open task store {path}: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            kind = "a directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "not a regular file"
            raise StoreError(f"{path}: is {kind}, not a task store")
        header = os.pread(fd, 16, 0)
    finally:
        os.close(fd)
    if not header:
        return  # an empty file: DuckDB makes a new database in it
    if header.startswith(_SQLITE_MAGIC):
        raise StoreError(f"{path}: is a SQLite database, not a task store (a DuckDB file)")
    if header[8:12] != _DUCKDB_MAGIC:
        raise StoreError(f"{path}: is not a DuckDB database file, so not a task store")


def _connect(path: Path, read_only: bool, settings: dict[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
    check_store_file(path)
    try:
        return duckdb.connect(str(path), read_only=read_only, config={**(settings or {}), **SAFE_SETTINGS})
    except duckdb.Error as e:
        msg = str(e).splitlines()[0]
        raise StoreError(f"cannot open task store {path}: {msg}") from None


@functools.lru_cache(maxsize=1)
def package_code_version() -> str:
    """The git commit of this checkout (with '-dirty' when tracked files changed), else the
    installed package version, else 'unknown'."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").exists():
        try:
            top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True,
                                 text=True, timeout=5)
            if top.returncode == 0 and Path(top.stdout.strip()).resolve() == root:
                head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                      text=True, timeout=5)
                if head.returncode == 0 and head.stdout.strip():
                    dirty = subprocess.run(["git", "diff-index", "--quiet", "HEAD", "--"], cwd=root,
                                           capture_output=True, timeout=10).returncode == 1
                    return head.stdout.strip() + ("-dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("trajectory2task")
    except PackageNotFoundError:
        return "unknown"


class TaskStore:
    """The task store: one DuckDB file per workspace.

    Every `add_*` call is one transaction: the batch lands whole or not at all (also when
    the process is killed mid-write). Writes from several threads are serialized; reads
    run concurrently on their own cursors and see committed data only.
    """

    def __init__(self, path: str | os.PathLike, read_only: bool = False, settings: dict[str, Any] | None = None):
        """Open (or create and migrate) the store at `path`. `settings` are extra DuckDB
        settings for the connection (e.g. checkpoint_threshold); SAFE_SETTINGS always apply."""
        self.path = Path(path)
        self.read_only = read_only
        self._cursor_lock = threading.Lock()
        self._file = _state_for(self.path)
        self._write_lock = self._file.lock
        self._local = threading.local()  # .cur: this thread's open transaction (transaction())
        self._columns: dict[str, list[str]] = {}  # table -> its columns in order (read once)
        if read_only:
            if not self.path.exists():
                raise StoreError(f"no task store at {self.path}")
            con = _connect(self.path, read_only=True, settings=settings)
            try:
                version = schema.current_version(con)
            except duckdb.Error as e:
                con.close()
                raise StoreError(f"cannot read task store {self.path}: {e}") from None
            if version is None:
                con.close()
                raise StoreError(f"{self.path} has no task-store schema")
            if version < schema.LATEST_VERSION:
                con.close()
                raise StoreError(f"{self.path} has schema version {version}, this code needs "
                                 f"{schema.LATEST_VERSION}: open it read-write once to migrate")
        else:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            con = _connect(self.path, read_only=False, settings=settings)
            try:
                with self._write_lock:
                    version = schema.current_version(con)
                    if version is None or version < schema.LATEST_VERSION:
                        schema.migrate(con)
                    version = schema.current_version(con)
            except duckdb.Error as e:
                con.close()
                raise StoreError(f"cannot migrate task store {self.path}: {e}") from None
        if version is not None and version > schema.LATEST_VERSION:
            con.close()
            raise StoreError(f"{self.path} has schema version {version}, newer than this code "
                             f"({schema.LATEST_VERSION}): upgrade trajectory2task")
        self._con: duckdb.DuckDBPyConnection | None = con
        self.schema_version: int = int(version or 0)
        self._closed: Callable[[], Any] | None = None
        if not read_only:
            with self._write_lock:
                self._file.writers += 1
            # a store dropped without close() still counts itself out
            self._closed = weakref.finalize(self, _writer_closed, self._file)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        with self._write_lock, self._cursor_lock:
            if self._con is not None:
                self._con.close()
                self._con = None
                if self._closed is not None:
                    self._closed()

    def __enter__(self) -> TaskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        return f"TaskStore({str(self.path)!r}, {mode}, schema v{self.schema_version})"

    # ------------------------------------------------------------------ plumbing

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._cursor_lock:
            if self._con is None:
                raise StoreError("task store is closed")
            return self._con.cursor()

    @contextmanager
    def _read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor inside a read-only transaction: whatever runs on it cannot change the
        store, even on a read-write store; the transaction is rolled back afterwards."""
        cur = self._cursor()
        try:
            cur.execute("BEGIN TRANSACTION READ ONLY")
            yield cur
        except duckdb.Error as e:
            raise StoreError(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from None
        finally:
            try:
                cur.rollback()
            except duckdb.Error:
                pass
            cur.close()

    @contextmanager
    def transaction(self, op: str = "transaction") -> Iterator[None]:
        """Make the add_* calls of this thread inside the block one transaction: all of them
        land or none does. Other threads' writes wait until the block ends; nested blocks
        join the outer one."""
        if getattr(self._local, "cur", None) is not None:
            yield
            return
        with self._write(op) as cur:
            self._local.cur = cur
            try:
                yield
            finally:
                self._local.cur = None

    @contextmanager
    def _write(self, op: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction under the write lock: COMMIT on success, ROLLBACK on any exception.
        Inside `transaction()` this thread's writes join the open transaction instead."""
        if self.read_only:
            raise StoreError(f"{op}: task store {self.path} is open read-only")
        joined = getattr(self._local, "cur", None)
        if joined is not None:
            try:
                yield joined
            except duckdb.Error as e:
                raise StoreError(f"{op}: {e}") from e
            return
        with self._write_lock:
            cur = self._cursor()
            try:
                cur.begin()
                try:
                    yield cur
                    self._before_commit(cur, op)
                    cur.commit()
                except BaseException:
                    self._file.forget()  # what was learnt inside the transaction may be undone with it
                    try:
                        cur.rollback()
                    except duckdb.Error:
                        pass
                    raise
            except duckdb.Error as e:
                raise StoreError(f"{op}: {e}") from e
            finally:
                cur.close()

    def _before_commit(self, cur: duckdb.DuckDBPyConnection, op: str) -> None:
        """Hook run inside every write transaction just before COMMIT. No-op; tests
        override it to kill or fail a writer at a known point."""

    def _require_run(self, cur: duckdb.DuckDBPyConnection, run_id: str) -> None:
        # a run found once stays found (runs are never deleted): one query per run, not per write
        if run_id in self._file.runs:
            return
        if not cur.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchall()[0][0]:
            raise StoreError(f"unknown run_id {run_id!r}: call start_run first")
        self._file.runs.add(run_id)

    def _next_seq(self, cur: duckdb.DuckDBPyConnection, table: str) -> int:
        """First free `seq` of a table (caller holds the write lock, inside the transaction):
        read from the file once, then counted by `_took_seqs` (the writers' shared state)."""
        memo = self._file.next_seqs
        if table not in memo:
            tables = [t for t in schema.SEQ_TABLES if t not in memo] if table in schema.SEQ_TABLES else [table]
            rows = cur.execute(" UNION ALL ".join(f"SELECT '{t}', coalesce(max(seq), 0) + 1 FROM {t}"
                                                  for t in tables)).fetchall()
            memo.update((t, int(v)) for t, v in rows)
        return memo[table]

    def _took_seqs(self, table: str, base: int, rows: int) -> None:
        self._file.next_seqs[table] = base + rows

    def _table_columns(self, cur: duckdb.DuckDBPyConnection, table: str) -> list[str]:
        columns = self._columns.get(table)
        if columns is None:
            columns = [name for (name,) in cur.execute(
                "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' AND table_name = ? "
                "ORDER BY column_index", [table]).fetchall()]
            self._columns[table] = columns
        return columns

    def _insert(self, cur: duckdb.DuckDBPyConnection, table: str, batch: pa.Table,
                consts: dict[str, Any] | None = None, seqs: dict[str, int] | None = None) -> None:
        """Insert an Arrow batch into `table`, one statement: `consts` are columns with one value
        for every row, `seqs` columns numbered from the value given (the batch's ``_pos`` added)."""
        n = batch.num_rows
        columns = {name: batch.column(name) for name in batch.column_names if not name.startswith("_")}
        for name, value in (consts or {}).items():
            columns[name] = pa.repeat(value, n) if value is not None else pa.nulls(n)
        for name, first in (seqs or {}).items():
            columns[name] = pc.add(batch.column("_pos"), first)
        order = self._table_columns(cur, table)
        # inserted by position, so the batch is put in the table's order; a column it does not
        # fill is NULL, as a named INSERT leaves it (the schema declares no defaults)
        full = pa.table([columns.get(name, pa.nulls(n)) for name in order], names=order)
        cur.from_arrow(full).insert_into(table)

    def _supersede(self, cur: duckdb.DuckDBPyConnection, table: str, base: int, batch: pa.Table,
                   now: datetime) -> None:
        """Record what the rows just inserted at `base`.. supersede (`schema.record_superseded`),
        skipping the query when no row can: rows of one key share the plain column
        `SUPERSEDE_KEYS[table][1]`, so a batch whose values of it are new to the table and
        distinct supersedes nothing. The values seen are kept hashed (a collision only runs the
        query), with the file's other learnt facts (`_FileState`)."""
        column = schema.SUPERSEDE_KEYS[table][1]
        values = [hash(v) for v in batch.column(column).to_pylist()]
        seen = self._file.key_index.get(table)
        if seen is None:  # the rows before this batch's, read once while the file stays open
            seen = {hash(v) for (v,) in cur.execute(f"SELECT {column} FROM {table} WHERE seq < ?", [base]).fetchall()}
            self._file.key_index[table] = seen
        if len(set(values)) < len(values) or not seen.isdisjoint(values):
            schema.record_superseded(cur, table, base, now)
        seen.update(values)

    # ------------------------------------------------------------------ runs

    def start_run(self, kind: str, config: dict, seed: int | None = None,
                  code_version: str | None = None, run_id: str | None = None) -> str:
        """Record a run and return its id. Starting an existing run_id again (resume) adds a
        'resumed' event instead of a second runs row; its kind must match."""
        run_id = run_id or uuid.uuid4().hex
        code_version = code_version or package_code_version()
        config_json = _json(config)
        now = schema.utcnow()
        with self._write("start_run") as cur:
            rows = cur.execute("SELECT kind FROM runs WHERE run_id = ? LIMIT 1", [run_id]).fetchall()
            row = rows[0] if rows else None
            if row is None:
                cur.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                            [run_id, kind, config_json, code_version, seed, now]).fetchall()
                cur.execute("INSERT INTO run_events VALUES (?, 'started', NULL, ?)", [run_id, now]).fetchall()
            else:
                if row[0] != kind:
                    raise StoreError(f"run {run_id!r} exists with kind {row[0]!r}, not {kind!r}")
                details = _json({"config": config, "seed": seed, "code_version": code_version})
                cur.execute("INSERT INTO run_events VALUES (?, 'resumed', ?, ?)", [run_id, details, now]).fetchall()
        return run_id

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        """Append a run_events row with this status (append-only: the run row is not updated)."""
        self.add_run_event(run_id, status)

    def add_run_event(self, run_id: str, status: str, details: Any = None) -> None:
        """Append one run_events row (status, optional JSON-able details)."""
        details_json = _json_or_none(details)
        with self._write("add_run_event") as cur:
            self._require_run(cur, run_id)
            cur.execute("INSERT INTO run_events VALUES (?, ?, ?, ?)",
                        [run_id, status, details_json, schema.utcnow()]).fetchall()

    # ------------------------------------------------------------------ writes

    def add_trajectories(self, run_id: str, trajectories: Sequence[Trajectory]) -> None:
        """Trajectories and their steps (one row per step), in one transaction."""
        trajectories = list(trajectories)
        if not trajectories:
            return
        traj = pa.table({
            "trajectory_id": pa.array([t.id for t in trajectories], pa.string()),
            "domain": pa.array([t.domain for t in trajectories], pa.string()),
            "source": pa.array([t.provenance.source for t in trajectories], pa.string()),
            "seed_entity": pa.array([t.seed_entity for t in trajectories], pa.string()),
            "goal": pa.array([t.goal for t in trajectories], pa.string()),
            "initial_state_hash": pa.array([t.initial_state_hash for t in trajectories], pa.string()),
            "end_state_hash": pa.array([t.end_state_hash for t in trajectories], pa.string()),
            "n_steps": pa.array([len(t.steps) for t in trajectories], pa.int32()),
            "json": pa.array([t.model_dump_json(exclude={"steps"}, exclude_none=True) for t in trajectories], pa.string()),
            "_pos": pa.array(range(len(trajectories)), pa.int64()),
        })
        tid: list[str] = []
        pos: list[int] = []
        idx: list[int] = []
        tool: list[str] = []
        args: list[str] = []
        obs: list[str] = []
        err: list[bool] = []
        call_id: list[str | None] = []
        for p, t in enumerate(trajectories):
            for i, s in enumerate(t.steps):
                c = s.call
                tid.append(t.id)
                pos.append(p)
                idx.append(i)
                tool.append(c.name)
                args.append(to_json(c.arguments, fallback=str).decode())
                obs.append(s.observation)
                err.append(s.error)
                call_id.append(c.id)
        steps = pa.table({
            "trajectory_id": pa.array(tid, pa.string()),
            "idx": pa.array(idx, pa.int32()),
            "tool": pa.array(tool, pa.string()),
            "arguments": pa.array(args, pa.string()),
            "observation": pa.array(obs, pa.string()),
            "error": pa.array(err, pa.bool_()),
            "call_id": pa.array(call_id, pa.string()),
            "_pos": pa.array(pos, pa.int64()),
        })
        now = schema.utcnow()
        with self._write("add_trajectories") as cur:
            self._require_run(cur, run_id)
            base = self._next_seq(cur, "trajectories")
            self._insert(cur, "trajectories", traj, {"run_id": run_id, "created_at": now}, {"seq": base})
            self._took_seqs("trajectories", base, traj.num_rows)
            if steps.num_rows:
                self._insert(cur, "steps", steps, {"run_id": run_id}, {"traj_seq": base})

    def add_tasks(self, run_id: str, tasks: Sequence[Task]) -> None:
        tasks = list(tasks)
        if not tasks:
            return
        batch = pa.table({
            "task_id": pa.array([t.id for t in tasks], pa.string()),
            "domain": pa.array([t.domain for t in tasks], pa.string()),
            "condition": pa.array([t.condition for t in tasks], pa.string()),
            "parent_task_id": pa.array([t.parent_task_id for t in tasks], pa.string()),
            "trajectory_id": pa.array([t.provenance.trajectory_id for t in tasks], pa.string()),
            "source": pa.array([t.provenance.source for t in tasks], pa.string()),
            "gold_tools": pa.array([[a.name for a in t.gold_actions] for t in tasks], pa.list_(pa.string())),
            "json": pa.array([t.model_dump_json(exclude_none=True) for t in tasks], pa.string()),
            "_pos": pa.array(range(len(tasks)), pa.int64()),
        })
        now = schema.utcnow()
        with self._write("add_tasks") as cur:
            self._require_run(cur, run_id)
            base = self._next_seq(cur, "tasks")
            self._insert(cur, "tasks", batch, {"run_id": run_id, "created_at": now}, {"seq": base})
            self._supersede(cur, "tasks", base, batch, now)
            self._took_seqs("tasks", base, batch.num_rows)

    @staticmethod
    def _verdict_batch(verdicts: list[Verdict]) -> pa.Table:
        return pa.table({
            "task_id": pa.array([v.task_id for v in verdicts], pa.string()),
            "rollout_id": pa.array([v.rollout_id for v in verdicts], pa.string()),
            "pass": pa.array([v.passed for v in verdicts], pa.bool_()),
            "reasons": pa.array([list(v.reasons) for v in verdicts], pa.list_(pa.string())),
            "details": pa.array([list(v.details) for v in verdicts], pa.list_(pa.string())),
            "_pos": pa.array(range(len(verdicts)), pa.int64()),
        })

    def _insert_verdicts(self, cur: duckdb.DuckDBPyConnection, run_id: str, batch: pa.Table,
                         kind: str, now: Any) -> None:
        base = self._next_seq(cur, "verdicts")
        self._insert(cur, "verdicts", batch, {"run_id": run_id, "kind": kind, "created_at": now}, {"seq": base})
        self._supersede(cur, "verdicts", base, batch, now)
        self._took_seqs("verdicts", base, batch.num_rows)

    def add_verdicts(self, run_id: str, verdicts: Sequence[Verdict], kind: str) -> None:
        """Verdicts of kind 'static' (a task checked by gold replay) or 'rollout'."""
        if kind not in VERDICT_KINDS:
            raise StoreError(f"verdict kind must be one of {VERDICT_KINDS}, not {kind!r}")
        verdicts = list(verdicts)
        if not verdicts:
            return
        batch = self._verdict_batch(verdicts)
        now = schema.utcnow()
        with self._write("add_verdicts") as cur:
            self._require_run(cur, run_id)
            self._insert_verdicts(cur, run_id, batch, kind, now)

    def add_rollouts(self, run_id: str, rollouts: Sequence[Rollout],
                     verdicts: Sequence[Verdict] | None = None) -> None:
        """Rollouts, their messages and (when given) their verdicts, kind 'rollout', in one
        transaction."""
        rollouts = list(rollouts)
        verdicts = list(verdicts or [])
        if not rollouts and not verdicts:
            return
        batch = pa.table({
            "rollout_id": pa.array([r.id for r in rollouts], pa.string()),
            "task_id": pa.array([r.task_id for r in rollouts], pa.string()),
            "agent_model": pa.array([r.agent_model for r in rollouts], pa.string()),
            "user_model": pa.array([r.user_model for r in rollouts], pa.string()),
            "trial": pa.array([r.trial for r in rollouts], pa.int32()),
            "termination": pa.array([r.termination for r in rollouts], pa.string()),
            "error": pa.array([r.error for r in rollouts], pa.string()),
            "end_state_hash": pa.array([r.end_state_hash for r in rollouts], pa.string()),
            "prompt_tokens": pa.array([r.usage.prompt_tokens for r in rollouts], pa.int64()),
            "completion_tokens": pa.array([r.usage.completion_tokens for r in rollouts], pa.int64()),
            "cost": pa.array([r.usage.cost for r in rollouts], pa.float64()),
            "n_messages": pa.array([len(r.messages) for r in rollouts], pa.int32()),
            "n_steps": pa.array([len(r.steps) for r in rollouts], pa.int32()),
            "json": pa.array([r.model_dump_json(exclude={"messages"}, exclude_none=True) for r in rollouts], pa.string()),
            "_pos": pa.array(range(len(rollouts)), pa.int64()),
        })
        rid: list[str] = []
        pos: list[int] = []
        idx: list[int] = []
        role: list[str] = []
        content: list[str | None] = []
        tool_calls: list[str | None] = []
        tool_call_id: list[str | None] = []
        for p, r in enumerate(rollouts):
            for i, m in enumerate(r.messages):
                rid.append(r.id)
                pos.append(p)
                idx.append(i)
                role.append(m.role)
                content.append(m.content)
                tool_calls.append(None if m.tool_calls is None else to_json(m.tool_calls).decode())
                tool_call_id.append(m.tool_call_id)
        messages = pa.table({
            "rollout_id": pa.array(rid, pa.string()),
            "idx": pa.array(idx, pa.int32()),
            "role": pa.array(role, pa.string()),
            "content": pa.array(content, pa.string()),
            "tool_calls": pa.array(tool_calls, pa.string()),
            "tool_call_id": pa.array(tool_call_id, pa.string()),
            "_pos": pa.array(pos, pa.int64()),
        })
        vbatch = self._verdict_batch(verdicts) if verdicts else None
        now = schema.utcnow()
        with self._write("add_rollouts") as cur:
            self._require_run(cur, run_id)
            if rollouts:
                base = self._next_seq(cur, "rollouts")
                self._insert(cur, "rollouts", batch, {"run_id": run_id, "created_at": now}, {"seq": base})
                self._supersede(cur, "rollouts", base, batch, now)
                self._took_seqs("rollouts", base, batch.num_rows)
                if messages.num_rows:
                    self._insert(cur, "messages", messages, {"run_id": run_id}, {"rollout_seq": base})
            if vbatch is not None:
                self._insert_verdicts(cur, run_id, vbatch, "rollout", now)

    def add_lm_calls(self, run_id: str, calls: Sequence[LMCall]) -> None:
        calls = list(calls)
        if not calls:
            return
        batch = pa.table({
            "role": pa.array([c.role for c in calls], pa.string()),
            "model": pa.array([c.model for c in calls], pa.string()),
            "prompt_tokens": pa.array([c.prompt_tokens for c in calls], pa.int64()),
            "completion_tokens": pa.array([c.completion_tokens for c in calls], pa.int64()),
            "cost": pa.array([c.cost for c in calls], pa.float64()),
            "latency_s": pa.array([c.latency_s for c in calls], pa.float64()),
            "error": pa.array([c.error for c in calls], pa.string()),
        })
        now = schema.utcnow()
        with self._write("add_lm_calls") as cur:
            self._require_run(cur, run_id)
            self._insert(cur, "lm_calls", batch, {"run_id": run_id, "created_at": now})

    def add_program(self, name: str, program: str, state: dict, run_id: str | None,
                    score_before: float | None = None, score_after: float | None = None,
                    optimizer: str | None = None) -> None:
        """A compiled program's state (e.g. DSPy `dump_state()`), newest per name wins."""
        state_json = _json(state)
        now = schema.utcnow()
        with self._write("add_program") as cur:
            if run_id is not None:
                self._require_run(cur, run_id)
            seq = self._next_seq(cur, "programs")
            cur.execute(
                "INSERT INTO programs (name, program, state, optimizer, score_before, score_after, "
                "run_id, created_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [name, program, state_json, optimizer, score_before, score_after, run_id, now, seq],
            ).fetchall()
            self._took_seqs("programs", seq, 1)

    def add_trials(self, run_id: str, study: str, trials: Sequence[Trial]) -> None:
        trials = list(trials)
        if not trials:
            return
        batch = pa.table({
            "number": pa.array([t.number for t in trials], pa.int32()),
            "params": pa.array([_json(t.params) for t in trials], pa.string()),
            "value": pa.array([t.value for t in trials], pa.float64()),
            "state": pa.array([t.state for t in trials], pa.string()),
            "user_attrs": pa.array([_json(t.user_attrs) for t in trials], pa.string()),
        })
        now = schema.utcnow()
        with self._write("add_trials") as cur:
            self._require_run(cur, run_id)
            self._insert(cur, "trials", batch, {"run_id": run_id, "study": study, "created_at": now})

    def add_finetune_run(self, run: FinetuneRun) -> None:
        """The record of a `t2t finetune` run (its `runs` row must exist)."""
        losses = [p.loss for p in run.losses]
        with self._write("add_finetune_run") as cur:
            self._require_run(cur, run.run_id)
            cur.execute(
                "INSERT INTO finetune_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [run.run_id, run.base, run.method, _json(run.config), run.data_source, run.data_sql,
                 _json(run.data_params), run.n_rows, run.n_examples, _json([p.model_dump() for p in run.losses]),
                 losses[0] if losses else None, losses[-1] if losses else None, run.output, run.merged_output,
                 run.status, run.error, run.wall_s, schema.utcnow()],
            ).fetchall()

    # ------------------------------------------------------------------ reads

    def query(self, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
        """Run one SELECT (with WITH, FROM-first, VALUES, DESCRIBE, SHOW, SUMMARIZE) in a
        read-only transaction; returns (columns, rows). Writes go through the add_* methods."""
        with self._read() as cur:
            check_read_only_sql(sql, cur)
            res = cur.execute(sql, params or [])
            cols = [d[0] for d in (res.description or [])]
            return cols, res.fetchall()

    def _select(self, sql: str, params: list | None = None) -> list[tuple]:
        with self._read() as cur:
            check_read_only_sql(sql, cur)
            return cur.execute(sql, params or []).fetchall()

    def filtered(self, template: str, where: str | None) -> str:
        """`template` (a SELECT naming sqlcheck.FILTER_SLOT where the filter goes) with the
        user's SQL filter in that place, checked to be one expression there; no filter
        means every row. Raises StoreError for a filter that reaches outside its place."""
        if not where or not where.strip():
            return template.replace(FILTER_SLOT, "true")
        with self._read() as cur:
            return confine_filter(template, where, cur)

    def check_filter(self, where: str) -> None:
        """Raise StoreError unless `where` is one SQL expression (a WHERE condition)."""
        self.filtered(f"SELECT * FROM tasks_latest WHERE {FILTER_SLOT}", where)

    def selection(self, where: str | None, condition: str | None = None,
                  agent_model: str | None = None) -> tuple[str | None, list[str]]:
        """One SQL filter (with ``?`` parameters) from a user's ``--where`` and the
        ``--condition`` / ``--model`` shortcuts; None when nothing is selected."""
        clauses: list[str] = []
        params: list[str] = []
        if where and where.strip():
            self.check_filter(where)  # alone first: then it stays one operand of the AND below
            clauses.append(f"(\n{where}\n)")
        if condition:
            clauses.append("condition = ?")
            params.append(condition)
        if agent_model:
            clauses.append("agent_model = ?")
            params.append(agent_model)
        return (" AND ".join(clauses) or None), params

    def tasks(self, where: str | None = None, params: list | None = None) -> list[Task]:
        """Tasks (newest copy of each) matching an SQL filter over `tasks_latest`'s columns,
        e.g. "condition = 'ambiguous' AND verified", in insertion order."""
        return list(self.iter_tasks(where, params))

    def iter_tasks(self, where: str | None = None, params: list | None = None,
                   batch_size: int = 1000) -> Iterator[Task]:
        """The same tasks as `tasks`, fetched `batch_size` rows at a time."""
        sql = self.filtered(f"SELECT json FROM tasks_latest WHERE {FILTER_SLOT} ORDER BY seq", where)
        with self._read() as cur:
            result = cur.execute(sql, params or [])
            while rows := result.fetchmany(batch_size):
                for (task_json,) in rows:
                    yield Task.model_validate_json(task_json)

    def trajectories(self, where: str | None = None, params: list | None = None) -> list[Trajectory]:
        """Trajectories (newest copy of each, with steps) matching an SQL filter over the
        `trajectories` table's columns, in insertion order."""
        sql = self.filtered("SELECT seq, json FROM trajectories WHERE seq IN "
                            f"(SELECT max(seq) FROM trajectories GROUP BY trajectory_id) AND {FILTER_SLOT} "
                            "ORDER BY seq", where)
        with self._read() as cur:
            rows = cur.execute(sql, params or []).fetchall()
            steps: dict[int, list[Step]] = {seq: [] for seq, _ in rows}
            if rows:
                cur.register("_t2t_sel", pa.table({"seq": pa.array(list(steps), pa.int64())}))
                try:
                    for seq, name, args, obs, err, call_id in cur.execute(
                        "SELECT s.traj_seq, s.tool, s.arguments, s.observation, s.error, s.call_id "
                        "FROM steps s JOIN _t2t_sel x ON x.seq = s.traj_seq ORDER BY s.traj_seq, s.idx"
                    ).fetchall():
                        steps[seq].append(Step(call=ToolCall(name=name, arguments=json.loads(args) if args else {},
                                                             id=call_id),
                                               observation=obs, error=err))
                finally:
                    cur.unregister("_t2t_sel")
        out = []
        for seq, js in rows:
            d = json.loads(js)  # the stored JSON excludes the steps
            d["steps"] = steps[seq]
            out.append(Trajectory.model_validate(d))
        return out

    def rollouts(self, where: str | None = None, params: list | None = None) -> list[Rollout]:
        """Rollouts (newest copy of each, with messages) matching an SQL filter over
        `rollouts_latest`'s columns, in insertion order."""
        sql = self.filtered(f"SELECT seq, json FROM rollouts_latest WHERE {FILTER_SLOT} ORDER BY seq", where)
        with self._read() as cur:
            rows = cur.execute(sql, params or []).fetchall()
            msgs: dict[int, list[Message]] = {seq: [] for seq, _ in rows}
            if rows:
                cur.register("_t2t_sel", pa.table({"seq": pa.array(list(msgs), pa.int64())}))
                try:
                    for seq, role, content, tool_calls, tool_call_id in cur.execute(
                        "SELECT m.rollout_seq, m.role, m.content, m.tool_calls, m.tool_call_id "
                        "FROM messages m JOIN _t2t_sel x ON x.seq = m.rollout_seq "
                        "ORDER BY m.rollout_seq, m.idx"
                    ).fetchall():
                        msgs[seq].append(Message(
                            role=role, content=content, tool_call_id=tool_call_id,
                            tool_calls=None if tool_calls is None else json.loads(tool_calls)))
                finally:
                    cur.unregister("_t2t_sel")
        out = []
        for seq, js in rows:
            d = json.loads(js)
            d["messages"] = msgs[seq]
            out.append(Rollout.model_validate(d))
        return out

    def done_task_ids(self, run_id: str) -> set[str]:
        """Task ids this run already stored (to skip them when resuming)."""
        return {r[0] for r in self._select("SELECT DISTINCT task_id FROM tasks WHERE run_id = ?", [run_id])}

    def done_rollout_keys(self, run_id: str) -> set[tuple[str, str, int]]:
        """(task_id, agent_model, trial) of the rollouts this run already stored."""
        rows = self._select("SELECT DISTINCT task_id, agent_model, trial FROM rollouts WHERE run_id = ?", [run_id])
        return {(t, m, int(k)) for t, m, k in rows}

    def latest_program(self, name: str) -> dict | None:
        rows = self._select(
            "SELECT name, program, state, optimizer, score_before, score_after, created_at, run_id "
            "FROM programs WHERE name = ? ORDER BY seq DESC LIMIT 1", [name])
        if not rows:
            return None
        name_, program, state, optimizer, before, after, created_at, run_id = rows[0]
        return {"name": name_, "program": program, "state": json.loads(state) if state else {},
                "optimizer": optimizer, "score_before": before, "score_after": after,
                "created_at": created_at, "run_id": run_id}

    # ------------------------------------------------------------------ exports

    def store_files(self) -> list[Path]:
        """The files that make up the store on disk (an export must never replace them)."""
        return [self.path, self.path.with_name(self.path.name + ".wal")]

    def export_tau2(self, where: str | None, path: str | os.PathLike, params: list | None = None,
                    replace: bool = False) -> int:
        """Write the selected tasks as a tau2-bench tasks.json list; returns the count.

        Tasks are written as they are read, so the export's size does not bound memory. An
        existing file at `path` is replaced only with `replace`; the store's files never."""
        from .tau2 import task_to_tau2  # lazy: the mapping lives in store/tau2.py

        count = 0
        with output_file(path, replace=replace, protected=self.store_files()) as out:
            for task in self.iter_tasks(where, params):
                # the same bytes as json.dumps(list, indent=2): each entry indented one level
                entry = json.dumps(task_to_tau2(task), indent=2, ensure_ascii=False).split("\n")
                out.write(("[\n" if count == 0 else ",\n") + "\n".join("  " + line for line in entry))
                count += 1
            out.write("\n]\n" if count else "[]\n")
        return count

    def export_parquet(self, where: str | None, path: str | os.PathLike, params: list | None = None,
                       replace: bool = False) -> int:
        """Write the selected rows of `tasks_latest` to a Parquet file, streamed in record
        batches; returns the row count. `replace` as for export_tau2."""
        import pyarrow.parquet as pq

        select = self.filtered(f"SELECT * EXCLUDE (seq) FROM tasks_latest WHERE {FILTER_SLOT} ORDER BY seq", where)
        count = 0
        with self._read() as cur, output_file(path, replace=replace, protected=self.store_files(),
                                              binary=True) as out:
            reader = cur.sql(select, params=params or None).to_arrow_reader(10_000)
            with pq.ParquetWriter(out, reader.schema) as writer:
                for batch in reader:
                    writer.write_batch(batch)
                    count += batch.num_rows
        return count


def read_only_query(path: str | os.PathLike, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
    """Run one SELECT on a store file opened read-only, with SAFE_SETTINGS (no files,
    network, ATTACH or extensions); returns (columns, rows)."""
    path = Path(path)
    check_read_only_sql(sql)
    if not path.exists():
        raise StoreError(f"no task store at {path}")
    con = _connect(path, read_only=True)
    try:
        check_read_only_sql(sql, con)
        res = con.execute(sql, params or [])
        cols = [d[0] for d in (res.description or [])]
        return cols, res.fetchall()
    except duckdb.Error as e:
        raise StoreError(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from None
    finally:
        con.close()


def iter_batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Split an iterable into lists of at most `size` (for batched add_* calls)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
