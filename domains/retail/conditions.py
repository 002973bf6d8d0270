"""Retail facts for the intent conditions (ambiguous, changing, infeasible), as plain data.

``trajectory2task.programs.verification.conditions`` and ``trajectory2task.programs.generation.adaptation`` hold the control flow and the checks; what
they need to know about retail comes from here: which entities fit an underspecified
request, which argument of a write can be revised, which writes the tools or the policy
refuse, which look-ups reveal that, and short first-person sentences describing a write.
This module holds the functions of retail's ``trajectory2task.domains.kit.ConditionKit`` (its
pieces are assembled in ``kit.py``): every function takes an
:class:`~trajectory2task.domains.runtime.Episode` and returns the kit's pydantic models or strings.

Shapes
------
``stated`` (what an underspecified opening request says), by ``entity``:

- ``"order"``: ``{entity, user_id, action, product_name | None}``: the user's orders whose
  status lets ``action`` run, containing an item named ``product_name`` when given.
  EntityCandidate key: the order id.
- ``"order_item"``: ``{entity, user_id, action, product_name | None, order_id | None}``:
  items in the user's orders whose status lets ``action`` run, named ``product_name``
  and in order ``order_id`` when given. EntityCandidate key: ``"<order id> item <item id>"``.
- ``"variant"``: ``{entity, user_id, action, order_id, from_item_id, options}``: available
  variants of the product of ``from_item_id``, other than it, whose options include
  ``options``. EntityCandidate key: the item id.
- ``"payment_method"``: ``{entity, user_id, action, source, arguments}``: the user's
  payment methods of kind ``source`` with which ``action`` on ``arguments`` runs without
  a tool error. EntityCandidate key: the payment method id.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, cast

from trajectory2task.domains.kit import (
    AmbiguityProposal,
    Call,
    ChangeAlternative,
    Claim,
    EntityCandidate,
    InfeasibleProposal,
    RequiredFact,
)
from trajectory2task.domains.runtime import Episode
from trajectory2task.domains.retail.models import CANCEL_REASONS, CreditCard, GiftCard, Order, OrderItem, Paypal, Product, User, Variant
from trajectory2task.domains.retail.rules import owner_of_call
from trajectory2task.domains.retail.tools import WRITE_ORDER_STATUS

ITEM_WRITES = {name: status for name, status in WRITE_ORDER_STATUS.items() if "items" in name}
ORDER_WRITES = {name: status for name, status in WRITE_ORDER_STATUS.items() if name not in ITEM_WRITES}
VARIANT_WRITES = ("modify_pending_order_items", "exchange_delivered_order_items")
MAX_VARIANT_PROPOSALS_PER_WRITE = 4
MAX_OTHER_USER_PROPOSALS = 3
OPEN_QUESTIONS = {"which_order": "which order you mean", "which_item": "which order and item you mean",
                  "which_variant": "exactly which variant you want",
                  "which_payment_method": "which payment method you mean"}


# ---------------------------------------------------------------- small look-ups


def _order(episode: Episode[Any], order_id: Any) -> Order | None:
    return cast(Order | None, episode.get("orders", str(order_id))) if isinstance(order_id, str) else None


def _user(episode: Episode[Any], user_id: str | None) -> User | None:
    return cast(User | None, episode.get("users", user_id)) if user_id else None


def _product(episode: Episode[Any], product_id: str) -> Product | None:
    return cast(Product | None, episode.get("products", product_id))


def _item(order: Order, item_id: str) -> OrderItem | None:
    return next((i for i in order.items if i.item_id == item_id), None)


def _item_tokens(order: Order, item_id: str) -> list[str]:
    """How a user names an item of an order: its product name, plus the option values that
    set it apart from other items of the same product in the order."""
    item = _item(order, item_id)
    if item is None:
        return [item_id]
    siblings = [i for i in order.items if i.name == item.name and i.item_id != item_id]
    return [item.name, *dict.fromkeys(v for k, v in item.options.items()
                                      if any(s.options.get(k) != v for s in siblings))]


def _options_text(options: Mapping[str, str]) -> str:
    """Options as data, for facts shown to programs (not to the customer)."""
    return ", ".join(f"{k}: {v}" for k, v in options.items())


def _value_says_its_option(key: str, value: str) -> bool:
    """Whether a value alone names its option: "Brand A" (brand), "full size" (size), "bagless"
    (bagged/bagless); not "S" (size) or "no" (noise cancelling), which need the option's name."""
    words = value.lower().split()
    return all(w in words for w in key.lower().split()) or value.lower() in key.lower().split("/")


def options_words(options: Mapping[str, str]) -> str:
    """Options as a customer says them: "color black, size L and Brand A"."""
    parts = [v if _value_says_its_option(k, v) else f"{k} {v}" for k, v in options.items()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1] if parts else ""


# Each cancel reason as a customer gives it: the clause after "because" (with the tool's
# reason verbatim), and the phrases any of which states the reason in a request.
CANCEL_REASON_WORDS: dict[str, tuple[str, list[str]]] = {
    "no longer needed": ("it is no longer needed", ["no longer need"]),
    "ordered by mistake": ("it was ordered by mistake", ["ordered by mistake", "ordered it by mistake", "by mistake"]),
}
ANY_CANCEL_REASON = CANCEL_REASONS[0]  # where the reason does not matter (the write is refused anyway)


