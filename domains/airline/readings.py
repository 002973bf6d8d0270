"""Readings of an airline request that leaves one thing open: which reservation, or which
payment method.

An ambiguous task is fair only when its opening words fit more than one write an agent
could make. So the readings are built from what the words say (``request_meaning``: the
bag counts, the passenger replaced, the flight swapped, the cabin, the reason for a
cancellation), never by swapping one id in the gold write: each candidate reservation of
the authenticated user gets the write those words mean *for it* (its own passengers with
the named one replaced, its own bags plus the ones added, its own flights with the named
one swapped). A reading counts when its reservation satisfies every claim of the words,
is neither cancelled nor (partly) flown, the policy rules allow the write for the user,
the tools run it, and it ends in a state no other reading reaches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trajectory2task.domains.airline.knowledge import (
    booked_in_task,
    cancel_reason_kind,
    reason_allows_cancel,
    trip_words,
    user_reservations,
)
from trajectory2task.domains.airline.models import Reservation
from trajectory2task.domains.airline.rules import any_flown, free_bags, owner_of_call, reservation, user
from trajectory2task.domains.kit import EntityCandidate
from trajectory2task.domains.runtime import Episode, PolicyContext

OPEN_QUESTIONS = {"reservation_id": "which reservation you mean", "payment_id": "which payment method you mean"}


def _legs(booking: Reservation) -> list[tuple[str, str]]:
    return [(s.flight_number, s.date) for s in booking.flights]


def request_meaning(episode: Episode[Any], name: str, args: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the customer's words for a reservation write say, apart from which reservation
    (``knowledge.request_words`` says the same write); None where the words fit no other
    reservation by construction (a reservation booked in the task, a request with nothing
    to carry over)."""
    booking = reservation(episode, args.get("reservation_id"))
    if booking is None or booked_in_task(episode, booking.reservation_id):
        return None
    if name == "cancel_reservation":
        return {"reason": cancel_reason_kind(episode, booking)}
    if name == "update_reservation_baggages":
        total = args.get("total_baggages")
        if not isinstance(total, int) or total <= booking.total_baggages:
            return None
        return {"bags_before": booking.total_baggages, "bags_after": total, "payment_id": args.get("payment_id")}
    if name == "update_reservation_passengers":
        new = [dict(p) for p in args.get("passengers") or [] if isinstance(p, Mapping)]
        if len(new) != len(booking.passengers):
            return None
        swaps = [{"old": [old.first_name, old.last_name], "new": person}
                 for old, person in zip(booking.passengers, new)
                 if (old.first_name, old.last_name, old.dob) != (person.get("first_name"), person.get("last_name"),
                                                                 person.get("dob"))]
        return {"swaps": swaps} if swaps else None
    if name == "update_reservation_flights":
        wanted = [(str(f.get("flight_number")), str(f.get("date"))) for f in args.get("flights") or []
                  if isinstance(f, Mapping)]
        said: dict[str, Any] = {"cabin": args.get("cabin"), "payment_id": args.get("payment_id")}
        if wanted == _legs(booking):
            return {**said, "same_flights": True}
        if len(wanted) == len(booking.flights):
            swaps = [[s.flight_number, s.date, number, date] for s, (number, date) in zip(booking.flights, wanted)
                     if (s.flight_number, s.date) != (number, date)]
            return {**said, "swaps": swaps}
        return {**said, "flights": [list(leg) for leg in wanted]}
    return None


