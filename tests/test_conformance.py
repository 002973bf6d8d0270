"""Retail conformance: gold actions of all 114 tau2 tasks fail and change exactly as tau2's own code."""

from __future__ import annotations

from typing import Any


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-6
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def test_gold_replay_matches_tau2_on_all_114_tasks(tau2_env, tau2_tasks_raw, tau2_expected):
    assert len(tau2_tasks_raw) == 114
    mismatches = []
    for raw in tau2_tasks_raw:
        expected = tau2_expected[raw["id"]]
        episode = tau2_env.episode()
        failing = []
        for action in raw["evaluation_criteria"]["actions"]:
            result = episode.call(action["name"], action["arguments"])
            if result.error:
                failing.append({"action_id": action["action_id"], "error": result.error_message})
        if [f["action_id"] for f in failing] != [e["action_id"] for e in expected["errors"]]:
            mismatches.append((raw["id"], "failing actions", failing, expected["errors"]))
        want_changed = {table: sorted(records) for table, records in expected["changed"].items() if records}
        if episode.changed() != want_changed:
            mismatches.append((raw["id"], "changed ids", episode.changed(), want_changed))
            continue
        for table, records in expected["changed"].items():
            for key, record in records.items():
                if not _close(episode.record(table, key), record):
                    mismatches.append((raw["id"], f"record {table}/{key}", episode.record(table, key), record))
    assert mismatches == []


def test_error_messages_match_tau2(tau2_env, tau2_tasks_raw, tau2_expected):
    for raw in tau2_tasks_raw:
        episode = tau2_env.episode()
        messages = [episode.call(a["name"], a["arguments"]).error_message
                    for a in raw["evaluation_criteria"]["actions"]]
        assert [m for m in messages if m] == [e["error"] for e in tau2_expected[raw["id"]]["errors"]], raw["id"]

