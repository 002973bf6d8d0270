"""The seeded airline generator and the consistency check (on tau2's database, generated ones, planted faults)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import pytest

from trajectory2task.domains.airline.consistency import check_airline_db
from trajectory2task.domains.airline.constants import FREE_BAGS, NEW_RESERVATION_IDS, TODAY
from trajectory2task.domains.airline.generate import dump_db, generate_airline_db
from trajectory2task.domains.airline.models import AirlineDB, Available, Certificate, GiftCard, Landed
from tests.airline_ref import require_airline
from tests.cli import run_t2t


@pytest.fixture(scope="module")
def db() -> AirlineDB:
    return generate_airline_db(7, 120)


def test_same_seed_same_bytes_other_seed_other_bytes():
    assert dump_db(generate_airline_db(3, 20)) == dump_db(generate_airline_db(3, 20))
    assert dump_db(generate_airline_db(3, 20)) != dump_db(generate_airline_db(4, 20))


@pytest.mark.parametrize("seed, users", [(0, 1), (1, 25), (7, 120)])
def test_generated_db_validates_and_is_consistent(seed, users):
    db = generate_airline_db(seed, users)
    assert check_airline_db(AirlineDB.model_validate_json(dump_db(db))) == []
    assert len(db.users) == users


def test_check_passes_on_tau2_db():
    ref = require_airline()
    assert check_airline_db(AirlineDB.model_validate_json((ref / "db.json").read_bytes())) == []


def test_shape_resembles_the_reference(db):
    assert len(db.flights) == 300
    routes = Counter((f.origin, f.destination) for f in db.flights.values())
    assert all(routes[(b, a)] for a, b in routes)  # every route is flown both ways
    assert any(f.scheduled_arrival_time_est.endswith("+1") for f in db.flights.values())
    by_time: dict[str, Counter[str]] = {"past": Counter(), "today": Counter(), "future": Counter()}
    for flight in db.flights.values():
        assert len(flight.dates) == 30
        for day, status in flight.dates.items():
            by_time["past" if day < TODAY else "today" if day == TODAY else "future"][status.status] += 1
    assert set(by_time["past"]) == {"landed", "cancelled"}
    assert set(by_time["today"]) == {"landed", "flying", "on time", "delayed"}
    assert set(by_time["future"]) == {"available"}
    assert 3 <= len(db.reservations) / len(db.users) <= 5
    kinds = Counter((r.flight_type, len(r.flights)) for r in db.reservations.values())
    assert set(kinds) == {("one_way", 1), ("one_way", 2), ("round_trip", 2), ("round_trip", 4)}
    assert {r.cabin for r in db.reservations.values()} == {"basic_economy", "economy", "business"}
    assert {r.insurance for r in db.reservations.values()} == {"yes", "no"}
    assert {u.membership for u in db.users.values()} == {"regular", "silver", "gold"}
    assert max(len(r.passengers) for r in db.reservations.values()) <= 5
    assert any(r.created_at >= "2024-05-14T15:00:00" for r in db.reservations.values())  # some within 24 hours
    statuses = {f.dates[s.date].status for r in db.reservations.values() for s in r.flights
                for f in [db.flights[s.flight_number]]}
    assert {"landed", "cancelled", "available"} <= statuses
    sources = Counter(m.source for u in db.users.values() for m in u.payment_methods.values())
    assert set(sources) == {"credit_card", "gift_card", "certificate"}
    assert all(u.saved_passengers for u in db.users.values())
    assert not set(NEW_RESERVATION_IDS) & set(db.reservations)


def test_reservations_pay_fare_insurance_and_bags_with_the_owners_methods(db):
    for booking in db.reservations.values():
        owner = db.users[booking.user_id]
        count = len(booking.passengers)
        free = FREE_BAGS[owner.membership][booking.cabin] * count
        assert booking.nonfree_baggages == max(0, booking.total_baggages - free)
        (payment,) = booking.payment_history
        assert payment.payment_id in owner.payment_methods
        assert payment.amount == (sum(s.price for s in booking.flights) * count
                                  + 30 * count * (booking.insurance == "yes") + 50 * booking.nonfree_baggages)


# ---------------------------------------------------------------- planted faults, one per rule


def _first_reservation(db: AirlineDB):
    return next(iter(db.reservations.values()))


def _first_available(db: AirlineDB) -> Available:
    return next(s for f in db.flights.values() for s in f.dates.values() if isinstance(s, Available))


def _plant_past_available(db: AirlineDB) -> None:
    flight = next(iter(db.flights.values()))
    flight.dates["2024-05-02"] = _first_available(db).model_copy(deep=True)


def _plant_landed_in_future(db: AirlineDB) -> None:
    next(iter(db.flights.values())).dates["2024-05-20"] = Landed(
        status="landed", actual_departure_time_est="2024-05-20T08:00:00", actual_arrival_time_est="2024-05-20T10:00:00")


def _plant_gift_card(db: AirlineDB) -> None:
    gift = next(m for u in db.users.values() for m in u.payment_methods.values() if isinstance(m, GiftCard))
    gift.amount = -5.0


def _plant_shared_email(db: AirlineDB) -> None:
    a, b = list(db.users.values())[:2]
    b.email = a.email.upper()


def _plant_segment_route(db: AirlineDB) -> None:
    booking = next(r for r in db.reservations.values() if len(r.flights) >= 2)
    booking.flights[1].origin = "XXX"


def _plant_payment(db: AirlineDB) -> None:
    _first_reservation(db).payment_history[0].amount += 1


def _plant_foreign_method(db: AirlineDB) -> None:
    _first_reservation(db).payment_history[0].payment_id = "credit_card_0000000"


def _plant_owner(db: AirlineDB) -> None:
    _first_reservation(db).user_id = "nobody_0000"


def _plant_unlisted(db: AirlineDB) -> None:
    booking = _first_reservation(db)
    db.users[booking.user_id].reservations.remove(booking.reservation_id)


def _plant_unknown_listed(db: AirlineDB) -> None:
    next(iter(db.users.values())).reservations.append("NOSUCH")


def _plant_bags(db: AirlineDB) -> None:
    booking = _first_reservation(db)
    booking.total_baggages += 10  # paid bags no longer match the allowance


def _plant_unknown_flight(db: AirlineDB) -> None:
    _first_reservation(db).flights[0].flight_number = "HAT999"


def _plant_wrong_date(db: AirlineDB) -> None:
    _first_reservation(db).flights[0].date = "2024-07-01"


def _plant_trip(db: AirlineDB) -> None:
    booking = next(r for r in db.reservations.values() if r.flight_type == "round_trip")
    booking.flight_type = "one_way"


def _plant_created(db: AirlineDB) -> None:
    _first_reservation(db).created_at = "2024-05-16T00:00:00"


def _plant_cancelled_without_refund(db: AirlineDB) -> None:
    _first_reservation(db).status = "cancelled"


def _plant_key(db: AirlineDB) -> None:
    next(iter(db.flights.values())).flight_number = "HAT000"


def _plant_certificate_id(db: AirlineDB) -> None:
    user = next(u for u in db.users.values() if any(isinstance(m, Certificate) for m in u.payment_methods.values()))
    key = next(k for k, m in user.payment_methods.items() if isinstance(m, Certificate))
    method = user.payment_methods.pop(key)
    user.payment_methods["gift_card_1"] = method.model_copy(update={"id": "gift_card_1"})


PLANTED: list[tuple[str, Callable[[AirlineDB], None]]] = [
    ("[flight-status-time]", _plant_past_available),
    ("[flight-status-time]", _plant_landed_in_future),
    ("[balance]", _plant_gift_card),
    ("[email-unique]", _plant_shared_email),
    ("[reservation-route]", _plant_segment_route),
    ("[reservation-payment]", _plant_payment),
    ("[reservation-payment]", _plant_foreign_method),
    ("[reservation-user]", _plant_owner),
    ("[reservation-user]", _plant_unlisted),
    ("[user-reservations]", _plant_unknown_listed),
    ("[reservation-bags]", _plant_bags),
    ("[reservation-flights]", _plant_unknown_flight),
    ("[reservation-flights]", _plant_wrong_date),
    ("[reservation-route]", _plant_trip),
    ("[reservation-created]", _plant_created),
    ("[reservation-payment]", _plant_cancelled_without_refund),
    ("[id-key]", _plant_key),
    ("[payment-method-id]", _plant_certificate_id),
]


@pytest.mark.parametrize("tag, plant", PLANTED, ids=[p.__name__.removeprefix("_plant_") for _, p in PLANTED])
def test_check_catches_planted_inconsistency(db, tag, plant):
    broken = db.model_copy(deep=True)
    plant(broken)
    problems = check_airline_db(broken)
    assert any(p.startswith(tag) for p in problems), problems


def test_cli_generate_db_same_bytes_and_check(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path in (a, b):
        result = run_t2t("domain", "generate-db", "airline", "--seed", "7", "--users", "30", "--out", str(path))
        assert result.returncode == 0, result.stderr
    assert a.read_bytes() == b.read_bytes()
    data = json.loads(a.read_text())
    assert set(data) == {"flights", "users", "reservations"} and len(data["users"]) == 30
    check = run_t2t("domain", "check", "airline", "--db", str(a))
    assert check.returncode == 0 and "0 problem(s)" in check.stdout
    data["reservations"][next(iter(data["reservations"]))]["user_id"] = "nobody_0000"
    a.write_text(json.dumps(data))
    check = run_t2t("domain", "check", "airline", "--db", str(a))
    assert check.returncode == 1 and "nobody_0000" in check.stdout
