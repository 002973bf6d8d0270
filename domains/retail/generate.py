"""Seeded generator of fresh retail databases in tau2-bench's retail schema.

``generate_retail_db(seed, users)`` builds a catalogue of 50 product types with variants,
``users`` customers with addresses and payment methods, and about two orders per user in
every order status, all mutually consistent (see ``consistency.check_retail_db``). All
randomness comes from one ``random.Random(seed)``; the result depends on nothing else, so
``dump_db(generate_retail_db(s, n))`` is byte-identical across runs and machines.

The catalogue, names, streets and cities below are this project's own data.
"""

from __future__ import annotations

import itertools
import random

from trajectory2task.domains.retail.models import (
    CANCEL_REASONS,
    ORDER_STATUSES,
    Address,
    CreditCard,
    Fulfillment,
    GiftCard,
    Order,
    OrderItem,
    Payment,
    PaymentMethod,
    Paypal,
    Product,
    RetailDB,
    User,
    UserName,
    Variant,
)

# name, option dimensions with their values, (low, high) price range in dollars
CATALOGUE: tuple[tuple[str, dict[str, list[str]], tuple[float, float]], ...] = (
    ("T-Shirt", {"color": ["white", "black", "navy", "olive", "red"], "size": ["XS", "S", "M", "L", "XL"],
                 "material": ["cotton", "linen blend", "recycled polyester"], "fit": ["regular", "slim", "relaxed"]},
     (12, 45)),
    ("Mechanical Keyboard", {"switch type": ["linear", "tactile", "clicky"],
                             "layout": ["full size", "tenkeyless", "65 percent"],
                             "backlight": ["none", "white", "RGB"], "connection": ["wired", "wireless"]},
     (60, 220)),
    ("Wireless Mouse", {"dpi": ["1600", "3200", "8000"], "color": ["black", "white", "graphite"],
                        "grip": ["palm", "claw"]}, (20, 90)),
    ("Laptop", {"screen size": ["13-inch", "14-inch", "16-inch"], "cpu": ["4-core", "8-core", "12-core"],
                "memory": ["8GB", "16GB", "32GB"], "storage": ["256GB", "512GB", "1TB"],
                "color": ["silver", "charcoal"]}, (700, 2600)),
    ("Tablet", {"screen size": ["8-inch", "11-inch", "12.9-inch"], "storage": ["64GB", "128GB", "256GB"],
                "connectivity": ["wifi", "wifi + cellular"], "color": ["silver", "gray", "rose"]}, (250, 1100)),
    ("Smartphone", {"storage": ["128GB", "256GB", "512GB"], "color": ["midnight", "frost", "sage", "coral"],
                    "screen size": ["6.1-inch", "6.7-inch"]}, (400, 1300)),
    ("Computer Monitor", {"size": ["24-inch", "27-inch", "32-inch"], "resolution": ["1080p", "1440p", "4K"],
                          "refresh rate": ["60Hz", "144Hz", "165Hz"]}, (150, 800)),
    ("Over-Ear Headphones", {"color": ["black", "cream", "navy"], "noise cancelling": ["yes", "no"],
                             "connection": ["wired", "bluetooth"]}, (50, 400)),
    ("Earbuds", {"color": ["black", "white", "mint"], "battery life": ["6h", "8h", "10h"],
                 "water resistance": ["IPX4", "IPX7"]}, (40, 250)),
    ("Smart Speaker", {"color": ["charcoal", "chalk", "sand"], "size": ["mini", "standard", "max"]}, (35, 300)),
    ("Fitness Tracker", {"band": ["silicone", "fabric", "leather"], "color": ["black", "teal", "berry"],
                         "display": ["monochrome", "color"]}, (40, 200)),
    ("Mirrorless Camera", {"sensor": ["APS-C", "full frame"], "kit lens": ["body only", "18-55mm", "24-105mm"],
                           "color": ["black", "silver"]}, (600, 2800)),
    ("Camera Drone", {"camera": ["2.7K", "4K", "6K"], "flight time": ["25 min", "34 min", "45 min"],
                      "bundle": ["standard", "fly more"]}, (300, 1600)),
    ("Wi-Fi Router", {"bands": ["dual band", "tri band"], "standard": ["wifi 6", "wifi 6E", "wifi 7"],
                      "ethernet ports": ["4", "8"]}, (80, 500)),
    ("Power Bank", {"capacity": ["5000mAh", "10000mAh", "20000mAh", "26800mAh"], "output": ["18W", "45W", "100W"],
                    "color": ["black", "white", "blue"]}, (20, 120)),
    ("Floor Lamp", {"finish": ["brass", "matte black", "white"], "light": ["warm", "daylight", "adjustable"],
                    "height": ["150cm", "170cm"]}, (40, 260)),
    ("Standing Desk", {"width": ["48 inch", "55 inch", "63 inch"], "top": ["oak", "walnut", "white", "black"],
                       "frame": ["single motor", "dual motor"]}, (250, 900)),
    ("Office Chair", {"upholstery": ["mesh", "fabric", "leather"], "color": ["black", "gray", "blue"],
                      "armrests": ["fixed", "4D adjustable"], "headrest": ["yes", "no"]}, (120, 700)),
    ("Bookcase", {"material": ["pine", "oak veneer", "metal"], "shelves": ["3", "4", "5"],
                  "color": ["natural", "white", "black"]}, (60, 450)),
    ("Throw Pillow", {"size": ["16x16", "18x18", "20x20"], "fabric": ["velvet", "linen", "cotton"],
                      "color": ["mustard", "sage", "ivory", "rust"]}, (15, 60)),
    ("Duvet Cover", {"bed size": ["twin", "queen", "king"], "fabric": ["percale", "sateen", "linen"],
                     "color": ["white", "gray", "blush", "navy"]}, (50, 250)),
    ("Bath Towel Set", {"pieces": ["2", "4", "6"], "color": ["white", "charcoal", "seafoam", "sand"],
                        "material": ["cotton", "bamboo"]}, (25, 120)),
    ("Blender", {"capacity": ["48 oz", "64 oz", "72 oz"], "power": ["700W", "1000W", "1500W"],
                 "color": ["black", "red", "steel"]}, (40, 450)),
    ("Rice Cooker", {"capacity": ["3 cup", "5.5 cup", "10 cup"], "heating": ["basic", "fuzzy logic", "induction"],
                     "color": ["white", "black"]}, (30, 380)),
    ("Air Fryer", {"capacity": ["4 qt", "6 qt", "8 qt"], "window": ["yes", "no"],
                   "color": ["black", "white", "sage"]}, (60, 260)),
    ("Stand Mixer", {"bowl size": ["4.5 qt", "5 qt", "6 qt"], "color": ["red", "white", "pistachio", "black"],
                     "motor": ["325W", "500W"]}, (200, 650)),
    ("Chef's Knife", {"blade length": ["6 inch", "8 inch", "10 inch"],
                      "steel": ["German", "Japanese VG10", "carbon"],
                      "handle": ["pakkawood", "polymer", "olive wood"]}, (30, 300)),
    ("Cookware Set", {"pieces": ["5", "8", "10", "12"], "material": ["stainless steel", "nonstick", "cast iron"]},
     (80, 600)),
    ("French Press", {"capacity": ["350ml", "800ml", "1l"], "material": ["glass", "stainless steel"],
                      "color": ["black", "silver", "copper"]}, (20, 90)),
    ("Gooseneck Kettle", {"capacity": ["0.6l", "0.9l", "1.2l"], "temperature control": ["yes", "no"],
                          "finish": ["matte black", "brushed steel", "white"]}, (30, 170)),
    ("Water Bottle", {"capacity": ["500ml", "750ml", "1l"], "material": ["stainless steel", "tritan", "glass"],
                      "color": ["sky", "black", "coral", "forest"]}, (12, 50)),
    ("Insulated Lunch Bag", {"size": ["small", "medium", "large"], "color": ["gray", "plum", "denim", "khaki"]},
     (15, 45)),
    ("Backpack", {"capacity": ["18l", "25l", "32l"], "color": ["black", "olive", "navy", "tan"],
                  "material": ["nylon", "canvas", "recycled polyester"], "laptop sleeve": ["yes", "no"]}, (40, 220)),
    ("Suitcase", {"size": ["carry-on", "medium", "large"], "shell": ["hardside", "softside"],
                  "color": ["black", "silver", "teal", "burgundy"]}, (90, 450)),
    ("Running Shoes", {"size": ["7", "8", "9", "10", "11", "12"], "color": ["white", "black", "volt", "blue"],
                       "width": ["regular", "wide"]}, (70, 220)),
    ("Rain Jacket", {"size": ["S", "M", "L", "XL"], "color": ["yellow", "navy", "black", "forest"],
                     "hood": ["fixed", "packable"]}, (60, 260)),
    ("Wool Sweater", {"size": ["S", "M", "L", "XL"], "color": ["oatmeal", "charcoal", "burgundy", "navy"],
                      "neckline": ["crew", "v-neck", "turtleneck"]}, (50, 200)),
    ("Jeans", {"waist": ["28", "30", "32", "34", "36"], "inseam": ["30", "32", "34"],
               "fit": ["slim", "straight", "relaxed"], "wash": ["light", "medium", "dark"]}, (40, 160)),
    ("Baseball Cap", {"color": ["black", "khaki", "navy", "white"], "size": ["S/M", "L/XL"],
                      "material": ["cotton twill", "wool"]}, (15, 45)),
    ("Kettlebell", {"weight": ["8kg", "12kg", "16kg", "20kg", "24kg"],
                    "material": ["cast iron", "vinyl coated", "competition steel"]}, (30, 160)),
    ("Tent", {"capacity": ["2 person", "4 person", "6 person"], "season": ["3 season", "4 season"],
              "color": ["green", "orange", "gray"]}, (120, 700)),
    ("Sleeping Bag", {"temperature rating": ["-5C", "0C", "5C"], "fill": ["down", "synthetic"],
                      "length": ["regular", "long"]}, (60, 400)),
    ("Camping Stove", {"fuel": ["butane", "propane", "multi fuel"], "burners": ["1", "2"],
                       "ignition": ["manual", "piezo"]}, (30, 200)),
    ("Electric Scooter", {"range": ["20 km", "35 km", "50 km"], "top speed": ["20 km/h", "25 km/h", "32 km/h"],
                          "color": ["black", "white", "gray"]}, (300, 1200)),
    ("Board Game", {"genre": ["strategy", "party", "cooperative", "family"], "players": ["2-4", "2-6", "3-8"],
                    "edition": ["standard", "deluxe"]}, (20, 90)),
    ("Paint Set", {"medium": ["watercolor", "acrylic", "gouache", "oil"], "colors": ["12", "24", "48"]},
     (15, 120)),
    ("Acoustic Guitar", {"body": ["dreadnought", "concert", "parlor"], "top wood": ["spruce", "cedar", "mahogany"],
                         "finish": ["natural", "sunburst", "black"]}, (150, 1200)),
    ("Robot Vacuum", {"navigation": ["bump sensor", "lidar", "camera"], "mopping": ["yes", "no"],
                      "dock": ["standard", "self-emptying"]}, (150, 900)),
    ("Planter", {"diameter": ["6 inch", "10 inch", "14 inch"], "material": ["terracotta", "ceramic", "fiberglass"],
                 "color": ["white", "black", "natural"]}, (15, 120)),
    ("Dog Bed", {"size": ["S", "M", "L", "XL"], "fill": ["memory foam", "polyfill", "orthopedic foam"],
                 "color": ["gray", "brown", "navy"]}, (30, 200)),
)

