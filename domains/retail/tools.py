"""The retail tools, behaving as tau2-bench's retail API does (see TOOLS.md in shared/)."""

from __future__ import annotations

import json
from typing import cast

from trajectory2task.domains.common_tools import calculate, transfer_to_human_agents  # noqa: F401  (retail's tool list)
from trajectory2task.domains.runtime import ToolError, Transaction, tool, user_from_output
from trajectory2task.domains.retail.models import (CANCEL_REASONS, Address, GiftCard, Order, Payment, PaymentMethod, Product, User,
                                   Variant)
# The order status each order write needs (a tool check, or the policy rule for the
# address and payment changes, which the tools let through on 'pending (item modified)').
WRITE_ORDER_STATUS = {
    "cancel_pending_order": "pending",
    "modify_pending_order_address": "pending",
    "modify_pending_order_payment": "pending",
    "modify_pending_order_items": "pending",
    "exchange_delivered_order_items": "delivered",
    "return_delivered_order_items": "delivered",
}


# ---------------------------------------------------------------- look-ups


def _order(tx: Transaction, order_id: str, *, update: bool = False) -> Order:
    record = tx.for_update("orders", order_id) if update else tx.get("orders", order_id)
    if record is None:
        raise ToolError("Order not found")
    return cast(Order, record)


def _user(tx: Transaction, user_id: str, *, update: bool = False) -> User:
    record = tx.for_update("users", user_id) if update else tx.get("users", user_id)
    if record is None:
        raise ToolError("User not found")
    return cast(User, record)


def _product(tx: Transaction, product_id: str) -> Product:
    record = tx.get("products", product_id)
    if record is None:
        raise ToolError("Product not found")
    return cast(Product, record)


def _variant(tx: Transaction, product_id: str, item_id: str) -> Variant:
    variant = _product(tx, product_id).variants.get(item_id)
    if variant is None:
        raise ToolError("Variant not found")
    return variant


def _payment_method(user: User, payment_method_id: str) -> PaymentMethod:
    method = user.payment_methods.get(payment_method_id)
    if method is None:
        raise ToolError("Payment method not found")
    return method


def _is_pending_like(order: Order) -> bool:
    return "pending" in order.status


def _check_multiplicity(order: Order, item_ids: list[str], message: str) -> None:
    present = [item.item_id for item in order.items]
    for item_id in item_ids:
        if item_ids.count(item_id) > present.count(item_id):
            raise ToolError(message.format(item_id=item_id))


def _price_difference(tx: Transaction, order: Order, item_ids: list[str], new_item_ids: list[str], *,
                      allow_same: bool) -> tuple[float, Variant | None]:
    """Sum of new variant price minus old item price over the pairs; also the last variant."""
    difference = 0.0
    variant: Variant | None = None
    for item_id, new_item_id in zip(item_ids, new_item_ids):
        if not allow_same and item_id == new_item_id:
            raise ToolError("The new item id should be different from the old item id")
        item = next(i for i in order.items if i.item_id == item_id)
        variant = _variant(tx, item.product_id, new_item_id)
        if not variant.available:
            raise ToolError(f"New item {new_item_id} not found or available")
        difference += variant.price - item.price
    return difference, variant


# ---------------------------------------------------------------- read tools


@tool("read", authenticates=user_from_output)
def find_user_id_by_email(tx: Transaction, email: str) -> str:
    """Look up a user's id from their email address (case does not matter).

    Args:
        email: The email address, e.g. 'jane.doe1234@example.com'.
    """
    wanted = email.lower()
    for user in tx.values("users"):
        if cast(User, user).email.lower() == wanted:
            return cast(User, user).user_id
    raise ToolError("User not found")


@tool("read", authenticates=user_from_output)
def find_user_id_by_name_zip(tx: Transaction, first_name: str, last_name: str, zip: str) -> str:
    """Look up a user's id from their first name, last name and address zip code.

    Use this when the user does not remember their email. Names match regardless of case.

    Args:
        first_name: Given name, e.g. 'Jane'.
        last_name: Family name, e.g. 'Doe'.
        zip: Five-digit zip code of the user's address, e.g. '10001'.
    """
    first, last = first_name.lower(), last_name.lower()
    for record in tx.values("users"):
        user = cast(User, record)
        if user.name.first_name.lower() == first and user.name.last_name.lower() == last and user.address.zip == zip:
            return user.user_id
    raise ToolError("User not found")


@tool("read")
def get_user_details(tx: Transaction, user_id: str) -> User:
    """Show a user's profile: name, default address, email, payment methods and order ids.

    Args:
        user_id: The user's id, e.g. 'jane_doe_1234'.
    """
    return _user(tx, user_id)


@tool("read")
def get_order_details(tx: Transaction, order_id: str) -> Order:
    """Show an order: its items, status, shipping address, fulfillments and payments.

    Args:
        order_id: The order id, starting with '#', e.g. '#W0000000'.
    """
    return _order(tx, order_id)


@tool("read")
def get_product_details(tx: Transaction, product_id: str) -> Product:
    """Show a product type and every variant of it with options, price and availability.

    Args:
        product_id: The product id, e.g. '6086499569'. Not the same thing as an item id.
    """
    return _product(tx, product_id)


