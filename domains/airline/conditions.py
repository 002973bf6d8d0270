"""Airline facts for the intent conditions (ambiguous, changing, infeasible): airline's condition kit's functions.

What the domain-general kit (``trajectory2task.domains.generic_kit.GenericConditions``) cannot know:

- words: a write as a customer asks for it (trips by route and date, flights by departure
  time, cards by brand and last digits), and with an ambiguity's open argument left vague;
- changing: revised goals a traveller could have (another cabin, another flight that day,
  another bag count, another saved passenger, a booking with or without insurance), each
  repriced so that it passes the tools and the policy rules;
- infeasible: requests that run into one of the policy rules (basic economy flight change,
  cancellation without grounds, fewer bags, free extra bags, another passenger count, a
  changed route, acting on another user's reservation, compensation not due, two cards on
  one booking, six travellers) or into a tool check (a certificate for a change, no seats).

Ambiguity: a write said without its reservation or payment method, where the words fit
two or more writes the policy allows, each built from the words for its candidate
(``readings``). The programs check every proposal on forks, so nothing here is trusted
for a condition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from trajectory2task.domains.airline.constants import (
    COMPENSATION_CANCELLED_PER_PASSENGER,
    INSURANCE_PER_PASSENGER,
    MAX_PASSENGERS,
    PRICE_PER_EXTRA_BAG,
    TODAY,
)
from trajectory2task.domains.airline.knowledge import (
    CABIN_WORDS,
    alternative_flights,
    bags_words,
    flight_words,
    payment_words,
    request_claims,
    request_words,
    trip_claims,
    trip_words,
    user_reservations,
)
from trajectory2task.domains.airline.models import Available, Flight, Reservation
from trajectory2task.domains.airline.readings import OPEN_QUESTIONS, candidates, open_requests
from trajectory2task.domains.airline.rules import (
    any_flown,
    cancellation_grounds,
    compensation_due,
    free_bags,
    owner_of_call as _owner_of_call,
    reservation,
    segment_status,
    user,
)
from trajectory2task.domains.retail.generate import FIRST_NAMES
from trajectory2task.domains.kit import AmbiguityProposal, Call, ChangeAlternative, Claim, EntityCandidate, InfeasibleProposal
from trajectory2task.domains.runtime import Episode, PolicyContext

MAX_OTHER_USERS = 2
NOUNS = {"book_reservation": "booking", "cancel_reservation": "cancellation",
         "update_reservation_flights": "flight change", "update_reservation_baggages": "bag change",
         "update_reservation_passengers": "passenger change", "send_certificate": "compensation"}
HANDOFF = "transfer_to_human_agents"


def _flight(episode: Episode[Any], number: str) -> Flight | None:
    return cast(Flight | None, episode.get("flights", number))


def _price(episode: Episode[Any], number: str, date: str, cabin: str) -> int | None:
    flight = _flight(episode, number)
    status = flight.dates.get(date) if flight else None
    return status.prices[cabin] if isinstance(status, Available) else None  # type: ignore[index]


def _seats(episode: Episode[Any], number: str, date: str, cabin: str) -> int:
    flight = _flight(episode, number)
    status = flight.dates.get(date) if flight else None
    return status.available_seats.get(cabin, 0) if isinstance(status, Available) else 0  # type: ignore[call-overload]


def _charge_methods(episode: Episode[Any], user_id: str, amount: float) -> list[str]:
    """Methods an update may charge: credit cards, and gift cards holding the amount."""
    owner = user(episode, user_id)
    if owner is None:
        return []
    return sorted(k for k, m in owner.payment_methods.items()
                  if m.source == "credit_card" or (m.source == "gift_card" and m.amount >= amount))


# ---------------------------------------------------------------- identity and words


class AirlineConditions:
    """Airline's condition functions (its ``ConditionKit``'s pieces, in ``kit.py``); ``stated``
    has the generic kit's shape."""

    def identity_lookup(self, episode: Episode[Any], user_id: str) -> Call | None:
        return Call(name="get_user_details", arguments={"user_id": user_id}) if user(episode, user_id) else None

    def identity_text(self, call: Mapping[str, Any]) -> str:
        return f"Your user id is {call['arguments'].get('user_id')}."

    def forgotten_identity(self, call: Mapping[str, Any]) -> str | None:
        return None

    def owner_of_call(self, episode: Episode[Any], name: str, arguments: Mapping[str, Any]) -> str | None:
        return _owner_of_call(episode, name, arguments)

    def describe_call(self, episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                      stated: Mapping[str, Any] | None = None) -> str:
        """A write as the customer asks for it (``knowledge.request_words``, airline's one
        wording, which the writer's templates use too)."""
        return request_words(episode, name, arguments, stated)

    def call_claims(self, episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                    user_id: str | None = None) -> list[Claim]:
        return request_claims(episode, name, arguments, user_id)

    def action_label(self, name: str, arguments: Mapping[str, Any]) -> str:
        noun = NOUNS.get(name, name.replace("_", " "))
        rid = arguments.get("reservation_id")
        return f"the {noun} for reservation {rid}" if isinstance(rid, str) else f"the {noun}"

    def related_entities(self, calls: Sequence[Mapping[str, Any]]) -> list[str]:
        return sorted({c["arguments"]["reservation_id"] for c in calls
                       if isinstance(c["arguments"].get("reservation_id"), str)})

    def user_stated_ids(self, name: str, arguments: Mapping[str, Any]) -> list[str]:
        rid = arguments.get("reservation_id")
        return [rid] if isinstance(rid, str) else []

    # ------------------------------------------------------------ ambiguity (readings from the words)

    def ambiguity_proposals(self, episode: Episode[Any], calls: Sequence[Mapping[str, Any]]) -> list[AmbiguityProposal]:
        """Each write said with its reservation or payment method left open, where the words
        fit two or more writes the policy allows (``readings``); one open thing per write."""
        out = []
        state = episode.fork()
        for index, call in enumerate(calls):
            if call["name"] in NOUNS:
                for stated in open_requests(state, call["name"], call["arguments"]):
                    target = str(call["arguments"][stated["open"]])
                    found = candidates(state, stated)
                    withheld = self.withheld_values(state, stated, target, found)
                    if not withheld:
                        continue
                    sentence = (f"You mean {payment_words(state, stated['user_id'], target)[0]}."
                                if stated["open"] == "payment_id" else f"The reservation id is {target}.")
                    out.append(AmbiguityProposal(
                        kind=f"which_{stated['open']}", open_question=OPEN_QUESTIONS[stated["open"]],
                        action_index=index, stated=stated, target=target, candidates=found, withheld=withheld,
                        withheld_sentences=[sentence]))
                    break
            state.call(call["name"], call["arguments"])
        return out

    def ambiguity_candidates(self, episode: Episode[Any], stated: Mapping[str, Any]) -> list[EntityCandidate]:
        return candidates(episode, stated)

    def reading_call(self, stated: Mapping[str, Any], call: Mapping[str, Any], candidate: str) -> Call | None:
        """The write an agent that took ``candidate`` for the open thing would make: built for
        that candidate from the words when the proposal was made (``readings``)."""
        found = (stated.get("readings") or {}).get(candidate)
        return Call(name=call["name"], arguments=dict(found)) if found is not None else None

    def ambiguity_target(self, stated: Mapping[str, Any], call: Mapping[str, Any]) -> str | None:
        value = call["arguments"].get(str(stated.get("open")))
        return None if value is None else str(value)

    def withheld_values(self, episode: Episode[Any], stated: Mapping[str, Any], target: str,
                        candidates: Sequence[EntityCandidate]) -> list[str]:
        if not any(c.key == target for c in candidates):
            return []
        if stated.get("open") == "payment_id":
            return payment_words(episode, str(stated.get("user_id", "")), target)[1][:1]
        return [target]

    # ------------------------------------------------------------ changing

    def change_alternatives(self, episode: Episode[Any], call: Mapping[str, Any]) -> list[ChangeAlternative]:
        """Other goals for one write, each passing the policy rules for the write's owner."""
        name, args = call["name"], dict(call["arguments"])
        owner_id = _owner_of_call(episode, name, args)
        first_words = request_words(episode, name, args)
        # a revised goal the customer's words could not tell from the first one is no change to ask for
        return [alt for alt in _change_options(episode, name, args)
                if not episode.environment.policy_violations(episode, name, alt.arguments,
                                                             PolicyContext(user_id=owner_id))
                and request_words(episode, name, alt.arguments) != first_words]

    def change_mentions(self, episode: Episode[Any], initial: Mapping[str, Any], revised: Mapping[str, Any]) -> list[str]:
        """Words in the revised request that tell it from the first one."""
        if initial["name"] != revised["name"]:
            return [revised["name"]]
        before, after = initial["arguments"], revised["arguments"]
        owner_id = _owner_of_call(episode, revised["name"], after) or str(after.get("user_id", ""))
        out: list[str] = []
        if before.get("reservation_id") != after.get("reservation_id") and "reservation_id" in after:
            out.append(after["reservation_id"])
        if before.get("cabin") != after.get("cabin") and "cabin" in after:
            out.append(CABIN_WORDS.get(after["cabin"], after["cabin"]))
        if before.get("total_baggages") != after.get("total_baggages") and "total_baggages" in after:
            out.append(bags_words(after["total_baggages"]))
        if before.get("insurance") != after.get("insurance") and "insurance" in after:
            out.append(f"{'with' if after['insurance'] == 'yes' else 'without'} travel insurance")
        if before.get("payment_id") != after.get("payment_id") and "payment_id" in after:
            out.append(payment_words(episode, owner_id, after["payment_id"])[1][0])
        old_legs = [(f.get("flight_number"), f.get("date")) for f in before.get("flights") or []]
        for leg in after.get("flights") or []:
            if (leg.get("flight_number"), leg.get("date")) not in old_legs:
                out.append(flight_words(episode, leg["flight_number"], leg["date"])[1])
        old_people = [(p.get("first_name"), p.get("last_name")) for p in before.get("passengers") or []]
        for person in after.get("passengers") or []:
            if (person.get("first_name"), person.get("last_name")) not in old_people:
                out.append(f"{person['first_name']} {person['last_name']}")
        return list(dict.fromkeys(out))

    # ------------------------------------------------------------ infeasible

    def required_lookups(self, episode: Episode[Any], user_id: str, name: str,
                         arguments: Mapping[str, Any]) -> list[Call]:
        rid = arguments.get("reservation_id")
        return [Call(name="get_reservation_details", arguments={"reservation_id": rid})] if isinstance(rid, str) else []

    def infeasible_proposals(self, episode: Episode[Any], user_id: str,
                             calls: Sequence[Mapping[str, Any]]) -> list[InfeasibleProposal]:
        """Requests of ``user_id`` that a policy rule or a tool check refuses, built from their
        reservations (those the task's calls act on marked related) and a few of others'."""
        owner = user(episode, user_id)
        if owner is None:
            return []
        related = set(self.related_entities(calls))
        out: list[InfeasibleProposal] = []

        def add(rule: str, name: str, arguments: dict[str, Any], fact: str, rid: str | None = None,
                handoff: Call | None = None) -> None:
            out.append(InfeasibleProposal(rule=rule, action=Call(name=name, arguments=arguments), fact=fact,
                                          related=rid in related if rid else False, handoff=handoff,
                                          claims=request_claims(episode, name, arguments, user_id)))

        cards = _charge_methods(episode, user_id, 0)
        for booking in user_reservations(episode, user_id):
            rid = booking.reservation_id
            active = booking.status is None
            flown = any_flown(episode, booking)
            if active and (flown or not cancellation_grounds(episode, booking)):
                # the policy: a trip already under way cannot be cancelled, and goes to a human agent
                handoff = Call(name=HANDOFF, arguments={"summary": f"The user wants to cancel reservation {rid}, "
                                                                   "part of which has already been flown."})
                add("cancellation_allowed", "cancel_reservation", {"reservation_id": rid},
                    f"reservation {rid} may not be cancelled: " + (
                        "a segment was already flown, so the user is handed to a human agent" if flown else
                        "it was booked more than 24 hours ago, no flight was cancelled by the airline, it is not "
                        "business and has no insurance"), rid, handoff=handoff if flown else None)
            if not active:
                continue
            if booking.total_baggages > 0 and cards:
                add("bags_only_added", "update_reservation_baggages",
                    {"reservation_id": rid, "total_baggages": booking.total_baggages - 1,
                     "nonfree_baggages": max(0, booking.nonfree_baggages - 1), "payment_id": cards[0]},
                    "checked bags can be added to a reservation but never removed", rid)
            free = free_bags(owner.membership, booking.cabin, len(booking.passengers))
            certificates = sorted(k for k, m in owner.payment_methods.items() if m.source == "certificate")
            if booking.total_baggages >= free and certificates:
                add("certificate_for_update", "update_reservation_baggages",
                    {"reservation_id": rid, "total_baggages": booking.total_baggages + 1,
                     "nonfree_baggages": booking.nonfree_baggages + 1, "payment_id": certificates[0]},
                    "a travel certificate cannot pay for a change to a reservation", rid)
            saved = [p for p in owner.saved_passengers
                     if (p.first_name, p.last_name) not in {(q.first_name, q.last_name) for q in booking.passengers}]
            if saved:
                add("passenger_count_fixed", "update_reservation_passengers",
                    {"reservation_id": rid, "passengers": [p.model_dump() for p in booking.passengers]
                     + [saved[0].model_dump()]},
                    "the number of passengers of a reservation cannot change", rid)
            later = [s for s in booking.flights if s.date > TODAY]
            if not later or not cards:
                continue
            first = later[0]
            others = [n for n in alternative_flights(episode, first.origin, first.destination, first.date,
                                                     booking.cabin, len(booking.passengers))
                      if n != first.flight_number]
            legs = [{"flight_number": s.flight_number, "date": s.date} for s in booking.flights]
            if booking.cabin == "basic_economy" and not flown and others:
                moved = [dict(leg) for leg in legs]
                moved[booking.flights.index(first)] = {"flight_number": others[0], "date": first.date}
                add("basic_economy_flights_fixed", "update_reservation_flights",
                    {"reservation_id": rid, "cabin": booking.cabin, "flights": moved, "payment_id": cards[0]},
                    "the flights of a basic economy reservation cannot be changed", rid)
            if flown and booking.cabin != "business":
                add("no_cabin_change_after_flown", "update_reservation_flights",
                    {"reservation_id": rid, "cabin": "business", "flights": legs, "payment_id": cards[0]},
                    "the cabin cannot change once part of the trip has been flown", rid)
            if booking.cabin != "basic_economy" and not flown:
                elsewhere = _other_destination_flight(episode, first.origin, booking.destination, first.date,
                                                      booking.cabin, len(booking.passengers))
                if elsewhere is not None:
                    add("same_route_and_trip_type", "update_reservation_flights",
                        {"reservation_id": rid, "cabin": booking.cabin,
                         "flights": [{"flight_number": elsewhere, "date": first.date}], "payment_id": cards[0]},
                        f"a flight change must keep the origin, destination and trip type "
                        f"({booking.origin} to {booking.destination})", rid)
        if not compensation_due(episode, owner):
            # only where no certificate at all is due: where one is, the policy's remedy is that
            # certificate (a write), and refusing outright would fail an agent that offers it
            add("compensation_allowed", "send_certificate", {"user_id": user_id, "amount": _asked_compensation(
                episode, user_id)}, "no reservation of this user qualifies for compensation")
        out += _booking_proposals(episode, owner.user_id)
        out += _other_users(episode, user_id)
        return out


