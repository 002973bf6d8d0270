"""Consistency checks for an airline database: one readable problem per violation.

The rules hold on tau2-bench's own db.json, on every database from
``generate_airline_db`` and on the end states of tau2's 50 gold trajectories. The tools
keep them when the policy is followed; some policy breaches the tools allow show up here
(fewer paid bags than before leaves the payments above the fare; a booking whose paid bags
are off the allowance).

Each problem starts with a short rule tag in brackets, e.g. ``[reservation-user]``.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime

from trajectory2task.domains.airline.constants import (
    AIRPORTS,
    FREE_BAGS,
    INSURANCE_PER_PASSENGER,
    MAX_PASSENGERS,
    NOW,
    PRICE_PER_EXTRA_BAG,
    TODAY,
)
from trajectory2task.domains.airline.models import (
    CABINS,
    AirlineDB,
    Available,
    Certificate,
    CreditCard,
    Flying,
    GiftCard,
    Landed,
    Reservation,
    User,
)

AIRPORT_CODES = {code for code, _ in AIRPORTS}
CLOCK = re.compile(r"\d\d:\d\d:\d\d")
# statuses a date may have, by where it lies from today. One past date of tau2's database
# is still 'delayed' (a flight that never got a final status), so the past allows it.
STATUSES_BY_TIME = {
    "past": ("landed", "cancelled", "delayed"),
    "today": ("landed", "flying", "on time", "delayed", "cancelled"),
    "future": ("available", "on time", "delayed", "cancelled"),
}


def _time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _flights(db: AirlineDB, problems: list[str]) -> None:
    for key, flight in db.flights.items():
        where = f"flight {key}"
        if flight.flight_number != key:
            problems.append(f"[id-key] flight key {key!r} holds flight_number {flight.flight_number!r}")
        for end in (flight.origin, flight.destination):
            if end not in AIRPORT_CODES:
                problems.append(f"[flight-airport] {where} serves unknown airport {end!r}")
        if flight.origin == flight.destination:
            problems.append(f"[flight-airport] {where} flies from {flight.origin} to itself")
        if not CLOCK.fullmatch(flight.scheduled_departure_time_est) or \
                not CLOCK.fullmatch(flight.scheduled_arrival_time_est.removesuffix("+1")):
            problems.append(f"[flight-times] {where} has malformed scheduled times")
        for day, status in flight.dates.items():
            if _time(day) is None:
                problems.append(f"[flight-date] {where} has malformed date {day!r}")
                continue
            when = "past" if day < TODAY else "today" if day == TODAY else "future"
            if status.status not in STATUSES_BY_TIME[when]:
                problems.append(f"[flight-status-time] {where} is {status.status!r} on {day}, a {when} date")
            if isinstance(status, Available):
                if set(status.available_seats) != set(CABINS) or set(status.prices) != set(CABINS):
                    problems.append(f"[flight-cabins] {where} on {day} does not list seats and prices for every cabin")
                if any(v < 0 for v in status.available_seats.values()):
                    problems.append(f"[flight-seats] {where} on {day} has negative seats")
                if any(v <= 0 for v in status.prices.values()):
                    problems.append(f"[flight-prices] {where} on {day} has a price that is not positive")
            if isinstance(status, Landed):
                left, landed = _time(status.actual_departure_time_est), _time(status.actual_arrival_time_est)
                if left is None or landed is None or not left < landed <= NOW:
                    problems.append(f"[flight-status-time] {where} landed on {day} with times that are not "
                                    f"departure < arrival <= now")
            if isinstance(status, Flying):
                left = _time(status.actual_departure_time_est)
                if left is None or left > NOW:
                    problems.append(f"[flight-status-time] {where} is flying on {day} but left after now")


def _users(db: AirlineDB, problems: list[str]) -> None:
    method_owner: dict[str, str] = {}
    emails: dict[str, str] = {}
    for key, user in db.users.items():
        if user.user_id != key:
            problems.append(f"[id-key] user key {key!r} holds user_id {user.user_id!r}")
        email = user.email.lower()
        if email in emails:
            problems.append(f"[email-unique] users {emails[email]} and {key} share the email {user.email!r}")
        emails.setdefault(email, key)
        for method_key, method in user.payment_methods.items():
            if method.id != method_key:
                problems.append(f"[id-key] user {key} payment method key {method_key!r} holds id {method.id!r}")
            if not method_key.startswith(method.source + "_"):
                problems.append(f"[payment-method-id] user {key} {method.source} has id {method_key!r}")
            if method_key in method_owner and method_owner[method_key] != key:
                problems.append(f"[id-unique] payment method {method_key} belongs to {method_owner[method_key]} "
                                f"and {key}")
            method_owner.setdefault(method_key, key)
            if isinstance(method, (GiftCard, Certificate)) and method.amount < 0:
                problems.append(f"[balance] user {key} {method.source} {method_key} has a negative amount")
            if isinstance(method, CreditCard) and not (len(method.last_four) == 4 and method.last_four.isdigit()):
                problems.append(f"[card-last-four] user {key} credit card {method_key} has last_four "
                                f"{method.last_four!r}")
        for reservation_id, count in Counter(user.reservations).items():
            if count > 1:
                problems.append(f"[user-reservations] user {key} lists reservation {reservation_id} {count} times")
            booking = db.reservations.get(reservation_id)
            if booking is None:
                problems.append(f"[user-reservations] user {key} lists unknown reservation {reservation_id!r}")
            elif booking.user_id != key:
                problems.append(f"[user-reservations] user {key} lists reservation {reservation_id}, which belongs "
                                f"to {booking.user_id}")


def _itinerary(db: AirlineDB, key: str, booking: Reservation, problems: list[str]) -> None:
    """Segments are real flights on real dates, chained in date order, along the trip type's route."""
    where = f"reservation {key}"
    if not booking.flights:
        problems.append(f"[reservation-flights] {where} has no flights")
        return
    for index, segment in enumerate(booking.flights):
        flight = db.flights.get(segment.flight_number)
        if flight is None:
            problems.append(f"[reservation-flights] {where} segment {index} is unknown flight "
                            f"{segment.flight_number!r}")
            continue
        if (segment.origin, segment.destination) != (flight.origin, flight.destination):
            problems.append(f"[reservation-flights] {where} segment {index} says {segment.origin}-"
                            f"{segment.destination} but {flight.flight_number} flies {flight.origin}-"
                            f"{flight.destination}")
        if segment.date not in flight.dates:
            problems.append(f"[reservation-flights] {where} segment {index}: {flight.flight_number} does not fly "
                            f"on {segment.date}")
        if segment.price <= 0:
            problems.append(f"[reservation-price] {where} segment {index} has price {segment.price}")
    for index, (before, after) in enumerate(zip(booking.flights, booking.flights[1:])):
        if before.destination != after.origin:
            problems.append(f"[reservation-route] {where} segment {index + 1} leaves {after.origin}, not "
                            f"{before.destination} where segment {index} lands")
        if after.date < before.date:
            problems.append(f"[reservation-route] {where} segment {index + 1} flies before segment {index}")
    start, end = booking.flights[0].origin, booking.flights[-1].destination
    if booking.flight_type == "one_way":
        ok = start == booking.origin and end == booking.destination
    else:
        ok = start == booking.origin == end and any(s.destination == booking.destination for s in booking.flights)
    if not ok:
        problems.append(f"[reservation-route] {where}: segments {start}...{end} do not make a "
                        f"{booking.flight_type} {booking.origin}-{booking.destination}")
    created = _time(booking.created_at)
    if created is None or created > NOW:
        problems.append(f"[reservation-created] {where} was created at {booking.created_at!r}, not before now")
    elif booking.created_at[:10] > booking.flights[0].date:
        problems.append(f"[reservation-created] {where} was created after its first flight's date")


