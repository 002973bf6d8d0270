"""Airline facts a task generator needs, as plain functions over an episode.

Which reservations a user holds and in what state, which flights could replace a
segment, and what a write asks for in a customer's words. No LM and no program code:
a generation kit (exploration grounding, task templates, condition facts) builds on these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, cast

from trajectory2task.domains.airline.models import Available, CreditCard, Flight, Reservation
from trajectory2task.domains.airline.rules import (
    any_flown,
    booked_within_24h,
    cancellation_grounds,
    owner_of_call,
    reservation,
    segment_status,
    user,
)
from trajectory2task.domains.kit import Claim, RequiredFact
from trajectory2task.domains.runtime import Episode

CABIN_WORDS = {"basic_economy": "basic economy", "economy": "economy", "business": "business"}


def user_reservations(episode: Episode[Any], user_id: str) -> list[Reservation]:
    """The user's reservations, in the order their profile lists them."""
    owner = user(episode, user_id)
    if owner is None:
        return []
    found = (reservation(episode, rid) for rid in owner.reservations)
    return [r for r in found if r is not None]


def active_reservations(episode: Episode[Any], user_id: str) -> list[Reservation]:
    """The user's reservations that are not cancelled and have no flown segment: the ones a change can touch."""
    return [r for r in user_reservations(episode, user_id) if r.status is None and not any_flown(episode, r)]


def cancellable_reservations(episode: Episode[Any], user_id: str) -> list[Reservation]:
    """Active reservations the policy lets the agent cancel (insured ones counted as covered)."""
    return [r for r in active_reservations(episode, user_id) if cancellation_grounds(episode, r)]


def disrupted_segments(episode: Episode[Any], booking: Reservation) -> list[tuple[str, str, str]]:
    """(flight number, date, status) of the reservation's segments that were cancelled or delayed."""
    out = []
    for segment in booking.flights:
        status = segment_status(episode, segment)
        if status in ("cancelled", "delayed"):
            out.append((segment.flight_number, segment.date, status))
    return out


def alternative_flights(episode: Episode[Any], origin: str, destination: str, date: str, cabin: str,
                        passengers: int) -> list[str]:
    """Numbers of flights from origin to destination bookable on date with seats for everyone in cabin."""
    out = []
    for key in episode.keys("flights"):
        flight = cast(Flight, episode.get("flights", key))
        status = flight.dates.get(date)
        if flight.origin == origin and flight.destination == destination and isinstance(status, Available) \
                and status.available_seats.get(cabin, 0) >= passengers:  # type: ignore[call-overload]
            out.append(flight.flight_number)
    return out


# ---------------------------------------------------------------- a write in the customer's words
#
# The one home of airline's wording: the writer's templates (``exploration.describe_request``)
# and the condition kit (``conditions.describe_call``) both say a write with
# :func:`request_words`, and state what those words assert with :func:`request_claims`.
# Claims name only fields no airline write changes (route, trip type, first date, owner,
# insurance, booking time, payment kinds, a flight's status on a past date), so that they
# hold on the initial database whichever earlier write of a task the words follow.

VAGUE = {"reservation_id": "one of your reservations", "payment_id": "one of your payment methods"}
NOT_DUE_REQUEST = "as a goodwill gesture"


def clock(time: str) -> str:
    return time[:5]  # "06:30:00" -> "06:30"


def bags_words(count: Any) -> str:
    """A bag count as said: "1 checked bag", "3 checked bags"."""
    return f"{count} checked bag" + ("" if count == 1 else "s")


def trip_words(booking: Reservation | Mapping[str, Any]) -> str:
    b = booking.model_dump() if isinstance(booking, Reservation) else booking
    kind = "round trip" if b["flight_type"] == "round_trip" else "one-way trip"
    first = b["flights"][0]["date"] if b["flights"] else ""
    return f"{kind} from {b['origin']} to {b['destination']} on {first}".strip()


def booked_in_task(episode: Episode[Any], reservation_id: str) -> bool:
    """Whether the reservation was made by an earlier write of the task (not in the initial
    database): the customer knows it by its trip, not by an id they have not been told yet."""
    return episode.environment.base.tables["reservations"].get(reservation_id) is None


def trip_claims(booking: Reservation, user_id: str | None) -> list[Claim]:
    rid = booking.reservation_id
    said = f"reservation {rid} ({trip_words(booking)})"
    out = [Claim(table="reservations", key=rid, path=[field], value=getattr(booking, field), says=said)
           for field in ("origin", "destination", "flight_type")]
    if booking.flights:
        out.append(Claim(table="reservations", key=rid, path=["flights", 0, "date"], value=booking.flights[0].date,
                         says=said))
    if user_id is not None:
        out.append(Claim(table="reservations", key=rid, path=["user_id"], value=user_id, says=f"your {said}"))
    return out


