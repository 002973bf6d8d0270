"""Airline policy rules: each one fires on a call that breaks it and stays quiet on one the policy allows."""

from __future__ import annotations

from typing import Any

import pytest

from trajectory2task.domains import get_domain
from trajectory2task.domains.runtime import PolicyContext

ANN, BOB = "ann_lee_1000", "bob_kim_2000"


def _available(**extra: Any) -> dict[str, Any]:
    return {"status": "available", "available_seats": {"basic_economy": 9, "economy": 9, "business": 9},
            "prices": {"basic_economy": 60, "economy": 120, "business": 300}, **extra}


def _flight(number: str, origin: str, destination: str, dates: dict[str, Any]) -> dict[str, Any]:
    return {"flight_number": number, "origin": origin, "destination": destination,
            "scheduled_departure_time_est": "08:00:00", "scheduled_arrival_time_est": "11:00:00", "dates": dates}


LANDED = {"status": "landed", "actual_departure_time_est": "2024-05-10T08:00:00",
          "actual_arrival_time_est": "2024-05-10T11:00:00"}
DELAYED = {"status": "delayed", "estimated_departure_time_est": "2024-05-15T18:00:00",
           "estimated_arrival_time_est": "2024-05-15T21:00:00"}


def _passenger(first: str = "Ann", last: str = "Lee") -> dict[str, str]:
    return {"first_name": first, "last_name": last, "dob": "1980-01-01"}


def _booking(rid: str, user: str, cabin: str, segments: list[tuple[str, str, str, str]], *, trip: str = "one_way",
             passengers: int = 1, created: str = "2024-05-01T09:00:00", insurance: str = "no",
             bags: tuple[int, int] = (1, 0), payer: str = "credit_card_1000001") -> dict[str, Any]:
    flights = [{"origin": o, "destination": d, "flight_number": n, "date": day, "price": 100}
               for n, o, d, day in segments]
    return {"reservation_id": rid, "user_id": user, "origin": segments[0][1],
            "destination": segments[0][2], "flight_type": trip, "cabin": cabin, "flights": flights,
            "passengers": [_passenger(f"P{i}") for i in range(passengers)],
            "payment_history": [{"payment_id": payer, "amount": 100 * len(flights) * passengers}],
            "created_at": created, "total_baggages": bags[0], "nonfree_baggages": bags[1], "insurance": insurance}


