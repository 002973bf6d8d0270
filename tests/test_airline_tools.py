"""Airline tools on generated databases: the reference's behaviour, its quirks, and transactions."""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

import pytest

from trajectory2task.domains import get_domain
from trajectory2task.domains.airline.constants import CURRENT_TIME
from trajectory2task.domains.airline.models import Available, Certificate, CreditCard, GiftCard
from trajectory2task.domains.airline.tools import ALL_TOOLS, next_leg_date

WRITES = {"book_reservation", "cancel_reservation", "send_certificate", "update_reservation_baggages",
          "update_reservation_flights", "update_reservation_passengers"}


@pytest.fixture(scope="module")
def domain():
    return get_domain("airline")


@pytest.fixture(scope="module")
def env(domain):
    return domain.environment(domain.generate_db(11, 40))


def _user_with(env, *kinds: type) -> Any:
    for key in env.episode().keys("users"):
        user = env.episode().get("users", key)
        if all(any(isinstance(m, k) for m in user.payment_methods.values()) for k in kinds):
            return user
    raise AssertionError(f"no user with {kinds}")


def _method(user, kind: type, minimum: float = 0.0):
    return next(m for m in user.payment_methods.values() if isinstance(m, kind) and getattr(m, "amount", 1e9) >= minimum)


def _bookable(env, cabin: str = "economy", seats: int = 2, after: str = "2024-05-16"):
    """(flight, date, price) of a flight-date with at least ``seats`` seats in ``cabin``."""
    for key in env.episode().keys("flights"):
        flight = env.episode().get("flights", key)
        for day, status in flight.dates.items():
            if day >= after and isinstance(status, Available) and status.available_seats[cabin] >= seats:
                return flight, day, status.prices[cabin]
    raise AssertionError("no bookable flight")


def _booking_args(user, flight, day, cabin, payments, passengers=1, insurance="no", bags=(0, 0)):
    return {"user_id": user.user_id, "origin": flight.origin, "destination": flight.destination,
            "flight_type": "one_way", "cabin": cabin, "flights": [{"flight_number": flight.flight_number, "date": day}],
            "passengers": [{"first_name": f"P{i}", "last_name": "Test", "dob": "1990-01-01"} for i in range(passengers)],
            "payment_methods": [{"payment_id": p, "amount": a} for p, a in payments],
            "total_baggages": bags[0], "nonfree_baggages": bags[1], "insurance": insurance}


def _reservation_of(env, predicate):
    for key in env.episode().keys("reservations"):
        booking = env.episode().get("reservations", key)
        if predicate(booking):
            return booking
    raise AssertionError("no such reservation")


# ---------------------------------------------------------------- the API surface


def test_the_fourteen_tools_and_their_kinds(domain):
    names = {t.name for t in domain.tools}
    assert names == WRITES | {"calculate", "get_flight_status", "get_reservation_details", "get_user_details",
                              "list_all_airports", "search_direct_flight", "search_onestop_flight",
                              "transfer_to_human_agents"}
    assert {t.name for t in domain.tools if t.kind == "write"} == WRITES


@pytest.mark.parametrize("function", ALL_TOOLS, ids=lambda f: f.__name__)
def test_every_parameter_is_described(function):
    params = list(inspect.signature(function).parameters)[1:]
    doc = inspect.getdoc(function) or ""
    if params:
        args = doc.split("Args:", 1)[1]
        assert [p for p in params if not re.search(rf"^\s+{p}: \S", args, re.M)] == []


def test_schemas_are_json_with_nested_argument_types(env):
    book = next(s for s in env.tool_schemas() if s["function"]["name"] == "book_reservation")["function"]
    params = book["parameters"]
    assert params["required"] == ["user_id", "origin", "destination", "flight_type", "cabin", "flights",
                                  "passengers", "payment_methods", "total_baggages", "nonfree_baggages", "insurance"]
    assert params["properties"]["cabin"]["enum"] == ["basic_economy", "economy", "business"]
    assert set(params["$defs"]) == {"FlightRef", "Passenger", "Payment"}
    json.dumps(env.tool_schemas())


# ---------------------------------------------------------------- reads