def same_departure(episode: Episode[Any], flight: Flight, date: str) -> list[str]:
    """Numbers of the flights that a traveller's words for ``flight`` on ``date`` also fit:
    the same route and scheduled departure time, flying that day."""
    departure = clock(flight.scheduled_departure_time_est)
    out = []
    for key in sorted(episode.keys("flights")):
        other = cast(Flight, episode.get("flights", key))
        if (other.origin, other.destination) == (flight.origin, flight.destination) and date in other.dates \
                and clock(other.scheduled_departure_time_est) == departure:
            out.append(other.flight_number)
    return out


def flight_words(episode: Episode[Any], number: str, date: str) -> tuple[str, str]:
    """A flight as a traveller names it (route, day and departure time) and the time alone;
    where another flight of that route leaves at the same time that day, the time comes
    with the flight number, so that the words fit one flight only."""
    flight = cast(Flight | None, episode.get("flights", number))
    if flight is None:
        return f"flight {number} on {date}", number
    departure = clock(flight.scheduled_departure_time_est)
    if same_departure(episode, flight, date) != [flight.flight_number]:
        departure = f"{departure} (flight {flight.flight_number})"
    return f"the {flight.origin}-{flight.destination} flight on {date} departing at {departure}", departure


def payment_words(episode: Episode[Any], user_id: str, method_id: str) -> tuple[str, list[str]]:
    """A payment method as its owner names it, and the words that single it out (first the
    one a request states): a card by brand and last four digits; a gift card or certificate
    by kind alone when the owner has one of that kind, else by the last digits of its code
    (printed on it). Never the raw id, which no customer says."""
    owner = user(episode, user_id)
    method = owner.payment_methods.get(method_id) if owner else None
    if method is None or owner is None:
        return "one of your payment methods", [method_id]
    if isinstance(method, CreditCard):
        return f"your {method.brand} credit card ending in {method.last_four}", [method.last_four, method_id]
    kind = "gift card" if method.source == "gift_card" else "travel certificate"
    same = [k for k, m in owner.payment_methods.items() if m.source == method.source]
    if len(same) == 1:
        return f"your {kind}", [kind, method_id]
    digits = method_id[-4:]
    if sum(k.endswith(digits) for k in same) == 1:
        return f"your {kind} ending in {digits}", [digits, method_id]
    return f"your {kind} of {method.amount:g} dollars", [f"{method.amount:g}", method_id]


def payment_claims(episode: Episode[Any], user_id: str, method_id: str) -> list[Claim]:
    owner = user(episode, user_id)
    method = owner.payment_methods.get(method_id) if owner else None
    if method is None or owner is None:
        return []
    said = payment_words(episode, user_id, method_id)[0]
    path: list[str | int] = ["payment_methods", method_id]
    out = [Claim(table="users", key=owner.user_id, path=[*path, "source"], value=method.source, says=said)]
    if isinstance(method, CreditCard):
        out += [Claim(table="users", key=owner.user_id, path=[*path, "brand"], value=method.brand, says=said),
                Claim(table="users", key=owner.user_id, path=[*path, "last_four"], value=method.last_four,
                      says=said)]
    return out


CancelReason = Literal["airline_cancelled", "booked_recently", "insured_illness", "plans_changed"]


def cancel_reason_kind(episode: Episode[Any], booking: Reservation) -> CancelReason:
    """Which reason a customer gives for cancelling: the first ground the policy accepts
    that the reservation has (the plans simply changed where only its cabin is a ground)."""
    if any(segment_status(episode, s) == "cancelled" for s in booking.flights):
        return "airline_cancelled"
    if booked_within_24h(booking):
        return "booked_recently"
    if booking.insurance == "yes" and booking.cabin != "business":
        return "insured_illness"
    return "plans_changed"


def reason_allows_cancel(episode: Episode[Any], booking: Reservation, reason: CancelReason) -> bool:
    """Whether the customer's words for ``reason`` fit ``booking`` and the policy lets them
    cancel it: each reason's words state its own ground (the airline cancelled a flight,
    booked hours ago, insured and ill); changed plans need a ground that holds whatever the
    reason (booked within 24 hours, a flight cancelled by the airline, business)."""
    if booking.status is not None or any_flown(episode, booking):
        return False
    whatever = booked_within_24h(booking) or booking.cabin == "business" or \
        any(segment_status(episode, s) == "cancelled" for s in booking.flights)
    if reason == "airline_cancelled":
        return any(segment_status(episode, s) == "cancelled" for s in booking.flights)
    if reason == "booked_recently":
        return booked_within_24h(booking)
    if reason == "insured_illness":
        return booking.insurance == "yes"
    return whatever