@tool("read")
def get_item_details(tx: Transaction, item_id: str) -> Variant:
    """Show one item (a product variant): its options, price and availability.

    Args:
        item_id: The item id, e.g. '1008292230'.
    """
    for record in tx.values("products"):
        variant = cast(Product, record).variants.get(item_id)
        if variant is not None:
            return variant
    raise ToolError("Item not found")


@tool("read")
def list_all_product_types(tx: Transaction) -> str:
    """List every product type in the store as a JSON object from product name to product id."""
    names = {cast(Product, p).name: cast(Product, p).product_id for p in tx.values("products")}
    return json.dumps(dict(sorted(names.items())))


# ---------------------------------------------------------------- write tools


@tool("write")
def cancel_pending_order(tx: Transaction, order_id: str, reason: str) -> Order:
    """Cancel an order whose status is 'pending' and refund every payment to its method.

    Gift card refunds are credited at once; other methods take 5 to 7 business days.
    Confirm the order id and the reason with the user first.

    Args:
        order_id: The order id, starting with '#'.
        reason: Either 'no longer needed' or 'ordered by mistake'.
    """
    order = _order(tx, order_id, update=True)
    if order.status != "pending":
        raise ToolError("Non-pending order cannot be cancelled")
    if reason not in CANCEL_REASONS:
        raise ToolError("Invalid reason")
    user = _user(tx, order.user_id, update=True)
    refunds = []
    for payment in order.payment_history:
        method = _payment_method(user, payment.payment_method_id)
        refunds.append(Payment(transaction_type="refund", amount=payment.amount,
                               payment_method_id=payment.payment_method_id))
        if isinstance(method, GiftCard):
            method.balance = round(method.balance + payment.amount, 2)
    order.payment_history.extend(refunds)
    order.status = "cancelled"
    order.cancel_reason = reason
    return order


@tool("write")
def modify_pending_order_address(tx: Transaction, order_id: str, address1: str, address2: str, city: str,
                                 state: str, country: str, zip: str) -> Order:
    """Change the shipping address of a pending order.

    Args:
        order_id: The order id, starting with '#'.
        address1: First address line, e.g. '123 Main St'.
        address2: Second address line, e.g. 'Apt 1', or an empty string.
        city: City, e.g. 'San Francisco'.
        state: State code, e.g. 'CA'.
        country: Country, e.g. 'USA'.
        zip: Zip code, e.g. '12345'.
    """
    order = _order(tx, order_id, update=True)
    if not _is_pending_like(order):
        raise ToolError("Non-pending order cannot be modified")
    order.address = Address(address1=address1, address2=address2, city=city, country=country, state=state, zip=zip)
    return order


@tool("write")
def modify_pending_order_payment(tx: Transaction, order_id: str, payment_method_id: str) -> Order:
    """Pay for a pending order with a different one of the user's payment methods.

    The new method is charged the order total and the old one refunded. A gift card must
    hold at least the total.

    Args:
        order_id: The order id, starting with '#'.
        payment_method_id: The new payment method's id, e.g. 'gift_card_0000000' or 'credit_card_0000000'.
    """
    order = _order(tx, order_id, update=True)
    if not _is_pending_like(order):
        raise ToolError("Non-pending order cannot be modified")
    user = _user(tx, order.user_id, update=True)
    method = _payment_method(user, payment_method_id)
    history = order.payment_history
    if len(history) != 1 or history[0].transaction_type != "payment":
        raise ToolError("There should be exactly one payment for a pending order")
    old_method_id = history[0].payment_method_id
    if old_method_id == payment_method_id:
        raise ToolError("The new payment method should be different from the current one")
    amount = history[0].amount
    if isinstance(method, GiftCard) and method.balance < amount:
        raise ToolError("Insufficient gift card balance to pay for the order")
    history.append(Payment(transaction_type="payment", amount=amount, payment_method_id=payment_method_id))
    history.append(Payment(transaction_type="refund", amount=amount, payment_method_id=old_method_id))
    if isinstance(method, GiftCard):
        method.balance = round(method.balance - amount, 2)
    old_method = _payment_method(user, old_method_id)
    if isinstance(old_method, GiftCard):
        old_method.balance = round(old_method.balance + amount, 2)
    return order


