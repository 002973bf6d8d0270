"""Airline's exploration kit: what generation needs to know to walk and describe airline.

Walks start from a customer (who states their user id) or from one of their reservations
(looked up first, with the flights of its segments searched and the statuses of its past
segments checked, as an agent would before changing it). Each write builder makes
arguments that pass the tools and the policy rules from what the walk observed: the
reservation and profile records, search results and flight statuses. ``describe`` says
each write as the customer would: trips by route and date, flights by departure time,
cards by brand and last digits; the only ids a customer gives are the user id and the
reservation id, which airline customers do quote.
"""

from __future__ import annotations

import json
import random
import re
from datetime import datetime, timedelta
from collections.abc import Mapping, Sequence
from typing import Any, cast

from trajectory2task.domains import Environment
from trajectory2task.domains.airline.constants import INSURANCE_PER_PASSENGER, NOW, PRICE_PER_EXTRA_BAG, TODAY
from trajectory2task.domains.airline.calculations import calculations, question
from trajectory2task.domains.airline.knowledge import (
    CABIN_WORDS,
    bags_words,
    booked_in_task,
    cancel_reason,
    flight_words,
    payment_words,
    request_claims,
    request_words,
    trip_words,
    user_reservations,
)
from trajectory2task.domains.airline.models import Reservation
from trajectory2task.domains.airline.rules import (
    any_flown,
    cancellation_grounds,
    compensation_due,
    free_bags,
    owner_of_call,
    user,
)
from trajectory2task.domains.kit import (
    Call,
    ExplorationKit,
    GroundingHints,
    Knowledge,
    ObservedStep,
    RequestFacts,
    RequiredFact,
    SeedFilter,
    SeedVia,
    TrajectoryFacts,
)
from trajectory2task.domains.runtime import Episode

HINTS = GroundingHints(
    # payment ids are known to the walk's records too; customers never say them (lint)
    id_keys={"user_id": "user_id", "reservation_id": "reservation_id", "reservations": "reservation_id",
             "payment_id": "payment_id", "payment_methods": "payment_id"},
    entity_keys=("reservation_id", "user_id"),
)

MAX_SEARCHED_SEGMENTS = 4
NOT_DEPARTED = ("available", "on time", "delayed", "cancelled")  # statuses of a segment not (yet) flown


# ---------------------------------------------------------------- seeds


def seed_calls(customer: dict[str, Any]) -> list[Call]:
    return [Call(name="get_user_details", arguments={"user_id": customer["user_id"]})]


def seed_description(customer: dict[str, Any]) -> str:
    name = customer["name"]
    return (f"A customer named {name['first_name']} {name['last_name']}, user id {customer['user_id']}, "
            f"{customer['membership']} member. They know their user id.")


def reservation_reads(booking: dict[str, Any]) -> list[Call]:
    """What an agent reads before acting on a reservation: the reservation, the status of
    each segment flown today or earlier, and the direct flights of each later segment."""
    calls = [Call(name="get_reservation_details", arguments={"reservation_id": booking["reservation_id"]})]
    for segment in booking["flights"][:MAX_SEARCHED_SEGMENTS]:
        if segment["date"] <= TODAY:
            calls.append(Call(name="get_flight_status", arguments={"flight_number": segment["flight_number"],
                                                                   "date": segment["date"]}))
        else:
            calls.append(Call(name="search_direct_flight", arguments={
                "origin": segment["origin"], "destination": segment["destination"], "date": segment["date"]}))
    return list({json.dumps(c.model_dump(), sort_keys=True): c for c in calls}.values())


RESERVATION_SEED = SeedVia(
    customer_key=lambda booking: booking["user_id"],
    first_reads=reservation_reads,
    describe=lambda booking: f"They are calling about their reservation {booking['reservation_id']} "
                             f"({trip_words(booking)}).",
)


def _unflown_active(episode: Episode[Any], booking: Reservation) -> bool:
    return booking.status is None and not any_flown(episode, booking)


def _all_later(booking: Reservation) -> bool:
    return bool(booking.flights) and all(s.date > TODAY for s in booking.flights)


def _has_new_passenger(episode: Episode[Any], booking: Reservation) -> bool:
    owner = user(episode, booking.user_id)
    on_board = {(p.first_name, p.last_name) for p in booking.passengers}
    return owner is not None and any((p.first_name, p.last_name) not in on_board for p in owner.saved_passengers)