def test_lookups_name_what_is_missing(env):
    episode = env.episode()
    assert episode.call("get_user_details", {"user_id": "nobody"}).error_message == "User nobody not found"
    assert episode.call("get_reservation_details", {"reservation_id": "ZZZ"}).error_message == \
        "Reservation ZZZ not found"
    assert episode.call("get_flight_status", {"flight_number": "X1", "date": "2024-05-20"}).error_message == \
        "Flight X1 not found"
    assert episode.call("get_flight_status", {"flight_number": "HAT001", "date": "2024-06-01"}).error_message == \
        "Flight HAT001 not found on date 2024-06-01"


def test_flight_status_and_airports(env):
    episode = env.episode()
    flight = episode.get("flights", "HAT001")
    assert episode.call("get_flight_status", {"flight_number": "HAT001", "date": "2024-05-20"}).output == "available"
    assert episode.call("get_flight_status", {"flight_number": "HAT001", "date": "2024-05-15"}).output == \
        flight.dates["2024-05-15"].status
    airports = json.loads(episode.call("list_all_airports").output)
    assert len(airports) == 20 and airports[0] == {"iata": "SFO", "city": "San Francisco"}
    assert airports[-1] == {"iata": "LGA", "city": "LaGuardia"}


def test_direct_search_lists_only_bookable_dates_in_table_order(env):
    flight, day, _ = _bookable(env)
    found = json.loads(env.episode().call("search_direct_flight", {"origin": flight.origin,
                                                                  "destination": flight.destination,
                                                                  "date": day}).output)
    numbers = [f["flight_number"] for f in found]
    assert flight.flight_number in numbers and numbers == sorted(numbers)
    assert all(f["status"] == "available" and f["date"] is None for f in found)
    assert json.loads(env.episode().call("search_direct_flight", {"origin": flight.origin,
                                                                 "destination": flight.destination,
                                                                 "date": "2024-05-10"}).output) == []


def test_next_leg_date_keeps_the_unpadded_day_quirk():
    assert next_leg_date("2024-05-20", "01:30:00+1") == "2024-05-21"
    assert next_leg_date("2024-05-08", "01:30:00+1") == "2024-05-9"  # names no date: no connection is found
    assert next_leg_date("2024-05-08", "11:00:00") == "2024-05-08"


def _overnight_db(domain, day: str, next_day: str):
    """A database with one overnight flight A (JFK->ORD, lands 01:00+1) and a connection B (ORD->SEA, 02:00),
    both bookable on the given days."""
    db = domain.generate_db(11, 5).model_copy(deep=True)
    seats = {"basic_economy": 5, "economy": 5, "business": 5}
    a, b = db.flights["HAT001"], db.flights["HAT002"]
    a.origin, a.destination, a.scheduled_departure_time_est, a.scheduled_arrival_time_est = "JFK", "ORD", \
        "22:00:00", "01:00:00+1"
    b.origin, b.destination, b.scheduled_departure_time_est, b.scheduled_arrival_time_est = "ORD", "SEA", \
        "02:00:00", "05:00:00"
    a.dates[day] = Available(status="available", available_seats=dict(seats), prices=dict(seats))
    b.dates[next_day] = Available(status="available", available_seats=dict(seats), prices=dict(seats))
    return domain.environment(db)


def test_onestop_search_connects_overnight_arrivals_to_the_next_day(domain):
    env = _overnight_db(domain, "2024-05-20", "2024-05-21")
    pairs = json.loads(env.episode().call("search_onestop_flight",
                                          {"origin": "JFK", "destination": "SEA", "date": "2024-05-20"}).output)
    legs = [(p[0]["flight_number"], p[0]["date"], p[1]["flight_number"], p[1]["date"]) for p in pairs]
    assert ("HAT001", "2024-05-20", "HAT002", "2024-05-21") in legs
    for first, second in pairs:
        assert first["destination"] == second["origin"] and second["destination"] == "SEA"
        if "+1" not in first["scheduled_arrival_time_est"]:
            assert second["date"] == first["date"]
            assert second["scheduled_departure_time_est"] >= first["scheduled_arrival_time_est"]