def _db() -> dict[str, Any]:
    ann_methods = {f"credit_card_100000{i}": {"source": "credit_card", "id": f"credit_card_100000{i}",
                                             "brand": "visa", "last_four": "1234"} for i in (1, 2)}
    ann_methods |= {f"gift_card_100000{i}": {"source": "gift_card", "id": f"gift_card_100000{i}", "amount": 500.0}
                    for i in (3, 4, 5, 6)}
    ann_methods |= {f"certificate_100000{i}": {"source": "certificate", "id": f"certificate_100000{i}",
                                              "amount": 100.0} for i in (7, 8)}
    bob_methods = {"credit_card_2000001": {"source": "credit_card", "id": "credit_card_2000001", "brand": "visa",
                                           "last_four": "9999"}}
    jfk_lax = ("HAT001", "JFK", "LAX")
    reservations = [
        _booking("ECO001", ANN, "economy", [(*jfk_lax, "2024-05-20")]),
        _booking("BAS001", ANN, "basic_economy", [(*jfk_lax, "2024-05-20")], bags=(0, 0)),
        _booking("RT0001", ANN, "economy", [(*jfk_lax, "2024-05-10"), ("HAT002", "LAX", "JFK", "2024-05-25")],
                 trip="round_trip"),
        _booking("NEW001", ANN, "economy", [(*jfk_lax, "2024-05-22")], created="2024-05-15T10:00:00"),
        _booking("BUS001", ANN, "business", [(*jfk_lax, "2024-05-20")], bags=(2, 0)),
        _booking("INS001", ANN, "economy", [(*jfk_lax, "2024-05-20")], insurance="yes"),
        _booking("CXL001", ANN, "economy", [("HAT002", "LAX", "JFK", "2024-05-12")]),
        _booking("CXL002", BOB, "economy", [("HAT002", "LAX", "JFK", "2024-05-12")], passengers=2,
                 payer="credit_card_2000001", bags=(0, 0)),
        _booking("DLY001", BOB, "economy", [("HAT003", "JFK", "SEA", "2024-05-15")], payer="credit_card_2000001",
                 bags=(0, 0)),
        _booking("BOB001", BOB, "economy", [(*jfk_lax, "2024-05-20")], payer="credit_card_2000001", bags=(0, 0)),
    ]

    def user(uid: str, first: str, last: str, membership: str, methods: dict[str, Any]) -> dict[str, Any]:
        return {"user_id": uid, "name": {"first_name": first, "last_name": last},
                "address": {"address1": "1 Main St", "address2": "", "city": "Boston", "country": "USA",
                            "state": "MA", "zip": "02101"},
                "email": f"{first.lower()}@example.com", "dob": "1980-01-01", "payment_methods": methods,
                "saved_passengers": [], "membership": membership,
                "reservations": [r["reservation_id"] for r in reservations if r["user_id"] == uid]}

    return {
        "flights": {
            "HAT001": _flight("HAT001", "JFK", "LAX", {"2024-05-10": LANDED, "2024-05-20": _available(),
                                                       "2024-05-22": _available()}),
            "HAT002": _flight("HAT002", "LAX", "JFK", {"2024-05-12": {"status": "cancelled"},
                                                       "2024-05-25": _available()}),
            "HAT003": _flight("HAT003", "JFK", "SEA", {"2024-05-15": DELAYED, "2024-05-20": _available()}),
            "HAT004": _flight("HAT004", "SEA", "LAX", {"2024-05-20": _available()}),
        },
        "users": {ANN: user(ANN, "Ann", "Lee", "regular", ann_methods),
                  BOB: user(BOB, "Bob", "Kim", "silver", bob_methods)},
        "reservations": {r["reservation_id"]: r for r in reservations},
    }


@pytest.fixture(scope="module")
def env():
    domain = get_domain("airline")
    return domain.environment(domain.db_model.model_validate(_db()))


def _book(user_id: str = ANN, passengers: int = 1, payments: list[str] | None = None,
          bags: tuple[int, int] = (0, 0), cabin: str = "economy") -> dict[str, Any]:
    """A booking on HAT001 whose payments add up: 1 from each method after the first, the rest from the first."""
    payments = payments or (["credit_card_1000001"] if user_id == ANN else ["credit_card_2000001"])
    total = 120 * passengers + 50 * bags[1]
    amounts = [total - (len(payments) - 1)] + [1] * (len(payments) - 1)
    return {"user_id": user_id, "origin": "JFK", "destination": "LAX", "flight_type": "one_way", "cabin": cabin,
            "flights": [{"flight_number": "HAT001", "date": "2024-05-20"}],
            "passengers": [_passenger(f"P{i}") for i in range(passengers)],
            "payment_methods": [{"payment_id": p, "amount": a} for p, a in zip(payments, amounts)],
            "total_baggages": bags[0], "nonfree_baggages": bags[1], "insurance": "no"}


def _flights(rid: str, cabin: str, refs: list[tuple[str, str]]) -> dict[str, Any]:
    return {"reservation_id": rid, "cabin": cabin, "payment_id": "credit_card_1000001",
            "flights": [{"flight_number": n, "date": d} for n, d in refs]}


def _bags(rid: str, total: int, paid: int) -> dict[str, Any]:
    return {"reservation_id": rid, "total_baggages": total, "nonfree_baggages": paid,
            "payment_id": "credit_card_1000001"}


