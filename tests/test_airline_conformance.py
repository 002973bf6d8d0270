"""Airline conformance: the gold actions of tau2's 50 airline tasks change exactly what tau2's own code changes."""

from __future__ import annotations

import json

import pytest

from tests.airline_ref import UNCHANGED_END_STATE, close, expected, raw_tasks, require_airline
from tests.cli import run_t2t


@pytest.fixture(scope="module")
def env():
    from trajectory2task.domains import get_domain

    domain = get_domain("airline")
    return domain.environment(domain.load_db(str(require_airline() / "db.json")))


def test_db_json_loads_unchanged(env):
    raw = json.loads((require_airline() / "db.json").read_text())
    assert {t: len(v) for t, v in raw.items()} == {"flights": 300, "users": 500, "reservations": 2000}
    for table, records in raw.items():
        for key, record in records.items():
            dumped = env.episode().record(table, key)
            if table == "reservations":
                assert dumped.pop("status") is None  # optional in the file, None in the model (as in tau2)
            assert close(dumped, record), (table, key)


def test_gold_replay_matches_tau2_on_all_50_tasks(env):
    tasks = raw_tasks()
    assert len(tasks) == 50
    mismatches = []
    for raw in tasks:
        want = expected()[raw["id"]]
        episode = env.episode()
        failing = [a["action_id"] for a in raw["evaluation_criteria"]["actions"]
                   if episode.call(a["name"], a["arguments"]).error]
        if failing != [e["action_id"] for e in want["errors"]]:
            mismatches.append((raw["id"], "failing actions", failing))
        want_changed = {table: sorted(records) for table, records in want["changed"].items() if records}
        if episode.changed() != want_changed:
            mismatches.append((raw["id"], "changed ids", episode.changed(), want_changed))
            continue
        for table, records in want["changed"].items():
            for key, record in records.items():
                if not close(episode.record(table, key), record):
                    mismatches.append((raw["id"], f"{table}/{key}", episode.record(table, key), record))
    assert mismatches == []


def test_gold_end_states_stay_consistent(env):
    problems = {}
    for raw in raw_tasks():
        episode = env.episode()
        for action in raw["evaluation_criteria"]["actions"]:
            episode.call(action["name"], action["arguments"])
        if episode.changed():
            found = env.domain.check_db(episode.to_db())
            if found:
                problems[raw["id"]] = found
    assert problems == {}


def test_24_tasks_end_where_they_start(env):
    unchanged = []
    for raw in raw_tasks():
        episode = env.episode()
        for action in raw["evaluation_criteria"]["actions"]:
            episode.call(action["name"], action["arguments"])
        if episode.state_hash() == env.initial_hash():
            unchanged.append(raw["id"])
    assert unchanged == UNCHANGED_END_STATE


def test_verify_flags_the_noop_tasks_and_no_invalid_gold():
    ref = require_airline()
    result = run_t2t("verify", "--domain", "airline", "--db", str(ref / "db.json"), str(ref / "tasks.json"), "--json")
    assert result.returncode == 0, result.stderr
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(verdicts) == 50
    assert [v["task_id"] for v in verdicts if "invalid_gold" in v["reasons"]] == []
    noop = [v["task_id"] for v in verdicts if "noop_passes" in v["reasons"]]
    # Every task gates on COMMUNICATE too: task 3 leaves the database as it was but expects the
    # agent to say '4', so a silent agent fails it. The other 23 unchanged tasks pass doing nothing.
    assert next(t for t in raw_tasks() if t["id"] == "3")["evaluation_criteria"]["communicate_info"] == ["4"]
    assert noop == [t for t in UNCHANGED_END_STATE if t != "3"]
    failing = {v["task_id"]: v["reasons"] for v in verdicts if not v["pass"]}
    assert set(failing) == set(noop)


def test_replay_command_reports_no_failing_gold_action():
    ref = require_airline()
    result = run_t2t("replay", "--domain", "airline", "--db", str(ref / "db.json"), str(ref / "tasks.json"), "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 50 and all(r["errors"] == [] for r in rows)
    assert {r["task_id"]: r["changed"] for r in rows} == {
        t: {table: sorted(ids) for table, ids in e["changed"].items() if ids} for t, e in expected().items()}
