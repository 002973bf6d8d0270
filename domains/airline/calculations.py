"""Airline amounts an agent works out before a write and must tell the user.

The fee for added bags, a flight or cabin change's fare difference, a booking's total and
a cancellation's refund: each an expression over numbers the agent has read (the
reservation's prices and payments, the searched fares, the fixed bag and insurance
prices), as it would hand it to ``calculate``; its value is what the tool then charges or
refunds (``tests/test_discriminative_domains.py`` compares them).
"""

from __future__ import annotations

from typing import Any, cast

from trajectory2task.domains.airline.constants import INSURANCE_PER_PASSENGER, PRICE_PER_EXTRA_BAG
from trajectory2task.domains.airline.models import Available, Flight
from trajectory2task.domains.airline.rules import reservation, user
from trajectory2task.domains.kit import Calculation, Call
from trajectory2task.domains.runtime import Episode


def _fare(episode: Episode[Any], number: str, date: str, cabin: str) -> float | None:
    flight = cast(Flight | None, episode.get("flights", number))
    status = flight.dates.get(date) if flight is not None else None
    return float(status.prices[cabin]) if isinstance(status, Available) else None  # type: ignore[index]


def _n(value: float) -> str:
    return f"{value:g}"


# What the user asks for each write's amount. The questions name the write by its kind
# alone (with an ordinal where a task makes two of a kind, see ``question``): they sit in
# instructions the user reads from the start, so they must neither give away a detail the
# user keeps back (an ambiguous task's reservation) nor name a changing task's revised goal.
QUESTIONS = {
    "update_reservation_baggages": "Before you confirm, ask the agent how much {the} bag change will cost.",
    "update_reservation_flights": "Before you confirm, ask the agent what the fare difference of {the} change of "
                                  "flights or cabin comes to in all.",
    "book_reservation": "Before you confirm, ask the agent for the total price of {the} booking.",
    "cancel_reservation": "Before you confirm, ask the agent how much will be refunded in all for {the} "
                          "cancellation.",
}
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth")


def question(tool: str, ordinal: int | None = None) -> str:
    """The question for the amount of a ``tool`` write; ``ordinal`` (0-based) where the
    task makes more than one write of that tool."""
    the = "the" if ordinal is None else f"the {ORDINALS[min(ordinal, len(ORDINALS) - 1)]}"
    return QUESTIONS[tool].format(the=the)


def calculations(episode: Episode[Any], call: Call) -> list[Calculation]:
    """The amounts of ``call``, read from ``episode``, the state just before it."""
    a = call.arguments
    booking = reservation(episode, a.get("reservation_id"))
    if call.name == "update_reservation_baggages" and booking is not None:
        added = int(a.get("nonfree_baggages", 0)) - booking.nonfree_baggages
        if added <= 0:
            return []
        return [Calculation(expression=f"{PRICE_PER_EXTRA_BAG} * {added}", question=question(call.name))]
    if call.name == "update_reservation_flights" and booking is not None:
        cabin = str(a.get("cabin"))
        old, new = [], []
        for ref in a.get("flights") or []:
            kept = next((s for s in booking.flights if (s.flight_number, s.date) == (ref["flight_number"], ref["date"])
                         and cabin == booking.cabin), None)
            fare = kept.price if kept is not None else _fare(episode, ref["flight_number"], ref["date"], cabin)
            if fare is None:
                return []
            new.append(float(fare))
        old = [float(s.price) for s in booking.flights]
        count = len(booking.passengers)
        difference = (sum(new) - sum(old)) * count
        if difference == 0:
            return []
        more, less = (new, old) if difference > 0 else (old, new)
        terms = f"({' + '.join(map(_n, more))} - {' - '.join(map(_n, less))}) * {count}"
        return [Calculation(expression=terms, question=question(call.name))]
    if call.name == "book_reservation":
        owner = user(episode, a.get("user_id"))
        count = len(a.get("passengers") or [])
        fares = [_fare(episode, f["flight_number"], f["date"], str(a.get("cabin"))) for f in a.get("flights") or []]
        if owner is None or not fares or None in fares or not count:
            return []
        parts = [f"({' + '.join(_n(cast(float, f)) for f in fares)}) * {count}"]
        if a.get("insurance") == "yes":
            parts.append(f"{INSURANCE_PER_PASSENGER} * {count}")
        if int(a.get("nonfree_baggages", 0)) > 0:
            parts.append(f"{PRICE_PER_EXTRA_BAG} * {int(a['nonfree_baggages'])}")
        return [Calculation(expression=" + ".join(parts), question=question(call.name))]
    if call.name == "cancel_reservation" and booking is not None:
        paid = [p.amount for p in booking.payment_history]
        if not paid or sum(paid) <= 0:
            return []
        return [Calculation(expression=" + ".join(_n(p) if p >= 0 else f"({_n(p)})" for p in paid),
                            question=question(call.name))]
    return []
