"""Condition checks: each accepts a correct adaptation and rejects a wrong one with its own reason.

The adapted tasks here are built by hand on a generated database, so every test exercises
exactly one rule of ``trajectory2task.programs.verification.conditions``; removing that rule makes its test fail.
"""

from __future__ import annotations

from typing import Any

import pytest

from trajectory2task.domains import get_domain
from trajectory2task.domains.retail.models import Order, RetailDB
from trajectory2task.programs.verification.conditions import check_ambiguous, check_changing, check_infeasible, check_static, mentions
from trajectory2task.programs.verification.verifier import Verifier, execute_calls
from trajectory2task.signatures.models import Action, Provenance, Task, ToolCall, Trajectory, UserScenario

DB_SEED, DB_USERS = 7, 200


@pytest.fixture(scope="module")
def env():
    domain = get_domain("retail")
    return domain.environment(domain.generate_db(DB_SEED, DB_USERS))


def _db(env) -> RetailDB:
    return env.base.db


# ---------------------------------------------------------------- building tasks from executed calls


def build_general(env, calls: list[tuple[str, dict[str, Any]]], task_id: str = "t") -> tuple[Task, Trajectory]:
    """A general task and its trajectory from calls executed for real (what explorer + writer would give)."""
    episode = env.episode()
    steps = execute_calls(episode, [ToolCall(name=n, arguments=a) for n, a in calls])
    assert not [s.observation for s in steps if s.error]
    trajectory = Trajectory(id=f"traj-{task_id}", domain="retail", steps=steps, initial_state_hash=env.initial_hash(),
                            end_state_hash=episode.state_hash())
    task = Task(id=task_id, domain="retail", scenario=UserScenario(reason_for_call="(written by the task writer)"),
                gold_actions=[Action(name=n, arguments=a, action_id=str(i)) for i, (n, a) in enumerate(calls)],
                expected_state_hash=episode.state_hash(), initial_state_hash=env.initial_hash(),
                provenance=Provenance(source="baseline", seed=3, trajectory_id=trajectory.id))
    return task, trajectory


def auth(db: RetailDB, user_id: str) -> tuple[str, dict[str, Any]]:
    return "find_user_id_by_email", {"email": db.users[user_id].email}


def orders_of(db: RetailDB, user_id: str, status: str) -> list[Order]:
    return [db.orders[o] for o in db.users[user_id].orders if db.orders[o].status == status]


def two_delivered_orders_with_same_product(db: RetailDB) -> tuple[str, str, Order, list[str]]:
    """(user id, product name, an order holding it once, every delivered order of the user holding it)."""
    for user_id in sorted(db.users):
        delivered = orders_of(db, user_id, "delivered")
        for order in delivered:
            for item in order.items:
                holding = [o.order_id for o in delivered if any(i.name == item.name for i in o.items)]
                if len(holding) >= 2 and [i.name for i in order.items].count(item.name) == 1:
                    return user_id, item.name, order, holding
    raise AssertionError("the generated database has no user with two delivered orders of one product")


def exchange_call(db: RetailDB, order: Order, product_name: str) -> tuple[str, dict[str, Any]]:
    item = next(i for i in order.items if i.name == product_name)
    new = next(v for _, v in sorted(db.products[item.product_id].variants.items())
               if v.available and v.item_id != item.item_id)
    return "exchange_delivered_order_items", {"order_id": order.order_id, "item_ids": [item.item_id],
                                              "new_item_ids": [new.item_id],
                                              "payment_method_id": order.payment_history[0].payment_method_id}


def adapted(parent: Task, condition: str, scenario: UserScenario, **fields: Any) -> Task:
    return parent.model_copy(update={"id": f"{parent.id}-{condition}", "condition": condition,
                                     "parent_task_id": parent.id, "scenario": scenario, **fields})


# ---------------------------------------------------------------- ambiguous