FIRST_NAMES = (
    "Aaron", "Adele", "Ahmed", "Alina", "Amara", "Andre", "Anika", "Arjun", "Beatrice", "Bruno", "Camila",
    "Carlos", "Chen", "Clara", "Dario", "Diana", "Elena", "Elias", "Farah", "Felix", "Gemma", "Hana", "Hugo",
    "Ines", "Irene", "Jonas", "Julia", "Kai", "Kenji", "Lara", "Leon", "Lucia", "Marco", "Maya", "Mei",
    "Milan", "Nadia", "Nico", "Nora", "Omar", "Oscar", "Paula", "Priya", "Rafael", "Rosa", "Samir", "Selma",
    "Tariq", "Tessa", "Theo", "Uma", "Valeria", "Victor", "Wanda", "Xavier", "Yara", "Yusuf", "Zara", "Zoe",
    "Gustavo",
)

LAST_NAMES = (
    "Abbott", "Alvarez", "Banerjee", "Becker", "Brennan", "Castillo", "Chowdhury", "Costa", "Dalton", "Dubois",
    "Eriksen", "Fischer", "Fontaine", "Garrido", "Haddad", "Horvat", "Ibarra", "Jensen", "Kaur", "Keller",
    "Kowalski", "Lindqvist", "Lombardi", "Mahler", "Morales", "Nakamura", "Novak", "Okafor", "Olsen",
    "Pereira", "Quinn", "Reyes", "Rossetti", "Sato", "Schneider", "Silveira", "Sorensen", "Takahashi",
    "Tanaka", "Varga", "Vasquez", "Weber", "Whitfield", "Yilmaz", "Zhou", "Novikova", "Adeyemi", "Hartley",
)

