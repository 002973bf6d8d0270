"""Property-based fuzzing (hypothesis) of what users and LMs hand the tool: SQL statements and
filters, task and rollout files, database files, and tool calls. Bounded in examples so the
whole file runs in seconds; each property is one the hostile-input audit (issue 9) broke."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trajectory2task.signatures.models import Provenance, Task, UserScenario
from trajectory2task.store import StoreError, TaskStore
from trajectory2task.store.files import InputFileError, load_rollouts, load_tasks

SECRET = "t2t-fuzz-secret-91c2"
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Pieces that hostile SQL is made of: ways to close or open the surrounding query, comments
# DuckDB nests, dollar quotes, other statements, file readers, and ordinary filter words.
SQL_PIECES = [
    ")", "(", "))", "((", ";", "--", "\n", "/*", "*/", "/* /* */", "$$", "'", '"', "?",
    "UNION ALL SELECT", "SELECT", "json", "content", "FROM", "tasks", "read_text('SECRET')",
    "read_csv('SECRET')", "WHERE", "ORDER BY 1", "LIMIT 1", "DELETE FROM tasks", "DROP TABLE tasks",
    "INSERT INTO runs VALUES (1)", "EXPLAIN ANALYZE", "PRAGMA enable_profiling", "COPY tasks TO 'SECRET.out'",
    "ATTACH 'SECRET' AS s", "CREATE TABLE z (a INT)", "condition", "=", "'general'", "verified", "AND", "OR",
    "NOT", "true", "1=1", "task_id IN (SELECT task_id FROM tasks)", "nextval('s')", "setseed(0.5)",
]


def sql_text(secret: Path):
    pieces = st.lists(st.sampled_from(SQL_PIECES), min_size=1, max_size=12).map(" ".join)
    return st.one_of(pieces, st.text(max_size=60)).map(lambda s: s.replace("SECRET", str(secret)))


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "secret.txt").write_text(SECRET + "\n")
    with TaskStore(directory / "t2t.duckdb") as ts:
        run = ts.start_run("verify", {})
        ts.add_tasks(run, [Task(id=f"T{i}", domain="retail", condition="general",
                                scenario=UserScenario(reason_for_call="help"), provenance=Provenance(source="baseline"))
                           for i in range(3)])
        ts.finish_run(run)
    return directory


@pytest.fixture(scope="module")
def fuzz_store(fuzz_dir: Path):
    with TaskStore(fuzz_dir / "t2t.duckdb") as ts:
        yield ts


def _snapshot(ts: TaskStore, directory: Path) -> tuple:
    """What must not change: every table with its row count, and the files beside the store."""
    tables = ts.query("SELECT schema_name, table_name, estimated_size FROM duckdb_tables() ORDER BY ALL")[1]
    return tables, ts.query("SELECT count(*) FROM tasks")[1], sorted(p.name for p in directory.iterdir())


@pytest.fixture(scope="module")
def before(fuzz_store, fuzz_dir) -> tuple:
    return _snapshot(fuzz_store, fuzz_dir)


def _unchanged(ts: TaskStore, directory: Path, before: tuple) -> None:
    assert _snapshot(ts, directory) == before


@FUZZ
@given(data=st.data())
def test_store_query_runs_a_select_or_refuses_and_never_changes_or_reads_outside(fuzz_store, fuzz_dir, before,
                                                                                      data):
    sql = data.draw(sql_text(fuzz_dir / "secret.txt"))
    try:
        _, rows = fuzz_store.query(sql)
    except StoreError as exc:
        assert SECRET not in str(exc)
    else:
        assert SECRET not in repr(rows)
    _unchanged(fuzz_store, fuzz_dir, before)


@FUZZ
@given(data=st.data())
def test_store_filters_select_tasks_or_refuse_and_never_change_or_read_outside(fuzz_store, fuzz_dir, before,
                                                                                    data):
    where = data.draw(sql_text(fuzz_dir / "secret.txt"))
    try:
        tasks = fuzz_store.tasks(where)
    except StoreError as exc:
        assert SECRET not in str(exc)
    else:
        assert all(isinstance(t, Task) and t.id in {"T0", "T1", "T2"} for t in tasks)
    _unchanged(fuzz_store, fuzz_dir, before)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=25)
TASK_KEYS = ["id", "user_scenario", "instructions", "reason_for_call", "evaluation_criteria", "actions", "name",
             "arguments", "reward_basis", "initial_state", "scenario", "condition", "tool_calls", "task_id"]
TASK_LIKE = st.recursive(
    JSON_VALUES,
    lambda inner: st.dictionaries(st.sampled_from(TASK_KEYS), inner, max_size=6) | st.lists(inner, max_size=4),
    max_leaves=30)


def _file_contents():
    as_json = TASK_LIKE.map(lambda v: json.dumps(v).encode())
    as_lines = st.lists(TASK_LIKE, max_size=4).map(lambda vs: "\n".join(json.dumps(v) for v in vs).encode())
    return st.one_of(as_json, as_lines, st.binary(max_size=200),
                     st.integers(1, 5000).map(lambda depth: b"[" * depth + b"]" * depth),
                     st.integers(4000, 6000).map(lambda digits: b'[{"id": ' + b"7" * digits + b"}]"))


@FUZZ
@given(content=_file_contents())
def test_task_and_rollout_files_load_or_give_one_line(tmp_path, content):
    path = tmp_path / "input.json"
    path.write_bytes(content)
    for load in (load_tasks, load_rollouts):
        try:
            items, problems = load(path)
        except InputFileError as exc:
            assert "\n" not in str(exc).strip()
        else:
            assert all("\n" not in p.line() for p in problems)


@FUZZ
@given(content=_file_contents())
def test_database_files_load_or_give_one_line(tmp_path, content):
    from trajectory2task.errors import UserError
    from trajectory2task.settings import load_environment

    path = tmp_path / "db.json"
    path.write_bytes(content)
    try:
        load_environment("retail", str(path))
    except UserError as exc:
        assert "\n" not in str(exc).strip()


@pytest.fixture(scope="module")
def episode_factory():
    from trajectory2task.domains import get_domain

    domain = get_domain("retail")
    env = domain.environment(domain.generate_db(0, 5))
    return env


TOOL_NAMES = st.one_of(
    st.sampled_from(["get_user_details", "get_order_details", "cancel_pending_order", "modify_user_address",
                     "exchange_delivered_order_items", "calculate", "transfer_to_human_agents"]),
    st.text(max_size=30), st.none(), st.integers(), st.floats(), JSON_VALUES)
ARGUMENTS = st.one_of(JSON_VALUES, st.dictionaries(
    st.sampled_from(["user_id", "order_id", "item_ids", "new_item_ids", "payment_method_id", "reason", "expression",
                     "address1", "zip", "summary", "email"]), JSON_VALUES, max_size=6),
    st.dictionaries(st.integers(), JSON_VALUES, max_size=3))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=TOOL_NAMES, arguments=ARGUMENTS)
def test_a_tool_call_never_raises_and_a_failing_call_changes_nothing(episode_factory, name, arguments):
    episode = episode_factory.episode()
    before = episode.state_hash()
    result = episode.call(name, arguments)
    assert isinstance(result.output, str)
    if result.error:
        assert episode.state_hash() == before


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory) -> Path:
    """A store of its own: the commands open it read-only, which DuckDB refuses in a process
    that holds it read-write (fuzz_store)."""
    directory = tmp_path_factory.mktemp("fuzz_cli")
    (directory / "secret.txt").write_text(SECRET + "\n")
    with TaskStore(directory / "t2t.duckdb") as ts:
        run = ts.start_run("verify", {})
        ts.add_tasks(run, [Task(id="T0", domain="retail", condition="general",
                                scenario=UserScenario(reason_for_call="help"), provenance=Provenance(source="baseline"))])
    return directory / "t2t.duckdb"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_sql_and_export_commands_answer_or_give_one_error_line(cli_store, capsys, monkeypatch, data):
    import sys

    from trajectory2task.cli import main

    text = data.draw(sql_text(cli_store.parent / "secret.txt"))
    out = cli_store.parent / "out.json"
    out.unlink(missing_ok=True)
    for args in (["sql", text, "--json"], ["export", "--where", text, "--out", str(out)]):
        monkeypatch.setattr(sys, "argv", ["t2t", *args, "--store", str(cli_store)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code
        stdout, stderr = capsys.readouterr()
        assert code in (0, 2)
        assert SECRET not in stdout + stderr
        if code:
            lines = stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("t2t: error: ")
        out.unlink(missing_ok=True)
    assert sorted(p.name for p in cli_store.parent.iterdir()) == ["secret.txt", "t2t.duckdb"]