@pytest.fixture(scope="module")
def exchange_case(env):
    db = _db(env)
    user_id, product, order, holding = two_delivered_orders_with_same_product(db)
    calls = [auth(db, user_id), ("get_order_details", {"order_id": order.order_id}), exchange_call(db, order, product)]
    parent, _ = build_general(env, calls, "exchange")
    stated = {"entity": "order_item", "user_id": user_id, "action": "exchange_delivered_order_items",
              "product_name": product}
    good = UserScenario(reason_for_call=f"You want to exchange the {product} you received.",
                        known_info=f"Your email address is {db.users[user_id].email}.",
                        withheld_info=[f"The order is {order.order_id}."])
    return parent, stated, good, order, holding


def test_ambiguous_accepts_a_request_two_delivered_orders_fit_and_records_them(env, exchange_case):
    parent, stated, good, order, holding = exchange_case
    check = check_ambiguous(env, parent, adapted(parent, "ambiguous", good), stated, action_index=2)
    assert check.passed, check
    assert all(order_id in check.detail for order_id in holding) and len(holding) >= 2


def test_ambiguous_rejects_a_request_only_one_entity_fits(env):
    db = _db(env)
    user_id = next(u for u in sorted(db.users) if len(orders_of(db, u, "delivered")) == 1)
    order = orders_of(db, user_id, "delivered")[0]
    product = order.items[0].name
    parent, _ = build_general(env, [auth(db, user_id), exchange_call(db, order, product)], "single")
    stated = {"entity": "order_item", "user_id": user_id, "action": "exchange_delivered_order_items",
              "product_name": product}
    scenario = UserScenario(reason_for_call=f"Exchange my {product}.",
                            withheld_info=[f"The order is {order.order_id}."])
    check = check_ambiguous(env, parent, adapted(parent, "ambiguous", scenario), stated, action_index=1)
    assert (check.passed, check.reason) == (False, "too_few_candidates")


def test_ambiguous_rejects_constraints_the_gold_write_does_not_match(env, exchange_case):
    parent, stated, good, _, _ = exchange_case
    other_action = {**stated, "action": "return_delivered_order_items"}  # fits the same orders, not the gold write
    check = check_ambiguous(env, parent, adapted(parent, "ambiguous", good), other_action, action_index=2)
    assert (check.passed, check.reason) == (False, "target_not_candidate")


@pytest.mark.parametrize("where", ["reason_for_call", "known_info"])
def test_ambiguous_rejects_a_withheld_order_id_leaked_into_the_opening(env, exchange_case, where):
    parent, stated, good, order, _ = exchange_case
    leaked = good.model_copy(update={where: f"{getattr(good, where)} It is order {order.order_id.lstrip('#')}."})
    check = check_ambiguous(env, parent, adapted(parent, "ambiguous", leaked), stated, action_index=2)
    assert (check.passed, check.reason) == (False, "withheld_info_leaked")
    assert order.order_id in check.detail


def test_ambiguous_rejects_withheld_info_that_does_not_resolve_the_request(env, exchange_case):
    parent, stated, good, _, _ = exchange_case
    vague = good.model_copy(update={"withheld_info": ["It is the one you liked less."]})
    check = check_ambiguous(env, parent, adapted(parent, "ambiguous", vague), stated, action_index=2)
    assert (check.passed, check.reason) == (False, "withheld_info_missing")


def test_ambiguous_rejects_a_changed_gold(env, exchange_case):
    parent, stated, good, _, _ = exchange_case
    gold = parent.gold_actions[:2]  # the clarified goal must stay the parent's
    check = check_ambiguous(env, parent, adapted(parent, "ambiguous", good, gold_actions=gold), stated, action_index=1)
    assert (check.passed, check.reason) == (False, "gold_changed")