STREETS = (
    "Alder Way", "Birch Court", "Bluebell Road", "Canal Street", "Cedar Hollow", "Chestnut Avenue", "Clover Lane",
    "Cypress Drive", "Elm Terrace", "Ferry Road", "Foxglove Street", "Granite Way", "Harbor View", "Heron Lane",
    "Juniper Street", "Lakeshore Drive", "Linden Avenue", "Magnolia Court", "Meadow Road", "Mill Street",
    "Orchard Lane", "Pinecrest Road", "Quarry Road", "Riverbend Drive", "Sandpiper Way", "Sycamore Street",
    "Tamarack Avenue", "Union Square", "Willow Bend", "Wren Street",
)

# city, state, three-digit zip prefix
CITIES = (
    ("Portland", "OR", "972"), ("Seattle", "WA", "981"), ("Boise", "ID", "837"), ("Sacramento", "CA", "958"),
    ("Oakland", "CA", "946"), ("San Diego", "CA", "921"), ("Phoenix", "AZ", "850"), ("Tucson", "AZ", "857"),
    ("Albuquerque", "NM", "871"), ("Denver", "CO", "802"), ("Salt Lake City", "UT", "841"),
    ("Omaha", "NE", "681"), ("Kansas City", "MO", "641"), ("Minneapolis", "MN", "554"),
    ("Milwaukee", "WI", "532"), ("Chicago", "IL", "606"), ("Indianapolis", "IN", "462"),
    ("Columbus", "OH", "432"), ("Detroit", "MI", "482"), ("Pittsburgh", "PA", "152"),
    ("Philadelphia", "PA", "191"), ("Baltimore", "MD", "212"), ("Richmond", "VA", "232"),
    ("Raleigh", "NC", "276"), ("Charleston", "SC", "294"), ("Atlanta", "GA", "303"), ("Tampa", "FL", "336"),
    ("Miami", "FL", "331"), ("Nashville", "TN", "372"), ("New Orleans", "LA", "701"), ("Houston", "TX", "770"),
    ("Austin", "TX", "787"), ("Dallas", "TX", "752"), ("Boston", "MA", "021"), ("Providence", "RI", "029"),
    ("Brooklyn", "NY", "112"), ("Buffalo", "NY", "142"),
)

