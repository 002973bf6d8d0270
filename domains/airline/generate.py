"""Seeded generator of fresh airline databases in tau2-bench's airline schema.

``generate_airline_db(seed, users)`` builds 300 flights (150 routes, each flown both ways)
over May 2024 with a status per date that fits the fixed current time (landed or
cancelled before today; landed, flying, on time or delayed today by the schedule; bookable
with seats and prices after today), ``users`` customers with payment methods and saved
passengers, and about four reservations per user whose segments chain along real flights,
whose dates follow the schedule, whose passengers and prices fit the cabin and whose one
payment equals the fare, insurance and paid bags (see ``consistency.check_airline_db``).

All randomness comes from one ``random.Random(seed)``, so the same seed gives the same
bytes. Names, streets and cities are this project's own lists (shared with retail).
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta

from trajectory2task.domains.airline.constants import (
    AIRPORTS,
    FREE_BAGS,
    INSURANCE_PER_PASSENGER,
    NEW_CERTIFICATE_IDS,
    NEW_RESERVATION_IDS,
    NOW,
    PRICE_PER_EXTRA_BAG,
    TODAY,
)
from trajectory2task.domains.airline.models import (
    CABINS,
    Address,
    AirlineDB,
    Available,
    Cancelled,
    Certificate,
    CreditCard,
    Delayed,
    Flight,
    FlightDateStatus,
    Flying,
    GiftCard,
    Landed,
    Name,
    OnTime,
    Passenger,
    Payment,
    PaymentMethod,
    Reservation,
    ReservationFlight,
    User,
)
from trajectory2task.domains.retail.generate import CITIES, FIRST_NAMES, LAST_NAMES, STREETS

FIRST_DATE = date(2024, 5, 1)
DAYS = 30  # 2024-05-01 .. 2024-05-30
ROUTES = 150  # each flown both ways: 300 flights
PRICE_RANGES = {"basic_economy": (50, 100), "economy": (100, 200), "business": (200, 500)}
MAX_SEATS = 20
CANCELLED_SHARE = 0.09  # of past flight dates
DELAYED_SHARE = 0.4  # of today's flights not yet departed
RESERVATIONS_PER_USER = tuple(range(0, 11))
RESERVATIONS_PER_USER_WEIGHTS = (10, 5, 15, 14, 16, 13, 10, 7, 5, 3, 2)  # mean about 4
PASSENGER_COUNTS = (1, 2, 3, 4)
PASSENGER_COUNT_WEIGHTS = (46, 33, 16, 5)
CERTIFICATE_VALUES = (100.0, 150.0, 250.0, 500.0)
CARD_BRANDS = ("visa", "mastercard")
CREATED_FROM = datetime(2024, 4, 30)
CREATED_UNTIL = datetime(2024, 5, 14, 23, 59, 59)
FMT = "%Y-%m-%dT%H:%M:%S"


class _Ids:
    """Unique random identifiers, drawn from the generator's own Random."""

    def __init__(self, rng: random.Random, reserved: tuple[str, ...] = ()) -> None:
        self.rng = rng
        self.used: set[str] = set(reserved)

    def draw(self, alphabet: str, n: int, prefix: str = "") -> str:
        while True:
            value = prefix + "".join(self.rng.choice(alphabet) for _ in range(n))
            if value not in self.used:
                self.used.add(value)
                return value


def _day(index: int) -> str:
    return (FIRST_DATE + timedelta(days=index)).isoformat()


def _clock(minutes: int) -> str:
    """A clock time 'HH:MM:SS' for minutes after midnight, '+1' when it falls on the next day."""
    day, rest = divmod(minutes, 24 * 60)
    return f"{rest // 60:02d}:{rest % 60:02d}:00" + ("+1" if day else "")


def _minutes(clock: str) -> int:
    hours, minutes = int(clock[:2]), int(clock[3:5])
    return hours * 60 + minutes + (24 * 60 if clock.endswith("+1") else 0)


def _stamp(day: str, minutes: int) -> str:
    return (datetime.fromisoformat(day) + timedelta(minutes=minutes)).strftime(FMT)


