"""The airline tools, behaving as tau2-bench's airline API does (its TOOLS.md spec, quirks included).

Every tool checks before it writes and raises ToolError to refuse, so the runtime's
transaction leaves the state untouched when a call fails. The tools enforce only what
the reference enforces; the policy's other rules live in ``rules.py``.
"""

from __future__ import annotations

from typing import cast

from pydantic import BaseModel

from trajectory2task.domains.airline.constants import (
    AIRPORTS,
    CURRENT_TIME,
    INSURANCE_PER_PASSENGER,
    NEW_CERTIFICATE_IDS,
    NEW_RESERVATION_IDS,
    PRICE_PER_EXTRA_BAG,
)
from trajectory2task.domains.airline.models import (
    Available,
    Cabin,
    Certificate,
    Flight,
    FlightType,
    GiftCard,
    Insurance,
    Passenger,
    Payment,
    Reservation,
    ReservationFlight,
    User,
)
from trajectory2task.domains.common_tools import calculate, transfer_to_human_agents
from trajectory2task.domains.runtime import ToolError, Transaction, tool, user_from_argument


class FlightRef(BaseModel):
    """A flight on a date, as a booking or itinerary change names it."""

    flight_number: str
    date: str


# ---------------------------------------------------------------- look-ups


def _user(tx: Transaction, user_id: str, *, update: bool = False) -> User:
    record = tx.for_update("users", user_id) if update else tx.get("users", user_id)
    if record is None:
        raise ToolError(f"User {user_id} not found")
    return cast(User, record)


def _reservation(tx: Transaction, reservation_id: str, *, update: bool = False) -> Reservation:
    record = tx.for_update("reservations", reservation_id) if update else tx.get("reservations", reservation_id)
    if record is None:
        raise ToolError(f"Reservation {reservation_id} not found")
    return cast(Reservation, record)


def _flight(tx: Transaction, flight_number: str) -> Flight:
    record = tx.get("flights", flight_number)
    if record is None:
        raise ToolError(f"Flight {flight_number} not found")
    return cast(Flight, record)


def _bookable(flight: Flight, ref: FlightRef, cabin: Cabin, passengers: int) -> Available:
    """The flight's date entry when it can take ``passengers`` more in ``cabin``."""
    status = flight.dates.get(ref.date)
    if status is None:
        raise ToolError(f"Flight {ref.flight_number} not found on date {ref.date}")
    if not isinstance(status, Available):
        raise ToolError(f"Flight {ref.flight_number} not available on date {ref.date}")
    if status.available_seats[cabin] < passengers:
        raise ToolError(f"Not enough seats on flight {ref.flight_number}")
    return status


def _take_seats(tx: Transaction, flight_number: str, date: str, cabin: Cabin, count: int) -> None:
    """Store the flight with ``count`` fewer seats in ``cabin`` on ``date``.

    Builds new objects along the changed path and shares the other dates with the old
    record: a deep copy of a flight's thirty dates was most of a booking's cost.
    """
    flight = _flight(tx, flight_number)
    status = cast(Available, flight.dates[date])
    seats = dict(status.available_seats)
    seats[cabin] -= count
    dates = dict(flight.dates)
    dates[date] = status.model_copy(update={"available_seats": seats})
    tx.insert("flights", flight_number, flight.model_copy(update={"dates": dates}))


def _charge_for_update(user: User, payment_id: str, total_price: int) -> Payment | None:
    """Settle a change's price with one method of the owner (a negative price is a refund)."""
    method = user.payment_methods.get(payment_id)
    if method is None:
        raise ToolError("Payment method not found")
    if isinstance(method, Certificate):
        raise ToolError("Certificate cannot be used to update reservation")
    if isinstance(method, GiftCard):
        if method.amount < total_price:
            raise ToolError("Gift card balance is not enough")
        method.amount -= total_price
    return Payment(payment_id=payment_id, amount=total_price) if total_price != 0 else None


def _direct(tx: Transaction, origin: str, destination: str | None, date: str,
            leave_after: str | None = None, with_date: bool = False) -> list[dict]:
    """Flights from ``origin`` (to ``destination`` when given) available on ``date``, in table order."""
    out = []
    for record in tx.values("flights"):
        flight = cast(Flight, record)
        if flight.origin != origin or (destination is not None and flight.destination != destination):
            continue
        status = flight.dates.get(date)
        if not isinstance(status, Available):
            continue
        if leave_after is not None and flight.scheduled_departure_time_est < leave_after:  # string order, as tau2
            continue
        out.append({
            "flight_number": flight.flight_number, "origin": flight.origin, "destination": flight.destination,
            "status": "available", "scheduled_departure_time_est": flight.scheduled_departure_time_est,
            "scheduled_arrival_time_est": flight.scheduled_arrival_time_est, "date": date if with_date else None,
            "available_seats": dict(status.available_seats), "prices": dict(status.prices),
        })
    return out


