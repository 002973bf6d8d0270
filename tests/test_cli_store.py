"""`t2t verify --save`, `t2t sql` and `t2t export` as a user runs them."""

from __future__ import annotations

import csv
import io
import json

import duckdb
import pytest

from tests.cli import run_t2t


@pytest.fixture(scope="module")
def store(tmp_path_factory, tau2_dir):
    path = tmp_path_factory.mktemp("store") / "t2t.duckdb"
    result = run_t2t("verify", "--db", str(tau2_dir / "db.json"), str(tau2_dir / "tasks.json"),
                     "--save", "--store", str(path))
    assert result.returncode == 0, result.stderr
    return path


def test_verify_save_records_tasks_and_static_verdicts(store):
    result = run_t2t("sql", "SELECT count(*) AS tasks, count(*) FILTER (verified) AS verified FROM tasks_latest",
                     "--store", str(store), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"tasks": 114, "verified": 114 - 15 - 11 + 3}


def test_sql_prints_a_table_json_or_csv(store):
    query = "SELECT reason, sum(n)::INT AS n FROM failure_reasons WHERE kind = 'static' GROUP BY 1 ORDER BY 1"
    table = run_t2t("sql", query, "--store", str(store))
    assert table.returncode == 0, table.stderr
    assert "invalid_gold" in table.stdout and "2 row(s)" in table.stdout
    rows = [json.loads(line) for line in run_t2t("sql", query, "--store", str(store), "--json").stdout.splitlines()]
    assert rows == [{"reason": "invalid_gold", "n": 15}, {"reason": "noop_passes", "n": 11}]
    parsed = list(csv.reader(io.StringIO(run_t2t("sql", query, "--store", str(store), "--csv").stdout)))
    assert parsed == [["reason", "n"], ["invalid_gold", "15"], ["noop_passes", "11"]]


@pytest.mark.parametrize("statement", ["DELETE FROM tasks", "DROP VIEW pass_rate",
                                       "COPY tasks TO 'x.csv'", "SELECT 1; DELETE FROM tasks"])
def test_sql_refuses_anything_but_one_read_statement(store, statement):
    before = run_t2t("sql", "SELECT count(*) AS n FROM tasks", "--store", str(store), "--json").stdout
    result = run_t2t("sql", statement, "--store", str(store))
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("t2t: error:")
    assert run_t2t("sql", "SELECT count(*) AS n FROM tasks", "--store", str(store), "--json").stdout == before


def test_sql_on_a_missing_store_and_bad_sql_are_one_line_errors(tmp_path, store):
    missing = run_t2t("sql", "SELECT 1", "--store", str(tmp_path / "none.duckdb"))
    assert missing.returncode == 2 and "no store here yet" in missing.stderr
    bad = run_t2t("sql", "SELECT nope FROM tasks_latest", "--store", str(store))
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1


def test_export_tau2_selected_by_sql_round_trips_to_the_shared_tasks(store, tmp_path, tau2_tasks_raw):
    out = tmp_path / "tasks.json"
    result = run_t2t("export", "--format", "tau2", "--where", "verified", "--out", str(out), "--store", str(store))
    assert result.returncode == 0, result.stderr
    exported = {t["id"]: t for t in json.loads(out.read_text())}
    assert len(exported) == 114 - 15 - 11 + 3
    for raw in tau2_tasks_raw:
        if raw["id"] in exported:
            assert json.dumps(exported[raw["id"]], sort_keys=True) == json.dumps(raw, sort_keys=True)


def test_export_parquet_selected_by_sql(store, tmp_path):
    out = tmp_path / "tasks.parquet"
    result = run_t2t("export", "--format", "parquet", "--where", "NOT verified", "--out", str(out),
                     "--store", str(store))
    assert result.returncode == 0, result.stderr
    rows = duckdb.sql(f"SELECT task_id, verified FROM read_parquet('{out}')").fetchall()
    assert len(rows) == 23 and not any(v for _, v in rows)


def test_export_unknown_format_is_a_one_line_error(store, tmp_path):
    result = run_t2t("export", "--format", "xml", "--out", str(tmp_path / "x"), "--store", str(store))
    assert result.returncode == 2 and "unknown export format 'xml'" in result.stderr


def test_verify_skips_bad_tasks_by_id_and_field_and_strict_stops(tmp_path, tau2_dir, tau2_tasks_raw):
    broken = json.loads(json.dumps(tau2_tasks_raw[:3]))
    del broken[1]["user_scenario"]
    broken[2]["evaluation_criteria"]["actions"][0]["arguments"] = "oops"
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(broken))
    result = run_t2t("verify", "--db", str(tau2_dir / "db.json"), str(path), "--json")
    assert result.returncode == 0
    assert [json.loads(line)["task_id"] for line in result.stdout.splitlines()] == [broken[0]["id"]]
    assert result.stderr.splitlines() == [
        f"t2t: skipped task {broken[1]['id']}: user_scenario: missing or not an object",
        f"t2t: skipped task {broken[2]['id']}: evaluation_criteria.actions[0].arguments: not an object"]
    strict = run_t2t("verify", "--db", str(tau2_dir / "db.json"), str(path), "--strict")
    assert strict.returncode == 2 and strict.stdout == ""
    assert strict.stderr.strip() == f"t2t: error: task {broken[1]['id']}: user_scenario: missing or not an object"