@tool("write")
def modify_pending_order_items(tx: Transaction, order_id: str, item_ids: list[str], new_item_ids: list[str],
                               payment_method_id: str) -> Order:
    """Swap items of a pending order for other variants of the same products.

    Can be done once per order: the status becomes 'pending (item modified)' and the order
    can no longer be modified or cancelled. The price difference is charged to, or refunded
    to, the given payment method; a gift card must cover it.

    Args:
        order_id: The order id, starting with '#'.
        item_ids: Item ids in the order to change, e.g. ['1008292230']. Repeat an id to change several units.
        new_item_ids: The replacement item ids, position by position, e.g. ['1008292231'].
        payment_method_id: Payment method for the price difference, e.g. 'gift_card_0000000'.
    """
    order = _order(tx, order_id, update=True)
    if order.status != "pending":
        raise ToolError("Non-pending order cannot be modified")
    _check_multiplicity(order, item_ids, "{item_id} not found")
    if len(item_ids) != len(new_item_ids):
        raise ToolError("The number of items to be exchanged should match")
    difference, last_variant = _price_difference(tx, order, item_ids, new_item_ids, allow_same=False)
    user = _user(tx, order.user_id, update=True)
    method = _payment_method(user, payment_method_id)
    if isinstance(method, GiftCard) and method.balance < difference:
        raise ToolError("Insufficient gift card balance to pay for the new item")
    order.payment_history.append(Payment(transaction_type="payment" if difference > 0 else "refund",
                                         amount=abs(difference), payment_method_id=payment_method_id))
    if isinstance(method, GiftCard):
        method.balance = round(method.balance - difference, 2)
    for item_id, new_item_id in zip(item_ids, new_item_ids):
        item = next(i for i in order.items if i.item_id == item_id)
        item.item_id = new_item_id
        if last_variant is not None:  # tau2 compatibility: every item takes the last variant's price/options
            item.price = last_variant.price
            item.options = dict(last_variant.options)
    order.status = "pending (item modified)"
    return order


@tool("write")
def exchange_delivered_order_items(tx: Transaction, order_id: str, item_ids: list[str], new_item_ids: list[str],
                                   payment_method_id: str) -> Order:
    """Request an exchange of delivered items for other variants of the same products.

    Can be done once per order; the status becomes 'exchange requested' and the user gets
    return instructions by email. The price difference is settled with the given method;
    a gift card must cover it.

    Args:
        order_id: The order id, starting with '#'.
        item_ids: Item ids in the order to exchange, e.g. ['1008292230'].
        new_item_ids: The replacement item ids, position by position, e.g. ['1008292231'].
        payment_method_id: Payment method for the price difference, e.g. 'credit_card_0000000'.
    """
    order = _order(tx, order_id, update=True)
    if order.status != "delivered":
        raise ToolError("Non-delivered order cannot be exchanged")
    _check_multiplicity(order, item_ids, "Number of {item_id} not found.")
    if len(item_ids) != len(new_item_ids):
        raise ToolError("The number of items to be exchanged should match.")
    difference, _ = _price_difference(tx, order, item_ids, new_item_ids, allow_same=True)
    difference = round(difference, 2)
    user = _user(tx, order.user_id)
    method = _payment_method(user, payment_method_id)
    if isinstance(method, GiftCard) and method.balance < difference:
        raise ToolError("Insufficient gift card balance to pay for the price difference")
    order.status = "exchange requested"
    order.exchange_items = sorted(item_ids)
    order.exchange_new_items = sorted(new_item_ids)
    order.exchange_payment_method_id = payment_method_id
    order.exchange_price_difference = difference
    return order


@tool("write")
def return_delivered_order_items(tx: Transaction, order_id: str, item_ids: list[str],
                                 payment_method_id: str) -> Order:
    """Request a return of delivered items; the refund goes to the original method or a gift card.

    The status becomes 'return requested' and the user gets return instructions by email.

    Args:
        order_id: The order id, starting with '#'.
        item_ids: Item ids in the order to return, e.g. ['1008292230'].
        payment_method_id: Where the refund goes: the order's original payment method or one of the user's gift cards.
    """
    order = _order(tx, order_id, update=True)
    if order.status != "delivered":
        raise ToolError("Non-delivered order cannot be returned")
    user = _user(tx, order.user_id)
    method = _payment_method(user, payment_method_id)
    if not isinstance(method, GiftCard) and payment_method_id != order.payment_history[0].payment_method_id:
        raise ToolError("Payment method should be the original payment method")
    _check_multiplicity(order, item_ids, "Some item not found")
    order.status = "return requested"
    order.return_items = sorted(item_ids)
    order.return_payment_method_id = payment_method_id
    return order


@tool("write")
def modify_user_address(tx: Transaction, user_id: str, address1: str, address2: str, city: str, state: str,
                        country: str, zip: str) -> User:
    """Change a user's default address.

    Args:
        user_id: The user's id, e.g. 'jane_doe_1234'.
        address1: First address line, e.g. '123 Main St'.
        address2: Second address line, e.g. 'Apt 1', or an empty string.
        city: City, e.g. 'San Francisco'.
        state: State code, e.g. 'CA'.
        country: Country, e.g. 'USA'.
        zip: Zip code, e.g. '12345'.
    """
    user = _user(tx, user_id, update=True)
    user.address = Address(address1=address1, address2=address2, city=city, country=country, state=state, zip=zip)
    return user


ALL_TOOLS = (
    calculate,
    cancel_pending_order,
    exchange_delivered_order_items,
    find_user_id_by_email,
    find_user_id_by_name_zip,
    get_item_details,
    get_order_details,
    get_product_details,
    get_user_details,
    list_all_product_types,
    modify_pending_order_address,
    modify_pending_order_items,
    modify_pending_order_payment,
    modify_user_address,
    return_delivered_order_items,
    transfer_to_human_agents,
)