def _compensable(episode: Episode[Any], booking: Reservation) -> bool:
    owner = user(episode, booking.user_id)
    return owner is not None and any(rid == booking.reservation_id and why == "cancelled flight"
                                     for rid, _, why in compensation_due(episode, owner))


SEED_FOR_WRITE = {
    "cancel_reservation": SeedFilter("reservations", applies_in=lambda ep, r: _unflown_active(ep, r)
                                     and bool(cancellation_grounds(ep, r))),
    "update_reservation_baggages": SeedFilter("reservations", applies_in=_unflown_active),
    "update_reservation_flights": SeedFilter("reservations", applies_in=lambda ep, r: _unflown_active(ep, r)
                                             and _all_later(r)),
    "update_reservation_passengers": SeedFilter("reservations", applies_in=lambda ep, r: _unflown_active(ep, r)
                                                and _has_new_passenger(ep, r)),
    "send_certificate": SeedFilter("reservations", applies_in=_compensable),
    # a booking needs searched flights: start from a reservation whose first segment is still ahead
    "book_reservation": SeedFilter("reservations", applies=lambda r: bool(r.flights) and r.flights[0].date > TODAY),
}


# ---------------------------------------------------------------- what the walk observed


def _reservations(knowledge: Knowledge) -> list[dict[str, Any]]:
    return knowledge.all_records("reservation_id")


def _owner(knowledge: Knowledge, booking: Mapping[str, Any]) -> dict[str, Any] | None:
    return knowledge.record("user_id", booking["user_id"])


def _statuses(knowledge: Knowledge) -> dict[tuple[str, str], str]:
    """(flight number, date) -> status, from the get_flight_status calls observed."""
    out = {}
    for call, output in knowledge.steps:
        if call.name == "get_flight_status" and not output.startswith("Error"):
            out[(call.arguments["flight_number"], call.arguments["date"])] = output.strip()
    return out


def _searched(knowledge: Knowledge) -> list[tuple[str, dict[str, Any]]]:
    """(date, flight) for each bookable direct flight the searches showed, newest search last."""
    out = []
    for call, output in knowledge.steps:
        if call.name != "search_direct_flight":
            continue
        try:
            flights = json.loads(output)
        except ValueError:
            continue
        if isinstance(flights, list):
            out += [(call.arguments["date"], f) for f in flights if isinstance(f, dict)]
    return out


def _offer(knowledge: Knowledge, number: str, date: str) -> dict[str, Any] | None:
    found = [f for d, f in _searched(knowledge) if d == date and f.get("flight_number") == number]
    return found[-1] if found else None


def _segment_state(knowledge: Knowledge, segment: Mapping[str, Any]) -> str | None:
    """'available' for a later segment; a past or today's segment's observed status; None if unknown."""
    if segment["date"] > TODAY:
        return "available"
    return _statuses(knowledge).get((segment["flight_number"], segment["date"]))


def _not_flown(knowledge: Knowledge, booking: Mapping[str, Any]) -> bool:
    return all(_segment_state(knowledge, s) in NOT_DEPARTED for s in booking["flights"])


def _written(knowledge: Knowledge) -> set[str]:
    """Reservations an earlier write of the walk made or changed: a second write on one
    (more bags after adding bags, a cancel after a change) would make the first pointless."""
    out = _booked_in_walk(knowledge)
    for call, output in knowledge.steps:
        rid = call.arguments.get("reservation_id")
        if call.name in WRITE_BUILDERS and isinstance(rid, str) and not output.startswith("Error"):
            out.add(rid)
    return out


def _active(knowledge: Knowledge) -> list[dict[str, Any]]:
    """Reservations a write may act on: not cancelled, not flown, not yet written in the walk."""
    written = _written(knowledge)
    return [b for b in _reservations(knowledge) if b.get("status") is None and _not_flown(knowledge, b)
            and _owner(knowledge, b) is not None and b["reservation_id"] not in written]


def _spent(knowledge: Knowledge) -> set[str]:
    """Payment methods an earlier write of the walk charged: the profile the walk read shows
    their balance from before (a gift card is not offered again on a stale balance)."""
    out: set[str] = set()
    for call, output in knowledge.steps:
        if call.name in WRITE_BUILDERS and not output.startswith("Error"):
            paid = [call.arguments.get("payment_id"), *(m.get("payment_id") for m in
                                                        call.arguments.get("payment_methods") or [])]
            out |= {p for p in paid if isinstance(p, str)}
    return out


