"""Closed loop on airline: bench calibration on tau2's 50 tasks and on tasks over a generated database; SFT export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.airline_ref import UNCHANGED_END_STATE, raw_tasks, require_airline
from tests.cli import run_t2t

NOOP_PASSES = [t for t in UNCHANGED_END_STATE if t != "3"]  # task 3 also wants '4' said (COMMUNICATE)


def _bench(tmp_path: Path, tasks: Path, db: Path) -> tuple[list[dict], dict, int]:
    result = run_t2t("bench", "--domain", "airline", "--tasks", str(tasks), "--db", str(db),
                     "--store", str(tmp_path / "s.duckdb"), "--json", timeout=300)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return lines[:-1], lines[-1], result.returncode


@pytest.fixture(scope="module")
def tau2_bench(tmp_path_factory):
    ref = require_airline()
    tmp = tmp_path_factory.mktemp("airline_bench")
    cells, summary, code = _bench(tmp, ref / "tasks.json", ref / "db.json")
    return tmp, cells, summary, code


def test_do_nothing_passes_exactly_the_noop_tasks_and_the_oracle_all(tau2_bench):
    _, cells, summary, code = tau2_bench
    assert code == 0  # the noop tasks do not verify, so they are reported, not a calibration breach
    by_agent = {c["agent_model"]: c for c in cells if c["condition"] == "all"}
    assert by_agent["oracle"]["passed"] == 50 and by_agent["oracle"]["tasks"] == 50
    assert by_agent["do-nothing"]["passed"] == len(NOOP_PASSES) == 23
    reported = summary["calibration"]
    assert sorted(p["task_id"] for p in reported) == sorted(NOOP_PASSES)
    assert all(p["agent"] == "do-nothing" and p["verify_reasons"] == ["noop_passes"] for p in reported)
    assert summary["crashed"] == []


def test_sft_export_of_airline_rollouts(tau2_bench):
    tmp, _, _, _ = tau2_bench
    out = tmp / "sft.jsonl"
    result = run_t2t("export", "--format", "sft", "--model", "oracle", "--out", str(out), "--store",
                     str(tmp / "s.duckdb"))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 50
    for row in rows:
        tools = {t["function"]["name"] for t in row["tools"]}
        assert len(tools) == 14 and "book_reservation" in tools
        messages = row["messages"]
        assert messages[0]["role"] == "system" and "Airline service desk" in messages[0]["content"]
        calls = [c for m in messages if m["role"] == "assistant" for c in m.get("tool_calls") or []]
        answered = {m["tool_call_id"] for m in messages if m["role"] == "tool"}
        assert {c["id"] for c in calls} == answered
        assert all(c["function"]["name"] in tools and isinstance(json.loads(c["function"]["arguments"]), dict)
                   for c in calls)
    all_calls = [c for row in rows for m in row["messages"] for c in m.get("tool_calls") or []]
    assert len(all_calls) == sum(len(t["evaluation_criteria"]["actions"]) for t in raw_tasks())  # the oracle replays gold
    book = [json.loads(c["function"]["arguments"]) for row in rows for m in row["messages"]
            for c in m.get("tool_calls") or [] if c["function"]["name"] == "book_reservation"]
    assert book and all(isinstance(b["flights"], list) and b["payment_methods"] for b in book)


def _tau2_task(task_id: str, actions: list[tuple[str, dict]], user_id: str) -> dict:
    return {"id": task_id, "description": {"purpose": "airline bench test", "relevant_policies": None, "notes": None},
            "user_scenario": {"persona": None, "instructions": {
                "task_instructions": "Follow the agent's lead.", "domain": "airline",
                "reason_for_call": "You want help with your trip.", "known_info": f"Your user id is {user_id}.",
                "unknown_info": None}},
            "initial_state": None,
            "evaluation_criteria": {"actions": [{"action_id": f"{task_id}_{i}", "name": n, "arguments": a, "info": None}
                                                for i, (n, a) in enumerate(actions)],
                                    "communicate_info": [], "nl_assertions": None, "reward_basis": ["DB"]}}


def test_bench_calibrates_on_tasks_over_a_generated_database(tmp_path):
    from trajectory2task.domains.airline.generate import dump_db, generate_airline_db

    db = generate_airline_db(5, 20)
    db_path = tmp_path / "db.json"
    db_path.write_text(dump_db(db))
    booking = next(r for r in db.reservations.values() if r.status is None)
    rid, uid = booking.reservation_id, booking.user_id
    passengers = [p.model_dump() for p in booking.passengers]
    passengers[0]["first_name"] = "Changed"
    tasks = [
        _tau2_task("cancel", [("get_user_details", {"user_id": uid}), ("cancel_reservation", {"reservation_id": rid})],
                   uid),
        _tau2_task("rename", [("get_reservation_details", {"reservation_id": rid}),
                              ("update_reservation_passengers", {"reservation_id": rid, "passengers": passengers})],
                   uid),
        _tau2_task("certificate", [("send_certificate", {"user_id": uid, "amount": 100})], uid),
    ]
    tasks_path = tmp_path / "tasks.json"
    tasks_path.write_text(json.dumps(tasks))
    cells, summary, code = _bench(tmp_path, tasks_path, db_path)
    assert code == 0 and summary["calibration"] == []
    by_agent = {c["agent_model"]: c for c in cells if c["condition"] == "all"}
    assert by_agent["oracle"]["passed"] == 3 and by_agent["do-nothing"]["passed"] == 0
