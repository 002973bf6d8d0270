"""Our airline rules against tau2's, where code can compare them (docs/domains.md lists the rest).

tau2's policy text (read from ../shared, skipped where absent) and ours
(``domains/airline/policy.md``) must state the same numbers as the constants the tools, rules and
generator use: free bags per membership and cabin, the extra-bag and insurance prices, the
passenger and payment limits, the compensation per passenger, the clock and the cancellation
window. Each rule's behaviour at those numbers is checked on the rules themselves; the rule we
keep beyond tau2's (cancelling twice) never reaches a task.
"""

from __future__ import annotations

import re
from datetime import timedelta
from itertools import product

import pytest

import trajectory2task as t2t
from tests.airline_ref import AIRLINE_DIR
from tests.test_airline_rules import ANN, _bags, _fired, env  # noqa: F401  (env: the rules' hand-made database)
from trajectory2task.domains import get_domain
from trajectory2task.domains.airline.constants import (
    BOOKING_PAYMENT_LIMITS,
    COMPENSATION_CANCELLED_PER_PASSENGER,
    COMPENSATION_DELAYED_PER_PASSENGER,
    CURRENT_TIME,
    FREE_BAGS,
    INSURANCE_PER_PASSENGER,
    MAX_PASSENGERS,
    NOW,
    PRICE_PER_EXTRA_BAG,
)
from trajectory2task.domains.airline.models import Reservation, User
from trajectory2task.domains.airline.rules import booked_within_24h, compensation_eligible
from trajectory2task.domains.audit_checks import writes_with_state

WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
CABINS = ("basic economy", "economy", "business")


def _tau2() -> str:
    path = AIRLINE_DIR / "policy.md"
    if not path.is_file():
        pytest.skip(f"tau2 airline policy not found at {path}")
    return " ".join(path.read_text().split())


def _ours(lines: bool = False) -> str:
    policy = get_domain("airline").policy
    return policy if lines else " ".join(policy.split())


def _number(pattern: str, text: str) -> int:
    found = re.search(pattern, text, re.IGNORECASE | re.DOTALL)
    assert found, pattern
    value = found.group(1)
    return WORDS[value.lower()] if value.lower() in WORDS else int(value)


def test_free_bags_per_membership_and_cabin():
    tau2 = {}
    for level, block in re.findall(r"booking user is an? (\w+) member:(.*?)(?=- If the booking user|Each extra)",
                                   _tau2()):
        for count, cabin in re.findall(r"(\d+) free checked bags? for each (basic economy|economy|business)",
                                       block):
            tau2[(level, cabin.replace(" ", "_"))] = int(count)
    ours = {}
    row = r"^\s*\| (regular|silver|gold) \| (\d) \| (\d) \| (\d) \|"
    for level, *counts in re.findall(row, _ours(lines=True), re.MULTILINE):
        ours |= {(level, cabin.replace(" ", "_")): int(n) for cabin, n in zip(CABINS, counts)}
    code = {(level, cabin): n for level, cabins in FREE_BAGS.items() for cabin, n in cabins.items()}
    assert len(code) == 9 and tau2 == code and ours == code


def test_prices_limits_and_compensation_amounts():
    tau2, ours = _tau2(), _ours()
    assert _number(r"extra baggage is (\d+) dollars", tau2) == _number(r"beyond the free ones costs (\d+) dollars",
                                                                       ours) == PRICE_PER_EXTRA_BAG
    assert _number(r"insurance is (\d+) dollars per passenger", tau2) == _number(
        r"insurance:\*\* .*?(\d+) dollars per passenger", ours) == INSURANCE_PER_PASSENGER
    assert _number(r"at most (\w+) passengers", tau2) == _number(r"no more than (\w+)\.", ours) == MAX_PASSENGERS
    for source, words in (("certificate", "travel certificate"), ("credit_card", "credit card"),
                          ("gift_card", "gift cards?")):
        assert _number(rf"at most (\w+) {words}", tau2) == _number(rf"at most (\w+) {words}", ours) == \
            BOOKING_PAYMENT_LIMITS[source]
    assert _number(r"cancelled flights.*?\$(\d+) times the number of passengers", tau2) == _number(
        r"cancelled flight: a certificate of (\d+) dollars per passenger", ours) == COMPENSATION_CANCELLED_PER_PASSENGER
    assert _number(r"delayed flights.*?\$(\d+) times the number of passengers", tau2) == _number(
        r"delayed flight.*?certificate of (\d+) dollars per passenger", ours) == COMPENSATION_DELAYED_PER_PASSENGER