# ---------------------------------------------------------------- flights


def _date_status(rng: random.Random, day: str, departure: int, duration: int) -> FlightDateStatus:
    """A status for one date that fits the fixed current time."""
    start = datetime.fromisoformat(day) + timedelta(minutes=departure)
    end = start + timedelta(minutes=duration)
    if day > TODAY:
        return Available(status="available",
                         available_seats={c: rng.randint(0, MAX_SEATS) for c in CABINS},
                         prices={c: rng.randint(*PRICE_RANGES[c]) for c in CABINS})
    if day < TODAY and rng.random() < CANCELLED_SHARE:
        return Cancelled(status="cancelled")
    left = start + timedelta(minutes=rng.randint(-30, 30))
    arrived = left + timedelta(minutes=duration + rng.randint(-20, 20))
    if arrived <= NOW:
        return Landed(status="landed", actual_departure_time_est=left.strftime(FMT),
                      actual_arrival_time_est=arrived.strftime(FMT))
    if start <= NOW:  # left before now (clamped: a jittered take-off cannot lie in the future)
        left = min(left, NOW - timedelta(minutes=rng.randint(1, 20)))
        arriving = max(end + timedelta(minutes=rng.randint(-20, 20)), NOW + timedelta(minutes=rng.randint(1, 20)))
        return Flying(status="flying", actual_departure_time_est=left.strftime(FMT),
                      estimated_arrival_time_est=arriving.strftime(FMT))
    if rng.random() < DELAYED_SHARE:
        late = timedelta(minutes=rng.randint(30, 180))
        return Delayed(status="delayed", estimated_departure_time_est=(start + late).strftime(FMT),
                       estimated_arrival_time_est=(end + late).strftime(FMT))
    shift = timedelta(minutes=rng.randint(-20, 20))
    leaving = max(start + shift, NOW + timedelta(minutes=1))
    return OnTime(status="on time", estimated_departure_time_est=leaving.strftime(FMT),
                  estimated_arrival_time_est=(end + shift).strftime(FMT))


def _flights(rng: random.Random) -> dict[str, Flight]:
    codes = [code for code, _ in AIRPORTS]
    pairs = [(a, b) for a in codes for b in codes if a < b]
    routes = rng.sample(pairs, ROUTES)
    legs = []
    for a, b in routes:
        duration = rng.choice(range(60, 6 * 60 + 1, 30))  # the same block time both ways
        legs += [(a, b, duration), (b, a, duration)]
    rng.shuffle(legs)
    flights: dict[str, Flight] = {}
    for index, (origin, destination, duration) in enumerate(legs, 1):
        departure = rng.choice(range(0, 24 * 60, 30))
        number = f"HAT{index:03d}"
        flights[number] = Flight(
            flight_number=number, origin=origin, destination=destination,
            scheduled_departure_time_est=_clock(departure), scheduled_arrival_time_est=_clock(departure + duration),
            dates={_day(d): _date_status(rng, _day(d), departure, duration) for d in range(DAYS)},
        )
    return flights


# ---------------------------------------------------------------- users


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)


def _dob(rng: random.Random, first_year: int = 1950, last_year: int = 2005) -> str:
    return (date(first_year, 1, 1) + timedelta(days=rng.randrange((last_year - first_year + 1) * 365))).isoformat()


def _address(rng: random.Random) -> Address:
    city, state, zip3 = rng.choice(CITIES)
    address2 = f"Suite {rng.randint(100, 999)}" if rng.random() < 0.7 else f"Apt {rng.randint(1, 40)}"
    return Address(address1=f"{rng.randint(10, 9999)} {rng.choice(STREETS)}", address2=address2, city=city,
                   country="USA", state=state, zip=f"{zip3}{rng.randint(0, 99):02d}")