def test_ambiguous_payment_method_counts_only_methods_the_write_accepts(env):
    db = _db(env)
    user_id, order = next((u, o) for u in sorted(db.users) for o in orders_of(db, u, "delivered")
                          if sum(m.source == "gift_card" for m in db.users[u].payment_methods.values()) >= 2)
    cards = sorted(k for k, m in db.users[user_id].payment_methods.items() if m.source == "gift_card")
    refund = {"order_id": order.order_id, "item_ids": [order.items[0].item_id]}
    parent, _ = build_general(env, [auth(db, user_id), ("return_delivered_order_items",
                                                        {**refund, "payment_method_id": cards[0]})], "refund")
    stated = {"entity": "payment_method", "user_id": user_id, "action": "return_delivered_order_items",
              "source": "gift_card", "arguments": refund}
    scenario = UserScenario(reason_for_call=f"Return an item of {order.order_id} to one of your gift cards.",
                            withheld_info=[f"The gift card ends in {cards[0][-4:]}."])
    check = check_ambiguous(env, parent, adapted(parent, "ambiguous", scenario), stated, action_index=1)
    assert check.passed, check
    assert all(card in check.detail for card in cards)


def test_ambiguous_payment_method_excludes_methods_the_write_refuses(env):
    db = _db(env)

    def credit_cards(user_id: str) -> list[str]:
        return sorted(k for k, m in db.users[user_id].payment_methods.items() if m.source == "credit_card")

    user_id, order = next((u, o) for u in sorted(db.users) for o in orders_of(db, u, "delivered")
                          if len(credit_cards(u)) >= 2 and o.payment_history[0].payment_method_id in credit_cards(u))
    original = order.payment_history[0].payment_method_id
    refund = {"order_id": order.order_id, "item_ids": [order.items[0].item_id]}
    parent, _ = build_general(env, [auth(db, user_id), ("return_delivered_order_items",
                                                        {**refund, "payment_method_id": original})], "card")
    stated = {"entity": "payment_method", "user_id": user_id, "action": "return_delivered_order_items",
              "source": "credit_card", "arguments": refund}
    scenario = UserScenario(reason_for_call=f"Return an item of {order.order_id} to your credit card.",
                            withheld_info=[f"Card {db.users[user_id].payment_methods[original].last_four}."])
    # two credit cards, but a refund goes only to the original one: 'my credit card' is not ambiguous
    check = check_ambiguous(env, parent, adapted(parent, "ambiguous", scenario), stated, action_index=1)
    assert (check.passed, check.reason) == (False, "too_few_candidates")


def test_mentions_matches_whole_values_and_order_ids_without_hash():
    assert mentions("order W123 please", "#W123") and mentions("(#W123)", "#W123")
    assert not mentions("order #W1234", "#W123") and not mentions("8GBs", "8GB")


# ---------------------------------------------------------------- changing


@pytest.fixture(scope="module")
def cancel_case(env):
    db = _db(env)
    order = next(o for o in db.orders.values() if o.status == "pending")
    first = [auth(db, order.user_id), ("get_order_details", {"order_id": order.order_id}),
             ("cancel_pending_order", {"order_id": order.order_id, "reason": "no longer needed"})]
    revised = first[:2] + [("cancel_pending_order", {"order_id": order.order_id, "reason": "ordered by mistake"})]
    parent, _ = build_general(env, first, "cancel")
    revised_task, _ = build_general(env, revised, "cancel-revised")
    scenario = UserScenario(reason_for_call=f"Cancel order {order.order_id}, you no longer need it.",
                            change_trigger="when the agent asks you to confirm the cancellation",
                            revised_request="Actually, the reason is that it was ordered by mistake.")
    good = adapted(parent, "changing", scenario, gold_actions=revised_task.gold_actions,
                   expected_state_hash=revised_task.expected_state_hash)
    return parent, good, order


def test_changing_accepts_a_revised_reason_that_ends_elsewhere(env, cancel_case):
    parent, good, _ = cancel_case
    check = check_changing(env, good, parent.gold_actions)
    assert check.passed, check
    assert "ordered by mistake" in check.detail and parent.expected_state_hash in check.detail


def test_changing_rejects_a_revised_goal_equal_to_the_first(env, cancel_case):
    parent, good, _ = cancel_case
    check = check_changing(env, good, good.gold_actions)
    assert (check.passed, check.reason) == (False, "no_difference")


def test_changing_rejects_an_expected_state_that_is_not_the_revised_goals(env, cancel_case):
    parent, good, _ = cancel_case
    wrong = good.model_copy(update={"expected_state_hash": parent.expected_state_hash})
    check = check_changing(env, wrong, parent.gold_actions)
    assert (check.passed, check.reason) == (False, "revised_gold_invalid")


