"""Consistency checks for a retail database: one readable problem per violation.

The rules hold on tau2-bench's own db.json and on every database from
``generate_retail_db``; the tools keep them when they succeed (with one exception, the
reference's own quirk: ``modify_pending_order_items`` with several different new variants
gives every modified item the last variant's price and options, which these rules report).

Each problem starts with a short rule tag in brackets, e.g. ``[order-user]``, so callers and
tests can tell the rules apart.
"""

from __future__ import annotations

from collections import Counter

from trajectory2task.domains.retail.models import CANCEL_REASONS, ORDER_STATUSES, CreditCard, GiftCard, Order, RetailDB, User

TOLERANCE = 0.01 + 1e-9
FULFILLED_STATUSES = ("processed", "delivered", "exchange requested", "return requested")
EXCHANGE_FIELDS = ("exchange_items", "exchange_new_items", "exchange_payment_method_id",
                   "exchange_price_difference")
RETURN_FIELDS = ("return_items", "return_payment_method_id")


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE


def _ids(db: RetailDB, problems: list[str]) -> None:
    """Record keys equal their id fields; no id is used twice across or within tables."""
    roles: dict[str, str] = {}

    def claim(value: str, role: str) -> None:
        previous = roles.get(value)
        if previous is not None:
            problems.append(f"[id-unique] id {value!r} is used as {previous} and as {role}")
        else:
            roles[value] = role

    for key, product in db.products.items():
        if product.product_id != key:
            problems.append(f"[id-key] product key {key!r} holds product_id {product.product_id!r}")
        claim(key, f"product {key}")
        for item_key, variant in product.variants.items():
            if variant.item_id != item_key:
                problems.append(f"[id-key] product {key} variant key {item_key!r} holds item_id {variant.item_id!r}")
            claim(item_key, f"item of product {key}")
    emails: dict[str, str] = {}
    for key, user in db.users.items():
        if user.user_id != key:
            problems.append(f"[id-key] user key {key!r} holds user_id {user.user_id!r}")
        claim(key, f"user {key}")
        for method_key, method in user.payment_methods.items():
            if method.id != method_key:
                problems.append(f"[id-key] user {key} payment method key {method_key!r} holds id {method.id!r}")
            claim(method_key, f"payment method of user {key}")
        email = user.email.lower()
        if email in emails:
            problems.append(f"[email-unique] users {emails[email]} and {key} share the email {user.email!r}")
        else:
            emails[email] = key
    for key, order in db.orders.items():
        if order.order_id != key:
            problems.append(f"[id-key] order key {key!r} holds order_id {order.order_id!r}")
        claim(key, f"order {key}")


def _payment_methods(db: RetailDB, problems: list[str]) -> None:
    for key, user in db.users.items():
        for method_key, method in user.payment_methods.items():
            if isinstance(method, GiftCard) and method.balance < 0:
                problems.append(f"[gift-card-balance] user {key} gift card {method_key} has a negative balance "
                                f"{method.balance}")
            if isinstance(method, CreditCard) and not (len(method.last_four) == 4 and method.last_four.isdigit()):
                problems.append(f"[card-last-four] user {key} credit card {method_key} has last_four "
                                f"{method.last_four!r}")


def _ownership(db: RetailDB, problems: list[str]) -> None:
    """Orders and users point at each other."""
    for key, order in db.orders.items():
        user = db.users.get(order.user_id)
        if user is None:
            problems.append(f"[order-user] order {key} belongs to unknown user {order.user_id!r}")
        elif key not in user.orders:
            problems.append(f"[order-user] order {key} is not listed in the orders of its user {order.user_id}")
    for key, user in db.users.items():
        for order_id, count in Counter(user.orders).items():
            if count > 1:
                problems.append(f"[user-orders] user {key} lists order {order_id} {count} times")
        for order_id in dict.fromkeys(user.orders):
            order = db.orders.get(order_id)
            if order is None:
                problems.append(f"[user-orders] user {key} lists unknown order {order_id!r}")
            elif order.user_id != key:
                problems.append(f"[user-orders] user {key} lists order {order_id}, which belongs to {order.user_id}")