CARDS = ["credit_card_1000001", "credit_card_1000002"]
GIFTS = [f"gift_card_100000{i}" for i in (3, 4, 5, 6)]
CERTS = ["certificate_1000007", "certificate_1000008"]

# rule id, user, violating call, allowed call
CASES: list[tuple[str, str, tuple[str, dict[str, Any]], tuple[str, dict[str, Any]]]] = [
    ("act_for_authenticated_user", ANN, ("cancel_reservation", {"reservation_id": "BOB001"}),
     ("cancel_reservation", {"reservation_id": "NEW001"})),
    ("act_for_authenticated_user", ANN, ("book_reservation", _book(BOB)), ("book_reservation", _book(ANN))),
    ("act_for_authenticated_user", ANN, ("send_certificate", {"user_id": BOB, "amount": 200}),
     ("get_user_details", {"user_id": BOB})),
    ("at_most_five_passengers", ANN, ("book_reservation", _book(passengers=6)),
     ("book_reservation", _book(passengers=5))),
    ("booking_payment_limits", ANN, ("book_reservation", _book(payments=CARDS)),
     ("book_reservation", _book(payments=CARDS[:1] + GIFTS[:3] + CERTS[:1]))),
    ("booking_payment_limits", ANN, ("book_reservation", _book(payments=GIFTS)),
     ("book_reservation", _book(payments=GIFTS[:3]))),
    ("booking_payment_limits", ANN, ("book_reservation", _book(payments=CARDS[:1] + CERTS)),
     ("book_reservation", _book(payments=CARDS[:1] + CERTS[:1]))),
    # a regular member's economy passenger has one free bag
    ("bags_per_allowance", ANN, ("book_reservation", _book(bags=(2, 2))), ("book_reservation", _book(bags=(2, 1)))),
    ("bags_per_allowance", ANN, ("book_reservation", _book(bags=(2, 0))), ("book_reservation", _book(bags=(1, 0)))),
    ("bags_per_allowance", ANN, ("update_reservation_baggages", _bags("ECO001", 3, 1)),
     ("update_reservation_baggages", _bags("ECO001", 3, 2))),
    ("basic_economy_flights_fixed", ANN,
     ("update_reservation_flights", _flights("BAS001", "basic_economy", [("HAT001", "2024-05-22")])),
     ("update_reservation_flights", _flights("BAS001", "economy", [("HAT001", "2024-05-20")]))),
    ("same_route_and_trip_type", ANN,
     ("update_reservation_flights", _flights("ECO001", "economy", [("HAT003", "2024-05-20")])),
     ("update_reservation_flights", _flights("ECO001", "economy", [("HAT003", "2024-05-20"),
                                                                  ("HAT004", "2024-05-20")]))),
    ("same_route_and_trip_type", ANN,
     ("update_reservation_flights", _flights("RT0001", "economy", [("HAT001", "2024-05-10")])),
     ("update_reservation_flights", _flights("RT0001", "economy", [("HAT001", "2024-05-10"),
                                                                  ("HAT002", "2024-05-25")]))),
    # keeping the flown leg in a new cabin the tool refuses itself (a landed flight cannot be booked);
    # swapping it for a bookable one it accepts
    ("no_cabin_change_after_flown", ANN,
     ("update_reservation_flights", _flights("RT0001", "business", [("HAT001", "2024-05-22"),
                                                                   ("HAT002", "2024-05-25")])),
     ("update_reservation_flights", _flights("ECO001", "business", [("HAT001", "2024-05-20")]))),
    ("bags_only_added", ANN, ("update_reservation_baggages", _bags("ECO001", 0, 0)),
     ("update_reservation_baggages", _bags("ECO001", 2, 1))),
    ("passenger_count_fixed", ANN,
     ("update_reservation_passengers", {"reservation_id": "ECO001", "passengers": [_passenger(), _passenger("Al")]}),
     ("update_reservation_passengers", {"reservation_id": "ECO001", "passengers": [_passenger("Al")]})),
    # booked two weeks ago, economy, uninsured, its flight not cancelled: no ground
    ("cancellation_allowed", ANN, ("cancel_reservation", {"reservation_id": "ECO001"}),
     ("cancel_reservation", {"reservation_id": "NEW001"})),  # booked five hours ago
    ("cancellation_allowed", ANN, ("cancel_reservation", {"reservation_id": "RT0001"}),  # first leg flown
     ("cancel_reservation", {"reservation_id": "BUS001"})),
    ("cancellation_allowed", ANN, ("cancel_reservation", {"reservation_id": "ECO001"}),
     ("cancel_reservation", {"reservation_id": "INS001"})),
    ("cancellation_allowed", ANN, ("cancel_reservation", {"reservation_id": "ECO001"}),
     ("cancel_reservation", {"reservation_id": "CXL001"})),  # the airline cancelled its flight
    # Bob is silver; CXL002 (two passengers) had its flight cancelled: 2 x 100
    ("compensation_allowed", BOB, ("send_certificate", {"user_id": BOB, "amount": 100}),
     ("send_certificate", {"user_id": BOB, "amount": 200})),
    # Ann is regular; her cancelled-flight reservation CXL001 is economy and uninsured
    ("compensation_allowed", ANN, ("send_certificate", {"user_id": ANN, "amount": 100}),
     ("get_user_details", {"user_id": ANN})),
]