def next_leg_date(date: str, arrival_time: str) -> str:
    """The date a connection leaves on: the reference's rule, quirk included.

    After an arrival marked '+1' it builds '2024-05-' plus the day number plus one, without
    zero padding, so before the 9th the day names no date in the table and no connection
    is found.
    """
    if "+1" in arrival_time:
        return f"2024-05-{int(date[-2:]) + 1}"
    return date


# ---------------------------------------------------------------- read tools


@tool("read", authenticates=user_from_argument("user_id"))
def get_user_details(tx: Transaction, user_id: str) -> User:
    """Show a user's profile: name, address, email, date of birth, membership level, payment
    methods (credit cards, gift cards with balance, travel certificates), saved passengers and
    reservation ids.

    Args:
        user_id: The user's id, e.g. 'sara_doe_496'.
    """
    return _user(tx, user_id)


@tool("read")
def get_reservation_details(tx: Transaction, reservation_id: str) -> Reservation:
    """Show a reservation: trip type, cabin, flight segments with the price paid, passengers,
    payment history, creation time, bags, insurance and whether it is cancelled.

    Args:
        reservation_id: The six-character reservation id, e.g. 'ZFA04Y'.
    """
    return _reservation(tx, reservation_id)


@tool("read")
def get_flight_status(tx: Transaction, flight_number: str, date: str) -> str:
    """Give a flight's status on one date: available, on time, delayed, flying, landed or cancelled.

    Args:
        flight_number: The flight number, e.g. 'HAT170'.
        date: The date of the flight, 'YYYY-MM-DD', e.g. '2024-05-22'.
    """
    status = _flight(tx, flight_number).dates.get(date)
    if status is None:
        raise ToolError(f"Flight {flight_number} not found on date {date}")
    return status.status


@tool("read")
def list_all_airports(tx: Transaction) -> list[dict[str, str]]:
    """List every airport served, as IATA code and city."""
    return [{"iata": code, "city": city} for code, city in AIRPORTS]


@tool("read")
def search_direct_flight(tx: Transaction, origin: str, destination: str, date: str) -> list[dict]:
    """Find nonstop flights between two airports that can be booked on a date, with seats left
    and prices per cabin.

    Args:
        origin: IATA code of the departure airport, e.g. 'JFK'.
        destination: IATA code of the arrival airport, e.g. 'LAX'.
        date: Travel date, 'YYYY-MM-DD', e.g. '2024-05-20'.
    """
    return _direct(tx, origin, destination, date)


@tool("read")
def search_onestop_flight(tx: Transaction, origin: str, destination: str, date: str) -> list[list[dict]]:
    """Find connections with one stop between two airports: pairs of bookable flights where the
    second leaves the stop no earlier than the first arrives. Each leg carries its own date.

    Args:
        origin: IATA code of the departure airport, e.g. 'JFK'.
        destination: IATA code of the final arrival airport, e.g. 'SEA'.
        date: Date the first leg leaves, 'YYYY-MM-DD', e.g. '2024-05-20'.
    """
    pairs = []
    for first in _direct(tx, origin, None, date, with_date=True):
        second_date = next_leg_date(date, first["scheduled_arrival_time_est"])
        for second in _direct(tx, first["destination"], destination, second_date,
                              leave_after=first["scheduled_arrival_time_est"], with_date=True):
            pairs.append([first, second])
    return pairs


# ---------------------------------------------------------------- write tools