def _items(db: RetailDB, key: str, order: Order, problems: list[str]) -> None:
    """Every item is a variant of its product, with the product's name and the variant's price and options."""
    if not order.items:
        problems.append(f"[order-items] order {key} has no items")
    for index, item in enumerate(order.items):
        where = f"order {key} item {index} ({item.item_id})"
        product = db.products.get(item.product_id)
        if product is None:
            problems.append(f"[order-items] {where} refers to unknown product {item.product_id!r}")
            continue
        if item.name != product.name:
            problems.append(f"[order-items] {where} is named {item.name!r} but product {product.product_id} is "
                            f"{product.name!r}")
        variant = product.variants.get(item.item_id)
        if variant is None:
            problems.append(f"[order-items] {where} is not a variant of product {product.product_id}")
            continue
        if not _close(item.price, variant.price):
            problems.append(f"[order-items] {where} costs {item.price} but the variant costs {variant.price}")
        if item.options != variant.options:
            problems.append(f"[order-items] {where} has options {item.options} but the variant has "
                            f"{variant.options}")


def _payments(key: str, order: Order, user: User | None, problems: list[str]) -> None:
    history = order.payment_history
    total = round(sum(item.price for item in order.items), 2)
    if not history or history[0].transaction_type != "payment":
        problems.append(f"[payment-first] order {key}: the first payment-history entry must be a payment")
        return
    for entry in history:
        if entry.amount < 0:
            problems.append(f"[payment-amount] order {key} has a negative {entry.transaction_type} {entry.amount}")
    if order.status != "pending (item modified)" and not _close(history[0].amount, total):
        problems.append(f"[payment-total] order {key}: first payment {history[0].amount} differs from the item "
                        f"total {total}")
    net = sum(e.amount if e.transaction_type == "payment" else -e.amount for e in history)
    if order.status != "cancelled" and not _close(net, total):
        problems.append(f"[payment-net] order {key}: net payments {round(net, 2)} differ from the item total {total}")
    if order.status == "cancelled":
        first = history[0]
        if not any(e.transaction_type == "refund" and _close(e.amount, first.amount)
                   and e.payment_method_id == first.payment_method_id for e in history[1:]):
            problems.append(f"[cancel-refund] cancelled order {key} has no refund of its payment {first.amount} "
                            f"to {first.payment_method_id}")
    if user is None:
        return
    used = [e.payment_method_id for e in history]
    used += [m for m in (order.exchange_payment_method_id, order.return_payment_method_id) if m is not None]
    for method_id in dict.fromkeys(used):
        if method_id not in user.payment_methods:
            problems.append(f"[payment-method] order {key} uses payment method {method_id!r}, which user "
                            f"{user.user_id} does not have")


def _fulfillments(key: str, order: Order, problems: list[str]) -> None:
    if "pending" in order.status and order.fulfillments:
        problems.append(f"[fulfillment] pending order {key} has fulfillments")
    if order.status in FULFILLED_STATUSES and not order.fulfillments:
        problems.append(f"[fulfillment] {order.status} order {key} has no fulfillment")
    present = Counter(item.item_id for item in order.items)
    shipped: Counter[str] = Counter()
    for fulfillment in order.fulfillments:
        if not fulfillment.tracking_id:
            problems.append(f"[fulfillment] order {key} has a fulfillment without tracking id")
        shipped.update(fulfillment.item_ids)
    for item_id, count in shipped.items():
        if count > present[item_id]:
            problems.append(f"[fulfillment] order {key} ships item {item_id} {count} times but holds "
                            f"{present[item_id]}")


