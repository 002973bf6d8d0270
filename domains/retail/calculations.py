"""Retail amounts an agent works out before a write and must tell the user.

A return's refund total (the returned items' prices, from the order it read) and an item
change's price difference (the new variants' prices, from the product details it read,
less the old items' prices). Each is an expression over those numbers, as an agent would
hand it to ``calculate``; its value is what the tools then refund or charge.

A question names the order and the kind of write only, not the items or who pays whom: a
changing task asks it before the user changes their mind, so it must read true of the first
goal and of the revised one alike.
"""

from __future__ import annotations

from typing import Any

from trajectory2task.domains.kit import Calculation, Call
from trajectory2task.domains.runtime import Episode


def _number(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.2f}"


def calculations(episode: Episode[Any], call: Call) -> list[Calculation]:
    """The amounts of ``call``, read from ``episode``, the state just before it."""
    a = call.arguments
    order = episode.record("orders", str(a.get("order_id"))) if isinstance(a.get("order_id"), str) else None
    if order is None:
        return []
    oid = order["order_id"]
    items = {i["item_id"]: i for i in order["items"]}
    if call.name == "return_delivered_order_items":
        returned = [items[i] for i in a.get("item_ids") or [] if i in items]
        if not returned:
            return []
        return [Calculation(expression=" + ".join(_number(i["price"]) for i in returned), question=(
            f"Before you confirm, ask the agent how much the refund for your return from order {oid} "
            f"comes to in total."))]
    if call.name in ("modify_pending_order_items", "exchange_delivered_order_items"):
        old, new = [], []
        for old_id, new_id in zip(a.get("item_ids") or [], a.get("new_item_ids") or []):
            item = items.get(old_id)
            product = episode.record("products", item["product_id"]) if item else None
            variant = (product or {}).get("variants", {}).get(new_id)
            if item is None or variant is None:
                return []
            old.append(item["price"])
            new.append(variant["price"])
        difference = round(sum(new) - sum(old), 2)
        if difference == 0:
            return []  # nothing to pay or get back: no amount worth asking for
        more, less = (new, old) if difference > 0 else (old, new)
        terms = " + ".join(_number(p) for p in more) + " - " + " - ".join(_number(p) for p in less)
        change = "exchange" if call.name == "exchange_delivered_order_items" else "item change"
        return [Calculation(expression=terms, question=f"Before you confirm, ask the agent how much the price "
                                                       f"difference of your {change} in order {oid} comes to.")]
    return []