def _reservation_write(episode: Episode[Any], name: str, says: Mapping[str, Any],
                       booking: Reservation) -> dict[str, Any] | None:
    """The write the words ``says`` mean for ``booking``, or None where they do not fit it."""
    rid = booking.reservation_id
    if name == "cancel_reservation":
        return {"reservation_id": rid} if reason_allows_cancel(episode, booking, says["reason"]) else None
    if name == "update_reservation_baggages":
        owner = user(episode, booking.user_id)
        if owner is None or booking.total_baggages != says["bags_before"]:
            return None
        free = free_bags(owner.membership, booking.cabin, len(booking.passengers))
        return {"reservation_id": rid, "total_baggages": says["bags_after"],
                "nonfree_baggages": max(0, says["bags_after"] - free), "payment_id": says["payment_id"]}
    if name == "update_reservation_passengers":
        passengers = [p.model_dump() for p in booking.passengers]
        for swap in says["swaps"]:
            named = [i for i, p in enumerate(passengers) if [p["first_name"], p["last_name"]] == swap["old"]]
            new = swap["new"]
            already = [i for i, p in enumerate(passengers)
                       if (p["first_name"], p["last_name"]) == (new.get("first_name"), new.get("last_name"))]
            if len(named) != 1 or any(i != named[0] for i in already):
                return None  # the named passenger is not on it once, or the newcomer is already aboard
            passengers[named[0]] = dict(new)
        return {"reservation_id": rid, "passengers": passengers}
    if name == "update_reservation_flights":
        legs = _legs(booking)
        if says.get("same_flights"):
            if booking.cabin == says["cabin"]:
                return None  # "move it to business on the same flights": not one already in business
            wanted = legs
        elif "swaps" in says:
            wanted = list(legs)
            for old_number, old_date, number, date in says["swaps"]:
                if (old_number, old_date) not in wanted:
                    return None  # it does not hold the flight the words name
                wanted[wanted.index((old_number, old_date))] = (number, date)
        else:
            wanted = [tuple(leg) for leg in says["flights"]]
            if wanted == legs:
                return None
        return {"reservation_id": rid, "cabin": says["cabin"],
                "flights": [{"flight_number": n, "date": d} for n, d in wanted], "payment_id": says["payment_id"]}
    return None


def _allowed(episode: Episode[Any], name: str, arguments: Mapping[str, Any], user_id: str) -> str | None:
    """The end state of the write when the tools run it and the policy allows it for the
    user and it changes something; None otherwise."""
    if episode.environment.policy_violations(episode, name, arguments, PolicyContext(user_id=user_id)):
        return None
    fork = episode.fork()
    if fork.call(name, dict(arguments)).error:
        return None
    end = fork.state_hash()
    return None if end == episode.state_hash() else end


def readings(episode: Episode[Any], stated: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Candidate key -> the write the request ``stated`` means for it, for every candidate
    that fits (see the module docstring); candidates in the profile's order."""
    name, open_argument = str(stated.get("call")), stated.get("open")
    user_id = str(stated.get("user_id", ""))
    owner = user(episode, user_id)
    if owner is None:
        return {}
    options: list[tuple[str, dict[str, Any]]] = []
    if open_argument == "reservation_id":
        says = stated.get("says") or {}
        for booking in user_reservations(episode, user_id):
            if booking.status is not None or any_flown(episode, booking):
                continue  # the words ask to change or cancel a trip still to come
            write = _reservation_write(episode, name, says, booking)
            if write is not None:
                options.append((booking.reservation_id, write))
    elif open_argument == "payment_id":
        others = dict(stated.get("arguments") or {})
        options = [(method_id, {**others, "payment_id": method_id}) for method_id in sorted(owner.payment_methods)]
    out: dict[str, dict[str, Any]] = {}
    ends: set[str] = set()
    for key, write in options:
        end = _allowed(episode, name, write, user_id)
        if end is not None and end not in ends:
            ends.add(end)
            out[key] = write
    return out


def describe_candidate(episode: Episode[Any], stated: Mapping[str, Any], key: str) -> str:
    if stated.get("open") == "reservation_id":
        booking = reservation(episode, key)
        return f"reservation {key} ({trip_words(booking)})" if booking is not None else f"reservation {key}"
    return f"payment method {key}"


def candidates(episode: Episode[Any], stated: Mapping[str, Any]) -> list[EntityCandidate]:
    return [EntityCandidate(key=key, description=describe_candidate(episode, stated, key))
            for key in readings(episode, stated)]


def open_requests(episode: Episode[Any], name: str, args: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ways to say the write with one thing left open (the kit's ``stated`` shape), each
    with its readings in ``readings``; only those with two readings or more, one of which is
    the write itself."""
    owner_id = owner_of_call(episode, name, args)
    if owner_id is None:
        return []
    out = []
    says = request_meaning(episode, name, args)
    if says is not None:
        out.append({"call": name, "open": "reservation_id", "user_id": owner_id, "says": says,
                    "arguments": {k: v for k, v in args.items() if k != "reservation_id"}})
    if "payment_id" in args:
        # where the write charges nothing, every method ends in one state: one reading, dropped below
        out.append({"call": name, "open": "payment_id", "user_id": owner_id,
                    "arguments": {k: v for k, v in args.items() if k != "payment_id"}})
    kept = []
    for stated in out:
        found = readings(episode, stated)
        target = str(args.get(stated["open"]))
        if len(found) >= 2 and found.get(target) == dict(args):
            kept.append({**stated, "readings": found})
    return kept