def cancel_reason_words(reason: str) -> str:
    """Why the user cancels, containing the tool's reason verbatim."""
    return CANCEL_REASON_WORDS[reason][0] if reason in CANCEL_REASON_WORDS else f"it is {reason}"


def cancel_reason_phrases(reason: str) -> list[str]:
    """Phrases any one of which states ``reason`` in a request."""
    return list(CANCEL_REASON_WORDS[reason][1]) if reason in CANCEL_REASON_WORDS else [reason]


# The states that follow a change, as a customer says them: what already happened to the order
_STATUS_AFTER_CHANGE = {"pending (item modified)": ("pending", "items already changed once"),
                        "return requested": ("", "return already requested"),
                        "exchange requested": ("", "exchange already requested")}


def order_words(status: str, order_id: str | None = None) -> str:
    """An order of the user's as they name it: "your delivered order #W1", "your order #W1
    (return already requested)"; without ``order_id``, "your delivered order"."""
    adjective, happened = _STATUS_AFTER_CHANGE.get(status, (status, ""))
    named = " ".join(w for w in ("your", adjective, "order", order_id) if w)
    return f"{named} ({happened})" if happened else named


def address_text(a: Mapping[str, Any]) -> str:
    """An address as one line, as a customer would say it."""
    line2 = f", {a['address2']}" if a.get("address2") else ""
    return f"{a['address1']}{line2}, {a['city']}, {a['state']} {a['zip']}, {a['country']}"


def identity_lookup(episode: Episode[Any], user_id: str) -> Call | None:
    """The look-up that authenticates a user (by email, the way most users can)."""
    user = _user(episode, user_id)
    return None if user is None else Call(name="find_user_id_by_email", arguments={"email": user.email})


def identity_text(call: Mapping[str, Any]) -> str:
    """What the user knows to get authenticated, from an identity look-up call."""
    args = call["arguments"]
    if call["name"] == "find_user_id_by_email":
        return f"Your email address is {args['email']}."
    return f"You are {args['first_name']} {args['last_name']}, zip code {args['zip']}."


def identity_facts(call: Mapping[str, Any]) -> list[RequiredFact]:
    """What a request must state for the identity look-up ``call`` to find the user."""
    args = call["arguments"]
    if call["name"] == "find_user_id_by_email":
        return [RequiredFact(label="email", alternatives=[args["email"]])]
    return [RequiredFact(label="first name", alternatives=[args["first_name"]]),
            RequiredFact(label="last name", alternatives=[args["last_name"]]),
            RequiredFact(label="zip code", alternatives=[args["zip"]])]


def forgotten_identity(call: Mapping[str, Any]) -> str | None:
    """A user who authenticates by name and zip code does not remember their email."""
    return None if call["name"] == "find_user_id_by_email" else "You do not remember your email address."


def related_entities(calls: Sequence[Mapping[str, Any]]) -> list[str]:
    """The orders the given calls act on."""
    return sorted({c["arguments"]["order_id"] for c in calls if isinstance(c["arguments"].get("order_id"), str)})


def payment_words(episode: Episode[Any], user_id: str, method_id: str) -> tuple[str, list[str]]:
    """A payment method as its owner names it, and the words that identify it (first the one
    a request must state). Its id only where several of its kind exist: a customer says "my
    PayPal account", not "paypal_3062271"."""
    user = _user(episode, user_id)
    method = user.payment_methods.get(method_id) if user else None
    if isinstance(method, CreditCard):
        return f"your {method.brand} credit card ending in {method.last_four}", [method.last_four, method_id]
    same_kind = [m for m in user.payment_methods.values() if m.source == method.source] if user and method else []
    if len(same_kind) == 1 and isinstance(method, GiftCard):
        return "your gift card", ["gift card", method_id]
    if len(same_kind) == 1 and isinstance(method, Paypal):
        return "your PayPal account", ["paypal", method_id]
    digits = method_id[-4:]
    if isinstance(method, GiftCard) and sum(k.endswith(digits) for k, m in user.payment_methods.items()
                                            if isinstance(m, GiftCard)) == 1:
        # the card's code is on the card; a balance would change with every purchase
        return f"your gift card ending in {digits}", [digits, method_id]
    return f"your payment method {method_id}", [method_id]


def payment_text(episode: Episode[Any], user_id: str, method_id: str) -> str:
    return payment_words(episode, user_id, method_id)[0]


def _payment_tokens(episode: Episode[Any], user_id: str, method_id: str) -> list[str]:
    return payment_words(episode, user_id, method_id)[1][:1]


def user_stated_ids(name: str, arguments: Mapping[str, Any]) -> list[str]:
    """Ids a user must say for an agent to act on the right record (the order id)."""
    order_id = arguments.get("order_id")
    return [order_id] if isinstance(order_id, str) else []


# ---------------------------------------------------------------- describing writes


