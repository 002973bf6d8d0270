"""Retail policy rules that code can check but the tools themselves do not enforce."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from trajectory2task.domains.runtime import Episode, PolicyContext, PolicyRule
from trajectory2task.domains.retail.models import Order
from trajectory2task.domains.retail.tools import WRITE_ORDER_STATUS

def record_owner(episode: Episode[Any], table: str, key: str) -> str | None:
    """The user id a record belongs to (orders through their user, users themselves)."""
    if table == "users":
        return key if episode.get("users", key) is not None else None
    if table == "orders":
        order = episode.get("orders", key)
        return cast(Order, order).user_id if order is not None else None
    return None


def owner_of_call(episode: Episode[Any], name: str, arguments: Mapping[str, Any]) -> str | None:
    """The user a write acts for: the order's user, or the user whose address changes."""
    if name in WRITE_ORDER_STATUS:
        return record_owner(episode, "orders", str(arguments.get("order_id", "")))
    if name == "modify_user_address":
        return record_owner(episode, "users", str(arguments.get("user_id", "")))
    return None


def _other_user(episode: Episode[Any], name: str, arguments: Mapping[str, Any], context: PolicyContext) -> str | None:
    owner = owner_of_call(episode, name, arguments)
    if context.user_id is not None and owner is not None and owner != context.user_id:
        return f"{name} acts on an account of {owner}, not of the authenticated user {context.user_id}"
    return None


def _modify_needs_exact_pending(episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                                context: PolicyContext) -> str | None:
    if name not in ("modify_pending_order_address", "modify_pending_order_payment"):
        return None
    order = episode.get("orders", str(arguments.get("order_id", "")))
    if order is not None and cast(Order, order).status != "pending":
        return f"{name} on an order whose status is '{cast(Order, order).status}', not 'pending'"
    return None


def _exchange_changes_options(episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                              context: PolicyContext) -> str | None:
    if name != "exchange_delivered_order_items":
        return None
    pairs = zip(arguments.get("item_ids") or [], arguments.get("new_item_ids") or [])
    same = [old for old, new in pairs if old == new]
    if same:
        return f"exchange of item {same[0]} for the identical variant"
    return None


POLICY_RULES = (
    PolicyRule("one_user_per_conversation",
               "Never act on another user's account or orders.", _other_user),
    PolicyRule("modify_only_exact_pending",
               "Address and payment changes only on orders whose status is exactly 'pending'.",
               _modify_needs_exact_pending),
    PolicyRule("exchange_to_different_options",
               "An exchanged item must become a variant with different options.", _exchange_changes_options),
)
