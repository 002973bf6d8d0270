"""Fresh retail databases: the seeded generator and the consistency check."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from trajectory2task.domains import get_domain
from trajectory2task.domains.retail.consistency import check_retail_db
from trajectory2task.domains.retail.generate import dump_db, generate_retail_db
from trajectory2task.domains.retail.models import (
    ORDER_STATUSES,
    CreditCard,
    GiftCard,
    Order,
    Payment,
    Paypal,
    RetailDB,
    User,
)

TAU2_RETAIL = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "tau2-retail"


@pytest.fixture(scope="module")
def base_db() -> RetailDB:
    db = generate_retail_db(7, 60)
    assert check_retail_db(db) == []
    return db


@pytest.fixture
def db(base_db: RetailDB) -> RetailDB:
    return base_db.model_copy(deep=True)


def _order(db: RetailDB, status: str, where: Callable[[Order], bool] = lambda o: True) -> Order:
    return next(o for o in db.orders.values() if o.status == status and where(o))


def _assert_reported(db: RetailDB, tag: str, *fragments: str) -> None:
    problems = check_retail_db(db)
    hits = [p for p in problems if p.startswith(f"[{tag}]") and all(f in p for f in fragments)]
    assert hits, f"no [{tag}] problem mentioning {fragments}; got {problems}"


# ---------------------------------------------------------------- the generator


def test_same_seed_same_bytes() -> None:
    first = dump_db(generate_retail_db(3, 80))
    assert first == dump_db(generate_retail_db(3, 80))
    assert first.endswith("}\n")


def test_different_seed_different_db() -> None:
    assert dump_db(generate_retail_db(3, 80)) != dump_db(generate_retail_db(4, 80))


@pytest.mark.parametrize(("seed", "users"), [(0, 50), (1, 500), (2, 7)])
def test_generated_db_validates_and_is_consistent(seed: int, users: int) -> None:
    db = generate_retail_db(seed, users)
    assert RetailDB.model_validate_json(dump_db(db)) == db
    assert check_retail_db(db) == []
    assert len(db.products) == 50
    assert len(db.users) == users
    assert 1.5 * users <= len(db.orders) <= 2.8 * users


def test_shape_of_generated_db() -> None:
    db = generate_retail_db(5, 500)
    assert set(Counter(o.status for o in db.orders.values())) == set(ORDER_STATUSES)
    methods = [m for u in db.users.values() for m in u.payment_methods.values()]
    assert any(isinstance(m, GiftCard) and m.balance > 0 for m in methods)
    assert any(isinstance(m, Paypal) for m in methods)
    assert all(len(m.last_four) == 4 for m in methods if isinstance(m, CreditCard))
    variants = [v for p in db.products.values() for v in p.variants.values()]
    assert any(not v.available for v in variants) and any(v.available for v in variants)
    assert all(sum(v.available for v in p.variants.values()) >= 2 for p in db.products.values())
    names = Counter((u.name.first_name, u.name.last_name) for u in db.users.values())
    assert any(n > 1 for n in names.values()), "some users share a name"
    assert len({u.email for u in db.users.values()}) == len(db.users)
    repeated = 0
    for user in db.users.values():
        bought = Counter(i.product_id for oid in user.orders for i in db.orders[oid].items)
        repeated += any(n > 1 for n in bought.values())
    assert repeated >= 20, "several users ordered the same product more than once"
    cancelled = [o for o in db.orders.values() if o.status == "cancelled"]
    assert all(o.cancel_reason in ("no longer needed", "ordered by mistake") for o in cancelled)
    assert all(o.fulfillments == [] for o in db.orders.values() if "pending" in o.status)
    # tau2-style ids
    assert all(len(k) == 10 and k.isdigit() for k in db.products)
    assert all(k.startswith("#W") and len(k) == 9 and k[2:].isdigit() for k in db.orders)
    assert all(k.rsplit("_", 1)[1].isdigit() and len(k.rsplit("_", 1)[1]) == 4 for k in db.users)
    assert all(k.rsplit("_", 1)[1].isdigit() and len(k.rsplit("_", 1)[1]) == 7 for m in methods for k in [m.id])


def test_every_status_with_few_users() -> None:
    db = generate_retail_db(9, 10)
    if len(db.orders) >= len(ORDER_STATUSES):
        assert {o.status for o in db.orders.values()} == set(ORDER_STATUSES)


# ---------------------------------------------------------------- the check on tau2's data


def test_check_passes_on_tau2_db() -> None:
    path = TAU2_RETAIL / "db.json"
    if not path.exists():
        pytest.skip(f"tau2 reference data not found at {TAU2_RETAIL}")
    db = get_domain("retail").load_db(str(path))
    assert check_retail_db(db) == []


# ---------------------------------------------------------------- one broken database per rule


def test_rule_id_key(db: RetailDB) -> None:
    product = next(iter(db.products.values()))
    product.product_id = "0000000000"
    variant = next(iter(product.variants.values()))
    variant.item_id = "1111111111"
    user = next(iter(db.users.values()))
    user.user_id = "someone_else_0000"
    method = next(iter(user.payment_methods.values()))
    method.id = "paypal_0000000"
    order = next(iter(db.orders.values()))
    order.order_id = "#W0000000"
    problems = [p for p in check_retail_db(db) if p.startswith("[id-key]")]
    assert len(problems) == 5, problems


def test_rule_id_unique_item_across_products(db: RetailDB) -> None:
    first, second = list(db.products.values())[:2]
    shared_id, shared = next(iter(first.variants.items()))
    second.variants[shared_id] = shared.model_copy()
    _assert_reported(db, "id-unique", shared_id)


def test_rule_id_unique_product_and_item(db: RetailDB) -> None:
    first, second = list(db.products.values())[:2]
    variant = next(iter(second.variants.values()))
    product = db.products.pop(first.product_id)
    product.product_id = variant.item_id
    db.products[variant.item_id] = product
    _assert_reported(db, "id-unique", variant.item_id)


def test_rule_id_unique_payment_method_across_users(db: RetailDB) -> None:
    first, second = list(db.users.values())[:2]
    method_id, method = next(iter(first.payment_methods.items()))
    second.payment_methods[method_id] = method.model_copy()
    _assert_reported(db, "id-unique", method_id)


def test_rule_email_unique(db: RetailDB) -> None:
    first, second = list(db.users.values())[:2]
    second.email = first.email.upper()
    _assert_reported(db, "email-unique", first.user_id, second.user_id)


def test_rule_gift_card_balance(db: RetailDB) -> None:
    card = next(m for u in db.users.values() for m in u.payment_methods.values() if isinstance(m, GiftCard))
    card.balance = -5.0
    _assert_reported(db, "gift-card-balance", card.id)


def test_rule_card_last_four(db: RetailDB) -> None:
    card = next(m for u in db.users.values() for m in u.payment_methods.values() if isinstance(m, CreditCard))
    card.last_four = "12a"
    _assert_reported(db, "card-last-four", card.id)


def test_rule_order_user_unknown(db: RetailDB) -> None:
    order = next(iter(db.orders.values()))
    order.user_id = "nobody_here_0000"
    _assert_reported(db, "order-user", order.order_id, "unknown user")


def test_rule_order_not_listed_by_user(db: RetailDB) -> None:
    order = next(iter(db.orders.values()))
    db.users[order.user_id].orders.remove(order.order_id)
    _assert_reported(db, "order-user", order.order_id, "not listed")


def test_rule_user_lists_unknown_order(db: RetailDB) -> None:
    user = next(iter(db.users.values()))
    user.orders.append("#W9999999" if "#W9999999" not in db.orders else "#W0000000")
    _assert_reported(db, "user-orders", user.user_id, "unknown order")


def test_rule_user_lists_foreign_order(db: RetailDB) -> None:
    order = next(iter(db.orders.values()))
    other = next(u for u in db.users.values() if u.user_id != order.user_id)
    other.orders.append(order.order_id)
    _assert_reported(db, "user-orders", other.user_id, order.order_id, "belongs to")


def test_rule_item_unknown_product(db: RetailDB) -> None:
    order = next(iter(db.orders.values()))
    order.items[0].product_id = "no-such-product"
    _assert_reported(db, "order-items", order.order_id, "unknown product")


def test_rule_item_not_a_variant_of_its_product(db: RetailDB) -> None:
    order = next(iter(db.orders.values()))
    item = order.items[0]
    other = next(p for p in db.products.values() if p.product_id != item.product_id)
    item.item_id = next(iter(other.variants))
    _assert_reported(db, "order-items", order.order_id, "is not a variant")


def test_rule_item_name(db: RetailDB) -> None:
    order = next(iter(db.orders.values()))
    order.items[0].name = "Something Else"
    _assert_reported(db, "order-items", order.order_id, "is named")


def test_rule_item_price_and_options(db: RetailDB) -> None:
    order = next(iter(db.orders.values()))
    order.items[0].price += 1.0
    order.items[0].options = {"colour": "plaid"}
    _assert_reported(db, "order-items", order.order_id, "costs")
    _assert_reported(db, "order-items", order.order_id, "has options")


def test_rule_order_without_items(db: RetailDB) -> None:
    order = _order(db, "pending")
    order.items = []
    _assert_reported(db, "order-items", order.order_id, "no items")


def test_rule_first_entry_is_payment(db: RetailDB) -> None:
    order = _order(db, "delivered")
    order.payment_history[0].transaction_type = "refund"
    _assert_reported(db, "payment-first", order.order_id)


def test_rule_payment_total(db: RetailDB) -> None:
    order = _order(db, "processed")
    order.payment_history[0].amount += 0.5
    _assert_reported(db, "payment-total", order.order_id)


def test_rule_payment_net_item_modified(db: RetailDB) -> None:
    order = _order(db, "pending (item modified)")
    order.payment_history[-1].amount += 3.0
    _assert_reported(db, "payment-net", order.order_id)


def test_rule_negative_payment(db: RetailDB) -> None:
    order = _order(db, "pending (item modified)")
    order.payment_history[-1].amount = -abs(order.payment_history[-1].amount) - 1
    _assert_reported(db, "payment-amount", order.order_id)


def test_rule_cancelled_order_carries_refund(db: RetailDB) -> None:
    order = _order(db, "cancelled")
    order.payment_history = order.payment_history[:1]
    _assert_reported(db, "cancel-refund", order.order_id)


def test_rule_payment_method_of_user(db: RetailDB) -> None:
    order = _order(db, "pending")
    foreign = next(m for u in db.users.values() if u.user_id != order.user_id for m in u.payment_methods)
    order.payment_history[0].payment_method_id = foreign
    _assert_reported(db, "payment-method", order.order_id, foreign)


def test_rule_pending_order_has_no_fulfillment(db: RetailDB) -> None:
    order = _order(db, "pending")
    delivered = _order(db, "delivered")
    order.fulfillments = [f.model_copy(deep=True) for f in delivered.fulfillments]
    _assert_reported(db, "fulfillment", order.order_id, "has fulfillments")


def test_rule_delivered_order_has_fulfillment(db: RetailDB) -> None:
    order = _order(db, "delivered")
    order.fulfillments = []
    _assert_reported(db, "fulfillment", order.order_id, "no fulfillment")


def test_rule_fulfillment_ships_order_items(db: RetailDB) -> None:
    order = _order(db, "processed")
    order.fulfillments[0].item_ids.append("0000000000")
    _assert_reported(db, "fulfillment", order.order_id, "0000000000")


def test_rule_status_known(db: RetailDB) -> None:
    order = _order(db, "processed")
    order.status = "shipped"
    _assert_reported(db, "status", order.order_id)


def test_rule_cancel_reason(db: RetailDB) -> None:
    cancelled = _order(db, "cancelled")
    cancelled.cancel_reason = "changed my mind"
    pending = _order(db, "pending")
    pending.cancel_reason = "no longer needed"
    _assert_reported(db, "cancel-reason", cancelled.order_id, "invalid")
    _assert_reported(db, "cancel-reason", pending.order_id)


def test_rule_exchange_fields_complete(db: RetailDB) -> None:
    order = _order(db, "exchange requested")
    order.exchange_new_items = None
    _assert_reported(db, "exchange", order.order_id, "lacks")


def test_rule_exchange_same_product(db: RetailDB) -> None:
    order = _order(db, "exchange requested")
    assert order.exchange_items and order.exchange_new_items
    old_products = {i.product_id for i in order.items if i.item_id in order.exchange_items}
    other = next(p for p in db.products.values() if p.product_id not in old_products)
    order.exchange_new_items[0] = next(iter(other.variants))
    _assert_reported(db, "exchange", order.order_id, "same products")


def test_rule_exchange_price_difference(db: RetailDB) -> None:
    order = _order(db, "exchange requested")
    assert order.exchange_price_difference is not None
    order.exchange_price_difference += 10.0
    _assert_reported(db, "exchange", order.order_id, "exchange_price_difference")


def test_rule_exchange_items_in_order(db: RetailDB) -> None:
    order = _order(db, "exchange requested")
    assert order.exchange_items
    order.exchange_items = order.exchange_items + [order.exchange_items[0]] * len(order.items)
    _assert_reported(db, "exchange", order.order_id, "exchange_items")


def test_rule_exchange_fields_only_on_exchange(db: RetailDB) -> None:
    order = _order(db, "delivered")
    order.exchange_items = [order.items[0].item_id]
    _assert_reported(db, "exchange", order.order_id, "carries exchange fields")


def test_rule_return_fields(db: RetailDB) -> None:
    order = _order(db, "return requested")
    order.return_items = None
    _assert_reported(db, "return", order.order_id, "lacks")


def test_rule_return_items_in_order(db: RetailDB) -> None:
    order = _order(db, "return requested")
    order.return_items = ["0000000000"]
    _assert_reported(db, "return", order.order_id, "0000000000")


def test_rule_return_method_original_or_gift_card(db: RetailDB) -> None:
    def has_other_non_gift(o: Order) -> bool:
        first = o.payment_history[0].payment_method_id
        return any(not isinstance(m, GiftCard) and m.id != first for m in db.users[o.user_id].payment_methods.values())

    order = _order(db, "return requested", has_other_non_gift)
    user = db.users[order.user_id]
    first = order.payment_history[0].payment_method_id
    order.return_payment_method_id = next(
        m.id for m in user.payment_methods.values() if not isinstance(m, GiftCard) and m.id != first)
    _assert_reported(db, "return", order.order_id, "neither the original")


def test_rule_return_fields_only_on_return(db: RetailDB) -> None:
    order = _order(db, "processed")
    order.return_payment_method_id = order.payment_history[0].payment_method_id
    _assert_reported(db, "return", order.order_id, "carries return fields")


# ---------------------------------------------------------------- the write tools on a generated database


def _settling_method(user: User, amount: float) -> str | None:
    """A method of the user that can settle ``amount``: any non-gift card, or a gift card that covers it."""
    for method in user.payment_methods.values():
        if not isinstance(method, GiftCard) or method.balance >= amount:
            return method.id
    return None


def _item_swap(db: RetailDB, status: str) -> tuple[Order, str, str, str]:
    """An order of ``status``, one of its items, an available other variant, and a method paying the difference."""
    for order in db.orders.values():
        if order.status != status:
            continue
        for item in order.items:
            product = db.products[item.product_id]
            for variant in product.variants.values():
                if variant.available and variant.item_id != item.item_id:
                    method = _settling_method(db.users[order.user_id], round(variant.price - item.price, 2))
                    if method is not None:
                        return order, item.item_id, variant.item_id, method
    raise AssertionError(f"no {status} order with a swappable item")


def _write_calls(db: RetailDB) -> dict[str, dict[str, object]]:
    address = {"address1": "12 Test Road", "address2": "", "city": "Austin", "state": "TX", "country": "USA",
               "zip": "78701"}
    pending = _order(db, "pending")

    def payable(o: Order) -> bool:
        amount = o.payment_history[0].amount
        return len(o.payment_history) == 1 and any(
            m.id != o.payment_history[0].payment_method_id
            and (not isinstance(m, GiftCard) or m.balance >= amount)
            for m in db.users[o.user_id].payment_methods.values())

    repay = _order(db, "pending", payable)
    new_method = next(m.id for m in db.users[repay.user_id].payment_methods.values()
                      if m.id != repay.payment_history[0].payment_method_id
                      and (not isinstance(m, GiftCard) or m.balance >= repay.payment_history[0].amount))
    modify, old_item, new_item, modify_method = _item_swap(db, "pending")
    exchange, ex_old, ex_new, ex_method = _item_swap(db, "delivered")
    returned = _order(db, "delivered", lambda o: o.order_id != exchange.order_id)
    user = next(iter(db.users.values()))
    return {
        "cancel_pending_order": {"order_id": pending.order_id, "reason": "no longer needed"},
        "modify_pending_order_address": {"order_id": pending.order_id, **address},
        "modify_pending_order_payment": {"order_id": repay.order_id, "payment_method_id": new_method},
        "modify_pending_order_items": {"order_id": modify.order_id, "item_ids": [old_item],
                                       "new_item_ids": [new_item], "payment_method_id": modify_method},
        "exchange_delivered_order_items": {"order_id": exchange.order_id, "item_ids": [ex_old],
                                           "new_item_ids": [ex_new], "payment_method_id": ex_method},
        "return_delivered_order_items": {"order_id": returned.order_id, "item_ids": [returned.items[0].item_id],
                                         "payment_method_id": returned.payment_history[0].payment_method_id},
        "modify_user_address": {"user_id": user.user_id, **address},
    }


def test_every_write_tool_succeeds_on_generated_db() -> None:
    domain = get_domain("retail")
    db = generate_retail_db(21, 120)
    calls = _write_calls(db)
    assert set(calls) == {t.name for t in domain.tools if t.kind == "write"}
    env = domain.environment(db)
    for name, arguments in calls.items():
        episode = env.episode()
        result = episode.call(name, arguments)
        assert result.error is False, (name, arguments, result.output)
        assert episode.changed(), name
        assert check_retail_db(episode.to_db()) == [], name


def test_payment_entries_are_plain() -> None:
    # the generator writes payment entries the tools can read back: one payment first, amounts rounded
    db = generate_retail_db(13, 40)
    for order in db.orders.values():
        assert isinstance(order.payment_history[0], Payment)
        assert all(round(p.amount, 2) == p.amount for p in order.payment_history)