CARD_BRANDS = ("visa", "mastercard", "amex", "discover")

# order status -> weight of a randomly drawn status (every status is also guaranteed once)
STATUS_WEIGHTS = {
    "pending": 30,
    "pending (item modified)": 5,
    "processed": 12,
    "delivered": 30,
    "cancelled": 10,
    "exchange requested": 6,
    "return requested": 7,
}
ORDERS_PER_USER = (0, 1, 2, 3, 4, 5, 6)
ORDERS_PER_USER_WEIGHTS = (10, 27, 28, 20, 9, 4, 2)  # mean about 2.1
ITEMS_PER_ORDER = (1, 2, 3, 4, 5)
PAYMENT_METHOD_COUNTS = (1, 2, 3, 4)
PAYMENT_METHOD_COUNT_WEIGHTS = (60, 28, 9, 3)


class _Ids:
    """Unique random digit strings, drawn from the generator's own Random."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def digits(self, n: int, prefix: str = "") -> str:
        while True:
            value = prefix + "".join(str(self.rng.randrange(10)) for _ in range(n))
            if value not in self.used:
                self.used.add(value)
                return value


def _money(value: float) -> float:
    return round(value, 2)


def _products(rng: random.Random, ids: _Ids) -> dict[str, Product]:
    products: dict[str, Product] = {}
    for name, options, (low, high) in CATALOGUE:
        product_id = ids.digits(10)
        dims = list(options)
        combos = list(itertools.product(*(options[d] for d in dims)))
        count = min(len(combos), rng.randint(5, 20))
        chosen = rng.sample(combos, count)
        base = rng.uniform(low, high)
        # at least two available variants per product, so every item can be modified or exchanged
        available_flags = [rng.random() < 0.65 for _ in chosen]
        for index in rng.sample(range(count), 2):
            available_flags[index] = True
        variants: dict[str, Variant] = {}
        for combo, available in zip(chosen, available_flags):
            item_id = ids.digits(10)
            variants[item_id] = Variant(
                item_id=item_id,
                options=dict(zip(dims, combo)),
                available=available,
                price=_money(min(high * 1.1, max(low * 0.9, base * rng.uniform(0.85, 1.15)))),
            )
        products[product_id] = Product(name=name, product_id=product_id, variants=variants)
    return products


def _address(rng: random.Random) -> Address:
    city, state, zip3 = rng.choice(CITIES)
    kind = rng.random()
    address2 = f"Suite {rng.randint(100, 999)}" if kind < 0.5 else f"Apt {rng.randint(1, 40)}" if kind < 0.75 else ""
    return Address(
        address1=f"{rng.randint(10, 9999)} {rng.choice(STREETS)}",
        address2=address2,
        city=city,
        country="USA",
        state=state,
        zip=f"{zip3}{rng.randint(0, 99):02d}",
    )


def _payment_methods(rng: random.Random, ids: _Ids) -> dict[str, PaymentMethod]:
    count = rng.choices(PAYMENT_METHOD_COUNTS, PAYMENT_METHOD_COUNT_WEIGHTS)[0]
    methods: dict[str, PaymentMethod] = {}
    has_paypal = False
    for _ in range(count):
        source = rng.choice(("credit_card", "gift_card") if has_paypal else ("credit_card", "paypal", "gift_card"))
        method_id = ids.digits(7, prefix=f"{source}_")
        method: PaymentMethod
        if source == "credit_card":
            method = CreditCard(source="credit_card", id=method_id, brand=rng.choice(CARD_BRANDS),
                                last_four=f"{rng.randint(0, 9999):04d}")
        elif source == "paypal":
            has_paypal = True
            method = Paypal(source="paypal", id=method_id)
        else:
            balance = 0.0 if rng.random() < 0.1 else _money(rng.uniform(1, 300))
            method = GiftCard(source="gift_card", id=method_id, balance=balance)
        methods[method_id] = method
    return methods


def _item(product: Product, variant: Variant) -> OrderItem:
    return OrderItem(name=product.name, product_id=product.product_id, item_id=variant.item_id,
                     price=variant.price, options=dict(variant.options))


def _other_available(rng: random.Random, product: Product, item_id: str) -> Variant:
    choices = [v for v in product.variants.values() if v.available and v.item_id != item_id]
    return rng.choice(choices)


def _fulfillments(rng: random.Random, ids: _Ids, items: list[OrderItem]) -> list[Fulfillment]:
    item_ids = [item.item_id for item in items]
    if len(item_ids) >= 2 and rng.random() < 0.2:
        cut = rng.randint(1, len(item_ids) - 1)
        groups = [item_ids[:cut], item_ids[cut:]]
    else:
        groups = [item_ids]
    return [Fulfillment(tracking_id=[ids.digits(12)], item_ids=group) for group in groups]


def _order(rng: random.Random, ids: _Ids, user: User, status: str, products: list[Product],
           bought: list[Product]) -> Order:
    count = rng.choice(ITEMS_PER_ORDER)
    chosen: list[Product] = []
    for _ in range(count):
        if bought and rng.random() < 0.3:
            chosen.append(rng.choice(bought))  # a product this user ordered before
        elif chosen and rng.random() < 0.08:
            chosen.append(rng.choice(chosen))  # a second variant of a product in this order
        else:
            chosen.append(rng.choice(products))
    items = [_item(p, rng.choice(list(p.variants.values()))) for p in chosen]
    for product in chosen:
        if all(product is not seen for seen in bought):
            bought.append(product)
    by_id = {p.product_id: p for p in chosen}

    methods = list(user.payment_methods.values())
    method = rng.choice(methods)
    total = _money(sum(item.price for item in items))
    history = [Payment(transaction_type="payment", amount=total, payment_method_id=method.id)]
    address = user.address.model_copy() if rng.random() < 0.8 else _address(rng)
    order = Order(order_id=ids.digits(7, prefix="#W"), user_id=user.user_id, address=address, items=items,
                  status=status, fulfillments=[], payment_history=history)
    items, history = order.items, order.payment_history  # pydantic holds its own lists

    if status in ("processed", "delivered", "exchange requested", "return requested"):
        order.fulfillments = _fulfillments(rng, ids, items)
    if status == "cancelled":
        history.append(Payment(transaction_type="refund", amount=total, payment_method_id=method.id))
        order.cancel_reason = rng.choice(CANCEL_REASONS)
    elif status == "pending (item modified)":
        positions = rng.sample(range(len(items)), rng.randint(1, len(items)))
        difference = 0.0
        for position in sorted(positions):
            old = items[position]
            new = _other_available(rng, by_id[old.product_id], old.item_id)
            difference += new.price - old.price
            items[position] = _item(by_id[old.product_id], new)
        settle = rng.choice(methods)
        history.append(Payment(transaction_type="payment" if difference > 0 else "refund",
                               amount=_money(abs(difference)), payment_method_id=settle.id))
    elif status == "exchange requested":
        positions = rng.sample(range(len(items)), rng.randint(1, len(items)))
        old_ids, new_ids, difference = [], [], 0.0
        for position in positions:
            old = items[position]
            new = _other_available(rng, by_id[old.product_id], old.item_id)
            old_ids.append(old.item_id)
            new_ids.append(new.item_id)
            difference += new.price - old.price
        difference = _money(difference)
        settle = rng.choice(methods)
        if isinstance(settle, GiftCard) and settle.balance < difference:
            settle = next((m for m in methods if not isinstance(m, GiftCard)), method)
        order.exchange_items = sorted(old_ids)
        order.exchange_new_items = sorted(new_ids)
        order.exchange_payment_method_id = settle.id
        order.exchange_price_difference = difference
    elif status == "return requested":
        positions = rng.sample(range(len(items)), rng.randint(1, len(items)))
        gift_cards = [m for m in methods if isinstance(m, GiftCard)]
        refund_to = rng.choice(gift_cards) if gift_cards and rng.random() < 0.3 else method
        order.return_items = sorted(items[p].item_id for p in positions)
        order.return_payment_method_id = refund_to.id
    return order


def generate_retail_db(seed: int, users: int) -> RetailDB:
    """A fresh, consistent retail database: 50 product types, ``users`` users, ~2 orders each."""
    rng = random.Random(seed)
    ids = _Ids(rng)
    products = _products(rng, ids)
    product_list = list(products.values())

    user_table: dict[str, User] = {}
    emails: set[str] = set()
    names: list[tuple[str, str]] = []
    for _ in range(users):
        if names and rng.random() < 0.08:
            first, last = rng.choice(names)  # a namesake of an earlier user
        else:
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        names.append((first, last))
        stem = f"{first.lower()}_{last.lower()}"
        user_id = ids.digits(4, prefix=f"{stem}_")
        while True:
            email = f"{first.lower()}.{last.lower()}{rng.randint(1000, 9999)}@example.com"
            if email not in emails:
                emails.add(email)
                break
        user_table[user_id] = User(user_id=user_id, name=UserName(first_name=first, last_name=last),
                                   address=_address(rng), email=email,
                                   payment_methods=_payment_methods(rng, ids), orders=[])

    counts = rng.choices(ORDERS_PER_USER, ORDERS_PER_USER_WEIGHTS, k=users)
    total = sum(counts)
    statuses = list(ORDER_STATUSES) if total >= len(ORDER_STATUSES) else []
    statuses += rng.choices(list(STATUS_WEIGHTS), list(STATUS_WEIGHTS.values()), k=total - len(statuses))
    rng.shuffle(statuses)

    orders: dict[str, Order] = {}
    next_status = iter(statuses)
    for user, count in zip(user_table.values(), counts):
        bought: list[Product] = []
        for _ in range(count):
            order = _order(rng, ids, user, next(next_status), product_list, bought)
            orders[order.order_id] = order
            user.orders.append(order.order_id)
    return RetailDB(products=products, users=user_table, orders=orders)


def dump_db(db: RetailDB) -> str:
    """The canonical text of a database: its JSON with two-space indent and a trailing newline."""
    return db.model_dump_json(indent=2) + "\n"
