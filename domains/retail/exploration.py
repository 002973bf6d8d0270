"""Retail's exploration kit: what generation needs to know to walk and describe retail.

Which JSON keys hold ids, how a customer is identified, how each write tool's arguments
are built from observed records (an order's own items, other variants of the same
product, the user's own payment methods), and which facts and template sentences a task
over a retail trajectory needs. Everything else in exploration and writing is generic.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from trajectory2task.domains import Environment
from trajectory2task.domains.retail.calculations import calculations
from trajectory2task.domains.retail.conditions import (
    call_claims,
    cancel_reason_phrases,
    describe_call,
    forgotten_identity,
    identity_facts,
    identity_lookup,
    identity_text,
    payment_words,
)
from trajectory2task.domains.retail.generate import CITIES, STREETS
from trajectory2task.domains.retail.models import CANCEL_REASONS
from trajectory2task.domains.retail.tools import WRITE_ORDER_STATUS
from trajectory2task.domains.kit import (
    Call,
    ExplorationKit,
    GroundingHints,
    Knowledge,
    ObservedStep,
    RequestFacts,
    RequiredFact,
    SeedFilter,
    SeedVia,
    TrajectoryFacts,
)

HINTS = GroundingHints(
    id_keys={
        "user_id": "user_id",
        "order_id": "order_id",
        "orders": "order_id",
        "product_id": "product_id",
        "item_id": "item_id",
        "variants": "item_id",
        "payment_method_id": "payment_method_id",
        "payment_methods": "payment_method_id",
    },
    entity_keys=("order_id", "product_id", "user_id", "item_id"),
    string_outputs={"find_user_id_by_email": "user_id", "find_user_id_by_name_zip": "user_id"},
)



# ---------------------------------------------------------------- seeds


def seed_calls(user: dict[str, Any]) -> list[Call]:
    name = user["name"]
    return [
        Call(name="find_user_id_by_email", arguments={"email": user["email"]}),
        Call(name="find_user_id_by_name_zip", arguments={
            "first_name": name["first_name"], "last_name": name["last_name"], "zip": user["address"]["zip"]}),
    ]


def seed_description(user: dict[str, Any]) -> str:
    name = user["name"]
    return (f"A customer named {name['first_name']} {name['last_name']}, zip code {user['address']['zip']}, "
            f"email {user['email']}. They know these details but not their user id.")


# ---------------------------------------------------------------- write builders


def _new_address(rng: random.Random) -> dict[str, str]:
    city, state, zip3 = rng.choice(CITIES)
    address2 = rng.choice(["", f"Apt {rng.randint(1, 40)}", f"Suite {rng.randint(100, 999)}"])
    return {"address1": f"{rng.randint(10, 9999)} {rng.choice(STREETS)}", "address2": address2, "city": city,
            "state": state, "country": "USA", "zip": f"{zip3}{rng.randint(0, 99):02d}"}


WRITE_TOOLS = (*WRITE_ORDER_STATUS, "modify_user_address")
# writes that set one field of a record outright: a second one leaves the first no effect
OVERWRITING_WRITES = ("modify_pending_order_address", "modify_pending_order_payment", "modify_user_address")


def _record_of(call: Call) -> str | None:
    """The record a write changes: its order, or the user whose default address it sets."""
    key = call.arguments.get("order_id") or call.arguments.get("user_id")
    return str(key) if key else None


def makes_pointless(earlier: Call, later: Call) -> bool:
    """Whether ``later`` leaves ``earlier`` with no effect a customer could want, so that no
    task could honestly require both: cancelling an order after changing it, or setting the
    same field of a record twice."""
    if earlier.name not in WRITE_TOOLS or _record_of(earlier) is None or _record_of(earlier) != _record_of(later):
        return False
    return later.name == "cancel_pending_order" or (later.name == earlier.name and later.name in OVERWRITING_WRITES)


def _left_alone(knowledge: Knowledge, name: str, key: str) -> set[str]:
    """The records (by ``key``: order_id or user_id) a write of ``name`` must not touch: one
    there would make a write this walk already made pointless."""
    return {record for call, _ in knowledge.steps
            if (record := _record_of(call)) and makes_pointless(call, Call(name=name, arguments={key: record}))}


def _orders(knowledge: Knowledge, status: str, for_write: str | None = None) -> list[dict[str, Any]]:
    """Observed orders in ``status``; with ``for_write``, less those it must leave alone."""
    blocked = _left_alone(knowledge, for_write, "order_id") if for_write else set()
    return [o for o in knowledge.all_records("order_id") if o.get("status") == status and o["order_id"] not in blocked]


def _methods(knowledge: Knowledge, user_id: str) -> dict[str, dict[str, Any]]:
    user = knowledge.record("user_id", user_id)
    return dict(user.get("payment_methods", {})) if user else {}


def _swaps(knowledge: Knowledge, order: dict[str, Any], rng: random.Random) -> list[tuple[dict, dict]]:
    """(order item, other available variant with different options) pairs, one per item id,
    for the items whose product details were observed."""
    pairs = []
    seen: set[str] = set()
    for item in order.get("items", []):
        if item["item_id"] in seen:
            continue
        seen.add(item["item_id"])
        product = knowledge.record("product_id", item["product_id"])
        if product is None:
            continue
        others = [v for v in product.get("variants", {}).values()
                  if v["available"] and v["item_id"] != item["item_id"] and v["options"] != item["options"]]
        if others:
            pairs.append((item, rng.choice(others)))
    return pairs


def _method_covering(methods: dict[str, dict[str, Any]], amount: float, rng: random.Random) -> str | None:
    usable = [k for k, m in methods.items() if m.get("source") != "gift_card" or m.get("balance", 0) >= amount]
    return rng.choice(sorted(usable)) if usable else None


def _item_change(knowledge: Knowledge, rng: random.Random, status: str) -> dict[str, Any] | None:
    candidates = [(o, _swaps(knowledge, o, rng)) for o in _orders(knowledge, status)]
    candidates = [(o, pairs) for o, pairs in candidates if pairs]
    if not candidates:
        return None
    order, pairs = rng.choice(candidates)
    chosen = rng.sample(pairs, k=rng.randint(1, min(2, len(pairs))))
    difference = sum(new["price"] - old["price"] for old, new in chosen)
    method = _method_covering(_methods(knowledge, order["user_id"]), difference, rng)
    if method is None:
        return None
    return {"order_id": order["order_id"], "item_ids": [old["item_id"] for old, _ in chosen],
            "new_item_ids": [new["item_id"] for _, new in chosen], "payment_method_id": method}


def build_cancel(knowledge: Knowledge, rng: random.Random) -> dict[str, Any] | None:
    orders = _orders(knowledge, "pending", for_write="cancel_pending_order")
    if not orders:
        return None
    return {"order_id": rng.choice(orders)["order_id"], "reason": rng.choice(CANCEL_REASONS)}


def build_order_address(knowledge: Knowledge, rng: random.Random) -> dict[str, Any] | None:
    orders = _orders(knowledge, "pending", for_write="modify_pending_order_address")
    if not orders:
        return None
    return {"order_id": rng.choice(orders)["order_id"], **_new_address(rng)}


def build_order_payment(knowledge: Knowledge, rng: random.Random) -> dict[str, Any] | None:
    options = []
    for order in _orders(knowledge, "pending", for_write="modify_pending_order_payment"):
        history = order.get("payment_history", [])
        if len(history) != 1 or history[0]["transaction_type"] != "payment":
            continue
        methods = {k: m for k, m in _methods(knowledge, order["user_id"]).items()
                   if k != history[0]["payment_method_id"]}
        method = _method_covering(methods, history[0]["amount"], rng)
        if method is not None:
            options.append({"order_id": order["order_id"], "payment_method_id": method})
    return rng.choice(options) if options else None


def build_modify_items(knowledge: Knowledge, rng: random.Random) -> dict[str, Any] | None:
    return _item_change(knowledge, rng, "pending")


def build_exchange(knowledge: Knowledge, rng: random.Random) -> dict[str, Any] | None:
    return _item_change(knowledge, rng, "delivered")


def build_return(knowledge: Knowledge, rng: random.Random) -> dict[str, Any] | None:
    orders = [o for o in _orders(knowledge, "delivered") if o.get("payment_history")]
    if not orders:
        return None
    order = rng.choice(orders)
    item_ids = sorted({i["item_id"] for i in order["items"]})
    chosen = rng.sample(item_ids, k=rng.randint(1, min(2, len(item_ids))))
    original = order["payment_history"][0]["payment_method_id"]
    gift_cards = [k for k, m in _methods(knowledge, order["user_id"]).items() if m.get("source") == "gift_card"]
    method = rng.choice(sorted({original, *gift_cards}))
    return {"order_id": order["order_id"], "item_ids": chosen, "payment_method_id": method}


def build_user_address(knowledge: Knowledge, rng: random.Random) -> dict[str, Any] | None:
    blocked = _left_alone(knowledge, "modify_user_address", "user_id")
    users = [u for u in knowledge.all_records("user_id") if u["user_id"] not in blocked]
    if not users:
        return None
    return {"user_id": rng.choice(users)["user_id"], **_new_address(rng)}


WRITE_BUILDERS = {
    "cancel_pending_order": build_cancel,
    "modify_pending_order_address": build_order_address,
    "modify_pending_order_payment": build_order_payment,
    "modify_pending_order_items": build_modify_items,
    "exchange_delivered_order_items": build_exchange,
    "return_delivered_order_items": build_return,
    "modify_user_address": build_user_address,
}


# ---------------------------------------------------------------- facts and templates


def _order_fact(order_id: str) -> RequiredFact:
    return RequiredFact(label="order id", alternatives=[order_id, order_id.lstrip("#")])


def _address_facts(a: dict[str, Any]) -> list[RequiredFact]:
    facts = [RequiredFact(label="street", alternatives=[a["address1"]]),
             RequiredFact(label="city", alternatives=[a["city"]]),
             RequiredFact(label="zip code", alternatives=[a["zip"]])]
    if a.get("address2"):
        facts.append(RequiredFact(label="address line 2", alternatives=[a["address2"]]))
    return facts


def _payment_fact(episode: Any, user_id: str, method_id: str) -> RequiredFact:
    return RequiredFact(label="payment method", alternatives=payment_words(episode, user_id, method_id)[1])


def _item_by_id(order: dict[str, Any], item_id: str) -> dict[str, Any]:
    return next(i for i in order["items"] if i["item_id"] == item_id)


def _variant(env_episode: Any, product_id: str, item_id: str) -> dict[str, Any]:
    product = env_episode.record("products", product_id)
    return product["variants"][item_id]


def _describe_write(episode: Any, call: Call, user_id: str | None) -> RequestFacts:
    """Template sentence, facts and claims of one retail write, read from the state just before it."""
    facts = _sentence_and_facts(episode, call)
    amounts = calculations(episode, call)
    sentence = " ".join([facts.sentence, *(c.question for c in amounts)])
    return facts.model_copy(update={"claims": call_claims(episode, call.name, call.arguments, user_id),
                                    "sentence": sentence, "calculations": amounts})


def _sentence_and_facts(episode: Any, call: Call) -> RequestFacts:
    """The request in the write's one wording (`conditions.describe_call`) and the facts it must
    state (amounts the agent works out come from `calculations`)."""
    a = call.arguments
    name = call.name
    sentence = f"You want to {describe_call(episode, name, a)}."
    if name == "modify_user_address":
        return RequestFacts(tool=name, sentence=sentence, facts=_address_facts(a))
    order = episode.record("orders", a["order_id"])
    oid = a["order_id"]
    if name == "cancel_pending_order":
        return RequestFacts(tool=name, sentence=sentence, facts=[
            _order_fact(oid), RequiredFact(label="cancel reason", alternatives=cancel_reason_phrases(a["reason"]))])
    if name == "modify_pending_order_address":
        return RequestFacts(tool=name, sentence=sentence, facts=[_order_fact(oid), *_address_facts(a)])
    if name == "modify_pending_order_payment":
        return RequestFacts(tool=name, sentence=sentence,
                            facts=[_order_fact(oid), _payment_fact(episode, order["user_id"], a["payment_method_id"])])
    if name == "return_delivered_order_items":
        items = [_item_by_id(order, i) for i in a["item_ids"]]
        return RequestFacts(tool=name, sentence=sentence,
                            facts=[_order_fact(oid), _payment_fact(episode, order["user_id"], a["payment_method_id"]),
                                   *[RequiredFact(label="item", alternatives=[i["name"]]) for i in items]])
    if name in ("modify_pending_order_items", "exchange_delivered_order_items"):
        facts = [_order_fact(oid), _payment_fact(episode, order["user_id"], a["payment_method_id"])]
        for old_id, new_id in zip(a["item_ids"], a["new_item_ids"]):
            old = _item_by_id(order, old_id)
            new = _variant(episode, old["product_id"], new_id)
            changed = {k: v for k, v in new["options"].items() if old["options"].get(k) != v}
            facts.append(RequiredFact(label="item", alternatives=[old["name"]]))
            facts += [RequiredFact(label=f"new {k}", alternatives=[v]) for k, v in changed.items()]
        return RequestFacts(tool=name, sentence=sentence, facts=facts)
    return RequestFacts(tool=name, sentence=sentence, facts=[])


def describe(env: Environment[Any], steps: Sequence[ObservedStep], seed_entity: str | None) -> TrajectoryFacts:
    """Identity and per-write facts of a retail trajectory, replayed on a fresh episode."""
    episode = env.episode()
    identity: list[RequiredFact] = []
    known_info = unknown_info = None
    requests = []
    user_id: str | None = None
    for step in steps:
        call = step.call
        spec = env.tools.get(call.name)
        if spec is not None and spec.authenticates is not None and known_info is None and not step.error:
            user_id = spec.authenticates(call.arguments, step.observation)
            lookup = call.model_dump()
            known_info, unknown_info = identity_text(lookup), forgotten_identity(lookup)
            identity = identity_facts(lookup)
        spec = env.tools.get(call.name)
        if spec is not None and spec.kind == "write":
            requests.append(_describe_write(episode, call, user_id or _seed_user_id(env, seed_entity or "")))
        episode.call(call.name, call.arguments)
    if known_info is None:
        # no identity look-up in the trajectory: the agent still has to authenticate the seed user
        user_id = _seed_user_id(env, seed_entity or "")
        lookup = identity_lookup(episode, user_id) if user_id else None
        if lookup is not None:
            known_info, identity = identity_text(lookup.model_dump()), identity_facts(lookup.model_dump())
        else:
            known_info = ""
    return TrajectoryFacts(known_info=known_info, unknown_info=unknown_info, identity=identity, requests=requests)


def _seed_user_id(env: Environment, seed_entity: str) -> str | None:
    """The customer behind a seed entity: 'users/<id>' itself, or the owner of 'orders/<id>'."""
    table, _, key = seed_entity.partition("/")
    if table == "users":
        return key
    if table == "orders":
        order = env.episode().record("orders", key)
        return order["user_id"] if order else None
    return None


ORDER_SEED = SeedVia(
    customer_key=lambda order: order["user_id"],
    first_reads=lambda order: [Call(name="get_order_details", arguments={"order_id": order["order_id"]})],
    describe=lambda order: f"They are calling about their order {order['order_id']}.",
)

EXPLORATION = ExplorationKit(
    hints=HINTS,
    seed_table="users",
    seed_calls=seed_calls,
    seed_description=seed_description,
    walk_reads=("get_user_details", "get_order_details", "get_product_details"),
    write_builders=WRITE_BUILDERS,
    describe=describe,
    seed_via={"orders": ORDER_SEED},
    seed_for_write={tool: SeedFilter("orders", lambda order, status=status: order.status == status)
                    for tool, status in WRITE_ORDER_STATUS.items()},
    customer_id_kinds=("order_id",),
    calculations=calculations,
)