def cancel_reason(episode: Episode[Any], booking: Reservation) -> tuple[str, list[RequiredFact], list[Claim]]:
    """Why the customer cancels, in words that match the ground the policy accepts (none
    claimed where the reservation has none: the plans simply changed)."""
    rid = booking.reservation_id
    kind = cancel_reason_kind(episode, booking)
    if kind == "airline_cancelled":
        segment = next(s for s in booking.flights if segment_status(episode, s) == "cancelled")
        return "the airline cancelled one of its flights", [], [
            Claim(table="flights", key=segment.flight_number, path=["dates", segment.date, "status"],
                  value="cancelled", says="the airline cancelled one of its flights")]
    if kind == "booked_recently":
        return "you booked it only a few hours ago and your plans have changed", [], [
            Claim(table="reservations", key=rid, path=["created_at"], value=booking.created_at,
                  says="you booked it only a few hours ago")]
    if kind == "insured_illness":
        return "you are ill and cannot travel (your booking has travel insurance)", [
            RequiredFact(label="reason", alternatives=["ill", "sick", "health"])], [
            Claim(table="reservations", key=rid, path=["insurance"], value="yes",
                  says="your booking has travel insurance")]
    return "your plans have changed", [], []


def _cancelled_segment(episode: Episode[Any], user_id: str, amount: Any) -> tuple[Reservation, Any] | None:
    """The user's reservation and segment a compensation of ``amount`` is for: a flight the
    airline cancelled, preferring a reservation whose passengers make that amount."""
    found = [(r, s) for r in user_reservations(episode, user_id) for s in r.flights
             if segment_status(episode, s) == "cancelled"]
    exact = [(r, s) for r, s in found if len(r.passengers) * 100 == amount]
    return (exact or found or [None])[0]


def _people(passengers: Any) -> str:
    listed = [f"{p.get('first_name')} {p.get('last_name')} (born {p.get('dob')})"
              for p in passengers or [] if isinstance(p, Mapping)]
    return " and ".join(listed)