def describe_call(episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                  stated: Mapping[str, Any] | None = None) -> str:
    """A first-person request for a write, from the state just before it.

    With ``stated`` (an ambiguity's stated constraints), the part the request leaves open
    is described only by what ``stated`` says: no order id, no item options, no variant
    options beyond ``stated['options']``.
    """
    a = arguments
    entity = stated.get("entity") if stated else None
    if name == "modify_user_address":
        return f"change your default address to {address_text(a)}"
    order = _order(episode, a.get("order_id"))
    if order is None:
        return f"{name.replace('_', ' ')} {a}"
    oid = order.order_id
    status = order.status  # what is on file: a refused request still names the order truthfully
    if entity in ("order", "order_item") and not (stated and stated.get("order_id")):
        product = stated.get("product_name") if stated else None
        where = (f"your {status} order with the {product}" if product and entity == "order"
                 else f"one of your {status} orders")
    else:
        where = order_words(status, oid)

    def method_text(method_id: str) -> str:
        if entity == "payment_method" and stated:
            return _VAGUE_METHODS.get(str(stated.get("source")), "one of your payment methods")
        return payment_text(episode, order.user_id, method_id)

    if name == "cancel_pending_order":
        return f"cancel {where} because {cancel_reason_words(a['reason'])}"
    if name == "modify_pending_order_address":
        return f"have {where} shipped to {address_text(a)}"
    if name == "modify_pending_order_payment":
        return f"pay for {where} with {method_text(a['payment_method_id'])} instead"
    method = method_text(a["payment_method_id"])
    names = [i.name for i in order.items]

    def old_text(item_id: str, position: int) -> str:
        item = _item(order, item_id)
        if item is None:
            return f"item {item_id}"
        if entity == "order_item" and position == 0 and not (stated and stated.get("product_name")):
            return "one item"  # the open part: not even the product
        if entity in ("order_item", "variant") and position == 0:
            return f"the {item.name}"  # the open part: no options that could give the target away
        return (f"the {item.name} with {options_words(item.options)}" if names.count(item.name) > 1
                else f"the {item.name}")

    if name == "return_delivered_order_items":
        listed = " and ".join(old_text(i, p) for p, i in enumerate(a["item_ids"]))
        return f"return {listed} from {where}, with the refund going to {method}"
    changes = []
    for position, (old_id, new_id) in enumerate(zip(a["item_ids"], a["new_item_ids"])):
        item = _item(order, old_id)
        product = _product(episode, item.product_id) if item else None
        variant = product.variants.get(new_id) if product else None
        if variant is None:
            new = f"another {product.name}" if product else "another variant"
        elif entity == "variant" and position == 0:
            shown = (stated.get("options") or {}) if stated else {}
            new = f"one with {options_words(shown)}" if shown else f"another {product.name}"
        else:
            new = f"the one with {options_words(variant.options)}"
        changes.append(f"{old_text(old_id, position)} for {new}")
    verb = "exchange" if name == "exchange_delivered_order_items" else "change"
    return f"{verb} {' and '.join(changes)} in {where}, settling any price difference with {method}"


def call_claims(episode: Episode[Any], name: str, arguments: Mapping[str, Any],
                user_id: str | None = None) -> list[Claim]:
    """What :func:`describe_call` asserts about the records a write names, as claims: the
    order's status and (with ``user_id``, the customer speaking) its owner, the items'
    names, the new variants' options, the payment method's kind (and balance, when the
    words name a gift card by it). Read from ``episode``, the state just before the write."""
    a = arguments
    order = _order(episode, a.get("order_id"))
    if order is None:
        return []
    oid = order.order_id
    out = [Claim(table="orders", key=oid, path=["status"], value=order.status, says=order_words(order.status))]
    if user_id is not None:
        out.append(Claim(table="orders", key=oid, path=["user_id"], value=user_id, says="your order"))
    for item_id in a.get("item_ids") or []:
        item = _item(order, item_id)
        if item is not None:
            out.append(Claim(table="orders", key=oid, path=["items", item_id, "name"], value=item.name,
                             says=f"the {item.name}"))
    for old_id, new_id in zip(a.get("item_ids") or [], a.get("new_item_ids") or []):
        item = _item(order, old_id)
        product = _product(episode, item.product_id) if item else None
        variant = product.variants.get(new_id) if product else None
        if variant is not None and product is not None:
            out.append(Claim(table="products", key=product.product_id, path=["variants", new_id, "options"],
                             value=dict(variant.options), says=f"the one with {options_words(variant.options)}"))
    method_id = a.get("payment_method_id")
    owner = _user(episode, order.user_id)
    method = owner.payment_methods.get(str(method_id)) if owner else None
    if method is not None and owner is not None:
        words = payment_text(episode, owner.user_id, str(method_id))
        out.append(Claim(table="users", key=owner.user_id, path=["payment_methods", str(method_id), "source"],
                         value=method.source, says=words))
        if isinstance(method, CreditCard):  # "your amex credit card ending in 0255" says both
            for field in ("brand", "last_four"):
                out.append(Claim(table="users", key=owner.user_id, path=["payment_methods", str(method_id), field],
                                 value=getattr(method, field), says=words))
    return out