def test_onestop_search_misses_overnight_connections_before_the_ninth(domain):
    env = _overnight_db(domain, "2024-05-05", "2024-05-06")
    pairs = json.loads(env.episode().call("search_onestop_flight",
                                          {"origin": "JFK", "destination": "SEA", "date": "2024-05-05"}).output)
    assert not any(p[0]["flight_number"] == "HAT001" for p in pairs)  # it looks on '2024-05-6'


def test_calculate_and_transfer(env):
    episode = env.episode()
    assert episode.call("calculate", {"expression": "(120 + 30) * 2 / 3"}).output == "100.0"
    assert episode.call("calculate", {"expression": "2 ** 3"}).error
    assert episode.call("calculate", {"expression": "__import__('os')"}).error_message == \
        "Invalid characters in expression"
    assert episode.call("transfer_to_human_agents", {"summary": "wants a refund"}).output == "Transfer successful"
    assert episode.changed() == {}


# ---------------------------------------------------------------- booking


def test_booking_at_the_fixed_time_with_ids_in_sequence(env):
    user = _user_with(env, CreditCard)
    card = _method(user, CreditCard)
    flight, day, price = _bookable(env, seats=6)
    seats_before = flight.dates[day].available_seats["economy"]
    episode = env.episode()
    ids = []
    for _ in range(3):
        result = episode.call("book_reservation", _booking_args(user, flight, day, "economy", [(card.id, 2 * price + 60)],
                                                              passengers=2, insurance="yes"))
        assert not result.error, result.output
        booking = json.loads(result.output)
        assert booking["created_at"] == CURRENT_TIME and booking["status"] is None
        assert booking["flights"] == [{"origin": flight.origin, "destination": flight.destination,
                                       "flight_number": flight.flight_number, "date": day, "price": price}]
        ids.append(booking["reservation_id"])
    assert ids == ["HATHAT", "HATHAU", "HATHAV"]
    assert episode.get("users", user.user_id).reservations[-3:] == ids
    assert episode.get("flights", flight.flight_number).dates[day].available_seats["economy"] == seats_before - 6
    before = episode.state_hash()
    result = episode.call("book_reservation", _booking_args(user, flight, day, "economy", [(card.id, price)]))
    assert result.error_message == "Too many reservations" and episode.state_hash() == before


def test_booking_spends_gift_cards_and_certificates(env):
    user = _user_with(env, GiftCard, Certificate)
    gift = max((m for m in user.payment_methods.values() if isinstance(m, GiftCard)), key=lambda m: m.amount)
    certificate = _method(user, Certificate)
    flight, day, price = _bookable(env, cabin="business")
    total = price + 50  # one paid bag
    use_gift = min(gift.amount, total - 1)
    payments = [(certificate.id, total - int(use_gift)), (gift.id, int(use_gift))]
    if certificate.amount < payments[0][1]:
        pytest.skip("certificate too small for this flight")
    episode = env.episode()
    result = episode.call("book_reservation", _booking_args(user, flight, day, "business", payments, bags=(1, 1)))
    assert not result.error, result.output
    after = episode.get("users", user.user_id)
    assert certificate.id not in after.payment_methods  # spent whole
    assert after.payment_methods[gift.id].amount == pytest.approx(gift.amount - int(use_gift))


@pytest.mark.parametrize("problem", ["sum", "balance", "unknown_method", "past_date", "seats", "unknown_flight"])
def test_refused_bookings_change_nothing(env, problem):
    user = _user_with(env, CreditCard, GiftCard)
    card = _method(user, CreditCard)
    gift = _method(user, GiftCard)
    flight, day, price = _bookable(env)
    payments, passengers = [(card.id, price)], 1
    if problem == "sum":
        payments = [(card.id, price + 1)]
    elif problem == "balance":
        payments = [(gift.id, int(gift.amount) + 1), (card.id, price - int(gift.amount) - 1)]
    elif problem == "unknown_method":
        payments = [("credit_card_0000000", price)]
    args = _booking_args(user, flight, day, "economy", payments, passengers=passengers)
    if problem == "past_date":
        args["flights"][0]["date"] = "2024-05-10"
    elif problem == "seats":
        args["passengers"] *= flight.dates[day].available_seats["economy"] + 1
    elif problem == "unknown_flight":
        args["flights"].append({"flight_number": "HAT999", "date": day})
    expected = {
        "sum": f"Payment amount does not add up, total price is {price}, but paid {price + 1}",
        "balance": f"Not enough balance in payment method {gift.id}",
        "unknown_method": "Payment method credit_card_0000000 not found",
        "past_date": f"Flight {flight.flight_number} not available on date 2024-05-10",
        "seats": f"Not enough seats on flight {flight.flight_number}",
        "unknown_flight": "Flight HAT999 not found",
    }[problem]
    episode = env.episode()
    result = episode.call("book_reservation", args)
    assert result.error_message == expected
    assert episode.changed() == {} and episode.state_hash() == env.initial_hash()


