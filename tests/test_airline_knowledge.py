"""Airline facts for task generation (domains/airline/knowledge.py), checked against the tools and rules."""

from __future__ import annotations

import json

import pytest

from trajectory2task.domains import get_domain
from trajectory2task.domains.airline import knowledge
from trajectory2task.domains.runtime import PolicyContext


@pytest.fixture(scope="module")
def env():
    domain = get_domain("airline")
    return domain.environment(domain.generate_db(21, 40))


def _users(env):
    return [env.episode().get("users", k) for k in env.episode().keys("users")]


def test_reservations_of_a_user_follow_the_profile_and_the_rules(env):
    for owner in _users(env):
        episode = env.episode()
        held = knowledge.user_reservations(episode, owner.user_id)
        assert [r.reservation_id for r in held] == owner.reservations
        assert all(r.user_id == owner.user_id for r in held)
        for booking in knowledge.active_reservations(episode, owner.user_id):
            assert booking.status is None
        cancellable = {r.reservation_id for r in knowledge.cancellable_reservations(episode, owner.user_id)}
        for booking in held:
            fired = env.policy_violations(episode, "cancel_reservation", {"reservation_id": booking.reservation_id},
                                          PolicyContext(user_id=owner.user_id))
            assert (booking.reservation_id in cancellable) == (fired == [])
    assert knowledge.user_reservations(env.episode(), "nobody") == []


def test_a_cancelled_reservation_is_no_longer_active(env):
    owner = next(u for u in _users(env) if knowledge.active_reservations(env.episode(), u.user_id))
    episode = env.episode()
    booking = knowledge.active_reservations(episode, owner.user_id)[0]
    episode.call("cancel_reservation", {"reservation_id": booking.reservation_id})
    assert booking.reservation_id not in {r.reservation_id for r in knowledge.active_reservations(episode,
                                                                                                  owner.user_id)}


def test_alternative_flights_are_what_the_search_offers_with_seats(env):
    episode = env.episode()
    flight = episode.get("flights", "HAT010")
    found = json.loads(episode.call("search_direct_flight", {"origin": flight.origin, "destination": flight.destination,
                                                            "date": "2024-05-21"}).output)
    expected = [f["flight_number"] for f in found if f["available_seats"]["economy"] >= 2]
    assert knowledge.alternative_flights(episode, flight.origin, flight.destination, "2024-05-21", "economy", 2) \
        == expected
    assert flight.flight_number in knowledge.alternative_flights(episode, flight.origin, flight.destination,
                                                                 "2024-05-21", "economy", 0)


def test_disrupted_segments_name_cancelled_and_delayed_flights(env):
    episode = env.episode()
    seen = set()
    for owner in _users(env):
        for booking in knowledge.user_reservations(episode, owner.user_id):
            for number, day, status in knowledge.disrupted_segments(episode, booking):
                assert episode.call("get_flight_status", {"flight_number": number, "date": day}).output == status
                seen.add(status)
    assert "cancelled" in seen


def test_writes_in_the_customers_words(env):
    owner = next(u for u in _users(env) if u.reservations)
    episode = env.episode()
    booking = knowledge.user_reservations(episode, owner.user_id)[0]
    rid = booking.reservation_id
    refs = [{"flight_number": s.flight_number, "date": s.date} for s in booking.flights]
    card = next(k for k, m in owner.payment_methods.items() if m.source == "credit_card")
    said = {
        "cancel_reservation": knowledge.request_words(episode, "cancel_reservation", {"reservation_id": rid}),
        "cabin": knowledge.request_words(episode, "update_reservation_flights",
                                         {"reservation_id": rid, "cabin": "business", "flights": refs,
                                          "payment_id": card}),
        "bags": knowledge.request_words(episode, "update_reservation_baggages",
                                        {"reservation_id": rid, "total_baggages": booking.total_baggages + 2,
                                         "payment_id": card}),
    }
    for text in said.values():
        assert rid in text and booking.origin in text and booking.destination in text
        assert card not in text  # a card by brand and last digits, never by its id
    assert "to business on the same flights" in said["cabin"]
    assert "add 2 checked bags to" in said["bags"] and "ending in" in said["bags"]
    first = refs[0]
    booked = knowledge.request_words(episode, "book_reservation", {
        "user_id": owner.user_id, "origin": booking.origin, "destination": booking.destination,
        "flight_type": "one_way", "cabin": "basic_economy", "flights": [first],
        "passengers": [{"first_name": "Ada", "last_name": "Lovelace", "dob": "1990-12-10"}],
        "payment_methods": [{"payment_id": card, "amount": 100}], "total_baggages": 1, "insurance": "yes"})
    assert booked.startswith("book a one-way trip on the ") and "in basic economy, for Ada Lovelace (born " \
        "1990-12-10), with 1 checked bag in all, with travel insurance, paying the whole price with your" in booked


def test_the_words_claim_only_what_the_database_says(env):
    from trajectory2task.programs.verification.premises import false_claims

    episode = env.episode()
    owner = next(u for u in _users(env) if u.reservations)
    for booking in knowledge.user_reservations(episode, owner.user_id):
        claims = knowledge.request_claims(episode, "cancel_reservation", {"reservation_id": booking.reservation_id},
                                          owner.user_id)
        assert claims and not false_claims(env, claims)
        # said to another user, "your reservation" is false
        assert false_claims(env, knowledge.request_claims(episode, "cancel_reservation",
                                                          {"reservation_id": booking.reservation_id}, "nobody_1"))
