"""Airline facts a task generator needs, as plain functions over an episode.

Which reservations a user holds and in what state, which flights could replace a
segment, and what a write asks for in a customer's words. No LM and no program code:
a generation kit (exploration grounding, task templates, condition facts) builds on these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from domains.airline.models import Available, Flight, Reservation
from domains.airline.rules import any_flown, cancellation_grounds, reservation, segment_status, user
from domains.runtime import Episode

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


def _trip(booking: Reservation) -> str:
    kind = "round trip" if booking.flight_type == "round_trip" else "one-way trip"
    return f"{kind} {booking.origin} to {booking.destination} on {booking.flights[0].date}" if booking.flights \
        else f"{kind} {booking.origin} to {booking.destination}"


def _flights_text(value: Any) -> str:
    if not isinstance(value, list):
        return "other flights"
    parts = [f"{f.get('flight_number')} on {f.get('date')}" for f in value if isinstance(f, Mapping)]
    return ", ".join(parts) or "no flights"


def describe_write(episode: Episode[Any], name: str, arguments: Mapping[str, Any]) -> str:
    """What a write call asks for, as the customer would put it (first person)."""
    booking = reservation(episode, arguments.get("reservation_id"))
    rid = str(arguments.get("reservation_id", ""))
    trip = f"reservation {rid} ({_trip(booking)})" if booking is not None else f"reservation {rid}"
    if name == "book_reservation":
        passengers = arguments.get("passengers")
        count = len(passengers) if isinstance(passengers, list) else 0
        kind = "round trip" if arguments.get("flight_type") == "round_trip" else "one-way trip"
        cabin = CABIN_WORDS.get(str(arguments.get("cabin")), str(arguments.get("cabin")))
        insured = "with" if arguments.get("insurance") == "yes" else "without"
        return (f"I'd like to book a {kind} from {arguments.get('origin')} to {arguments.get('destination')} in "
                f"{cabin} for {count} passenger(s) on {_flights_text(arguments.get('flights'))}, "
                f"{arguments.get('total_baggages', 0)} checked bag(s), {insured} travel insurance.")
    if name == "cancel_reservation":
        return f"I want to cancel my {trip}."
    if name == "update_reservation_flights":
        cabin = CABIN_WORDS.get(str(arguments.get("cabin")), str(arguments.get("cabin")))
        if booking is not None and [(s.flight_number, s.date) for s in booking.flights] == [
                (f.get("flight_number"), f.get("date")) for f in arguments.get("flights") or []
                if isinstance(f, Mapping)]:
            return f"I'd like to move my {trip} to {cabin}."
        return f"I'd like to change my {trip} to {_flights_text(arguments.get('flights'))} in {cabin}."
    if name == "update_reservation_baggages":
        return f"I need {arguments.get('total_baggages')} checked bag(s) in total on my {trip}."
    if name == "update_reservation_passengers":
        passengers = arguments.get("passengers") if isinstance(arguments.get("passengers"), list) else []
        names = ", ".join(f"{p.get('first_name')} {p.get('last_name')}" for p in passengers if isinstance(p, Mapping))
        return f"Please change the passengers on my {trip} to {names}."
    if name == "send_certificate":
        return "My flight was disrupted and I'd like some compensation."
    return f"Please run {name} for me."