# ---------------------------------------------------------------- changes


def test_cancel_refunds_in_history_only_and_keeps_seats(env):
    booking = _reservation_of(env, lambda r: r.status is None)
    episode = env.episode()
    result = json.loads(episode.call("cancel_reservation", {"reservation_id": booking.reservation_id}).output)
    paid = [p.model_dump() for p in booking.payment_history]
    assert result["status"] == "cancelled"
    assert result["payment_history"] == paid + [{"payment_id": p["payment_id"], "amount": -p["amount"]} for p in paid]
    assert episode.changed() == {"reservations": [booking.reservation_id]}  # no seat, no balance changes
    again = json.loads(episode.call("cancel_reservation", {"reservation_id": booking.reservation_id}).output)
    assert len(again["payment_history"]) == 4 * len(paid)  # the reference refunds again


def test_bag_update_charges_added_paid_bags_only(env):
    def has_card(r):
        return any(isinstance(m, CreditCard) for m in env.episode().get("users", r.user_id).payment_methods.values())

    booking = _reservation_of(env, has_card)
    card = _method(env.episode().get("users", booking.user_id), CreditCard)
    episode = env.episode()
    result = json.loads(episode.call("update_reservation_baggages", {
        "reservation_id": booking.reservation_id, "total_baggages": booking.total_baggages + 2,
        "nonfree_baggages": booking.nonfree_baggages + 2, "payment_id": card.id}).output)
    assert result["payment_history"][-1] == {"payment_id": card.id, "amount": 100}
    fewer = json.loads(episode.call("update_reservation_baggages", {
        "reservation_id": booking.reservation_id, "total_baggages": 0, "nonfree_baggages": 0,
        "payment_id": card.id}).output)  # the tool allows removing bags (the policy does not)
    assert fewer["total_baggages"] == 0 and len(fewer["payment_history"]) == len(result["payment_history"])


def test_update_payment_refuses_certificates_and_short_gift_cards(env):
    user = _user_with(env, Certificate, GiftCard)
    booking = next(env.episode().get("reservations", r) for r in user.reservations) if user.reservations else None
    if booking is None:
        pytest.skip("user has no reservation")
    certificate = _method(user, Certificate)
    gift = min((m for m in user.payment_methods.values() if isinstance(m, GiftCard)), key=lambda m: m.amount)
    episode = env.episode()
    args = {"reservation_id": booking.reservation_id, "total_baggages": booking.total_baggages + 10,
            "nonfree_baggages": booking.nonfree_baggages + 10}
    assert episode.call("update_reservation_baggages", {**args, "payment_id": certificate.id}).error_message == \
        "Certificate cannot be used to update reservation"
    if gift.amount < 500:
        assert episode.call("update_reservation_baggages", {**args, "payment_id": gift.id}).error_message == \
            "Gift card balance is not enough"
    assert episode.call("update_reservation_baggages", {**args, "payment_id": "gift_card_0"}).error_message == \
        "Payment method not found"
    assert episode.changed() == {}


