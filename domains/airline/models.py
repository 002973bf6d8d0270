"""The airline database as pydantic models; reads tau2-bench's airline db.json unchanged.

Field names, value types and the optional reservation ``status`` follow that file, so a
record dumped back to JSON compares equal with tau2's own dump of it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

Cabin = Literal["basic_economy", "economy", "business"]
CABINS: tuple[Cabin, ...] = ("basic_economy", "economy", "business")
Membership = Literal["gold", "silver", "regular"]
FlightType = Literal["one_way", "round_trip"]
Insurance = Literal["yes", "no"]


# ---------------------------------------------------------------- flights


class Available(BaseModel):
    """Bookable on this date: seats left and price per cabin."""

    status: Literal["available"]
    available_seats: dict[Cabin, int]
    prices: dict[Cabin, int]


class Landed(BaseModel):
    status: Literal["landed"]
    actual_departure_time_est: str
    actual_arrival_time_est: str


class Cancelled(BaseModel):
    status: Literal["cancelled"]


class Delayed(BaseModel):
    status: Literal["delayed"]
    estimated_departure_time_est: str
    estimated_arrival_time_est: str


class Flying(BaseModel):
    status: Literal["flying"]
    actual_departure_time_est: str
    estimated_arrival_time_est: str


class OnTime(BaseModel):
    status: Literal["on time"]
    estimated_departure_time_est: str
    estimated_arrival_time_est: str


FlightDateStatus = Annotated[Available | Landed | Cancelled | Delayed | Flying | OnTime,
                             Field(discriminator="status")]
FLIGHT_STATUSES = ("available", "landed", "cancelled", "delayed", "flying", "on time")


class Flight(BaseModel):
    """A scheduled flight; times are local clock times, an arrival may end in '+1' (next day)."""

    flight_number: str
    origin: str
    destination: str
    scheduled_departure_time_est: str
    scheduled_arrival_time_est: str
    dates: dict[str, FlightDateStatus]


# ---------------------------------------------------------------- users


class Name(BaseModel):
    first_name: str
    last_name: str


class Address(BaseModel):
    address1: str
    address2: str
    city: str
    country: str
    state: str
    zip: str


class CreditCard(BaseModel):
    source: Literal["credit_card"]
    id: str
    brand: str
    last_four: str


class GiftCard(BaseModel):
    source: Literal["gift_card"]
    id: str
    amount: float  # the balance


class Certificate(BaseModel):
    source: Literal["certificate"]
    id: str
    amount: float  # the value; used once, whole


PaymentMethod = Annotated[CreditCard | GiftCard | Certificate, Field(discriminator="source")]


class Passenger(BaseModel):
    first_name: str
    last_name: str
    dob: str  # YYYY-MM-DD


class User(BaseModel):
    user_id: str
    name: Name
    address: Address
    email: str
    dob: str
    payment_methods: dict[str, PaymentMethod]
    saved_passengers: list[Passenger]
    membership: Membership
    reservations: list[str]


# ---------------------------------------------------------------- reservations


class ReservationFlight(BaseModel):
    """One booked segment, with the price per passenger paid for it."""

    origin: str
    destination: str
    flight_number: str
    date: str
    price: int


class Payment(BaseModel):
    """A charge (positive) or refund (negative) to one of the owner's payment methods."""

    payment_id: str
    amount: int


class Reservation(BaseModel):
    reservation_id: str
    user_id: str
    origin: str
    destination: str
    flight_type: FlightType
    cabin: Cabin
    flights: list[ReservationFlight]
    passengers: list[Passenger]
    payment_history: list[Payment]
    created_at: str
    total_baggages: int
    nonfree_baggages: int
    insurance: Insurance
    status: Literal["cancelled"] | None = None


class AirlineDB(BaseModel):
    """Tables: flights by flight number, users by user id, reservations by reservation id."""

    flights: dict[str, Flight]
    users: dict[str, User]
    reservations: dict[str, Reservation]