def _payment_methods(rng: random.Random, ids: _Ids) -> dict[str, PaymentMethod]:
    methods: dict[str, PaymentMethod] = {}
    count = rng.choices((1, 2, 3, 4, 5, 6), (16, 28, 22, 18, 10, 6))[0]
    # the first can pay a reservation (cards and gift cards can; certificates are spent elsewhere)
    sources = [rng.choice(("credit_card", "gift_card"))]
    sources += rng.choices(("credit_card", "gift_card", "certificate"), k=count - 1)
    for source in sources:
        method_id = ids.draw("0123456789", 7, prefix=f"{source}_")
        method: PaymentMethod
        if source == "credit_card":
            method = CreditCard(source="credit_card", id=method_id, brand=rng.choice(CARD_BRANDS),
                                last_four=f"{rng.randint(0, 9999):04d}")
        elif source == "gift_card":
            method = GiftCard(source="gift_card", id=method_id, amount=float(rng.randint(0, 300)))
        else:
            method = Certificate(source="certificate", id=method_id, amount=rng.choice(CERTIFICATE_VALUES))
        methods[method_id] = method
    return methods


def _users(rng: random.Random, ids: _Ids, count: int) -> dict[str, User]:
    users: dict[str, User] = {}
    emails: set[str] = set()
    for _ in range(count):
        first, last = _person(rng)
        user_id = ids.draw("0123456789", 4, prefix=f"{first.lower()}_{last.lower()}_")
        while True:
            email = f"{first.lower()}.{last.lower()}{rng.randint(1000, 9999)}@example.com"
            if email not in emails:
                emails.add(email)
                break
        saved = [Passenger(first_name=f, last_name=l, dob=_dob(rng))
                 for f, l in (_person(rng) for _ in range(rng.choices((1, 2), (65, 35))[0]))]
        users[user_id] = User(user_id=user_id, name=Name(first_name=first, last_name=last), address=_address(rng),
                              email=email, dob=_dob(rng), payment_methods=_payment_methods(rng, ids),
                              saved_passengers=saved, membership=rng.choice(("regular", "silver", "gold")),
                              reservations=[])
    return users


# ---------------------------------------------------------------- reservations


def _schedule(legs: list[Flight], first_day: int) -> list[int] | None:
    """Day index of each leg: a leg leaves the day the previous one lands, no earlier than it lands."""
    days = [first_day]
    for before, after in zip(legs, legs[1:]):
        arrival = _minutes(before.scheduled_arrival_time_est)
        day = days[-1] + arrival // (24 * 60)
        if _minutes(after.scheduled_departure_time_est) < arrival % (24 * 60):
            day += 1  # missed it today: the next day's
        days.append(day)
    return days if days[-1] < DAYS else None


def _outbound(rng: random.Random, by_origin: dict[str, list[Flight]], flights: list[Flight]) -> list[Flight]:
    first = rng.choice(flights)
    if rng.random() < 0.55:
        onward = [f for f in by_origin[first.destination] if f.destination != first.origin]
        if onward:
            return [first, rng.choice(onward)]
    return [first]


def _reverse(leg: Flight, by_route: dict[tuple[str, str], list[Flight]], rng: random.Random) -> Flight:
    return rng.choice(by_route[(leg.destination, leg.origin)])


def _passengers(rng: random.Random, owner: User) -> list[Passenger]:
    count = rng.choices(PASSENGER_COUNTS, PASSENGER_COUNT_WEIGHTS)[0]
    people: list[Passenger] = []
    if rng.random() < 0.8:
        people.append(Passenger(first_name=owner.name.first_name, last_name=owner.name.last_name, dob=owner.dob))
    pool = list(owner.saved_passengers)
    while len(people) < count:
        if pool and rng.random() < 0.5:
            people.append(pool.pop(rng.randrange(len(pool))).model_copy())
        else:
            first, last = _person(rng)
            people.append(Passenger(first_name=first, last_name=last, dob=_dob(rng)))
    return people


def _segment_price(rng: random.Random, leg: Flight, day: str, cabin: str) -> int:
    """What was paid: today's fare when the date is still bookable, else a fare of the cabin's range."""
    status = leg.dates[day]
    if isinstance(status, Available) and rng.random() < 0.3:
        return status.prices[cabin]  # type: ignore[index]
    return rng.randint(*PRICE_RANGES[cabin])