def _fired(env, episode, user_id, call):
    return [v.split(":")[0] for v in env.policy_violations(episode, call[0], call[1], PolicyContext(user_id=user_id))]


@pytest.mark.parametrize("rule_id, user_id, violating, allowed", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_fires_on_violation_only(env, rule_id, user_id, violating, allowed):
    episode = env.episode()
    assert rule_id in _fired(env, episode, user_id, violating)
    assert _fired(env, episode, user_id, allowed) == []
    # the tools themselves accept the violating call: the rule is what catches it
    if violating[0] != "update_reservation_passengers":
        assert not episode.fork().call(*violating).error, violating


def test_every_rule_has_a_case(env):
    assert {c[0] for c in CASES} == {r.rule_id for r in env.domain.policy_rules}


def test_cancelling_twice_breaks_the_cancellation_rule(env):
    episode = env.episode()
    assert _fired(env, episode, ANN, ("cancel_reservation", {"reservation_id": "NEW001"})) == []
    assert not episode.call("cancel_reservation", {"reservation_id": "NEW001"}).error
    assert _fired(env, episode, ANN, ("cancel_reservation", {"reservation_id": "NEW001"})) == ["cancellation_allowed"]


def test_delay_compensation_only_after_the_reservation_is_changed(env):
    episode = env.episode()
    call = ("send_certificate", {"user_id": BOB, "amount": 50})  # DLY001: one passenger, flight delayed
    assert _fired(env, episode, BOB, call) == ["compensation_allowed"]
    assert not episode.call("cancel_reservation", {"reservation_id": "DLY001"}).error
    assert _fired(env, episode, BOB, call) == []


def test_without_an_authenticated_user_no_ownership_violation(env):
    assert _fired(env, env.episode(), None, ("cancel_reservation", {"reservation_id": "NEW001"})) == []


def test_malformed_arguments_do_not_crash_rules(env):
    episode = env.episode()
    for name in env.tools:
        for arguments in ({}, {"reservation_id": 7, "flights": "x", "passengers": None, "user_id": [],
                               "payment_methods": [1, None], "total_baggages": "2", "amount": "x"}):
            env.policy_violations(episode, name, arguments, PolicyContext(user_id=ANN))


def test_insurance_cannot_be_added_after_booking(env):
    # No tool but booking takes insurance, so the rule needs no code check: there is no call to catch.
    with_insurance = [name for name, spec in env.tools.items() if "insurance" in spec.parameters["properties"]]
    assert with_insurance == ["book_reservation"]