_VAGUE_METHODS = {"credit_card": "one of your credit cards", "gift_card": "one of your gift cards",
                  "paypal": "your PayPal account"}

_ACTION_NOUNS = {
    "cancel_pending_order": "cancellation",
    "modify_pending_order_address": "shipping address change",
    "modify_pending_order_payment": "payment change",
    "modify_pending_order_items": "item change",
    "exchange_delivered_order_items": "exchange",
    "return_delivered_order_items": "return",
    "modify_user_address": "change of your default address",
}


def action_label(name: str, arguments: Mapping[str, Any]) -> str:
    """A short name for a write, as a user would say it: 'the exchange for order #W1'. Each
    write tool has its own noun, so that a task with an order's and the default address
    changes says which one it means."""
    noun = _ACTION_NOUNS.get(name, name.replace("_", " "))
    order_id = arguments.get("order_id")
    return f"the {noun} for order {order_id}" if isinstance(order_id, str) else f"the {noun}"


# ---------------------------------------------------------------- ambiguity


def _eligible_orders(episode: Episode[Any], user_id: str, action: str) -> list[Order]:
    user = _user(episode, user_id)
    status = ORDER_WRITES.get(action) or ITEM_WRITES.get(action)
    if user is None or status is None:
        return []
    orders = [_order(episode, oid) for oid in user.orders]
    return [o for o in orders if o is not None and o.status == status]


def _order_description(order: Order) -> str:
    items = "; ".join(f"{i.name} ({_options_text(i.options)})" for i in order.items)
    return f"order {order.order_id} ({order.status}): {items}"


def ambiguity_candidates(episode: Episode[Any], stated: Mapping[str, Any]) -> list[EntityCandidate]:
    """Every entity that fits the stated constraints (see the module docstring)."""
    entity = stated.get("entity")
    user_id = str(stated.get("user_id") or "")
    action = str(stated.get("action") or "")
    product_name = stated.get("product_name")
    out: list[EntityCandidate] = []
    if entity == "order":
        if action not in ORDER_WRITES:
            return []
        for order in _eligible_orders(episode, user_id, action):
            if product_name is None or any(i.name == product_name for i in order.items):
                out.append(EntityCandidate(key=order.order_id, description=_order_description(order)))
    elif entity == "order_item":
        if action not in ITEM_WRITES:
            return []
        for order in _eligible_orders(episode, user_id, action):
            if stated.get("order_id") and order.order_id != stated["order_id"]:
                continue
            seen: set[str] = set()
            for item in order.items:
                if (product_name is None or item.name == product_name) and item.item_id not in seen:
                    seen.add(item.item_id)
                    out.append(EntityCandidate(key=f"{order.order_id} item {item.item_id}", description=f"{item.name} ({_options_text(item.options)}) in order "
                                               f"{order.order_id} ({order.status})"))
    elif entity == "variant":
        if action not in VARIANT_WRITES:
            return []
        order = _order(episode, stated.get("order_id"))
        if order is None or order.user_id != user_id or order.status != ITEM_WRITES[action]:
            return []
        item = _item(order, str(stated.get("from_item_id")))
        product = _product(episode, item.product_id) if item else None
        wanted = dict(stated.get("options") or {})
        if item is None or product is None:
            return []
        for variant in product.variants.values():
            if (variant.available and variant.item_id != item.item_id
                    and all(variant.options.get(k) == v for k, v in wanted.items())):
                out.append(EntityCandidate(key=variant.item_id, description=f"{product.name} ({_options_text(variant.options)}), "
                                           f"item {variant.item_id}, price {variant.price}"))
    elif entity == "payment_method":
        user = _user(episode, user_id)
        arguments = dict(stated.get("arguments") or {})
        if user is None or "payment_method_id" in arguments:
            return []
        for method_id, method in sorted(user.payment_methods.items()):
            if method.source == stated.get("source") and \
                    not episode.fork().call(action, {**arguments, "payment_method_id": method_id}).error:
                out.append(EntityCandidate(key=method_id, description=payment_text(episode, user_id, method_id)))
    return out


def ambiguity_target(stated: Mapping[str, Any], action: Call) -> str | None:
    """The candidate key a write acts on, or None when the write does not match ``stated``."""
    args = action["arguments"]
    if action["name"] != stated.get("action"):
        return None
    entity = stated.get("entity")
    if entity == "order":
        return args.get("order_id")
    item_ids, new_ids = args.get("item_ids") or [], args.get("new_item_ids") or []
    if entity == "order_item" and item_ids and stated.get("order_id") in (None, args.get("order_id")):
        return f"{args.get('order_id')} item {item_ids[0]}"
    if entity == "payment_method":
        rest = {k: v for k, v in args.items() if k != "payment_method_id"}
        return args.get("payment_method_id") if rest == stated.get("arguments") else None
    if (entity == "variant" and item_ids and new_ids and args.get("order_id") == stated.get("order_id")
            and item_ids[0] == stated.get("from_item_id")):
        return new_ids[0]
    return None