def test_changing_rejects_a_revised_gold_that_fails(env, cancel_case):
    parent, good, order = cancel_case
    failing = good.gold_actions + [Action(name="cancel_pending_order",
                                          arguments={"order_id": order.order_id, "reason": "no longer needed"})]
    check = check_changing(env, good.model_copy(update={"gold_actions": failing}), parent.gold_actions)
    assert (check.passed, check.reason) == (False, "revised_gold_invalid")
    assert "Non-pending order cannot be cancelled" in check.detail


def test_changing_rejects_a_first_goal_that_fails(env, cancel_case):
    parent, good, _ = cancel_case
    delivered = next(o for o in _db(env).orders.values() if o.status == "delivered")
    first = parent.gold_actions[:2] + [Action(name="cancel_pending_order",
                                              arguments={"order_id": delivered.order_id, "reason": "no longer needed"})]
    check = check_changing(env, good, first)
    assert (check.passed, check.reason) == (False, "initial_goal_invalid")


def test_changing_rejects_a_first_goal_ending_where_the_revised_one_does(env):
    db = _db(env)
    user = db.users[sorted(db.users)[0]]
    here = user.address.model_dump()
    there = {**here, "address1": "1 Elsewhere Road"}
    elsewhere = {**here, "address1": "2 Faraway Lane"}
    first = [auth(db, user.user_id), ("modify_user_address", {"user_id": user.user_id, **there})]
    # a different path (an extra write) to the very same end state
    revised = [first[0], ("modify_user_address", {"user_id": user.user_id, **elsewhere}), first[1]]
    parent, _ = build_general(env, first, "address")
    revised_task, _ = build_general(env, revised, "address-revised")
    scenario = UserScenario(reason_for_call="Change my address.", change_trigger="when asked to confirm",
                            revised_request=f"Use {there['address1']} after all.")
    task = adapted(parent, "changing", scenario, gold_actions=revised_task.gold_actions,
                   expected_state_hash=revised_task.expected_state_hash)
    check = check_changing(env, task, parent.gold_actions)
    assert (check.passed, check.reason) == (False, "same_end_state")


@pytest.mark.parametrize("field", ["change_trigger", "revised_request"])
def test_changing_rejects_a_scenario_that_does_not_say_when_or_to_what(env, cancel_case, field):
    parent, good, _ = cancel_case
    silent = good.model_copy(update={"scenario": good.scenario.model_copy(update={field: " "})})
    check = check_changing(env, silent, parent.gold_actions)
    assert (check.passed, check.reason) == (False, "change_not_stated")


def test_changing_rejects_a_revised_request_without_the_revised_value(env, cancel_case):
    parent, good, _ = cancel_case
    vague = good.model_copy(update={"scenario": good.scenario.model_copy(
        update={"revised_request": "Actually, I want to give another reason."})})
    check = check_changing(env, vague, parent.gold_actions)
    assert (check.passed, check.reason) == (False, "revised_request_incomplete")
    assert "ordered by mistake" in check.detail


# ---------------------------------------------------------------- infeasible


def _infeasible(env, user_id: str, forbidden: Action, lookups: list[Action] | None = None,
                scenario: UserScenario | None = None, gold: list[Action] | None = None) -> Task:
    db = _db(env)
    name, args = auth(db, user_id)
    order_id = forbidden.arguments.get("order_id")
    required = [Action(name=name, arguments=args)] + (
        lookups if lookups is not None else [Action(name="get_order_details", arguments={"order_id": order_id})])
    return Task(id="inf", domain="retail", condition="infeasible",
                scenario=scenario or UserScenario(reason_for_call=f"You want to {forbidden.name} on {order_id}."),
                gold_actions=gold if gold is not None else required, actions_should_take=required,
                actions_should_not_take=[forbidden], expected_state_hash=env.initial_hash(),
                initial_state_hash=env.initial_hash(), reward_basis=["DB", "ACTION"])