def _reservation(rng: random.Random, ids: _Ids, owner: User, flights: list[Flight],
                 by_origin: dict[str, list[Flight]], by_route: dict[tuple[str, str], list[Flight]]) -> Reservation:
    while True:
        outbound = _outbound(rng, by_origin, flights)
        round_trip = rng.random() < 0.48
        legs = outbound + ([_reverse(leg, by_route, rng) for leg in reversed(outbound)] if round_trip else [])
        first_day = rng.randrange(DAYS)
        days = _schedule(outbound, first_day)
        if days is None:
            continue
        if round_trip:
            back = _schedule(legs[len(outbound):], days[-1] + rng.randint(1, 7))
            if back is None:
                continue
            days += back
        break
    cabin = rng.choice(CABINS)
    segments = [ReservationFlight(origin=leg.origin, destination=leg.destination, flight_number=leg.flight_number,
                                  date=_day(d), price=_segment_price(rng, leg, _day(d), cabin))
                for leg, d in zip(legs, days)]
    passengers = _passengers(rng, owner)
    count = len(passengers)
    free = FREE_BAGS[owner.membership][cabin] * count
    total_bags = rng.choices(range(0, 2 * count + 1), [4] + [2] * (2 * count))[0]
    paid_bags = max(0, total_bags - free)
    insurance = rng.choice(("yes", "no"))
    fare = sum(s.price for s in segments) * count
    total = fare + (INSURANCE_PER_PASSENGER * count if insurance == "yes" else 0) + PRICE_PER_EXTRA_BAG * paid_bags
    payer = rng.choice([m for m in owner.payment_methods.values() if not isinstance(m, Certificate)])
    # booked before the first flight's day, between the end of April and yesterday
    latest = min(CREATED_UNTIL, datetime.fromisoformat(segments[0].date) - timedelta(seconds=1))
    span = int((latest - CREATED_FROM).total_seconds())
    created = CREATED_FROM + timedelta(seconds=rng.randint(0, max(0, span)))
    return Reservation(
        reservation_id=ids.draw("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 6), user_id=owner.user_id,
        origin=legs[0].origin, destination=outbound[-1].destination,
        flight_type="round_trip" if round_trip else "one_way", cabin=cabin, flights=segments, passengers=passengers,
        payment_history=[Payment(payment_id=payer.id, amount=total)], created_at=created.strftime(FMT),
        total_baggages=total_bags, nonfree_baggages=paid_bags, insurance=insurance,
    )


def generate_airline_db(seed: int, users: int) -> AirlineDB:
    """A fresh, consistent airline database: 300 flights, ``users`` users, about 4 reservations each."""
    rng = random.Random(seed)
    # ids the tools hand out for new records are never used by generated ones
    ids = _Ids(rng, reserved=NEW_RESERVATION_IDS + NEW_CERTIFICATE_IDS)
    flights = _flights(rng)
    flight_list = list(flights.values())
    by_origin: dict[str, list[Flight]] = {}
    by_route: dict[tuple[str, str], list[Flight]] = {}
    for flight in flight_list:
        by_origin.setdefault(flight.origin, []).append(flight)
        by_route.setdefault((flight.origin, flight.destination), []).append(flight)
    user_table = _users(rng, ids, users)
    reservations: dict[str, Reservation] = {}
    counts = rng.choices(RESERVATIONS_PER_USER, RESERVATIONS_PER_USER_WEIGHTS, k=users)
    for owner, count in zip(user_table.values(), counts):
        for _ in range(count):
            booking = _reservation(rng, ids, owner, flight_list, by_origin, by_route)
            reservations[booking.reservation_id] = booking
            owner.reservations.append(booking.reservation_id)
    return AirlineDB(flights=flights, users=user_table, reservations=reservations)


def dump_db(db: AirlineDB) -> str:
    """The canonical text of a database: its JSON with two-space indent and a trailing newline."""
    return db.model_dump_json(indent=2) + "\n"