def test_clock_and_cancellation_window():
    tau2, ours = _tau2(), _ours()
    clock = re.search(r"current time is (\d{4}-\d\d-\d\d) (\d\d:\d\d):00 EST", tau2)
    assert clock and CURRENT_TIME == f"{clock[1]}T{clock[2]}:00"
    assert f"{clock[2]} EST on {clock[1]}" in ours
    hours = _number(r"within the last (\d+) hrs", tau2)
    assert _number(r"made within the last (\d+) hours", ours) == hours == 24

    def booked(ago: timedelta) -> Reservation:
        return Reservation.model_validate({
            "reservation_id": "X", "user_id": "u", "origin": "JFK", "destination": "LAX", "flight_type": "one_way",
            "cabin": "economy", "flights": [], "passengers": [], "payment_history": [],
            "created_at": (NOW - ago).isoformat(), "total_baggages": 0, "nonfree_baggages": 0, "insurance": "no"})

    assert booked_within_24h(booked(timedelta(hours=hours)))
    assert not booked_within_24h(booked(timedelta(hours=hours, minutes=1)))


def test_compensation_eligibility_is_taus_three_grounds():
    # tau2: silver or gold, or insured, or business; a regular member uninsured in (basic) economy gets none
    assert "silver/gold member or has travel insurance or flies business" in _tau2()
    for membership, insurance, cabin in product(("regular", "silver", "gold"), ("yes", "no"),
                                                ("basic_economy", "economy", "business")):
        owner = User.model_construct(membership=membership)
        booking = Reservation.model_construct(insurance=insurance, cabin=cabin)
        expected = membership != "regular" or insurance == "yes" or cabin == "business"
        assert compensation_eligible(owner, booking) == expected, (membership, insurance, cabin)


def test_bags_only_added_is_about_bags_not_the_paid_count(env):  # noqa: F811
    # tau2 forbids removing bags; the paid count follows from the allowance (bags_per_allowance)
    episode = env.episode()
    assert not episode.call("update_reservation_baggages", _bags("ECO001", 2, 1)).error  # 2 bags, 1 paid
    fewer_paid = ("update_reservation_baggages", _bags("ECO001", 2, 0))
    assert "bags_only_added" not in _fired(env, episode, ANN, fewer_paid)
    assert "bags_per_allowance" in _fired(env, episode, ANN, fewer_paid)  # 1 free bag: 1 of 2 is paid
    assert "bags_only_added" in _fired(env, episode, ANN, ("update_reservation_baggages", _bags("ECO001", 1, 0)))
    assert _fired(env, episode, ANN, ("update_reservation_baggages", _bags("ECO001", 3, 2))) == []


def test_no_task_made_on_taus_database_rests_on_the_rule_we_add():
    """Cancelling an already cancelled reservation: tau2's policy says nothing (its tool refunds
    again); we refuse it, so no task may ask for it, as gold, reading or forbidden write."""
    if not (AIRLINE_DIR / "db.json").is_file():
        pytest.skip(f"tau2 airline reference data not found at {AIRLINE_DIR}")
    db = str(AIRLINE_DIR / "db.json")
    result = t2t.generate("airline", n=40, seed=17, db=db)
    spec = get_domain("airline")
    environment = spec.environment(spec.load_db(db))
    cancels = 0
    for task in result.tasks:
        for where, before, action in writes_with_state(environment, task):
            if action.name != "cancel_reservation":
                continue
            cancels += 1
            booking = before.record("reservations", str(action.arguments.get("reservation_id")))
            assert booking is None or booking.get("status") != "cancelled", (task.id, where, action)
    assert cancels >= 10
