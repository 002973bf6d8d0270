"""Hostile and careless input (issue 9): each reproduction gives one `t2t: error:` line and a
non-zero exit, or succeeds safely; nothing in the store is lost and nothing is read or
written that the user did not name."""

from __future__ import annotations

import base64
import errno
import json
import os
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest

from trajectory2task.signatures.models import Provenance, Task, UserScenario, Verdict
from trajectory2task.store import StoreError, TaskStore
from tests.cli import REPO, run_t2t

SECRET = "t2t-secret-marker-5f0c"


def make_task(task_id: str, condition: str = "general", reason: str = "help me with my order") -> Task:
    return Task(id=task_id, domain="retail", condition=condition, scenario=UserScenario(reason_for_call=reason),
                expected_state_hash="hx", initial_state_hash="h0", provenance=Provenance(source="baseline"))


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A store with three tasks, two of them verified; one reason holds a terminal escape."""
    path = tmp_path / "t2t.duckdb"
    tasks = [make_task("A"), make_task("B", "ambiguous"), make_task("C", reason="hi \x1b[2J\x1b]0;pwned\x07 there")]
    with TaskStore(path) as ts:
        run = ts.start_run("verify", {})
        ts.add_tasks(run, tasks)
        ts.add_verdicts(run, [Verdict(task_id="A", passed=True), Verdict(task_id="B", passed=True),
                              Verdict(task_id="C", passed=False, reasons=["invalid_gold"])], kind="static")
        ts.finish_run(run)
    return path


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET + "\n")
    return path


def task_count(path: Path) -> int:
    with TaskStore(path, read_only=True) as ts:
        return ts.query("SELECT count(*) FROM tasks")[1][0][0]


def t2t(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    """The real entry point (`trajectory2task.cli.main`) in this process: (exit status, stdout, stderr)."""
    from trajectory2task.cli import main

    monkeypatch.setattr(sys, "argv", ["t2t", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("t2t: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if "tmp" in p.name)


# ---------------------------------------------------------------- exports never clobber


@pytest.mark.parametrize("fmt", ["tau2", "parquet", "sft"])
@pytest.mark.parametrize("force", [[], ["--force"]])
def test_export_over_the_store_is_refused_even_with_force(capsys, monkeypatch, store_path, fmt, force):
    before = store_path.read_bytes()
    code, _, err = t2t(capsys, monkeypatch, "export", "--format", fmt, "--out", str(store_path),
                       "--store", str(store_path), *force)
    assert_one_error_line(code, err, "is the task store itself")
    assert store_path.read_bytes() == before and task_count(store_path) == 3


def test_export_over_the_store_by_another_name_is_refused(capsys, monkeypatch, store_path, tmp_path):
    alias = tmp_path / "alias.duckdb"
    alias.symlink_to(store_path)
    wal = store_path.with_name(store_path.name + ".wal")
    for out in (alias, tmp_path / "missing_dir" / ".." / store_path.name, wal):
        code, _, err = t2t(capsys, monkeypatch, "export", "--out", str(out), "--store", str(store_path), "--force")
        assert_one_error_line(code, err, "is the task store itself")
    assert task_count(store_path) == 3 and not wal.exists()


def test_export_never_replaces_an_existing_file_without_force(capsys, monkeypatch, store_path, tmp_path):
    out = tmp_path / "tasks.json"
    out.write_text("my only copy\n")
    code, _, err = t2t(capsys, monkeypatch, "export", "--out", str(out), "--store", str(store_path))
    assert_one_error_line(code, err, "exists; pass --force")
    assert out.read_text() == "my only copy\n"
    code, _, err = t2t(capsys, monkeypatch, "export", "--out", str(out), "--store", str(store_path), "--force")
    assert code == 0, err
    assert [t["id"] for t in json.loads(out.read_text())] == ["A", "B", "C"]
    assert leftovers(tmp_path) == []


def test_export_writes_through_a_private_temp_file_not_a_planted_symlink(capsys, monkeypatch, store_path,
                                                                          tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("do not touch\n")
    out = tmp_path / "x.json"
    (tmp_path / "x.json.tmp").symlink_to(victim)  # the fixed temp name older versions wrote through
    code, _, err = t2t(capsys, monkeypatch, "export", "--out", str(out), "--store", str(store_path))
    assert code == 0, err
    assert victim.read_text() == "do not touch\n"
    assert len(json.loads(out.read_text())) == 3
    assert (tmp_path / "x.json.tmp").is_symlink()


def test_export_to_a_symlink_needs_force_and_replaces_the_link_not_its_target(capsys, monkeypatch, store_path,
                                                                             tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("do not touch\n")
    link = tmp_path / "link.json"
    link.symlink_to(victim)
    code, _, err = t2t(capsys, monkeypatch, "export", "--out", str(link), "--store", str(store_path))
    assert_one_error_line(code, err, "symbolic link")
    code, _, err = t2t(capsys, monkeypatch, "export", "--out", str(link), "--store", str(store_path), "--force")
    assert code == 0, err
    assert victim.read_text() == "do not touch\n" and not link.is_symlink()


def test_export_with_no_records_still_refuses_the_store(capsys, monkeypatch, store_path):
    code, _, err = t2t(capsys, monkeypatch, "export", "--format", "sft", "--where", "false",
                       "--out", str(store_path), "--store", str(store_path), "--force")
    assert_one_error_line(code, err, "is the task store itself")
    assert task_count(store_path) == 3


@pytest.mark.parametrize("target,fragment", [
    ("DIR", "is a directory"),
    ("FILE/under.json", "Not a directory"),
    ("/proc/t2t-export.json", "cannot write"),
    ("x" * 300 + ".json", "File name too long"),
    ("/dev/full", "not a regular file"),
])
def test_export_io_errors_are_one_line_and_leave_no_temp_file(capsys, monkeypatch, store_path, tmp_path, target,
                                                             fragment):
    (tmp_path / "DIR").mkdir()
    (tmp_path / "FILE").write_text("a file\n")
    out = target.replace("DIR", str(tmp_path / "DIR")).replace("FILE", str(tmp_path / "FILE"))
    if not out.startswith("/"):
        out = str(tmp_path / out)
    code, _, err = t2t(capsys, monkeypatch, "export", "--out", out, "--store", str(store_path), "--force")
    assert_one_error_line(code, err, fragment)
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "DIR") == []
    assert (tmp_path / "FILE").read_text() == "a file\n"


def test_export_on_a_full_disk_leaves_neither_output_nor_temp_file(capsys, monkeypatch, store_path, tmp_path):
    import trajectory2task.store.outfile

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(trajectory2task.store.outfile.os, "fsync", full)
    out = tmp_path / "tasks.json"
    code, _, err = t2t(capsys, monkeypatch, "export", "--out", str(out), "--store", str(store_path))
    assert_one_error_line(code, err, "No space left on device")
    assert not out.exists() and leftovers(tmp_path) == []


def test_generate_db_keeps_an_existing_file_without_force_and_ignores_a_planted_symlink(capsys, monkeypatch,
                                                                                      tmp_path):
    out = tmp_path / "db.json"
    out.write_text("{}\n")
    code, _, err = t2t(capsys, monkeypatch, "domain", "generate-db", "retail", "--users", "5", "--out", str(out))
    assert_one_error_line(code, err, "exists; pass --force")
    assert out.read_text() == "{}\n"
    victim = tmp_path / "victim.txt"
    victim.write_text("do not touch\n")
    (tmp_path / "db.json.tmp").symlink_to(victim)
    code, _, err = t2t(capsys, monkeypatch, "domain", "generate-db", "retail", "--users", "5", "--out", str(out),
                       "--force")
    assert code == 0, err
    assert victim.read_text() == "do not touch\n" and len(json.loads(out.read_text())["users"]) == 5


def test_generate_db_io_error_is_one_line(capsys, monkeypatch, tmp_path):
    code, _, err = t2t(capsys, monkeypatch, "domain", "generate-db", "retail", "--users", "5",
                       "--out", str(tmp_path))
    assert_one_error_line(code, err, "is a directory")


# ---------------------------------------------------------------- read-only SQL


SMUGGLED = [
    "/* /* */ EXPLAIN SELECT $$ */ EXPLAIN ANALYZE DELETE FROM tasks --$$",
    "/* /* */ SELECT $$ */ INSERT INTO runs VALUES ('x', 'k', NULL, NULL, NULL, now()::TIMESTAMP) --$$",
    "/* /* */ SELECT $$ */ CREATE TABLE smuggled (a INT) --$$",
    "/* /* */ SELECT $$ */ PRAGMA enable_profiling --$$",
    "PRAGMA memory_limit = '1GB'",
    "EXPLAIN ANALYZE DELETE FROM tasks",
]


@pytest.mark.parametrize("sql", SMUGGLED)
def test_task_store_query_refuses_smuggled_statements_and_tasks_remain(store_path, sql):
    with TaskStore(store_path) as ts:
        with pytest.raises(StoreError):
            ts.query(sql)
        assert ts.query("SELECT count(*) FROM tasks")[1] == [(3,)]
        assert ts.query("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'smuggled'")[1] == [(0,)]


@pytest.mark.parametrize("sql", SMUGGLED[:2])
def test_sql_command_refuses_smuggled_statements(capsys, monkeypatch, store_path, sql):
    code, _, err = t2t(capsys, monkeypatch, "sql", sql, "--store", str(store_path))
    assert_one_error_line(code, err, "refused")
    assert task_count(store_path) == 3


def test_task_store_query_reads_no_files_even_read_write(store_path, secret_file):
    with TaskStore(store_path) as ts:
        for sql in (f"SELECT content FROM read_text('{secret_file}')", f"SELECT * FROM read_csv('{secret_file}')"):
            with pytest.raises(StoreError) as caught:
                ts.query(sql)
            assert SECRET not in str(caught.value)


UNION_FILTERS = [
    "1=0)) UNION ALL SELECT content FROM read_text('SECRET') ORDER BY 1 --",
    "1=0) UNION ALL SELECT content FROM read_text('SECRET') WHERE (1=1",
    "1=0) UNION ALL SELECT json FROM tasks WHERE (1=1",
    "true) ORDER BY (1",
    "true); DELETE FROM tasks; SELECT (1",
    "true) --",
    "task_id IN (SELECT content FROM read_text('SECRET'))",
]


@pytest.mark.parametrize("where", UNION_FILTERS)
def test_export_where_injection_is_refused_without_file_content(capsys, monkeypatch, store_path, secret_file,
                                                                tmp_path, where):
    out = tmp_path / "out.json"
    code, stdout, err = t2t(capsys, monkeypatch, "export", "--where", where.replace("SECRET", str(secret_file)),
                            "--out", str(out), "--store", str(store_path))
    assert_one_error_line(code, err)
    assert SECRET not in err + stdout and not out.exists()
    assert task_count(store_path) == 3


@pytest.mark.parametrize("where", UNION_FILTERS)
def test_task_store_filters_refuse_injection(store_path, secret_file, where):
    with TaskStore(store_path) as ts:
        for read in (ts.tasks, ts.rollouts, ts.trajectories):
            with pytest.raises(StoreError) as caught:
                read(where.replace("SECRET", str(secret_file)))
            assert SECRET not in str(caught.value)
        assert ts.query("SELECT count(*) FROM tasks")[1] == [(3,)]


@pytest.mark.parametrize("where", UNION_FILTERS[:2])
def test_bench_tasks_filter_injection_is_one_line(capsys, monkeypatch, store_path, secret_file, where):
    code, stdout, err = t2t(capsys, monkeypatch, "bench", "--tasks", where.replace("SECRET", str(secret_file)),
                            "--store", str(store_path))
    assert_one_error_line(code, err, "--tasks")
    assert SECRET not in err + stdout


def test_optimize_trainset_filter_injection_is_refused(store_path, secret_file):
    from trajectory2task.optimize.compile import select_ids

    with TaskStore(store_path) as ts:
        for where in UNION_FILTERS[:3]:
            with pytest.raises(StoreError) as caught:
                select_ids(ts, where.replace("SECRET", str(secret_file)), "tasks")
            assert SECRET not in str(caught.value)


def test_filters_that_are_one_expression_still_select(store_path):
    with TaskStore(store_path) as ts:
        assert [t.id for t in ts.tasks("verified")] == ["A", "B"]
        assert [t.id for t in ts.tasks("condition = 'general' AND verified -- trailing comment")] == ["A"]
        assert [t.id for t in ts.tasks("verified) OR (task_id = 'C'")] == ["A", "B", "C"]
        assert [t.id for t in ts.tasks("task_id IN (SELECT task_id FROM verdicts WHERE NOT pass)")] == ["C"]
        assert [t.id for t in ts.tasks("condition = ?", ["ambiguous"])] == ["B"]


# ---------------------------------------------------------------- strict JSON, LF CSV, escaped text


def test_sql_json_is_strict_json(capsys, monkeypatch, store_path):
    query = ("SELECT 'nan'::DOUBLE AS nan, 'inf'::DOUBLE AS inf, '-inf'::FLOAT AS ninf, '\\x01\\xff'::BLOB AS blob, "
             "INTERVAL 3 DAY AS span, ['nan'::DOUBLE, 1.5] AS list, {'k': 'inf'::DOUBLE} AS struct")
    code, out, err = t2t(capsys, monkeypatch, "sql", query, "--store", str(store_path), "--json")
    assert code == 0, err

    def refuse(name):
        raise AssertionError(f"not strict JSON: {name}")

    row = json.loads(out, parse_constant=refuse)
    assert row["nan"] is None and row["inf"] is None and row["ninf"] is None
    assert base64.b64decode(row["blob"]) == b"\x01\xff"
    assert isinstance(row["span"], str) and row["list"] == [None, 1.5] and row["struct"] == {"k": None}


def test_sql_csv_ends_lines_with_lf(capsys, monkeypatch, store_path):
    code, out, err = t2t(capsys, monkeypatch, "sql", "SELECT task_id FROM tasks ORDER BY 1", "--store",
                         str(store_path), "--csv")
    assert code == 0, err
    assert out == "task_id\nA\nB\nC\n"


def test_stored_text_is_printed_with_control_characters_escaped(capsys, monkeypatch, store_path):
    code, out, err = t2t(capsys, monkeypatch, "sql", "SELECT json->'scenario'->>'reason_for_call' AS reason "
                         "FROM tasks WHERE task_id = 'C'", "--store", str(store_path))
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2J" in out


def test_error_lines_escape_control_characters(capsys, monkeypatch, tmp_path):
    name = tmp_path / "evil\x1b[31m\nname.json"
    code, _, err = t2t(capsys, monkeypatch, "replay", str(name))
    assert_one_error_line(code, err, "\\x1b[31m\\nname.json")
    assert "\x1b" not in err


# ---------------------------------------------------------------- the store file itself


def test_a_sqlite_store_is_refused_by_its_header(capsys, monkeypatch, tmp_path):
    import sqlite3

    path = tmp_path / "t2t.duckdb"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE tasks (x)")
    before = path.read_bytes()
    for args in (["sql", "SELECT 1"], ["export", "--out", str(tmp_path / "o.json")], ["bench"]):
        code, _, err = t2t(capsys, monkeypatch, *args, "--store", str(path))
        assert_one_error_line(code, err, "SQLite database, not a task store")
    assert path.read_bytes() == before


def test_a_store_that_is_not_a_database_is_refused(capsys, monkeypatch, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just some notes, not a database at all\n")
    code, _, err = t2t(capsys, monkeypatch, "sql", "SELECT 1", "--store", str(path))
    assert_one_error_line(code, err, "not a DuckDB database file")
    assert path.read_text() == "just some notes, not a database at all\n"


def test_a_fifo_as_store_or_tasks_file_does_not_hang(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for args in (["sql", "SELECT 1", "--store", str(fifo)], ["replay", str(fifo)], ["verify", str(fifo)]):
        result = run_t2t(*args, timeout=60)
        assert result.returncode == 2
        assert_one_error_line(result.returncode, result.stderr, "not a regular file")


# ---------------------------------------------------------------- input files


def test_bad_inputs_are_one_line_errors(capsys, monkeypatch, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    huge = tmp_path / "huge.json"
    huge.write_text('[{"id": ' + "9" * 5000 + "}]")
    latin1 = tmp_path / "policy.txt"
    latin1.write_bytes("Politique: remboursement \xe0 30 jours".encode("latin-1"))
    lm_config = tmp_path / "lm.toml"
    lm_config.write_bytes(b"[lm.default]\nmodel = \"\xff\xfe\"\n")
    empty_db = tmp_path / "empty.json"
    empty_db.write_text(json.dumps({"products": {}, "users": {}, "orders": {}}))
    cases = [
        (["replay", str(deep)], "nested too deeply"),
        (["replay", str(huge)], "unreadable JSON value"),
        (["replay", "/dev/zero"], "not a regular file"),
        (["replay", "--domain", ".foo", str(huge)], "not a domain name"),
        (["domain", "show", "retail", "--policy", str(latin1)], "not UTF-8"),
        (["replay", "--policy", str(latin1), str(huge)], "not UTF-8"),
        (["generate", "--n", "1", "--lm-config", str(lm_config), "--store", str(tmp_path / "s.duckdb")],
         "not UTF-8"),
        (["generate", "--n", "2", "--db", str(empty_db), "--store", str(tmp_path / "e.duckdb")], "is empty"),
    ]
    for args, fragment in cases:
        code, out, err = t2t(capsys, monkeypatch, *args)
        assert_one_error_line(code, err, fragment)
        if args[:2] == ["domain", "show"]:
            assert out == ""  # refused before anything is printed


def tau2_task(task_id: str, **criteria) -> dict:
    return {"id": task_id, "user_scenario": {"instructions": {"reason_for_call": "help", "task_instructions": ""}},
            "evaluation_criteria": {"actions": [], **criteria}}


def test_tau2_initial_state_duplicates_and_unknown_reward_basis_are_refused(tmp_path):
    from trajectory2task.store.files import InputFileError, load_tasks

    with_state = tau2_task("S")
    with_state["initial_state"] = {"initialization_data": {"agent_data": {"users": {}}},
                                   "initialization_actions": None, "message_history": None}
    no_state = tau2_task("N")
    no_state["initial_state"] = None
    entries = [no_state, with_state, tau2_task("N"), tau2_task("R", reward_basis=["DB", "VIBES"])]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(entries))
    tasks, problems = load_tasks(path)
    assert [t.id for t in tasks] == ["N"]
    assert [(p.entry_id, p.field) for p in problems] == [("S", "initial_state"), ("N", "id"), ("R", "reward_basis")]
    assert "VIBES" in problems[2].problem
    with pytest.raises(InputFileError, match="initial_state"):
        load_tasks(path, strict=True)


def test_verify_says_each_refused_tau2_task_in_one_line(capsys, monkeypatch, tmp_path):
    with_state = tau2_task("S")
    with_state["initial_state"] = {"initialization_actions": [{"env_type": "user", "func_name": "x"}]}
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps([tau2_task("N"), with_state, tau2_task("N")]))
    code, _, err = t2t(capsys, monkeypatch, "verify", str(path), "--json")
    assert code == 0
    assert err.splitlines() == [
        "t2t: skipped task S: initial_state: tasks that set up their own initial state are not supported "
        "(it would be ignored)",
        "t2t: skipped task N: id: the same id as an earlier task in the file"]


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize("args,flag", [
    (["bench", "--trials", "1000000000"], "--trials"),
    (["domain", "generate-db", "retail", "--users", "1000000000", "--out", "db.json"], "--users"),
    (["generate", "--users", "1000000000"], "--users"),
    (["generate", "--workers", "1000000000"], "--workers"),
    (["bench", "--concurrency", "1000000000"], "--concurrency"),
])
def test_sizes_above_the_documented_maximum_are_one_line(capsys, monkeypatch, tmp_path, args, flag):
    monkeypatch.chdir(tmp_path)
    code, _, err = t2t(capsys, monkeypatch, *args)
    assert_one_error_line(code, err, flag, "less than or equal to")
    assert code == 2 and list(tmp_path.iterdir()) == []


def test_generate_plans_its_items_lazily(tmp_path):
    from collections.abc import Iterator

    from trajectory2task.domains import get_domain
    from trajectory2task.programs.generation.adapting import BaselineAdaptation
    from trajectory2task.programs.generation.exploration import BaselineExplorer
    from trajectory2task.programs.generation.pipeline import GenerationConfig, GenerationPipeline
    from trajectory2task.programs.generation.writing import BaselineWriter
    from trajectory2task.store.failures import StoreSink

    domain = get_domain("retail")
    env = domain.environment(domain.generate_db(0, 5))
    with TaskStore(tmp_path / "t2t.duckdb") as ts:
        config = GenerationConfig(n=10_000_000, db_initial_hash=env.initial_hash())
        pipeline = GenerationPipeline(env, StoreSink(ts), config, explorer=BaselineExplorer(), writer=BaselineWriter(),
                                      adaptation=BaselineAdaptation())
        ts.start_run("generate", config.model_dump(mode="json"), run_id="r")
        pending = pipeline.pending_items("r")
        assert isinstance(pending, Iterator)
        assert list(islice(pending, 3)) == [0, 1, 2]


# ---------------------------------------------------------------- output streams and usage errors


def test_stdout_to_a_full_device_is_one_line(store_path):
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "trajectory2task.cli", "sql", "SELECT * FROM tasks",
                                 "--store", str(store_path), "--json"], cwd=REPO, stdout=full, stderr=subprocess.PIPE,
                                text=True, timeout=120)
    assert_one_error_line(result.returncode, result.stderr, "standard output", "No space left on device")


def test_an_ascii_only_stdout_gets_escaped_text_and_valid_json(tmp_path):
    path = tmp_path / "t2t.duckdb"
    with TaskStore(path) as ts:
        run = ts.start_run("verify", {})
        ts.add_tasks(run, [make_task("Ü-1", reason="échange de clavier ✓")])
    for fmt in ([], ["--json"], ["--csv"]):
        result = run_t2t("sql", "SELECT task_id, json->'scenario'->>'reason_for_call' AS reason FROM tasks",
                         "--store", str(path), *fmt, env={"PYTHONIOENCODING": "ascii"})
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        if fmt == ["--json"]:
            assert json.loads(result.stdout) == {"task_id": "Ü-1", "reason": "échange de clavier ✓"}


@pytest.mark.parametrize("args,fragment", [
    (["export", "--bogus"], "No such option: --bogus"),
    (["export"], "Missing option '--out'"),
    (["generate", "--n", "many"], "Invalid value for '--n'"),
    (["generate", "--n", "0"], "Invalid value for '--n'"),
    (["no-such-command"], "No such command"),
])
def test_parameter_errors_are_one_line_with_status_2(capsys, monkeypatch, args, fragment):
    code, out, err = t2t(capsys, monkeypatch, *args)
    assert_one_error_line(code, err, fragment, "--help")
    assert code == 2 and out == ""


def test_tool_call_with_a_list_or_dict_name_is_an_error_observation():
    from trajectory2task.domains import get_domain

    domain = get_domain("retail")
    episode = domain.environment(domain.generate_db(0, 5)).episode()
    before = episode.state_hash()
    for name in (["get_user_details"], {"name": "get_user_details"}, None, 7):
        result = episode.call(name, {"user_id": "x"})
        assert result.error and "tool name must be a string" in result.output
    assert episode.state_hash() == before
