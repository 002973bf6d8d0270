"""Optuna sweeps over the offline pipeline: trials land in the store and a stopped study resumes."""

from __future__ import annotations

import json

import pytest

from trajectory2task.optimize.sweep import (
    KNOB_EFFECTS_SQL,
    KNOB_LEVELS_SQL,
    SweepSettings,
    TrialOutcome,
    conditions_of,
    offline_cost,
    pipeline_evaluator,
    run_sweep,
    search_space,
    stored_trials,
)
from trajectory2task.store import TaskStore
from trajectory2task.store.failures import GenerationItem, generation_items

USERS = 60


@pytest.fixture(scope="module")
def env(retail):
    return retail.environment(retail.generate_db(0, USERS))


def _settings(trials, study="s", n=3):
    return SweepSettings(study=study, trials=trials, seed=0, n=n, db_users=USERS)


def _sweep(env, path, trials, evaluate=None, study="s"):
    settings = _settings(trials, study)
    with TaskStore(path) as store:
        return run_sweep(store, settings, search_space(with_lm=False),
                         evaluate or pipeline_evaluator(store, env, settings))


def _comparable(report):
    return [(t["number"], t["params"], t["value"], t["state"]) for t in report.trials]


def test_every_trial_is_stored_with_its_params_value_and_run(env, tmp_path):
    path = tmp_path / "s.duckdb"
    report = _sweep(env, path, trials=2)
    assert report.ran == 2 and report.loaded == 0
    with TaskStore(path, read_only=True) as store:
        rows = stored_trials(store, "s")
        assert [r["number"] for r in rows] == [0, 1]
        for row, trial in zip(rows, report.trials):
            assert row["params"] == trial["params"] and set(row["params"]) == set(search_space(False))
            attrs = row["user_attrs"]
            assert row["state"] == "COMPLETE"
            assert row["value"] == pytest.approx(attrs["verified"] / attrs["cost"])
            assert attrs["cost_unit"] == "lm_call_equivalents"
            # the value is recomputable from the trial's generation run in the store
            items = generation_items(store, attrs["run_id"])
            assert attrs["cost"] == offline_cost(items)
            _, [(verified,)] = store.query(
                "SELECT count(*) FILTER (WHERE verified) FROM tasks_latest WHERE run_id = ?", [attrs["run_id"]])
            assert verified == attrs["verified"]
            _, [(conditions,)] = store.query("SELECT config->'conditions' FROM runs WHERE run_id = ?",
                                             [attrs["run_id"]])
            assert json.loads(conditions) == conditions_of(row["params"])
        _, [(kind, study_runs)] = store.query(
            "SELECT kind, count(*) FROM runs WHERE run_id IN (SELECT DISTINCT run_id FROM trials) GROUP BY kind")
        assert (kind, study_runs) == ("sweep", 1)


def test_a_stopped_study_resumes_to_the_trials_of_an_uninterrupted_one(env, tmp_path):
    straight = _sweep(env, tmp_path / "a.duckdb", trials=3)

    path = tmp_path / "b.duckdb"
    settings = _settings(3)
    with TaskStore(path) as store:
        real = pipeline_evaluator(store, env, settings)

        def stop_at_third(number, params):
            if number == 2:
                raise KeyboardInterrupt
            return real(number, params)

        with pytest.raises(KeyboardInterrupt):
            run_sweep(store, settings, search_space(False), stop_at_third)
        assert [r["number"] for r in stored_trials(store, "s")] == [0, 1]
    resumed = _sweep(env, path, trials=3)
    assert resumed.loaded == 2 and resumed.ran == 1
    assert _comparable(resumed) == _comparable(straight)
    with TaskStore(path, read_only=True) as store:
        _, [(rows, numbers)] = store.query("SELECT count(*), count(DISTINCT number) FROM trials WHERE study = 's'")
        _, runs = store.query("SELECT status FROM runs_status WHERE kind = 'sweep' ORDER BY started_at")
    assert rows == numbers == 3
    assert [s for (s,) in runs] == ["interrupted", "finished"]
    # asking for no more trials than the study has runs nothing
    again = _sweep(env, path, trials=3)
    assert again.ran == 0 and _comparable(again) == _comparable(straight)


def test_a_trial_killed_midway_resumes_its_own_generation_run(env, tmp_path, monkeypatch):
    from trajectory2task.programs.generation.pipeline import GenerationPipeline

    path = tmp_path / "kill.duckdb"
    original = GenerationPipeline.agenerate_item
    calls = {"n": 0}

    async def dies_on_second_item(self, run_id, index):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return await original(self, run_id, index)

    monkeypatch.setattr(GenerationPipeline, "agenerate_item", dies_on_second_item)
    with pytest.raises(KeyboardInterrupt):
        _sweep(env, path, trials=1)
    monkeypatch.setattr(GenerationPipeline, "agenerate_item", original)
    report = _sweep(env, path, trials=1)
    run_id = report.trials[0]["user_attrs"]["run_id"]
    with TaskStore(path, read_only=True) as store:
        _, [(events, indexes)] = store.query(
            "SELECT count(*), count(DISTINCT details->>'index') FROM run_events WHERE run_id = ? AND status = 'item'",
            [run_id])
        _, statuses = store.query("SELECT status FROM run_events WHERE run_id = ? AND status <> 'item' "
                                  "ORDER BY created_at", [run_id])
    assert events == indexes == 3
    assert [s for (s,) in statuses] == ["started", "interrupted", "resumed", "finished"]