def reading_call(stated: Mapping[str, Any], action: Call, candidate: str) -> Call | None:
    """The write an underspecified request means when the user has ``candidate`` in mind:
    the gold write with the open part (order, item, variant or payment method) replaced."""
    args = dict(action["arguments"])
    entity = stated.get("entity")
    if entity == "order":
        args["order_id"] = candidate
    elif entity == "order_item" and args.get("item_ids"):
        order_id, _, item_id = candidate.partition(" item ")
        args["order_id"] = order_id
        args["item_ids"] = [item_id, *args["item_ids"][1:]]
    elif entity == "variant" and args.get("new_item_ids"):
        args["new_item_ids"] = [candidate, *args["new_item_ids"][1:]]
    elif entity == "payment_method":
        args["payment_method_id"] = candidate
    else:
        return None
    return Call(name=action["name"], arguments=args)


def withheld_values(episode: Episode[Any], stated: Mapping[str, Any], target: str,
                    candidates: Sequence[EntityCandidate]) -> list[str]:
    """The values that single the target out among the candidates (what the user withholds)."""
    others = [c.key for c in candidates if c.key != target]
    entity = stated.get("entity")
    if entity == "order":
        return [target]
    if entity == "order_item":
        order_id, _, item_id = target.partition(" item ")
        values = [order_id] if any(not k.startswith(order_id + " ") for k in others) else []
        order = _order(episode, order_id)
        item = _item(order, item_id) if order else None
        siblings = [_item(order, k.partition(" item ")[2]) for k in others if k.startswith(order_id + " ")]
        if item is not None:
            for sibling in siblings:
                if sibling is not None and sibling.name != item.name:
                    values += [item.name] if item.name not in values else []
                elif sibling is not None:
                    values += [v for k, v in item.options.items() if sibling.options.get(k) != v and v not in values]
        return values
    if entity == "payment_method":
        return _payment_tokens(episode, str(stated.get("user_id")), target)
    if entity == "variant":
        order = _order(episode, stated.get("order_id"))
        item = _item(order, str(stated.get("from_item_id"))) if order else None
        product = _product(episode, item.product_id) if item else None
        chosen = product.variants.get(target) if product else None
        if chosen is None or product is None:
            return []
        stated_options = stated.get("options") or {}
        variants = [product.variants[k] for k in others if k in product.variants]
        return list(dict.fromkeys(v for k, v in chosen.options.items()
                                  if k not in stated_options and any(o.options.get(k) != v for o in variants)))
    return []


def _proposal(episode: Episode[Any], kind: str, index: int, stated: dict[str, Any],
              action: Call) -> AmbiguityProposal | None:
    candidates = ambiguity_candidates(episode, stated)
    target = ambiguity_target(stated, action)
    if len(candidates) < 2 or target is None or target not in {c.key for c in candidates}:
        return None
    withheld = withheld_values(episode, stated, target, candidates)
    return AmbiguityProposal(kind=kind, open_question=OPEN_QUESTIONS[kind], action_index=index, stated=stated,
                             target=target, candidates=candidates, withheld=withheld,
                             withheld_sentences=_withheld_sentences(episode, stated, target, withheld))


def _withheld_sentences(episode: Episode[Any], stated: Mapping[str, Any], target: str,
                        values: Sequence[str]) -> list[str]:
    options: dict[str, str] = {}
    if stated.get("entity") == "order_item":
        order_id, _, item_id = target.partition(" item ")
        order = _order(episode, order_id)
        item = _item(order, item_id) if order else None
        options = dict(item.options) if item else {}
    elif stated.get("entity") == "variant":
        order = _order(episode, stated.get("order_id"))
        item = _item(order, str(stated.get("from_item_id"))) if order else None
        product = _product(episode, item.product_id) if item else None
        variant = product.variants.get(target) if product else None
        options = dict(variant.options) if variant else {}
    elif stated.get("entity") == "payment_method":
        return [f"You mean {payment_text(episode, str(stated.get('user_id')), target)}."]
    out = []
    # the item held or the variant wanted, as the opening request would have said it
    which = "The item is the one with" if stated.get("entity") == "order_item" else "You want the one with"
    for value in dict.fromkeys(values):  # one sentence per value, naming every option that has it
        keys = [k for k, v in options.items() if v == value]
        if value.startswith("#"):
            out.append(f"The order is {value}.")
        elif keys:
            # "with features none", not "The features is none": option names may be plural
            out.append(f"{which} {options_words({k: value for k in keys})}.")
        elif stated.get("entity") == "order_item":
            out.append(f"The item is the {value}.")
        else:
            out.append(f"It is {value}.")
    return out