def _cancel(order: Order) -> Action:
    return Action(name="cancel_pending_order", arguments={"order_id": order.order_id, "reason": "no longer needed"})


def test_infeasible_accepts_cancelling_a_delivered_order_refused_by_the_tool(env):
    order = next(o for o in _db(env).orders.values() if o.status == "delivered")
    check = check_infeasible(env, _infeasible(env, order.user_id, _cancel(order)))
    assert check.passed, check
    assert "rejected by the tool: Non-pending order cannot be cancelled" in check.detail


def test_infeasible_accepts_another_users_order_by_the_policy_rule_for_the_authenticated_user(env):
    db = _db(env)
    order = next(o for o in db.orders.values() if o.status == "pending")
    stranger = next(u for u in sorted(db.users) if u != order.user_id)
    assert not env.episode().call("cancel_pending_order", _cancel(order).arguments).error  # the tool would do it
    check = check_infeasible(env, _infeasible(env, stranger, _cancel(order)))
    assert check.passed, check
    assert "one_user_per_conversation" in check.detail and stranger in check.detail


def test_infeasible_rejects_a_forbidden_write_that_succeeds(env):
    order = next(o for o in _db(env).orders.values() if o.status == "pending")
    check = check_infeasible(env, _infeasible(env, order.user_id, _cancel(order)))
    assert (check.passed, check.reason) == (False, "forbidden_action_succeeds")


def test_infeasible_rejects_a_forbidden_action_that_is_not_a_write(env):
    order = next(o for o in _db(env).orders.values() if o.status == "delivered")
    read = Action(name="get_order_details", arguments={"order_id": order.order_id})
    check = check_infeasible(env, _infeasible(env, order.user_id, read))
    assert (check.passed, check.reason) == (False, "forbidden_not_write")


def test_infeasible_rejects_required_actions_without_authentication(env):
    order = next(o for o in _db(env).orders.values() if o.status == "delivered")
    task = _infeasible(env, order.user_id, _cancel(order))
    unauthenticated = task.actions_should_take[1:]
    check = check_infeasible(env, task.model_copy(update={"actions_should_take": unauthenticated,
                                                          "gold_actions": unauthenticated}))
    assert (check.passed, check.reason) == (False, "missing_authentication")


def test_infeasible_rejects_a_required_action_that_fails(env):
    order = next(o for o in _db(env).orders.values() if o.status == "delivered")
    lookups = [Action(name="get_order_details", arguments={"order_id": "#W0000000"})]
    check = check_infeasible(env, _infeasible(env, order.user_id, _cancel(order), lookups=lookups))
    assert (check.passed, check.reason) == (False, "required_action_fails")


def test_infeasible_rejects_gold_actions_that_change_the_database(env):
    db = _db(env)
    pending = next(orders_of(db, u, "pending")[0] for u in sorted(db.users)
                   if orders_of(db, u, "pending") and orders_of(db, u, "delivered"))
    task = _infeasible(env, pending.user_id, _cancel(orders_of(db, pending.user_id, "delivered")[0]))
    check = check_infeasible(env, task.model_copy(update={"gold_actions": task.gold_actions + [_cancel(pending)]}))
    assert (check.passed, check.reason) == (False, "gold_changes_state")


def test_infeasible_rejects_a_scenario_that_never_gives_the_order_id(env):
    order = next(o for o in _db(env).orders.values() if o.status == "delivered")
    scenario = UserScenario(reason_for_call="You want to cancel your most recent order.")
    check = check_infeasible(env, _infeasible(env, order.user_id, _cancel(order), scenario=scenario))
    assert (check.passed, check.reason) == (False, "target_not_in_scenario")


# ---------------------------------------------------------------- all conditions


def test_static_check_rejects_a_task_a_do_nothing_agent_passes(env):
    db = _db(env)
    user_id = sorted(db.users)[0]
    reads_only, _ = build_general(env, [auth(db, user_id), ("get_user_details", {"user_id": user_id})], "reads")
    check = check_static(Verifier(env), reads_only.model_copy(update={"condition": "ambiguous"}))
    assert (check.passed, check.reason) == (False, "noop_passes")