def test_a_failing_trial_is_recorded_and_the_study_goes_on(env, tmp_path):
    def flaky(number, params):
        if number == 0:
            raise RuntimeError("boom")
        return TrialOutcome(run_id=f"r{number}", items=1, tasks=2, verified=1, cost=4.0, cost_unit="lm_calls")

    report = _sweep(env, tmp_path / "f.duckdb", trials=2, evaluate=flaky)
    assert [t["state"] for t in report.trials] == ["FAIL", "COMPLETE"]
    assert report.trials[0]["user_attrs"]["error"] == "RuntimeError: boom"
    assert report.best["number"] == 1 and report.best["value"] == 0.25


def test_knob_queries_show_which_knobs_mattered(env, tmp_path):
    path = tmp_path / "k.duckdb"
    report = _sweep(env, path, trials=3)
    with TaskStore(path, read_only=True) as store:
        _, levels = store.query(KNOB_LEVELS_SQL.replace("'sweep'", "'s'"))
        _, effects = store.query(KNOB_EFFECTS_SQL.replace("'sweep'", "'s'"))
    steps = {level: mean for knob, level, _, mean, _ in levels if knob == "explore_max_steps"}
    expected: dict[str, list[float]] = {}
    for t in report.trials:
        expected.setdefault(str(t["params"]["explore_max_steps"]), []).append(t["value"])
    assert steps == {k: pytest.approx(round(sum(v) / len(v), 4)) for k, v in expected.items()}
    assert {knob for knob, *_ in effects} == set(search_space(False))
    assert set(report.importances) <= set(search_space(False))


def test_offline_cost_counts_proposals_writes_and_adaptations():
    items = [GenerationItem(index=0, seed=0, status="done", general_task_id="g", proposals=7,
                            tasks={"general": "g", "ambiguous": "a"}, rejected={"changing": "no_candidates"}),
             GenerationItem(index=1, seed=1, status="failed", stage="explore", reason="no_trajectory", proposals=5)]
    assert offline_cost(items) == 7 + 1 + 2 + 5


def test_condition_mix_never_empty():
    assert conditions_of({"mix_general": False, "mix_ambiguous": True, "mix_changing": False,
                          "mix_infeasible": True}) == ["ambiguous", "infeasible"]
    assert conditions_of({f"mix_{c}": False for c in ("general", "ambiguous", "changing", "infeasible")}) == ["general"]


def test_lm_temperatures_are_knobs_only_with_an_lm():
    assert not any(k.startswith("temperature") for k in search_space(with_lm=False))
    assert {"temperature_explorer", "temperature_writer", "temperature_adapter"} <= set(search_space(with_lm=True))


def test_sweep_command_runs_and_resumes(tmp_path):
    from typer.testing import CliRunner

    from trajectory2task.cli import app

    store = str(tmp_path / "cli.duckdb")
    args = ["sweep", "--n", "2", "--users", str(USERS), "--study", "cli", "--store", store, "--json"]
    first = CliRunner().invoke(app, [*args, "--trials", "1"])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(app, [*args, "--trials", "2"])
    assert second.exit_code == 0, second.output
    report = json.loads(second.stdout.strip().splitlines()[-1])
    assert report["loaded"] == 1 and report["ran"] == 1
    assert [t["number"] for t in report["trials"]] == [0, 1]


def test_with_an_lm_temperatures_reach_the_requests_and_cost_counts_lm_calls(env, tmp_path):
    from trajectory2task.programs.lm.config import load_lm_config
    from tests.llm_server import ScriptedLLMServer

    settings = _settings(1, study="lm", n=1)
    with ScriptedLLMServer() as server, TaskStore(tmp_path / "lm.duckdb") as store:
        config = load_lm_config(flags={"lm": "openai/t2t-test", "api_base": server.base_url}, environ={})
        evaluate = pipeline_evaluator(store, env, settings, config)
        report = run_sweep(store, settings, search_space(with_lm=True), evaluate)
        trial = report.trials[0]
        sent = [body.get("temperature") for body in server.requests]
    assert trial["state"] == "COMPLETE"
    assert trial["user_attrs"]["cost_unit"] == "lm_calls"
    # the default responder's answers never parse as tool calls: the item fails, its calls still cost
    assert trial["user_attrs"]["cost"] == len(server.requests) > 0 and trial["value"] == 0.0
    assert sent and all(t == pytest.approx(trial["params"]["temperature_explorer"]) for t in sent)