def ambiguity_proposals(episode: Episode[Any], actions: Sequence[Call]) -> list[AmbiguityProposal]:
    """Underspecified versions of the writes in ``actions`` (replayed in order from ``episode``)
    under which at least two entities fit. ``episode`` is not changed."""
    out: list[AmbiguityProposal] = []
    state = episode.fork()
    for index, action in enumerate(actions):
        name, args = action["name"], action["arguments"]
        user_id = owner_of_call(state, name, args)
        order = _order(state, args.get("order_id"))
        if user_id is not None and order is not None:
            if name in ORDER_WRITES:
                for product in [None, *sorted({i.name for i in order.items})]:
                    stated = {"entity": "order", "user_id": user_id, "action": name, "product_name": product}
                    found = _proposal(state, "which_order", index, stated, action)
                    if found:
                        out.append(found)
            elif name in ITEM_WRITES and args.get("item_ids"):
                first = _item(order, args["item_ids"][0])
                if first is not None:
                    stated = {"entity": "order_item", "user_id": user_id, "action": name, "product_name": first.name}
                    found = _proposal(state, "which_item", index, stated, action)
                    if found:
                        out.append(found)
                if name == "return_delivered_order_items" and len(args["item_ids"]) == 1:
                    stated = {"entity": "order_item", "user_id": user_id, "action": name, "product_name": None,
                              "order_id": order.order_id}
                    found = _proposal(state, "which_item", index, stated, action)
                    if found:
                        out.append(found)
                names = [i.name for i in order.items]
                if name in VARIANT_WRITES and first is not None and names.count(first.name) == 1:
                    out += _variant_proposals(state, index, user_id, action, first)
            user = _user(state, user_id)
            method = user.payment_methods.get(str(args.get("payment_method_id"))) if user else None
            if method is not None:
                stated = {"entity": "payment_method", "user_id": user_id, "action": name, "source": method.source,
                          "arguments": {k: v for k, v in args.items() if k != "payment_method_id"}}
                found = _proposal(state, "which_payment_method", index, stated, action)
                if found:
                    out.append(found)
        state.call(name, args)
    return out


def _variant_proposals(episode: Episode[Any], index: int, user_id: str, action: Call,
                       item: OrderItem) -> list[AmbiguityProposal]:
    """State a few of the new variant's options (most first) so that several variants still fit."""
    args = action["arguments"]
    product = _product(episode, item.product_id)
    target = product.variants.get(args["new_item_ids"][0]) if product else None
    if target is None:
        return []
    out: list[AmbiguityProposal] = []
    dims = sorted(target.options)
    for size in range(len(dims) - 1, -1, -1):
        for subset in itertools.combinations(dims, size):
            stated = {"entity": "variant", "user_id": user_id, "action": action["name"], "order_id": args["order_id"],
                      "from_item_id": item.item_id, "options": {d: target.options[d] for d in subset}}
            found = _proposal(episode, "which_variant", index, stated, action)
            if found:
                out.append(found)
            if len(out) >= MAX_VARIANT_PROPOSALS_PER_WRITE:
                return out
    return out


# ---------------------------------------------------------------- changing intent


def change_alternatives(episode: Episode[Any], action: Call) -> list[ChangeAlternative]:
    """Other arguments for a write, each a different goal the user could have instead.

    ``episode`` is the state just before the write. The caller replays and keeps the
    alternatives that run cleanly and end elsewhere.
    """
    name, args = action["name"], dict(action["arguments"])
    out: list[ChangeAlternative] = []
    order = _order(episode, args.get("order_id"))
    user = _user(episode, owner_of_call(episode, name, args))
    if name == "cancel_pending_order":
        for reason in CANCEL_REASONS:
            if reason != args.get("reason"):
                out.append(ChangeAlternative(arguments={**args, "reason": reason}, difference=f"reason: '{args.get('reason')}' -> '{reason}'"))
    elif name in VARIANT_WRITES and order is not None:
        for position, (old_id, new_id) in enumerate(zip(args.get("item_ids") or [], args.get("new_item_ids") or [])):
            item = _item(order, old_id)
            product = _product(episode, item.product_id) if item else None
            if product is None:
                continue
            for variant in product.variants.values():
                if variant.available and variant.item_id not in (old_id, new_id) and variant.options != item.options:
                    new_ids = list(args["new_item_ids"])
                    new_ids[position] = variant.item_id
                    out.append(ChangeAlternative(arguments={**args, "new_item_ids": new_ids}, difference=f"new {product.name}: {new_id} -> {variant.item_id}"))
    elif name == "return_delivered_order_items" and order is not None:
        chosen = list(args.get("item_ids") or [])
        for position, old_id in enumerate(chosen):
            for item_id in sorted({i.item_id for i in order.items} - set(chosen)):
                item_ids = list(chosen)
                item_ids[position] = item_id
                out.append(ChangeAlternative(arguments={**args, "item_ids": item_ids}, difference=f"returned item: {old_id} -> {item_id}"))
    if name in ("modify_pending_order_payment", "return_delivered_order_items", *VARIANT_WRITES) and user is not None:
        for method_id, method in sorted(user.payment_methods.items()):
            if method_id == args.get("payment_method_id"):
                continue
            if name == "return_delivered_order_items" and order is not None and not isinstance(method, GiftCard) \
                    and order.payment_history and method_id != order.payment_history[0].payment_method_id:
                continue
            out.append(ChangeAlternative(arguments={**args, "payment_method_id": method_id}, difference=f"payment method: {args.get('payment_method_id')} -> {method_id}"))
    if name in ("modify_pending_order_address", "modify_user_address") and user is not None:
        addresses = [user.address.model_dump()]
        addresses += [o.address.model_dump() for o in (_order(episode, k) for k in user.orders) if o is not None]
        current = {k: args.get(k) for k in addresses[0]}
        # the address already on the record would change nothing: a revised write must change it
        on_file = order.address.model_dump() if name == "modify_pending_order_address" and order else addresses[0]
        seen = [current, on_file]
        for address in addresses:
            if address not in seen:
                seen.append(address)
                out.append(ChangeAlternative(arguments={**args, **address}, difference=f"address: {address_text(current)} -> {address_text(address)}"))
    return out