def _asked_compensation(episode: Episode[Any], user_id: str) -> int:
    """What a customer asks for: 100 per passenger of a reservation of theirs whose flight
    the airline cancelled (the amount the policy grants where a reservation qualifies), else 100."""
    for booking in user_reservations(episode, user_id):
        if any(segment_status(episode, s) == "cancelled" for s in booking.flights):
            return COMPENSATION_CANCELLED_PER_PASSENGER * len(booking.passengers)
    return COMPENSATION_CANCELLED_PER_PASSENGER


def _other_destination_flight(episode: Episode[Any], origin: str, destination: str, date: str, cabin: str,
                              count: int) -> str | None:
    """A bookable direct flight from ``origin`` on ``date`` that goes somewhere else."""
    for key in sorted(episode.keys("flights")):
        flight = cast(Flight, episode.get("flights", key))
        status = flight.dates.get(date)
        if flight.origin == origin and flight.destination != destination and isinstance(status, Available) \
                and status.available_seats.get(cabin, 0) >= count:  # type: ignore[call-overload]
            return flight.flight_number
    return None


def _change_options(episode: Episode[Any], name: str, args: dict[str, Any]) -> list[ChangeAlternative]:
    booking = reservation(episode, args.get("reservation_id"))
    owner_id = _owner_of_call(episode, name, args) or ""
    owner = user(episode, owner_id)
    out: list[ChangeAlternative] = []
    if name == "cancel_reservation" and owner is not None:
        written = set(episode.changed().get("reservations", []))
        for other in user_reservations(episode, owner_id):
            # not one an earlier write of the task changed: that write would have been for nothing
            if other.reservation_id != args["reservation_id"] and other.status is None \
                    and other.reservation_id not in written:
                out.append(ChangeAlternative(arguments={"reservation_id": other.reservation_id},
                                             difference=f"reservation: {args['reservation_id']} -> "
                                                        f"{other.reservation_id}"))
    elif name == "update_reservation_baggages" and booking is not None and owner is not None:
        free = free_bags(owner.membership, booking.cabin, len(booking.passengers))
        for total in range(booking.total_baggages + 1, booking.total_baggages + 4):
            if total == args["total_baggages"]:
                continue
            paid = max(0, total - free)
            methods = _charge_methods(episode, owner_id, PRICE_PER_EXTRA_BAG * (paid - booking.nonfree_baggages))
            if paid >= booking.nonfree_baggages and methods:
                method = args["payment_id"] if args["payment_id"] in methods else methods[0]
                out.append(ChangeAlternative(arguments={**args, "total_baggages": total, "nonfree_baggages": paid,
                                                        "payment_id": method},
                                             difference=f"bags: {args['total_baggages']} -> {total}"))
    elif name == "update_reservation_flights" and booking is not None:
        for cabin in CABIN_WORDS:
            if cabin != args["cabin"]:
                out.append(ChangeAlternative(arguments={**args, "cabin": cabin},
                                             difference=f"cabin: {args['cabin']} -> {cabin}"))
        for position, leg in enumerate(args["flights"]):
            flight = _flight(episode, leg["flight_number"])
            if flight is None:
                continue
            for number in alternative_flights(episode, flight.origin, flight.destination, leg["date"], args["cabin"],
                                              len(booking.passengers)):
                if number != leg["flight_number"]:
                    flights = [dict(f) for f in args["flights"]]
                    flights[position] = {"flight_number": number, "date": leg["date"]}
                    out.append(ChangeAlternative(arguments={**args, "flights": flights},
                                                 difference=f"flight: {leg['flight_number']} -> {number}"))
    elif name == "update_reservation_passengers" and booking is not None and owner is not None:
        wanted = [(p["first_name"], p["last_name"]) for p in args["passengers"]]
        for position, (old, new) in enumerate(zip(booking.passengers, args["passengers"])):
            if (old.first_name, old.last_name) == (new["first_name"], new["last_name"]):
                continue
            for saved in owner.saved_passengers:
                if (saved.first_name, saved.last_name) not in wanted:
                    passengers = [dict(p) for p in args["passengers"]]
                    passengers[position] = saved.model_dump()
                    out.append(ChangeAlternative(arguments={**args, "passengers": passengers},
                                                 difference=f"new passenger: {new['first_name']} -> "
                                                            f"{saved.first_name}"))
    elif name == "book_reservation" and owner is not None:
        for cabin in CABIN_WORDS:
            out += _repriced_booking(episode, args, {"cabin": cabin}, f"cabin: {args['cabin']} -> {cabin}")
        insurance = "no" if args["insurance"] == "yes" else "yes"
        out += _repriced_booking(episode, args, {"insurance": insurance}, f"insurance: {args['insurance']} -> "
                                                                          f"{insurance}")
    if name == "update_reservation_flights" and booking is not None:
        # going back to the booked flights in the booked cabin is no flight change to ask for
        current = [{"flight_number": s.flight_number, "date": s.date} for s in booking.flights]
        out = [o for o in out if (o.arguments["flights"], o.arguments["cabin"]) != (current, booking.cabin)]
    return [o for o in out if o.arguments != args]


