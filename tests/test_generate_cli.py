"""`t2t generate` offline: tasks in all four conditions, verified and stored; deterministic; resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from trajectory2task.store import TaskStore
from trajectory2task.store.failures import generation_items
from trajectory2task.cli import app
from tests.cli import REPO, run_t2t

SMALL = ["--users", "150", "--seed", "3"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No LM from the developer's environment may turn these runs into LM runs."""
    for name in list(os.environ):
        if name.startswith("T2T_"):
            monkeypatch.delenv(name)


def _generate(store, *args):
    result = CliRunner().invoke(app, ["generate", "--store", str(store), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _task_set(path):
    with TaskStore(path, read_only=True) as store:
        return sorted(t.model_copy(update={"provenance": t.provenance.model_copy(update={"run_id": None})})
                      .model_dump_json() for t in store.tasks())


def test_offline_generate_stores_verified_tasks_in_every_condition(tmp_path):
    path = tmp_path / "t.duckdb"
    summary = _generate(path, "--n", "12", *SMALL)
    assert summary["source"] == "baseline" and summary["items"] == 12
    with TaskStore(path, read_only=True) as store:
        _, rows = store.query("SELECT condition, count(*), count(*) FILTER (WHERE verified), "
                              "count(*) FILTER (WHERE source = 'baseline') FROM tasks_latest GROUP BY condition")
        counts = {c: (n, verified, baseline) for c, n, verified, baseline in rows}
        assert set(counts) == {"general", "ambiguous", "changing", "infeasible"}
        assert all(n > 0 and n == verified == baseline for n, verified, baseline in counts.values()), counts
        # the summary printed is what the store holds
        assert {c["condition"]: (c["tasks"], c["verified"]) for c in summary["conditions"]} == \
            {c: (n, v) for c, (n, v, _) in counts.items()}
        _, [(config,)] = store.query("SELECT config FROM runs WHERE run_id = ?", [summary["run_id"]])
        config = json.loads(config)
        assert config["source"] == "baseline" and config["roles"]["explorer"] == "baseline"
        assert config["db_path"] is None and len(config["db_initial_hash"]) == 32
        for task in store.tasks():
            assert task.initial_state_hash == config["db_initial_hash"]
            assert task.provenance.run_id == summary["run_id"] and task.provenance.source == "baseline"


def test_same_seed_same_tasks_other_seed_other_tasks(tmp_path):
    _generate(tmp_path / "a.duckdb", "--n", "6", *SMALL)
    _generate(tmp_path / "b.duckdb", "--n", "6", *SMALL)
    _generate(tmp_path / "c.duckdb", "--n", "6", "--users", "150", "--seed", "4")
    same = _task_set(tmp_path / "a.duckdb")
    assert same and same == _task_set(tmp_path / "b.duckdb")
    assert not set(same) & set(_task_set(tmp_path / "c.duckdb"))


def test_conditions_option_limits_the_tasks(tmp_path):
    path = tmp_path / "g.duckdb"
    summary = _generate(path, "--n", "4", "--conditions", "general,infeasible", *SMALL)
    assert [c["condition"] for c in summary["conditions"]] == ["general", "infeasible"]
    with TaskStore(path, read_only=True) as store:
        _, rows = store.query("SELECT DISTINCT condition FROM tasks_latest ORDER BY 1")
    assert [r[0] for r in rows] == ["general", "infeasible"]


def test_generate_on_a_given_db_records_it(tmp_path, retail):
    from trajectory2task.domains.retail.generate import dump_db

    db_file = tmp_path / "db.json"
    db_file.write_text(dump_db(retail.generate_db(9, 80)))
    path = tmp_path / "d.duckdb"
    summary = _generate(path, "--n", "3", "--db", str(db_file))
    with TaskStore(path, read_only=True) as store:
        _, [(config,)] = store.query("SELECT config FROM runs WHERE run_id = ?", [summary["run_id"]])
    config = json.loads(config)
    assert config["db_path"] == str(db_file)
    assert config["db_initial_hash"] == retail.environment(retail.load_db(str(db_file))).initial_hash()


def _wal_size(path):
    wal = path.with_name(path.name + ".wal")
    return wal.stat().st_size if wal.exists() else 0


def test_killed_run_resumes_without_duplicates_to_the_uninterrupted_result(tmp_path):
    whole, cut = tmp_path / "whole.duckdb", tmp_path / "cut.duckdb"
    args = ["generate", "--n", "16", *SMALL]
    env = {k: v for k, v in os.environ.items() if not k.startswith("T2T_")}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True")
    proc = subprocess.Popen([sys.executable, "-m", "trajectory2task.cli", *args, "--store", str(cut)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    # each committed item grows the write-ahead log by some 25 KB: kill after a few items
    while _wal_size(cut) < 100_000 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with TaskStore(cut) as store:
        _, [(run_id,)] = store.query("SELECT run_id FROM runs")
        done_before = len(generation_items(store, run_id))
    assert 0 < done_before < 16
    result = run_t2t("generate", "--resume", run_id, "--store", str(cut), env={"T2T_LM": ""})
    assert result.returncode == 0, result.stderr
    assert f"run {run_id}" in result.stdout
    assert run_t2t(*args, "--store", str(whole)).returncode == 0
    assert _task_set(cut) == _task_set(whole)
    with TaskStore(cut, read_only=True) as store:
        for table, key in (("tasks", "task_id"), ("trajectories", "trajectory_id")):
            _, [(rows, distinct)] = store.query(f"SELECT count(*), count(DISTINCT {key}) FROM {table}")
            assert rows == distinct, table
        assert [i.index for i in generation_items(store, run_id)] == list(range(16))


def test_offline_n40_runs_with_no_model_configured(tmp_path):
    # its speed is measured by benchmarks/bench_generate.py, not asserted here
    result = run_t2t("generate", "--n", "40", "--store", str(tmp_path / "n40.duckdb"), env={"T2T_LM": ""})
    assert result.returncode == 0, result.stderr
    assert "infeasible" in result.stdout and "run " in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--conditions", "general,confused"], "unknown condition(s) confused"),
    (["--resume", "nope"], "no generate run 'nope'"),
    (["--programs", "missing"], "no program named 'missing'"),
    (["--db", "/nonexistent/db.json"], "no such database file"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    result = run_t2t("generate", "--n", "2", "--store", str(tmp_path / "e.duckdb"), *args, env={"T2T_LM": ""})
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_programs_state_is_loaded_into_the_lm_modules(tmp_path):
    from trajectory2task.programs.generation.writer import TaskWriter
    from trajectory2task.programs.generation.writing import BaselineWriter
    from trajectory2task.usecases import load_program_state
    from trajectory2task.errors import UserError

    tuned = TaskWriter()
    tuned.write_task.signature = tuned.write_task.signature.with_instructions("Write tersely.")
    with TaskStore(tmp_path / "p.duckdb") as store:
        store.add_program("gen-v1", "writer", tuned.dump_state(), run_id=None)
        modules = {"writer": TaskWriter()}
        assert load_program_state(store, "gen-v1", modules) == ["writer"]
        assert modules["writer"].write_task.signature.instructions == "Write tersely."
        with pytest.raises(UserError, match="offline baseline"):
            load_program_state(store, "gen-v1", {"writer": BaselineWriter()})