def change_mentions(episode: Episode[Any], initial: Call, revised: Call) -> list[str]:
    """The values a user must say to turn the initial write into the revised one."""
    name, before, after = revised["name"], initial["arguments"], revised["arguments"]
    if initial["name"] != name:
        return [name]
    user_id = owner_of_call(episode, name, after) or ""
    out: list[str] = []
    if before.get("reason") != after.get("reason") and "reason" in after:
        out.append(after["reason"])
    if before.get("payment_method_id") != after.get("payment_method_id") and "payment_method_id" in after:
        out += _payment_tokens(episode, user_id, after["payment_method_id"])
    for key in ("address1", "address2", "city", "zip"):
        if key in after and before.get(key) != after.get(key) and after[key]:
            out.append(after[key])
    order = _order(episode, after.get("order_id"))
    old_new = zip(after.get("item_ids") or [], before.get("new_item_ids") or [], after.get("new_item_ids") or [])
    for old_id, first_new, revised_new in old_new:
        if first_new == revised_new or order is None:
            continue
        item = _item(order, old_id)
        product = _product(episode, item.product_id) if item else None
        first = product.variants.get(first_new) if product else None
        chosen = product.variants.get(revised_new) if product else None
        if chosen is not None:
            out += [v for k, v in chosen.options.items() if first is None or first.options.get(k) != v]
    if before.get("item_ids") != after.get("item_ids") and order is not None:
        for item_id in after.get("item_ids") or []:
            if item_id not in (before.get("item_ids") or []):
                out += _item_tokens(order, item_id)
    if before.get("order_id") != after.get("order_id") and "order_id" in after:
        out.append(after["order_id"])
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------- infeasible intent


def required_lookups(episode: Episode[Any], user_id: str, name: str, arguments: Mapping[str, Any]) -> list[Call]:
    """The reads a correct agent makes before refusing a write (besides authentication)."""
    calls: list[Call] = []
    order_id = arguments.get("order_id")
    order = _order(episode, order_id)
    # another user's order: the customer's own words say whose it is, so an agent may refuse
    # without reading it (reading it is no fault either: extra reads are not graded)
    if isinstance(order_id, str) and (order is None or order.user_id == user_id):
        calls.append(Call(name="get_order_details", arguments={"order_id": order_id}))
    if name == "modify_pending_order_payment" or name == "modify_user_address":
        calls.append(Call(name="get_user_details", arguments={"user_id": user_id}))
    return calls


def _first_method(order: Order, user: User) -> str | None:
    if order.payment_history and order.payment_history[0].payment_method_id in user.payment_methods:
        return order.payment_history[0].payment_method_id
    return next(iter(sorted(user.payment_methods)), None)


def _other_variant(product: Product, item: OrderItem, available: bool) -> Variant | None:
    return next((v for _, v in sorted(product.variants.items())
                 if v.available == available and v.item_id != item.item_id), None)


def _same_variant_request(order: Order, item: OrderItem) -> str:
    """An exchange for the very variant held, said as such: a customer who wants the same
    thing again asks for "another one exactly like it", not for options that read as new.
    No payment method: an identical item leaves no price difference to settle."""
    names = [i.name for i in order.items]
    held = (f"the {item.name} with {options_words(item.options)}" if names.count(item.name) > 1
            else f"the {item.name}")
    return (f"exchange {held} from {order_words(order.status, order.order_id)} for a new one exactly like it, "
            f"with the same {_joined(list(item.options))}")


def _joined(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1] if words else ""


def _same_variant_claims(episode: Episode[Any], arguments: Mapping[str, Any], user_id: str) -> list[Claim]:
    """The claims of an exchange's words, the new variant's being that it is the one held."""
    claims = call_claims(episode, "exchange_delivered_order_items", arguments, user_id)
    return [c.model_copy(update={"says": "a new one exactly like it"}) if c.table == "products" else c
            for c in claims if c.table != "users"]  # the words name no payment method