@tool("write")
def book_reservation(tx: Transaction, user_id: str, origin: str, destination: str, flight_type: FlightType,
                     cabin: Cabin, flights: list[FlightRef], passengers: list[Passenger],
                     payment_methods: list[Payment], total_baggages: int, nonfree_baggages: int,
                     insurance: Insurance) -> Reservation:
    """Book a new reservation for a user and charge it to methods in the user's profile.

    The price is each flight's current price in the cabin times the passengers, plus 30 per
    passenger for insurance and 50 per non-free bag; the payments must add up to it exactly.
    Gift cards are debited, a certificate is used up whole, and seats are taken. Confirm every
    detail with the user first.

    Args:
        user_id: The booking user's id, e.g. 'sara_doe_496'.
        origin: IATA code of the trip's origin, e.g. 'SFO'.
        destination: IATA code of the trip's destination, e.g. 'JFK'.
        flight_type: 'one_way' or 'round_trip'.
        cabin: 'basic_economy', 'economy' or 'business'; the same for every flight.
        flights: Every segment, outbound then return, as {'flight_number', 'date'}, e.g. [{'flight_number': 'HAT136', 'date': '2024-05-20'}].
        passengers: Each traveller as {'first_name', 'last_name', 'dob'} with dob 'YYYY-MM-DD'.
        payment_methods: How the total is split, as {'payment_id', 'amount'} with ids from the user's profile.
        total_baggages: Checked bags for the whole reservation.
        nonfree_baggages: How many of those bags are paid (50 each).
        insurance: 'yes' or 'no': travel insurance, 30 per passenger.
    """
    user = _user(tx, user_id, update=True)
    reservation_id = next((r for r in NEW_RESERVATION_IDS if tx.get("reservations", r) is None), None)
    if reservation_id is None:
        raise ToolError("Too many reservations")
    count = len(passengers)
    segments: list[ReservationFlight] = []
    taken: list[tuple[str, str]] = []
    total_price = 0
    for ref in flights:
        flight = _flight(tx, ref.flight_number)
        status = _bookable(flight, ref, cabin, count)
        segments.append(ReservationFlight(origin=flight.origin, destination=flight.destination,
                                          flight_number=ref.flight_number, date=ref.date,
                                          price=status.prices[cabin]))
        taken.append((ref.flight_number, ref.date))
        total_price += status.prices[cabin] * count
    if insurance == "yes":
        total_price += INSURANCE_PER_PASSENGER * count
    total_price += PRICE_PER_EXTRA_BAG * nonfree_baggages
    for payment in payment_methods:
        method = user.payment_methods.get(payment.payment_id)
        if method is None:
            raise ToolError(f"Payment method {payment.payment_id} not found")
        if isinstance(method, (GiftCard, Certificate)) and method.amount < payment.amount:
            raise ToolError(f"Not enough balance in payment method {payment.payment_id}")
    paid = sum(p.amount for p in payment_methods)
    if paid != total_price:
        raise ToolError(f"Payment amount does not add up, total price is {total_price}, but paid {paid}")

    for payment in payment_methods:
        method = user.payment_methods.get(payment.payment_id)
        if isinstance(method, GiftCard):
            method.amount -= payment.amount
        elif isinstance(method, Certificate):
            user.payment_methods.pop(payment.payment_id)  # a certificate is spent whole, remainder lost
    for flight_number, date in taken:  # a flight named twice loses seats twice, as in the reference
        _take_seats(tx, flight_number, date, cabin, count)
    reservation = Reservation(
        reservation_id=reservation_id, user_id=user_id, origin=origin, destination=destination,
        flight_type=flight_type, cabin=cabin, flights=segments,
        passengers=[p.model_copy() for p in passengers],
        payment_history=[p.model_copy() for p in payment_methods], created_at=CURRENT_TIME,
        total_baggages=total_baggages, nonfree_baggages=nonfree_baggages, insurance=insurance,
    )
    tx.insert("reservations", reservation_id, reservation)
    user.reservations.append(reservation_id)
    return reservation


@tool("write")
def cancel_reservation(tx: Transaction, reservation_id: str) -> Reservation:
    """Cancel a whole reservation and refund every payment to the method it came from.

    Refunds reach the original methods in 5 to 7 business days. This tool does not check
    whether the policy allows the cancellation: check that first.

    Args:
        reservation_id: The six-character reservation id, e.g. 'ZFA04Y'.
    """
    reservation = _reservation(tx, reservation_id, update=True)
    # Reference behaviour: balances and seats stay as they are; only the history records refunds.
    refunds = [Payment(payment_id=p.payment_id, amount=-p.amount) for p in reservation.payment_history]
    reservation.payment_history.extend(refunds)
    reservation.status = "cancelled"
    return reservation