def _cards(owner: Mapping[str, Any], amount: float, spent: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """Ids of the owner's credit cards and of gift cards holding ``amount``: what an update may charge."""
    methods = owner.get("payment_methods", {})
    return sorted(k for k, m in methods.items() if m["source"] == "credit_card"
                  or (m["source"] == "gift_card" and m["amount"] >= amount and k not in spent))


def _booking_methods(owner: Mapping[str, Any], amount: float, spent: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """Single methods that can pay a whole booking: any card, or a gift card or certificate holding it."""
    methods = owner.get("payment_methods", {})
    return sorted(k for k, m in methods.items()
                  if m["source"] == "credit_card" or (m["amount"] >= amount and k not in spent))


# ---------------------------------------------------------------- write builders


def _booked_in_walk(knowledge: Knowledge) -> set[str]:
    """Ids of the reservations the walk itself booked."""
    out = set()
    for call, output in knowledge.steps:
        if call.name == "book_reservation":
            try:
                made = json.loads(output)
            except ValueError:
                continue
            if isinstance(made, dict) and isinstance(made.get("reservation_id"), str):
                out.add(made["reservation_id"])
    return out


def build_cancel(knowledge: Knowledge, rng: random.Random) -> dict[str, Any] | None:
    statuses = _statuses(knowledge)
    options = []
    for booking in _active(knowledge):
        airline_cancelled = any(statuses.get((s["flight_number"], s["date"])) == "cancelled"
                                for s in booking["flights"])
        recent = booking_recent(booking)
        if airline_cancelled or recent or booking["cabin"] == "business" or booking["insurance"] == "yes":
            options.append(booking["reservation_id"])
    return {"reservation_id": rng.choice(sorted(options))} if options else None


def booking_recent(booking: Mapping[str, Any]) -> bool:
    """Booked within the 24 hours before the fixed current time."""
    try:
        created = datetime.fromisoformat(str(booking.get("created_at", "")))
    except ValueError:
        return False
    return timedelta(0) <= NOW - created <= timedelta(hours=24)


def build_baggages(knowledge: Knowledge, rng: random.Random) -> dict[str, Any] | None:
    options = []
    for booking in _active(knowledge):
        owner = _owner(knowledge, booking)
        assert owner is not None
        total = booking["total_baggages"] + rng.randint(1, 2)
        free = free_bags(owner["membership"], booking["cabin"], len(booking["passengers"]))
        paid = max(0, total - free)
        if paid < booking["nonfree_baggages"]:
            continue  # booked with more paid bags than the allowance asks: no add fits both rules
        methods = _cards(owner, PRICE_PER_EXTRA_BAG * (paid - booking["nonfree_baggages"]), _spent(knowledge))
        if methods:
            options.append({"reservation_id": booking["reservation_id"], "total_baggages": total,
                            "nonfree_baggages": paid, "payment_id": rng.choice(methods)})
    return rng.choice(options) if options else None


def _seats(offer: Mapping[str, Any], cabin: str) -> int:
    return int(offer.get("available_seats", {}).get(cabin, 0))


def build_flights(knowledge: Knowledge, rng: random.Random) -> dict[str, Any] | None:
    """Either the same flights in another cabin, or one segment moved to another direct
    flight on the same leg and day in the same cabin (not for basic economy)."""
    options = []
    for booking in _active(knowledge):
        owner = _owner(knowledge, booking)
        assert owner is not None
        segments, count, cabin = booking["flights"], len(booking["passengers"]), booking["cabin"]
        if not all(s["date"] > TODAY for s in segments):
            continue
        paid = sum(s["price"] for s in segments)
        offers = [_offer(knowledge, s["flight_number"], s["date"]) for s in segments]
        if all(offers):
            for other in CABIN_WORDS:
                if other != cabin and all(_seats(o, other) >= count for o in offers if o):
                    difference = (sum(o["prices"][other] for o in offers if o) - paid) * count
                    methods = _cards(owner, difference, _spent(knowledge))
                    if methods:
                        options.append({"reservation_id": booking["reservation_id"], "cabin": other,
                                        "flights": [{"flight_number": s["flight_number"], "date": s["date"]}
                                                    for s in segments],
                                        "payment_id": rng.choice(methods)})
        if cabin == "basic_economy":
            continue
        for position, segment in enumerate(segments):
            for date, offer in _searched(knowledge):
                if date != segment["date"] or offer["origin"] != segment["origin"] \
                        or offer["destination"] != segment["destination"] \
                        or offer["flight_number"] == segment["flight_number"] or _seats(offer, cabin) < count:
                    continue
                difference = (offer["prices"][cabin] - segment["price"]) * count
                methods = _cards(owner, difference, _spent(knowledge))
                if methods:
                    flights = [{"flight_number": s["flight_number"], "date": s["date"]} for s in segments]
                    flights[position] = {"flight_number": offer["flight_number"], "date": date}
                    options.append({"reservation_id": booking["reservation_id"], "cabin": cabin, "flights": flights,
                                    "payment_id": rng.choice(methods)})
    unique = {json.dumps(o, sort_keys=True): o for o in options}
    return unique[rng.choice(sorted(unique))] if unique else None


def build_passengers(knowledge: Knowledge, rng: random.Random) -> dict[str, Any] | None:
    options = []
    for booking in _active(knowledge):
        owner = _owner(knowledge, booking)
        assert owner is not None
        on_board = {(p["first_name"], p["last_name"]) for p in booking["passengers"]}
        newcomers = [p for p in owner.get("saved_passengers", []) if (p["first_name"], p["last_name"]) not in on_board]
        for newcomer in newcomers:
            for position in range(len(booking["passengers"])):
                passengers = [dict(p) for p in booking["passengers"]]
                passengers[position] = dict(newcomer)
                options.append({"reservation_id": booking["reservation_id"], "passengers": passengers})
    return rng.choice(options) if options else None


def build_certificate(knowledge: Knowledge, rng: random.Random) -> dict[str, Any] | None:
    """100 per passenger for an eligible reservation whose flight the airline cancelled."""
    statuses = _statuses(knowledge)
    options = []
    for booking in _reservations(knowledge):
        owner = _owner(knowledge, booking)
        if owner is None or not any(statuses.get((s["flight_number"], s["date"])) == "cancelled"
                                    for s in booking["flights"]):
            continue
        if owner["membership"] in ("silver", "gold") or booking["insurance"] == "yes" or booking["cabin"] == "business":
            options.append({"user_id": owner["user_id"], "amount": 100 * len(booking["passengers"])})
    unique = {json.dumps(o, sort_keys=True): o for o in options}
    return unique[rng.choice(sorted(unique))] if unique else None


def build_booking(knowledge: Knowledge, rng: random.Random) -> dict[str, Any] | None:
    """A one-way trip on a searched direct flight for the customer and maybe a saved passenger,
    paid whole with one method, paid bags exactly those beyond the allowance."""
    # a customer whose reservations the walk has all looked up: only then can it tell which
    # flights their travellers already hold (nobody is booked twice on one flight)
    owners = [o for o in knowledge.all_records("user_id")
              if all(knowledge.record("reservation_id", rid) is not None for rid in o.get("reservations", []))]
    offers = _searched(knowledge)
    if not owners or not offers:
        return None
    owner = rng.choice(owners)
    travellers = [{"first_name": owner["name"]["first_name"], "last_name": owner["name"]["last_name"],
                   "dob": owner["dob"]}]
    saved = [dict(p) for p in owner.get("saved_passengers", []) if p["first_name"] != travellers[0]["first_name"]]
    if saved and rng.random() < 0.5:
        travellers.append(rng.choice(saved))
    # nobody is booked twice on one flight: not on a flight an active reservation already
    # holds them on (the customer's own, all looked up; a booking made earlier in the walk)
    names = {(p["first_name"], p["last_name"]) for p in travellers}
    taken = {(s["flight_number"], s["date"]) for b in _reservations(knowledge) if b.get("status") is None
             and names & {(p["first_name"], p["last_name"]) for p in b["passengers"]} for s in b["flights"]}
    offers = [(d, o) for d, o in offers if (o.get("flight_number"), d) not in taken]
    if not offers:
        return None
    date, offer = rng.choice(offers)
    cabins = [c for c in CABIN_WORDS if _seats(offer, c) >= len(travellers)]
    if not cabins:
        return None
    cabin = rng.choice(cabins)
    total_bags = rng.randint(0, 2) * len(travellers)
    paid_bags = max(0, total_bags - free_bags(owner["membership"], cabin, len(travellers)))
    insurance = rng.choice(["yes", "no"])
    total = (offer["prices"][cabin] + (INSURANCE_PER_PASSENGER if insurance == "yes" else 0)) * len(travellers) \
        + PRICE_PER_EXTRA_BAG * paid_bags
    methods = _booking_methods(owner, total, _spent(knowledge))
    if not methods:
        return None
    return {"user_id": owner["user_id"], "origin": offer["origin"], "destination": offer["destination"],
            "flight_type": "one_way", "cabin": cabin,
            "flights": [{"flight_number": offer["flight_number"], "date": date}], "passengers": travellers,
            "payment_methods": [{"payment_id": rng.choice(methods), "amount": total}],
            "total_baggages": total_bags, "nonfree_baggages": paid_bags, "insurance": insurance}


WRITE_BUILDERS = {
    "book_reservation": build_booking,
    "cancel_reservation": build_cancel,
    "update_reservation_baggages": build_baggages,
    "update_reservation_flights": build_flights,
    "update_reservation_passengers": build_passengers,
    "send_certificate": build_certificate,
}


# ---------------------------------------------------------------- facts of a write


def _rid_fact(reservation_id: str) -> RequiredFact:
    return RequiredFact(label="reservation id", alternatives=[reservation_id])


def describe_request(episode: Episode[Any], name: str, a: Mapping[str, Any],
                     user_id: str | None = None) -> RequestFacts:
    """Sentence, facts, claims and amounts of one airline write, read from the state just
    before it. The words are ``knowledge.request_words`` (the condition kit says writes with
    the same function); the facts are what of them the agent must hear."""
    booking = cast(Reservation | None, episode.get("reservations", str(a.get("reservation_id", ""))))
    owner_id = owner_of_call(episode, name, a) or str(a.get("user_id", ""))
    facts: list[RequiredFact] = []

    def payment(method_id: str) -> RequiredFact:
        return RequiredFact(label="payment method", alternatives=payment_words(episode, owner_id, method_id)[1])

    if name == "book_reservation":
        leg = a["flights"][0]
        _, departure = flight_words(episode, leg["flight_number"], leg["date"])
        facts = [RequiredFact(label="origin", alternatives=[a["origin"]]),
                 RequiredFact(label="destination", alternatives=[a["destination"]]),
                 RequiredFact(label="date", alternatives=[leg["date"]]),
                 RequiredFact(label="departure time", alternatives=[departure, leg["flight_number"]]),
                 RequiredFact(label="cabin", alternatives=[CABIN_WORDS[a["cabin"]]]),
                 payment(a["payment_methods"][0]["payment_id"])]
        for p in a["passengers"]:
            facts += [RequiredFact(label="passenger", alternatives=[f"{p['first_name']} {p['last_name']}"]),
                      RequiredFact(label="passenger date of birth", alternatives=[p["dob"]])]
    elif name == "send_certificate":
        words = request_words(episode, name, a)
        facts = [_rid_fact(r) for r in (b.reservation_id for b in user_reservations(episode, owner_id)) if r in words]
    elif booking is not None:
        # a reservation booked earlier in the task is named by its trip: no id to state
        facts = [] if booked_in_task(episode, booking.reservation_id) else [_rid_fact(booking.reservation_id)]
        if name == "cancel_reservation":
            facts += cancel_reason(episode, booking)[1]
        elif name == "update_reservation_baggages":
            facts.append(RequiredFact(label="bags in all", alternatives=[bags_words(a["total_baggages"])]))
            if a["total_baggages"] > booking.total_baggages:
                facts.append(payment(a["payment_id"]))
        elif name == "update_reservation_flights":
            facts.append(payment(a["payment_id"]))
            kept = [(s.flight_number, s.date) for s in booking.flights]
            wanted = [(f["flight_number"], f["date"]) for f in a["flights"]]
            if wanted == kept:
                facts.append(RequiredFact(label="cabin", alternatives=[CABIN_WORDS[a["cabin"]]]))
            for number, date in wanted:
                if (number, date) not in kept:
                    facts.append(RequiredFact(label="new departure time",
                                              alternatives=[flight_words(episode, number, date)[1], number]))
        elif name == "update_reservation_passengers":
            for old, new in zip(booking.passengers, a["passengers"]):
                if (old.first_name, old.last_name, old.dob) != (new["first_name"], new["last_name"], new["dob"]):
                    facts += [RequiredFact(label="new passenger",
                                           alternatives=[f"{new['first_name']} {new['last_name']}"]),
                              RequiredFact(label="new passenger date of birth", alternatives=[new["dob"]])]
    amounts = calculations(episode, Call(name=name, arguments=dict(a)))
    sentence = " ".join([f"You want to {request_words(episode, name, a)}.", *(c.question for c in amounts)])
    return RequestFacts(tool=name, sentence=sentence, facts=facts, calculations=amounts,
                        claims=request_claims(episode, name, a, user_id))


def _untold_amounts(requests: list[RequestFacts]) -> list[RequestFacts]:
    """Drops each amount whose value the task's own words already state (a 100-dollar
    certificate asked for and a 100-dollar bag fee): an agent that only repeats the
    user's words must not pass as one that worked the amount out; and each amount equal
    to one asked for before (two 50-dollar bag fees): one question, one value."""
    said = " ".join(_without_questions(r) for r in requests)
    asked: set[str] = set()
    out = []
    for request in requests:
        kept = []
        for calculation in request.calculations:
            if calculation.result not in asked and \
                    not re.search(rf"(?<![\w.:-]){re.escape(calculation.result)}(?![\w:-]|\.\d)", said):
                kept.append(calculation)
                asked.add(calculation.result)
        if len(kept) == len(request.calculations):
            out.append(request)
            continue
        sentence = request.sentence
        for dropped in request.calculations:
            if dropped not in kept:
                sentence = sentence.replace(f" {dropped.question}", "")
        out.append(request.model_copy(update={"calculations": kept, "sentence": sentence}))
    return out


def _without_questions(request: RequestFacts) -> str:
    sentence = request.sentence
    for asked in request.questions:
        sentence = sentence.replace(asked, "")
    return sentence


def _numbered_questions(requests: list[RequestFacts]) -> list[RequestFacts]:
    """Two writes of one kind that each have an amount get an ordinal in their questions:
    one question per amount, each asking for one value."""
    asking = [r.tool for r in requests if r.calculations]
    seen: dict[str, int] = {}
    out = []
    for request in requests:
        if not request.calculations or asking.count(request.tool) < 2:
            out.append(request)
            continue
        ordinal = seen.get(request.tool, 0)
        seen[request.tool] = ordinal + 1
        old = [c.question for c in request.calculations]
        renamed = [c.model_copy(update={"question": question(request.tool, ordinal)}) for c in request.calculations]
        sentence = request.sentence
        for before, after in zip(old, renamed):
            sentence = sentence.replace(before, after.question)
        out.append(request.model_copy(update={"calculations": renamed, "sentence": sentence}))
    return out


def describe(env: Environment[Any], steps: Sequence[ObservedStep], seed_entity: str | None) -> TrajectoryFacts:
    """Identity and per-write facts of an airline trajectory, replayed on a fresh episode."""
    episode = env.episode()
    user_id: str | None = None
    requests = []
    for step in steps:
        call = step.call
        spec = env.tools.get(call.name)
        if spec is not None and spec.authenticates is not None and user_id is None and not step.error:
            user_id = spec.authenticates(call.arguments, step.observation)
        if spec is not None and spec.kind == "write":
            owner = user_id or (env.domain.owner_of(env.episode(), *seed_entity.split("/", 1))
                                if seed_entity and "/" in seed_entity else None)
            requests.append(describe_request(episode, call.name, call.arguments, owner))
        episode.call(call.name, call.arguments)
    requests = _numbered_questions(_untold_amounts(requests))
    if user_id is None and seed_entity:
        table, _, key = seed_entity.partition("/")
        user_id = env.domain.owner_of(env.episode(), table, key)
    if user_id is None:
        return TrajectoryFacts(known_info="", requests=requests)
    return TrajectoryFacts(known_info=f"Your user id is {user_id}.", requests=requests,
                           identity=[RequiredFact(label="user id", alternatives=[user_id])])


EXPLORATION = ExplorationKit(
    hints=HINTS,
    seed_table="users",
    seed_calls=seed_calls,
    seed_description=seed_description,
    walk_reads=("get_user_details", "get_reservation_details"),
    write_builders=WRITE_BUILDERS,
    describe=describe,
    seed_via={"reservations": RESERVATION_SEED},
    seed_for_write=SEED_FOR_WRITE,
    # airline customers state their user id and reservation codes
    customer_id_kinds=("user_id", "reservation_id"),
    calculations=calculations,
)