def infeasible_proposals(episode: Episode[Any], user_id: str,
                         calls: Sequence[Mapping[str, Any]]) -> list[InfeasibleProposal]:
    """Writes the user could ask for that a tool check or a policy rule refuses.

    Built from the user's own orders (those the task's ``calls`` act on marked related)
    plus a few pending orders of other users. The caller confirms each by running it.
    """
    related_orders = related_entities(calls)
    user = _user(episode, user_id)
    if user is None:
        return []
    out: list[InfeasibleProposal] = []

    def add(rule: str, name: str, arguments: dict[str, Any], fact: str, order_id: str,
            request: str | None = None, claims: list[Claim] | None = None) -> None:
        # no hand-off anywhere: every refusal here is a request the policy forbids, which the agent
        # declines itself; a transfer is for requests outside its actions
        out.append(InfeasibleProposal(rule=rule, action=Call(name=name, arguments=arguments), fact=fact,
                                      related=order_id in related_orders, request=request,
                                      claims=claims if claims is not None else call_claims(episode, name, arguments,
                                                                                          user_id)))

    for order_id in user.orders:
        order = _order(episode, order_id)
        if order is None:
            continue
        oid, status = order.order_id, order.status
        # a processed order too: the policy refuses its cancellation and names no hand-off (the
        # request is within the agent's actions, only not allowed)
        if status != "pending":
            add("cancel_non_pending", "cancel_pending_order", {"order_id": oid, "reason": ANY_CANCEL_REASON},
                f"order {oid} is '{status}'; only orders whose status is exactly 'pending' can be cancelled", oid)
        if status == "pending (item modified)":
            for item in order.items:
                product = _product(episode, item.product_id)
                variant = _other_variant(product, item, True) if product else None
                method = _first_method(order, user)
                if variant is not None and method is not None:
                    add("modify_twice", "modify_pending_order_items",
                        {"order_id": oid, "item_ids": [item.item_id], "new_item_ids": [variant.item_id],
                         "payment_method_id": method},
                        f"the items of order {oid} were already modified once; they cannot be modified again", oid)
                    break
            add("modify_after_item_change", "modify_pending_order_address",
                {"order_id": oid, **user.address.model_dump()},
                f"order {oid} is '{status}', not exactly 'pending', so its address can no longer be changed", oid)
        if status in ("delivered", "pending"):
            tool = "exchange_delivered_order_items" if status == "delivered" else "modify_pending_order_items"
            method = _first_method(order, user)
            for item in order.items:
                product = _product(episode, item.product_id)
                variant = _other_variant(product, item, False) if product else None
                if variant is not None and method is not None:
                    add("unavailable_variant", tool,
                        {"order_id": oid, "item_ids": [item.item_id], "new_item_ids": [variant.item_id],
                         "payment_method_id": method},
                        f"the requested {item.name} variant ({_options_text(variant.options)}) is not available", oid)
                    break
        if status == "delivered" and order.payment_history:
            original = order.payment_history[0].payment_method_id
            if method_id := next((k for k, m in sorted(user.payment_methods.items())
                                  if k != original and not isinstance(m, GiftCard)), None):
                add("refund_to_other_method", "return_delivered_order_items",
                    {"order_id": oid, "item_ids": [order.items[0].item_id], "payment_method_id": method_id},
                    f"a refund for order {oid} may go only to its original payment method or a gift card", oid)
            item = order.items[0]
            arguments = {"order_id": oid, "item_ids": [item.item_id], "new_item_ids": [item.item_id],
                         "payment_method_id": _first_method(order, user) or original}
            add("exchange_identical", "exchange_delivered_order_items", arguments,
                f"an exchange must be for a variant with different options, not the identical {item.name}", oid,
                request=_same_variant_request(order, item), claims=_same_variant_claims(episode, arguments, user_id))
        if status == "pending" and len(order.payment_history) == 1:
            amount = order.payment_history[0].amount
            for method_id, method in sorted(user.payment_methods.items()):
                if (isinstance(method, GiftCard) and method.balance < amount
                        and method_id != order.payment_history[0].payment_method_id):
                    add("gift_card_insufficient", "modify_pending_order_payment",
                        {"order_id": oid, "payment_method_id": method_id},
                        f"gift card {method_id} holds {method.balance}, less than the order total {amount}", oid)
                    break
    # other users' pending orders, from a place in the table that depends on the user only
    order_ids = list(episode.keys("orders"))
    start = sum(map(ord, user_id)) % max(1, len(order_ids))
    others = 0
    for order_id in order_ids[start:] + order_ids[:start]:
        if others >= MAX_OTHER_USER_PROPOSALS:
            break
        order = _order(episode, order_id)
        if order is not None and order.user_id != user_id and order.status == "pending":
            others += 1
            oid = order.order_id
            fact = f"order {oid} belongs to another customer; an agent serves only the authenticated user"
            theirs = f"the pending order {oid}, which a family member placed with their own account,"
            claims = [Claim(table="orders", key=oid, path=["status"], value="pending", says="the pending order"),
                      Claim(table="orders", key=oid, path=["user_id"], op="ne", value=user_id,
                            says="a family member placed with their own account")]
            add("other_users_order", "cancel_pending_order", {"order_id": oid, "reason": ANY_CANCEL_REASON},
                fact, oid, request=f"cancel {theirs} because {cancel_reason_words(ANY_CANCEL_REASON)}",
                claims=claims)
            # the tool would ship another customer's order to this user's address: only the policy refuses
            add("other_users_order", "modify_pending_order_address", {"order_id": oid, **user.address.model_dump()},
                fact, oid, request=f"have {theirs} shipped to {address_text(user.address.model_dump())}",
                claims=claims)
    return out