def _repriced_booking(episode: Episode[Any], args: dict[str, Any], change: dict[str, Any],
                      difference: str) -> list[ChangeAlternative]:
    """A booking with ``change`` applied, its paid bags and single payment recomputed."""
    owner = user(episode, args["user_id"])
    revised = {**args, **change}
    count = len(revised["passengers"])
    prices = [_price(episode, f["flight_number"], f["date"], revised["cabin"]) for f in revised["flights"]]
    if owner is None or None in prices or len(revised["payment_methods"]) != 1:
        return []
    paid_bags = max(0, revised["total_baggages"] - free_bags(owner.membership, revised["cabin"], count))
    total = sum(cast(list[int], prices)) * count + PRICE_PER_EXTRA_BAG * paid_bags \
        + (INSURANCE_PER_PASSENGER * count if revised["insurance"] == "yes" else 0)
    method_id = revised["payment_methods"][0]["payment_id"]
    method = owner.payment_methods.get(method_id)
    if method is None or (method.source != "credit_card" and method.amount < total):
        return []
    revised.update(nonfree_baggages=paid_bags, payment_methods=[{"payment_id": method_id, "amount": total}])
    return [ChangeAlternative(arguments=revised, difference=difference)]


def _booking_proposals(episode: Episode[Any], user_id: str) -> list[InfeasibleProposal]:
    """Bookings the policy refuses: six travellers, or two credit cards for one booking."""
    owner = user(episode, user_id)
    if owner is None:
        return []
    # a flight of the user's own that still has seats for six, so that only the policy refuses
    later = next((s for r in user_reservations(episode, user_id) for s in r.flights if s.date > TODAY
                  and _seats(episode, s.flight_number, s.date, "economy") > MAX_PASSENGERS), None)
    if later is None:
        return []
    out = []
    me = {"first_name": owner.name.first_name, "last_name": owner.name.last_name, "dob": owner.dob}
    people = [me, *(p.model_dump() for p in owner.saved_passengers)]
    cards = sorted(k for k, m in owner.payment_methods.items() if m.source == "credit_card")
    base = {"user_id": user_id, "origin": later.origin, "destination": later.destination, "flight_type": "one_way",
            "cabin": "economy", "flights": [{"flight_number": later.flight_number, "date": later.date}],
            "total_baggages": 0, "nonfree_baggages": 0, "insurance": "no"}
    price = _price(episode, later.flight_number, later.date, "economy")
    if price is None or not cards:
        return []
    if people:
        # the party filled up to six with relatives of the customer's own name, each with a
        # birth date of their own (a year apart per relative, the customer's day of the year)
        taken = {p["first_name"] for p in people}
        year = int(owner.dob[:4])
        relatives = [{"first_name": first, "last_name": owner.name.last_name,
                      "dob": f"{year + 2 * (i + 1) + 1:04d}{owner.dob[4:]}".replace("-02-29", "-02-28")}
                     for i, first in enumerate(f for f in FIRST_NAMES if f not in taken)]
        party = (people + relatives)[:MAX_PASSENGERS + 1]
        out.append(InfeasibleProposal(
            rule="at_most_five_passengers", related=False,
            action=Call(name="book_reservation", arguments={**base, "passengers": party, "payment_methods": [
                {"payment_id": cards[0], "amount": price * len(party)}]}),
            fact=f"one booking may hold at most {MAX_PASSENGERS} passengers"))
    if len(cards) >= 2:
        half = price // 2
        out.append(InfeasibleProposal(
            rule="booking_payment_limits", related=False,
            action=Call(name="book_reservation", arguments={**base, "passengers": [me], "payment_methods": [
                {"payment_id": cards[0], "amount": half}, {"payment_id": cards[1], "amount": price - half}]}),
            fact="one booking may be paid with at most one credit card"))
    return out


