"""Coherence classes of `t2t audit` (programs/verification/coherence.py), on tasks built by hand
over tau2's airline database: each class is found where a grader would object and not in
tau2's own tasks, whose repeated writes the policy needs."""

from __future__ import annotations

import copy
import json

import pytest

from tests.airline_ref import raw_tasks, require_airline
from tests.cli import run_t2t


@pytest.fixture(scope="module")
def airline_env():
    from trajectory2task.domains import get_domain

    domain = get_domain("airline")
    return domain.environment(domain.load_db(str(require_airline() / "db.json")))


def _task(raw: dict, actions: list[dict] | None = None, communicate: list[str] | None = None, reason: str | None = None):
    from trajectory2task.store.tau2 import task_from_tau2

    raw = copy.deepcopy(raw)
    if actions is not None:
        raw["evaluation_criteria"]["actions"] = actions
    if communicate is not None:
        raw["evaluation_criteria"]["communicate_info"] = communicate
    if reason is not None:
        raw["user_scenario"]["instructions"]["reason_for_call"] = reason
    return task_from_tau2(raw, "airline")


def _by_id(task_id: str) -> dict:
    return next(t for t in raw_tasks() if t["id"] == task_id)


def _classes(env, task) -> list[str]:
    from trajectory2task.programs.verification.coherence import coherence_findings

    return sorted(f.cls for f in coherence_findings(env, task))


def _action(name: str, **arguments) -> dict:
    return {"action_id": name, "name": name, "arguments": arguments}


def test_tau2s_own_tasks_have_no_coherence_finding(airline_env):
    # task 7 upgrades then cancels and task 32 upgrades then changes flights: the policy needs the first write
    from trajectory2task.store.tau2 import task_from_tau2

    for raw in raw_tasks():
        assert _classes(airline_env, task_from_tau2(raw, "airline")) == [], raw["id"]


def test_a_write_a_later_write_overwrites_without_needing_it_is_pointless(airline_env):
    # bags on an economy reservation twice: the second sets the total the first set, and runs without it
    def bags(total: int) -> dict:  # one free bag (regular member, economy, one passenger)
        return _action("update_reservation_baggages", reservation_id="4NQCM5", total_baggages=total,
                       nonfree_baggages=total - 1, payment_id="gift_card_2698099")

    lookup = [_action("get_user_details", user_id="raj_garcia_4690")]
    raw = _by_id("8")
    assert _classes(airline_env, _task(raw, lookup + [bags(1)])) == []
    assert _classes(airline_env, _task(raw, lookup + [bags(1), bags(2)])) == ["pointless_write"]


def test_a_booking_the_gold_then_cancels_is_pointless(airline_env):
    raw = _by_id("8")
    book = next(a for a in raw["evaluation_criteria"]["actions"] if a["name"] == "book_reservation")
    booked = airline_env.episode().call(book["name"], book["arguments"])
    new_id = json.loads(booked.output)["reservation_id"]
    task = _task(raw, [book, _action("cancel_reservation", reservation_id=new_id)])
    assert "pointless_write" in _classes(airline_env, task)


def test_a_passenger_listed_twice_is_a_repeated_entity(airline_env):
    raw = _by_id("8")
    book = copy.deepcopy(next(a for a in raw["evaluation_criteria"]["actions"] if a["name"] == "book_reservation"))
    book["arguments"]["passengers"].append(dict(book["arguments"]["passengers"][0]))
    assert "repeated_entity" in _classes(airline_env, _task(raw, [book]))


def test_an_amount_to_tell_that_the_user_is_told_and_a_template_plural(airline_env):
    raw = _by_id("8")
    told = _task(raw, communicate=["348"], reason="Book the flight; ask the agent the price: it costs $348 in all.")
    assert _classes(airline_env, told) == ["told_amount"]
    seam = _task(raw, reason="Book the flight with 1 checked bag(s).")
    assert _classes(airline_env, seam) == ["plural_seam"]
    # "1,200.50" in the text and "1200.5" to tell are the same amount
    assert _classes(airline_env, _task(raw, communicate=["1200.5"], reason="Ask the total; it was 1,200.50 dollars.")
                    ) == ["told_amount"]
    # a date's digits are not an amount of 17
    assert _classes(airline_env, _task(raw, communicate=["17"], reason="Fly on 2024-05-17; ask the price.")) == []