def _status_fields(catalogue: dict[str, tuple[str, float]], key: str, order: Order, user: User | None,
                   problems: list[str]) -> None:
    if order.status not in ORDER_STATUSES:
        problems.append(f"[status] order {key} has unknown status {order.status!r}")
    if order.cancel_reason is not None:
        if order.status != "cancelled":
            problems.append(f"[cancel-reason] {order.status} order {key} has a cancel_reason")
        elif order.cancel_reason not in CANCEL_REASONS:
            problems.append(f"[cancel-reason] order {key} has invalid cancel_reason {order.cancel_reason!r}")
    present = Counter(item.item_id for item in order.items)

    def check_subset(field: str, item_ids: list[str]) -> None:
        for item_id, count in Counter(item_ids).items():
            if count > present[item_id]:
                problems.append(f"[{field.split('_')[0]}] order {key} {field} names item {item_id} {count} times "
                                f"but the order holds {present[item_id]}")

    exchange = [getattr(order, f) for f in EXCHANGE_FIELDS]
    if order.status == "exchange requested":
        if any(v is None for v in exchange):
            problems.append(f"[exchange] exchange requested order {key} lacks some of {', '.join(EXCHANGE_FIELDS)}")
        else:
            old, new = order.exchange_items or [], order.exchange_new_items or []
            check_subset("exchange_items", old)
            if len(old) != len(new) or not old:
                problems.append(f"[exchange] order {key} exchanges {len(old)} items for {len(new)} new items")
            unknown = [i for i in new if i not in catalogue]
            if unknown:
                problems.append(f"[exchange] order {key} exchanges to unknown items {unknown}")
            else:
                old_products: Counter[str] = Counter()
                remaining = Counter(old)
                old_price = 0.0
                for item in order.items:
                    if remaining[item.item_id] > 0:
                        remaining[item.item_id] -= 1
                        old_products[item.product_id] += 1
                        old_price += item.price
                if old_products != Counter(catalogue[i][0] for i in new):
                    problems.append(f"[exchange] order {key}: the new items are not variants of the same products "
                                    f"as the exchanged items")
                elif not _close(order.exchange_price_difference or 0.0,
                                round(sum(catalogue[i][1] for i in new) - old_price, 2)):
                    problems.append(f"[exchange] order {key}: exchange_price_difference "
                                    f"{order.exchange_price_difference} does not match the item prices")
    elif any(v is not None for v in exchange):
        problems.append(f"[exchange] {order.status} order {key} carries exchange fields")

    returned = [getattr(order, f) for f in RETURN_FIELDS]
    if order.status == "return requested":
        if any(v is None for v in returned):
            problems.append(f"[return] return requested order {key} lacks some of {', '.join(RETURN_FIELDS)}")
        else:
            check_subset("return_items", order.return_items or [])
            if not order.return_items:
                problems.append(f"[return] order {key} returns no items")
            method_id = order.return_payment_method_id
            method = user.payment_methods.get(method_id or "") if user is not None else None
            original = order.payment_history[0].payment_method_id if order.payment_history else None
            if method is not None and not isinstance(method, GiftCard) and method_id != original:
                problems.append(f"[return] order {key} refunds to {method_id}, neither the original payment method "
                                f"nor a gift card")
    elif any(v is not None for v in returned):
        problems.append(f"[return] {order.status} order {key} carries return fields")


def check_retail_db(db: RetailDB) -> list[str]:
    """Every consistency problem of ``db``, one readable line each; empty when consistent."""
    problems: list[str] = []
    _ids(db, problems)
    _payment_methods(db, problems)
    _ownership(db, problems)
    catalogue = {item_id: (product_id, variant.price)
                 for product_id, product in db.products.items() for item_id, variant in product.variants.items()}
    for key, order in db.orders.items():
        user = db.users.get(order.user_id)
        _items(db, key, order, problems)
        _payments(key, order, user, problems)
        _fulfillments(key, order, problems)
        _status_fields(catalogue, key, order, user, problems)
    return problems