def test_flight_update_keeps_old_prices_and_refunds_to_gift_cards(env):
    def fits(r):
        owner = env.episode().get("users", r.user_id)
        return r.cabin == "business" and r.status is None and any(isinstance(m, GiftCard)
                                                                  for m in owner.payment_methods.values())
    booking = _reservation_of(env, fits)
    owner = env.episode().get("users", booking.user_id)
    gift = _method(owner, GiftCard)
    refs = [{"flight_number": s.flight_number, "date": s.date} for s in booking.flights]
    episode = env.episode()
    same = episode.call("update_reservation_flights", {"reservation_id": booking.reservation_id, "cabin": "business",
                                                       "flights": refs, "payment_id": gift.id})
    assert not same.error and episode.changed() == {}  # kept segments keep their prices: nothing to pay
    bookable = all(isinstance(env.episode().get("flights", s.flight_number).dates[s.date], Available)
                   and env.episode().get("flights", s.flight_number).dates[s.date].available_seats["economy"]
                   >= len(booking.passengers) for s in booking.flights)
    if not bookable:
        pytest.skip("segments not bookable in economy")
    result = json.loads(episode.call("update_reservation_flights", {
        "reservation_id": booking.reservation_id, "cabin": "economy", "flights": refs, "payment_id": gift.id}).output)
    new_prices = [env.episode().get("flights", s.flight_number).dates[s.date].prices["economy"] for s in booking.flights]
    difference = (sum(new_prices) - sum(s.price for s in booking.flights)) * len(booking.passengers)
    assert [s["price"] for s in result["flights"]] == new_prices and result["cabin"] == "economy"
    assert result["payment_history"][-1] == {"payment_id": gift.id, "amount": difference}
    assert episode.get("users", owner.user_id).payment_methods[gift.id].amount == pytest.approx(gift.amount - difference)


def test_passenger_update_keeps_the_count(env):
    booking = _reservation_of(env, lambda r: len(r.passengers) >= 2)
    episode = env.episode()
    people = [p.model_dump() for p in booking.passengers]
    assert episode.call("update_reservation_passengers", {"reservation_id": booking.reservation_id,
                                                          "passengers": people[:-1]}).error_message == \
        "Number of passengers does not match"
    people[0]["first_name"] = "Renamed"
    result = json.loads(episode.call("update_reservation_passengers", {"reservation_id": booking.reservation_id,
                                                                       "passengers": people}).output)
    assert result["passengers"][0]["first_name"] == "Renamed"


def test_certificates_take_the_fixed_ids_in_order(env):
    user = _user_with(env, CreditCard)
    episode = env.episode()
    messages = [episode.call("send_certificate", {"user_id": user.user_id, "amount": 150}).output for _ in range(3)]
    assert messages == [f"Certificate certificate_322132{i} added to user {user.user_id} with amount 150."
                        for i in (2, 3, 4)]
    assert episode.get("users", user.user_id).payment_methods["certificate_3221322"].amount == 150.0
    before = episode.state_hash()
    assert episode.call("send_certificate", {"user_id": user.user_id, "amount": 1}).error_message == \
        "Too many certificates"
    assert episode.state_hash() == before


def test_every_write_succeeds_on_a_generated_db_and_keeps_it_consistent(domain, env):
    user = _user_with(env, CreditCard)
    card = _method(user, CreditCard)
    flight, day, price = _bookable(env)
    episode = env.episode()
    booking = json.loads(episode.call("book_reservation", _booking_args(user, flight, day, "economy",
                                                                        [(card.id, price)])).output)
    rid = booking["reservation_id"]
    free = {"regular": 1, "silver": 2, "gold": 3}[user.membership]
    calls = [
        ("update_reservation_baggages", {"reservation_id": rid, "total_baggages": free + 1, "nonfree_baggages": 1,
                                         "payment_id": card.id}),
        ("update_reservation_passengers", {"reservation_id": rid, "passengers": [
            {"first_name": "New", "last_name": "Name", "dob": "1991-02-03"}]}),
        ("update_reservation_flights", {"reservation_id": rid, "cabin": "economy", "payment_id": card.id,
                                        "flights": [{"flight_number": flight.flight_number, "date": day}]}),
        ("send_certificate", {"user_id": user.user_id, "amount": 100}),
        ("cancel_reservation", {"reservation_id": rid}),
    ]
    for name, args in calls:
        result = episode.call(name, args)
        assert not result.error, (name, result.output)
    assert domain.check_db(episode.to_db()) == []