def test_audit_prints_a_row_for_every_class_even_with_no_finding():
    from trajectory2task.programs.verification.audit import PROBLEMS

    directory = require_airline()
    result = run_t2t("audit", str(directory / "tasks.json"), "--domain", "airline", "--db",
                     str(directory / "db.json"), "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)["counts"]
    assert list(counts) == list(PROBLEMS)
    assert all(counts[c] == 0 for c in ("pointless_write", "repeated_entity", "told_amount", "plural_seam"))


def test_generated_airline_tasks_make_no_write_that_a_later_one_makes_pointless(tmp_path):
    # read from the raw exported JSON and the raw database file, with no code of the generator's
    db, store, out = tmp_path / "db.json", tmp_path / "t2t.duckdb", tmp_path / "tasks.json"
    assert run_t2t("domain", "generate-db", "airline", "--seed", "3", "--users", "300", "--out", str(db)).returncode == 0
    made = run_t2t("generate", "--domain", "airline", "--db", str(db), "--n", "30", "--store", str(store), timeout=600)
    assert made.returncode == 0, made.stderr
    assert run_t2t("export", "--format", "tau2", "--where", "verified", "--store", str(store),
                   "--out", str(out)).returncode == 0
    existing = set(json.loads(db.read_text())["reservations"])
    tasks = json.loads(out.read_text())
    assert len(tasks) >= 60
    for task in tasks:
        writes = [a for a in task["evaluation_criteria"]["actions"]
                  if a["name"].split("_")[0] in ("book", "cancel", "update", "send")]
        seen: set[tuple[str, str]] = set()
        for action in writes:
            reservation = action["arguments"].get("reservation_id")
            if reservation is None:
                continue
            key = (action["name"], reservation)
            assert key not in seen, f"{task['id']}: {action['name']} twice on {reservation}"
            seen.add(key)
            if action["name"] == "cancel_reservation":
                assert reservation in existing, f"{task['id']}: cancels {reservation}, which the task itself booked"


def _claims(reservation: str, user: str, origin: str) -> list[dict]:
    says = f"your trip from {origin}"
    return [{"table": "reservations", "key": reservation, "path": ["origin"], "op": "eq", "value": origin, "says": says},
            {"table": "reservations", "key": reservation, "path": ["user_id"], "op": "eq", "value": user,
             "says": says}]


def test_words_that_fit_two_records_are_found_and_words_that_fit_one_are_not(airline_env):
    from trajectory2task.domains.kit import Claim

    task = _task(_by_id("8"))
    two = task.model_copy(update={"claims": [Claim(**c) for c in _claims("PGAGLM", "isabella_muller_2311", "LAX")]})
    assert _classes(airline_env, two) == ["words_fit_several"]  # she has two trips from LAX
    one = task.model_copy(update={"claims": [Claim(**c) for c in _claims("4WQ150", "chen_jackson_3290", "DFW")]})
    assert _classes(airline_env, one) == []
    # ambiguous tasks are meant to fit several
    assert _classes(airline_env, two.model_copy(update={"condition": "ambiguous"})) == []


def test_a_gold_write_that_breaks_a_policy_rule_and_more_values_than_questions(airline_env):
    lookup = [_action("get_user_details", user_id="raj_garcia_4690")]
    wrong_fee = _action("update_reservation_baggages", reservation_id="4NQCM5", total_baggages=2, nonfree_baggages=0,
                        payment_id="gift_card_2698099")  # one of the two bags is not free for him
    assert _classes(airline_env, _task(_by_id("8"), lookup + [wrong_fee])) == ["policy_breaking_gold"]
    asks_once = _task(_by_id("8"), communicate=["12", "34"], reason="Ask the agent how much it costs.")
    assert _classes(airline_env, asks_once) == ["questions_vs_values"]
    asks_twice = _task(_by_id("8"), communicate=["12", "34"], reason="Ask the agent how much it costs. And ask what "
                                                                     "the refund is.")
    assert _classes(airline_env, asks_twice) == []