def request_words(episode: Episode[Any], name: str, a: Mapping[str, Any],
                  stated: Mapping[str, Any] | None = None) -> str:
    """A write as what the customer wants ("cancel your reservation ..."), read from the
    state just before it; with ``stated`` (an ambiguity), the argument it leaves open is
    said only vaguely."""
    vague = str(stated.get("open")) if stated else None
    booking = reservation(episode, a.get("reservation_id"))
    owner_id = owner_of_call(episode, name, a) or str(a.get("user_id", ""))

    def pay(method_id: Any) -> str:
        return VAGUE["payment_id"] if vague == "payment_id" else payment_words(episode, owner_id, str(method_id))[0]

    if vague == "reservation_id":
        trip = VAGUE["reservation_id"]
    elif booking is not None and booked_in_task(episode, booking.reservation_id):
        trip = f"the reservation you have just booked ({trip_words(booking)})"
    elif booking is not None:
        trip = f"your reservation {booking.reservation_id} ({trip_words(booking)})"
    else:
        trip = f"reservation {a.get('reservation_id')}"
    cabin = CABIN_WORDS.get(str(a.get("cabin")), str(a.get("cabin")))
    if name == "cancel_reservation":
        reason = cancel_reason(episode, booking)[0] if booking is not None else "your plans have changed"
        return f"cancel {trip} because {reason}"
    if name == "update_reservation_baggages":
        total = a.get("total_baggages")
        current = booking.total_baggages if booking is not None else None
        if isinstance(total, int) and isinstance(current, int) and total > current:
            return (f"add {bags_words(total - current)} to {trip}, {bags_words(total)} in all, paying any "
                    f"fee with {pay(a.get('payment_id'))}")
        # fewer bags (or as many) cost nothing: no payment to name
        return f"have {bags_words(total)} in all on {trip} instead of {current}"
    if name == "update_reservation_passengers":
        new = [p for p in a.get("passengers") or [] if isinstance(p, Mapping)]
        if booking is not None and len(new) == len(booking.passengers):
            swaps = [f"{old.first_name} {old.last_name} replaced by {p.get('first_name')} {p.get('last_name')} "
                     f"(born {p.get('dob')})" for old, p in zip(booking.passengers, new)
                     if (old.first_name, old.last_name, old.dob) != (p.get("first_name"), p.get("last_name"),
                                                                     p.get("dob"))]
            return f"have {' and '.join(swaps) or 'the same passengers'} on {trip}"
        on_board = {(p.first_name, p.last_name) for p in booking.passengers} if booking is not None else set()
        added = [p for p in new if (p.get("first_name"), p.get("last_name")) not in on_board]
        return f"add {_people(added) or 'another passenger'} as a passenger on {trip}"
    if name == "update_reservation_flights":
        legs = [f for f in a.get("flights") or [] if isinstance(f, Mapping)]
        wanted = [(str(f.get("flight_number")), str(f.get("date"))) for f in legs]
        kept = [(s.flight_number, s.date) for s in booking.flights] if booking is not None else []
        settle = f"settling the fare difference with {pay(a.get('payment_id'))}"
        if wanted == kept:
            return f"move {trip} to {cabin} on the same flights, {settle}"
        if booking is not None and len(wanted) == len(kept):
            swaps = []
            for segment, (number, date) in zip(booking.flights, wanted):
                if (segment.flight_number, segment.date) == (number, date):
                    continue
                new = cast(Flight | None, episode.get("flights", number))
                if new is None or (new.origin, new.destination) != (segment.origin, segment.destination):
                    swaps = []
                    break
                old_words, _ = flight_words(episode, segment.flight_number, segment.date)
                swaps.append(f"{old_words} for the one departing at {flight_words(episode, number, date)[1]}"
                             + (" the same day" if date == segment.date else f" on {date}"))
            if swaps:
                return f"swap {' and '.join(swaps)} on {trip}, in {cabin}, {settle}"
        flights = ", then ".join(flight_words(episode, number, date)[0] for number, date in wanted)
        return f"change {trip} to {flights}, in {cabin}, {settle}"
    if name == "book_reservation":
        legs = [f for f in a.get("flights") or [] if isinstance(f, Mapping)]
        flights = ", then ".join(flight_words(episode, str(f.get("flight_number")), str(f.get("date")))[0]
                                 for f in legs)
        methods = [m for m in a.get("payment_methods") or [] if isinstance(m, Mapping)]
        paying = (f"paying the whole price with {pay(methods[0].get('payment_id'))}" if len(methods) == 1 else
                  "paying " + " and ".join(f"{m.get('amount')} dollars with {pay(m.get('payment_id'))}"
                                           for m in methods))
        insured = "with" if a.get("insurance") == "yes" else "without"
        kind = "round trip" if a.get("flight_type") == "round_trip" else "one-way trip"
        return (f"book a {kind} on {flights}, in {cabin}, for {_people(a.get('passengers'))}, with "
                f"{bags_words(a.get('total_baggages'))} in all, {insured} travel insurance, {paying}")
    if name == "send_certificate":
        found = _cancelled_segment(episode, owner_id, a.get("amount"))
        if found is None:
            return f"receive a travel certificate {NOT_DUE_REQUEST}"
        held, segment = found
        flight, _ = flight_words(episode, segment.flight_number, segment.date)
        # no amount: the policy sets it (per passenger), and an agent that works it out must
        # not be told it by the user's words
        return (f"be compensated with a travel certificate because the airline "
                f"cancelled {flight} on your reservation {held.reservation_id}")
    return f"have the agent {name.replace('_', ' ')}"


def _adds_bags(booking: Reservation | None, a: Mapping[str, Any]) -> bool:
    total = a.get("total_baggages")
    return booking is not None and isinstance(total, int) and total > booking.total_baggages


def request_claims(episode: Episode[Any], name: str, a: Mapping[str, Any], user_id: str | None = None) -> list[Claim]:
    """What :func:`request_words` asserts about the database, as claims (``user_id``: the
    customer speaking, who says "your reservation")."""
    booking = reservation(episode, a.get("reservation_id"))
    owner_id = owner_of_call(episode, name, a) or str(a.get("user_id", ""))
    out: list[Claim] = []
    if booking is not None and not booked_in_task(episode, booking.reservation_id):
        out += trip_claims(booking, user_id)
        if name == "cancel_reservation":
            out += cancel_reason(episode, booking)[2]
    paid = [a.get("payment_id"), *(m.get("payment_id") for m in a.get("payment_methods") or []
                                   if isinstance(m, Mapping))]
    if name == "update_reservation_baggages" and not _adds_bags(booking, a):
        paid = []  # the words for fewer bags name no payment
    for method_id in paid:
        if isinstance(method_id, str):
            out += payment_claims(episode, owner_id, method_id)
    if name == "send_certificate":
        found = _cancelled_segment(episode, owner_id, a.get("amount"))
        if found is not None:
            held, segment = found
            out += trip_claims(held, user_id)[-1:] if user_id is not None else []
            out.append(Claim(table="flights", key=segment.flight_number, path=["dates", segment.date, "status"],
                             value="cancelled", says="the airline cancelled"))
    return out
