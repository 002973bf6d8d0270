"""Airline policy rules that code can check but the tools do not enforce.

Each rule looks at the state just before a call and returns a violation message, or None
when the call is allowed (or is not the rule's business). Arguments arrive as the agent
sent them, unvalidated, so every rule reads them defensively.

Plain functions here (``record_owner``, ``owner_of_call``, ``is_flown``,
``cancellation_grounds``, ``compensation_due``, ...) are the domain knowledge a generation
kit can reuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, cast

from trajectory2task.domains.airline.constants import (
    BOOKING_PAYMENT_LIMITS,
    COMPENSATION_CANCELLED_PER_PASSENGER,
    COMPENSATION_DELAYED_PER_PASSENGER,
    FREE_BAGS,
    MAX_PASSENGERS,
    NOW,
)
from trajectory2task.domains.airline.models import Flight, Reservation, ReservationFlight, User
from trajectory2task.domains.runtime import Episode, PolicyContext, PolicyRule

RESERVATION_WRITES = ("cancel_reservation", "update_reservation_baggages", "update_reservation_flights",
                      "update_reservation_passengers")
USER_WRITES = ("book_reservation", "send_certificate")
FLOWN_STATUSES = ("landed", "flying")


# ---------------------------------------------------------------- domain knowledge


def record_owner(episode: Episode[Any], table: str, key: str) -> str | None:
    """The user id a record belongs to (reservations through their user, users themselves)."""
    if table == "users":
        return key if episode.get("users", key) is not None else None
    if table == "reservations":
        found = episode.get("reservations", key)
        return cast(Reservation, found).user_id if found is not None else None
    return None


def owner_of_call(episode: Episode[Any], name: str, arguments: Mapping[str, Any]) -> str | None:
    """The user whose account a write call acts on, or None when it names no known record."""
    if name in RESERVATION_WRITES:
        return record_owner(episode, "reservations", str(arguments.get("reservation_id", "")))
    if name in USER_WRITES:
        return record_owner(episode, "users", str(arguments.get("user_id", "")))
    return None


def reservation(episode: Episode[Any], reservation_id: Any) -> Reservation | None:
    found = episode.get("reservations", str(reservation_id)) if isinstance(reservation_id, str) else None
    return cast(Reservation, found) if found is not None else None


def user(episode: Episode[Any], user_id: Any) -> User | None:
    found = episode.get("users", str(user_id)) if isinstance(user_id, str) else None
    return cast(User, found) if found is not None else None


def segment_status(episode: Episode[Any], segment: ReservationFlight) -> str | None:
    """The flight's status on the segment's date ('landed', 'cancelled', ...), None if unknown."""
    flight = episode.get("flights", segment.flight_number)
    status = cast(Flight, flight).dates.get(segment.date) if flight is not None else None
    return status.status if status is not None else None


def is_flown(episode: Episode[Any], segment: ReservationFlight) -> bool:
    """A segment counts as flown once its flight has left: it is flying or has landed."""
    return segment_status(episode, segment) in FLOWN_STATUSES


def any_flown(episode: Episode[Any], booking: Reservation) -> bool:
    return any(is_flown(episode, s) for s in booking.flights)


def free_bags(membership: str, cabin: str, passengers: int) -> int:
    return FREE_BAGS.get(membership, {}).get(cabin, 0) * passengers


def booked_within_24h(booking: Reservation, now: datetime = NOW) -> bool:
    try:
        created = datetime.fromisoformat(booking.created_at)
    except ValueError:
        return False
    return timedelta(0) <= now - created <= timedelta(hours=24)


def cancellation_grounds(episode: Episode[Any], booking: Reservation) -> list[str]:
    """The policy's grounds that allow cancelling this reservation (empty: none holds).

    Insurance counts as a ground here: whether the user's reason is one it covers (health
    or weather) is said in conversation, which code does not see.
    """
    grounds = []
    if booked_within_24h(booking):
        grounds.append("booked within the last 24 hours")
    if any(segment_status(episode, s) == "cancelled" for s in booking.flights):
        grounds.append("a flight was cancelled by the airline")
    if booking.cabin == "business":
        grounds.append("business cabin")
    if booking.insurance == "yes":
        grounds.append("insured (if the reason is health or weather)")
    return grounds


def compensation_eligible(owner: User, booking: Reservation) -> bool:
    """Silver and gold members, insured reservations and business cabins may be compensated."""
    return owner.membership in ("silver", "gold") or booking.insurance == "yes" or booking.cabin == "business"


def compensation_due(episode: Episode[Any], owner: User) -> list[tuple[str, int, str]]:
    """(reservation id, certificate amount, why) for each compensation the policy allows now.

    A cancelled flight gives 100 per passenger; a delayed flight 50 per passenger, but only
    once the reservation has been changed or cancelled in this episode.
    """
    changed = set(episode.changed().get("reservations", []))
    out = []
    for reservation_id in owner.reservations:
        booking = reservation(episode, reservation_id)
        if booking is None or not compensation_eligible(owner, booking):
            continue
        statuses = {segment_status(episode, s) for s in booking.flights}
        count = len(booking.passengers)
        if "cancelled" in statuses:
            out.append((reservation_id, COMPENSATION_CANCELLED_PER_PASSENGER * count, "cancelled flight"))
        if "delayed" in statuses and reservation_id in changed:
            out.append((reservation_id, COMPENSATION_DELAYED_PER_PASSENGER * count, "delayed flight"))
    return out


def flight_refs(value: Any) -> list[tuple[str, str]] | None:
    """(flight_number, date) pairs of a 'flights' argument, or None when it is malformed."""
    if not isinstance(value, list):
        return None
    out = []
    for entry in value:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("flight_number"), str) \
                or not isinstance(entry.get("date"), str):
            return None
        out.append((entry["flight_number"], entry["date"]))
    return out


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


# ---------------------------------------------------------------- rules


def _other_user(episode: Episode[Any], name: str, arguments: Mapping[str, Any], context: PolicyContext) -> str | None:
    owner = owner_of_call(episode, name, arguments)
    if context.user_id is not None and owner is not None and owner != context.user_id:
        return f"{name} acts on an account of {owner}, not of the authenticated user {context.user_id}"
    return None


def _passenger_limit(episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                     context: PolicyContext) -> str | None:
    passengers = arguments.get("passengers")
    if name == "book_reservation" and isinstance(passengers, list) and len(passengers) > MAX_PASSENGERS:
        return f"booking for {len(passengers)} passengers; at most {MAX_PASSENGERS} are allowed"
    return None


def _payment_limits(episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                    context: PolicyContext) -> str | None:
    if name != "book_reservation":
        return None
    owner = user(episode, arguments.get("user_id"))
    payments = arguments.get("payment_methods")
    if owner is None or not isinstance(payments, list):
        return None
    counts: dict[str, int] = {}
    for entry in payments:
        method = owner.payment_methods.get(str(entry.get("payment_id"))) if isinstance(entry, Mapping) else None
        if method is not None:
            counts[method.source] = counts.get(method.source, 0) + 1
    for source, limit in BOOKING_PAYMENT_LIMITS.items():
        if counts.get(source, 0) > limit:
            return f"booking paid with {counts[source]} {source.replace('_', ' ')}s; at most {limit} allowed"
    return None


def _bag_allowance(episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                   context: PolicyContext) -> str | None:
    """Paid bags must be exactly the bags beyond the free allowance."""
    total, paid = _int(arguments.get("total_baggages")), _int(arguments.get("nonfree_baggages"))
    if total is None or paid is None:
        return None
    if name == "book_reservation":
        owner = user(episode, arguments.get("user_id"))
        passengers = arguments.get("passengers")
        if owner is None or not isinstance(passengers, list):
            return None
        membership, cabin, count = owner.membership, str(arguments.get("cabin")), len(passengers)
    elif name == "update_reservation_baggages":
        booking = reservation(episode, arguments.get("reservation_id"))
        owner = user(episode, booking.user_id) if booking is not None else None
        if booking is None or owner is None:
            return None
        membership, cabin, count = owner.membership, booking.cabin, len(booking.passengers)
    else:
        return None
    free = free_bags(membership, cabin, count)
    due = max(0, total - free)
    if paid != due:
        return (f"{paid} paid bag(s) for {total} bag(s) with {free} free ({membership}, {cabin}, "
                f"{count} passenger(s)); the paid count should be {due}")
    return None


def _basic_economy_flights_fixed(episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                                 context: PolicyContext) -> str | None:
    if name != "update_reservation_flights":
        return None
    booking = reservation(episode, arguments.get("reservation_id"))
    refs = flight_refs(arguments.get("flights"))
    if booking is None or refs is None or booking.cabin != "basic_economy":
        return None
    if sorted(refs) != sorted((s.flight_number, s.date) for s in booking.flights):
        return f"reservation {booking.reservation_id} is basic economy: its flights cannot be changed"
    return None


def _same_route_and_trip_type(episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                              context: PolicyContext) -> str | None:
    if name != "update_reservation_flights":
        return None
    booking = reservation(episode, arguments.get("reservation_id"))
    refs = flight_refs(arguments.get("flights"))
    if booking is None or not refs:
        return None
    legs = [episode.get("flights", number) for number, _ in refs]
    if any(leg is None for leg in legs):
        return None  # the tool refuses unknown flights itself
    route = [(cast(Flight, leg).origin, cast(Flight, leg).destination) for leg in legs]
    start, end = route[0][0], route[-1][1]
    if booking.flight_type == "one_way":
        ok = start == booking.origin and end == booking.destination
    else:
        ok = start == booking.origin and end == booking.origin and any(d == booking.destination for _, d in route)
    if not ok:
        path = " ".join(f"{o}-{d}" for o, d in route)
        return (f"new itinerary {path} does not keep the {booking.flight_type} trip "
                f"{booking.origin}-{booking.destination} of reservation {booking.reservation_id}")
    return None


def _no_cabin_change_after_flown(episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                                 context: PolicyContext) -> str | None:
    if name != "update_reservation_flights":
        return None
    booking = reservation(episode, arguments.get("reservation_id"))
    cabin = arguments.get("cabin")
    if booking is None or not isinstance(cabin, str) or cabin == booking.cabin:
        return None
    if any_flown(episode, booking):
        return f"cabin change {booking.cabin} -> {cabin} after a segment of {booking.reservation_id} was flown"
    return None


def _bags_only_added(episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                     context: PolicyContext) -> str | None:
    if name != "update_reservation_baggages":
        return None
    booking = reservation(episode, arguments.get("reservation_id"))
    total, paid = _int(arguments.get("total_baggages")), _int(arguments.get("nonfree_baggages"))
    if booking is None or total is None or paid is None:
        return None
    # tau2's rule is about bags, not the paid count: that follows from the allowance (bags_per_allowance)
    if total < booking.total_baggages:
        return (f"bags go from {booking.total_baggages} ({booking.nonfree_baggages} paid) to {total} "
                f"({paid} paid): bags can be added, not removed")
    return None


def _passenger_count_fixed(episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                           context: PolicyContext) -> str | None:
    if name != "update_reservation_passengers":
        return None
    booking = reservation(episode, arguments.get("reservation_id"))
    passengers = arguments.get("passengers")
    if booking is None or not isinstance(passengers, list) or len(passengers) == len(booking.passengers):
        return None
    return f"passenger count would change from {len(booking.passengers)} to {len(passengers)}"


def _cancellation_allowed(episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                          context: PolicyContext) -> str | None:
    if name != "cancel_reservation":
        return None
    booking = reservation(episode, arguments.get("reservation_id"))
    if booking is None:
        return None
    if booking.status == "cancelled":
        return f"reservation {booking.reservation_id} is already cancelled"
    if any_flown(episode, booking):
        return f"a segment of {booking.reservation_id} was already flown: transfer to a human instead"
    if not cancellation_grounds(episode, booking):
        return (f"reservation {booking.reservation_id} was booked more than 24 hours ago, has no flight "
                f"cancelled by the airline, is {booking.cabin} and uninsured")
    return None


def _compensation_allowed(episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                          context: PolicyContext) -> str | None:
    if name != "send_certificate":
        return None
    owner = user(episode, arguments.get("user_id"))
    amount = arguments.get("amount")
    if owner is None or not isinstance(amount, (int, float)) or isinstance(amount, bool):
        return None
    due = compensation_due(episode, owner)
    if any(abs(amount - value) < 1e-9 for _, value, _ in due):
        return None
    if not due:
        return f"no reservation of {owner.user_id} qualifies for compensation"
    allowed = ", ".join(f"{value} for {rid} ({why})" for rid, value, why in due)
    return f"certificate of {amount} matches no compensation due (allowed: {allowed})"


POLICY_RULES = (
    PolicyRule("act_for_authenticated_user",
               "Act only on the authenticated user's own profile and reservations.", _other_user),
    PolicyRule("at_most_five_passengers", "A booking has at most five passengers.", _passenger_limit),
    PolicyRule("booking_payment_limits",
               "A booking uses at most one certificate, one credit card and three gift cards.", _payment_limits),
    PolicyRule("bags_per_allowance",
               "Paid bags are exactly those beyond the free allowance of the membership and cabin.",
               _bag_allowance),
    PolicyRule("basic_economy_flights_fixed", "A basic economy reservation's flights cannot be changed.",
               _basic_economy_flights_fixed),
    PolicyRule("same_route_and_trip_type",
               "A flight change keeps the reservation's origin, destination and trip type.",
               _same_route_and_trip_type),
    PolicyRule("no_cabin_change_after_flown", "The cabin cannot change once a segment has been flown.",
               _no_cabin_change_after_flown),
    PolicyRule("bags_only_added", "Checked bags can be added, not removed.", _bags_only_added),
    PolicyRule("passenger_count_fixed", "The number of passengers of a reservation cannot change.",
               _passenger_count_fixed),
    PolicyRule("cancellation_allowed",
               "Cancel only unflown reservations booked within the last 24 hours, with an airline-cancelled flight, "
               "in business, or insured (reason health or weather); never twice.", _cancellation_allowed),
    PolicyRule("compensation_allowed",
               "A certificate only for an eligible reservation (silver/gold, insured or business): 100 per "
               "passenger for a cancelled flight, 50 per passenger for a delayed one after changing or "
               "cancelling it.", _compensation_allowed),
)