@tool("write")
def update_reservation_baggages(tx: Transaction, reservation_id: str, total_baggages: int, nonfree_baggages: int,
                                payment_id: str) -> Reservation:
    """Set a reservation's checked bags; each added non-free bag costs 50, charged to the given method.

    Args:
        reservation_id: The six-character reservation id, e.g. 'ZFA04Y'.
        total_baggages: The new total of checked bags.
        nonfree_baggages: The new number of paid bags among them.
        payment_id: Credit card or gift card id from the owner's profile, e.g. 'credit_card_7815826'.
    """
    reservation = _reservation(tx, reservation_id, update=True)
    user = _user(tx, reservation.user_id, update=True)
    total_price = PRICE_PER_EXTRA_BAG * max(0, nonfree_baggages - reservation.nonfree_baggages)
    payment = _charge_for_update(user, payment_id, total_price)
    if payment is not None:
        reservation.payment_history.append(payment)
    reservation.total_baggages = total_baggages
    reservation.nonfree_baggages = nonfree_baggages
    return reservation


@tool("write")
def update_reservation_flights(tx: Transaction, reservation_id: str, cabin: Cabin, flights: list[FlightRef],
                               payment_id: str) -> Reservation:
    """Replace a reservation's flights and cabin; the fare difference is charged or refunded.

    Give the whole new itinerary, kept segments included. A segment kept in the same cabin
    keeps the price paid for it; others take today's price. The difference, times the
    passengers, goes to one credit card or gift card of the owner. The tool does not check
    the policy's change rules: check them first.

    Args:
        reservation_id: The six-character reservation id, e.g. 'ZFA04Y'.
        cabin: The cabin for every segment: 'basic_economy', 'economy' or 'business'.
        flights: Every segment of the new itinerary as {'flight_number', 'date'}.
        payment_id: Credit card or gift card id from the owner's profile, for the charge or refund.
    """
    reservation = _reservation(tx, reservation_id, update=True)
    user = _user(tx, reservation.user_id, update=True)
    count = len(reservation.passengers)
    segments: list[ReservationFlight] = []
    for ref in flights:
        kept = next((s for s in reservation.flights if s.flight_number == ref.flight_number
                     and s.date == ref.date and cabin == reservation.cabin), None)
        if kept is not None:
            segments.append(kept.model_copy())
            continue
        flight = _flight(tx, ref.flight_number)
        status = _bookable(flight, ref, cabin, count)
        segments.append(ReservationFlight(origin=flight.origin, destination=flight.destination,
                                          flight_number=ref.flight_number, date=ref.date,
                                          price=status.prices[cabin]))
    total_price = (sum(s.price for s in segments) - sum(s.price for s in reservation.flights)) * count
    payment = _charge_for_update(user, payment_id, total_price)
    if payment is not None:
        reservation.payment_history.append(payment)
    reservation.flights = segments  # seat counts stay as they are, as in the reference
    reservation.cabin = cabin
    return reservation


@tool("write")
def update_reservation_passengers(tx: Transaction, reservation_id: str,
                                  passengers: list[Passenger]) -> Reservation:
    """Replace the passengers' names and dates of birth; their number cannot change.

    Args:
        reservation_id: The six-character reservation id, e.g. 'ZFA04Y'.
        passengers: The full new list as {'first_name', 'last_name', 'dob'}, as many as before.
    """
    reservation = _reservation(tx, reservation_id, update=True)
    if len(passengers) != len(reservation.passengers):
        raise ToolError("Number of passengers does not match")
    reservation.passengers = [p.model_copy() for p in passengers]
    return reservation


@tool("write")
def send_certificate(tx: Transaction, user_id: str, amount: int) -> str:
    """Give a user a travel certificate as compensation; it appears among their payment methods.

    Only where the policy grants compensation, and only for the amount it sets.

    Args:
        user_id: The user's id, e.g. 'sara_doe_496'.
        amount: The certificate's value in dollars, e.g. 100.
    """
    user = _user(tx, user_id, update=True)
    certificate_id = next((c for c in NEW_CERTIFICATE_IDS if c not in user.payment_methods), None)
    if certificate_id is None:
        raise ToolError("Too many certificates")
    user.payment_methods[certificate_id] = Certificate(source="certificate", id=certificate_id, amount=amount)
    return f"Certificate {certificate_id} added to user {user_id} with amount {amount}."


ALL_TOOLS = (
    book_reservation,
    calculate,
    cancel_reservation,
    get_flight_status,
    get_reservation_details,
    get_user_details,
    list_all_airports,
    search_direct_flight,
    search_onestop_flight,
    send_certificate,
    transfer_to_human_agents,
    update_reservation_baggages,
    update_reservation_flights,
    update_reservation_passengers,
)