def _money(db: AirlineDB, key: str, booking: Reservation, owner: User | None, problems: list[str]) -> None:
    where = f"reservation {key}"
    count = len(booking.passengers)
    if not 1 <= count <= MAX_PASSENGERS:
        problems.append(f"[reservation-passengers] {where} has {count} passengers")
    if not 0 <= booking.nonfree_baggages <= booking.total_baggages:
        problems.append(f"[reservation-bags] {where} has {booking.nonfree_baggages} paid of "
                        f"{booking.total_baggages} bags")
    if not booking.payment_history:
        problems.append(f"[reservation-payment] {where} has no payment")
        return
    net = sum(p.amount for p in booking.payment_history)
    if booking.status == "cancelled":
        if net != 0:
            problems.append(f"[reservation-payment] cancelled {where} keeps net payments of {net}")
    else:
        fare = sum(s.price for s in booking.flights) * count
        due = fare + (INSURANCE_PER_PASSENGER * count if booking.insurance == "yes" else 0) \
            + PRICE_PER_EXTRA_BAG * booking.nonfree_baggages
        if net != due:
            problems.append(f"[reservation-payment] {where}: net payments {net} differ from fare, insurance and "
                            f"paid bags {due}")
    if owner is None:
        return
    free = FREE_BAGS[owner.membership][booking.cabin] * count
    # Only as booked: a later cabin change keeps the bags and their charges (tau2's task 18
    # moves a business reservation with free bags to economy), so changed ones are exempt.
    if len(booking.payment_history) == 1 and booking.nonfree_baggages != max(0, booking.total_baggages - free):
        problems.append(f"[reservation-bags] {where}: {booking.nonfree_baggages} paid of {booking.total_baggages} "
                        f"bags with {free} free")
    for payment in booking.payment_history:
        # a certificate leaves the profile once spent, so its id may be gone
        if payment.payment_id not in owner.payment_methods and not payment.payment_id.startswith("certificate_"):
            problems.append(f"[reservation-payment] {where} uses payment method {payment.payment_id!r}, which "
                            f"user {owner.user_id} does not have")


def check_airline_db(db: AirlineDB) -> list[str]:
    """Every consistency problem of ``db``, one readable line each; empty when consistent."""
    problems: list[str] = []
    _flights(db, problems)
    _users(db, problems)
    for key, booking in db.reservations.items():
        if booking.reservation_id != key:
            problems.append(f"[id-key] reservation key {key!r} holds reservation_id {booking.reservation_id!r}")
        owner = db.users.get(booking.user_id)
        if owner is None:
            problems.append(f"[reservation-user] reservation {key} belongs to unknown user {booking.user_id!r}")
        elif key not in owner.reservations:
            problems.append(f"[reservation-user] reservation {key} is not listed by its user {booking.user_id}")
        _itinerary(db, key, booking, problems)
        _money(db, key, booking, owner, problems)
    return problems