def _other_users(episode: Episode[Any], user_id: str) -> list[InfeasibleProposal]:
    """A few cancellable reservations of other users, from a place that depends on the user only:
    the tools would cancel them; only the rule to act for the authenticated user refuses."""
    keys = sorted(episode.keys("reservations"))
    start = sum(map(ord, user_id)) % max(1, len(keys))
    out: list[InfeasibleProposal] = []
    for key in keys[start:] + keys[:start]:
        if len(out) >= MAX_OTHER_USERS:
            break
        booking = cast(Reservation, episode.get("reservations", key))
        if booking.user_id != user_id and booking.status is None and cancellation_grounds(episode, booking) \
                and not any_flown(episode, booking):
            trip = f"reservation {key} ({trip_words(booking)})"
            out.append(InfeasibleProposal(
                rule="act_for_authenticated_user", related=False,
                action=Call(name="cancel_reservation", arguments={"reservation_id": key}),
                fact=f"reservation {key} belongs to another user; the agent acts only for the authenticated user",
                request=f"cancel {trip}, which a friend booked with their own account, on their behalf",
                claims=[*trip_claims(booking, None),
                        Claim(table="reservations", key=key, path=["user_id"], op="ne", value=user_id,
                              says="which a friend booked with their own account")]))
    return out


CONDITIONS = AirlineConditions()
