"""Fixed facts of tau2-bench's airline world, shared by the tools, rules and generator."""

from __future__ import annotations

from datetime import datetime

# The reference freezes the clock: every booking is created at this instant, and
# "within 24 hours" and "already flown" are judged against it.
CURRENT_TIME = "2024-05-15T15:00:00"
NOW = datetime.fromisoformat(CURRENT_TIME)
TODAY = CURRENT_TIME[:10]

# New ids are taken in this order, the first one not yet in use; the reference has no more.
NEW_RESERVATION_IDS = ("HATHAT", "HATHAU", "HATHAV")
NEW_CERTIFICATE_IDS = ("certificate_3221322", "certificate_3221323", "certificate_3221324")

AIRPORTS: tuple[tuple[str, str], ...] = (
    ("SFO", "San Francisco"), ("JFK", "New York"), ("LAX", "Los Angeles"), ("ORD", "Chicago"),
    ("DFW", "Dallas"), ("DEN", "Denver"), ("SEA", "Seattle"), ("ATL", "Atlanta"), ("MIA", "Miami"),
    ("BOS", "Boston"), ("PHX", "Phoenix"), ("IAH", "Houston"), ("LAS", "Las Vegas"), ("MCO", "Orlando"),
    ("EWR", "Newark"), ("CLT", "Charlotte"), ("MSP", "Minneapolis"), ("DTW", "Detroit"),
    ("PHL", "Philadelphia"), ("LGA", "LaGuardia"),
)

INSURANCE_PER_PASSENGER = 30
PRICE_PER_EXTRA_BAG = 50
MAX_PASSENGERS = 5

# free checked bags per passenger, by the booking user's membership and the cabin
FREE_BAGS: dict[str, dict[str, int]] = {
    "regular": {"basic_economy": 0, "economy": 1, "business": 2},
    "silver": {"basic_economy": 1, "economy": 2, "business": 3},
    "gold": {"basic_economy": 2, "economy": 3, "business": 4},
}

# most payment methods of each kind that one booking may use
BOOKING_PAYMENT_LIMITS = {"certificate": 1, "credit_card": 1, "gift_card": 3}

# compensation certificates, per passenger of the reservation concerned
COMPENSATION_CANCELLED_PER_PASSENGER = 100
COMPENSATION_DELAYED_PER_PASSENGER = 50
