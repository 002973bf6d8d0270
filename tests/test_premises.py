"""Premises: claims are read against the initial database, independently of the wording code."""

from __future__ import annotations

import json
import pytest

from trajectory2task.domains import get_domain
from trajectory2task.domains.kit import Claim
from trajectory2task.programs.verification.premises import false_claims, holds
from trajectory2task.programs.verification.verifier import Verifier, execute_calls
from tests.offline_tasks import generate_offline


@pytest.fixture(scope="module")
def env():
    domain = get_domain("retail")
    return domain.environment(domain.generate_db(13, 200))


def _delivered(env):
    db = env.base.db
    return next(o for o in db.orders.values() if o.status == "delivered")


def test_claims_compare_the_record_value(env):
    order = _delivered(env)
    item = order.items[0]
    assert holds(env, Claim(table="orders", key=order.order_id, path=["status"], value="delivered"))
    assert not holds(env, Claim(table="orders", key=order.order_id, path=["status"], value="pending"))
    assert holds(env, Claim(table="orders", key=order.order_id, path=["user_id"], op="ne", value="someone_else"))
    assert holds(env, Claim(table="orders", key=order.order_id, path=["items", item.item_id, "name"], value=item.name))
    assert not holds(env, Claim(table="orders", key="#W0000000", path=["status"], value="pending"))
    assert not holds(env, Claim(table="orders", key=order.order_id, path=["no_such_field"], op="ne", value=1))


def test_a_task_calling_a_delivered_order_pending_is_rejected(env):
    sink = generate_offline(env, n=6, seed=1)
    task = next(t for t in sink.kept() if t.condition == "general")
    order = _delivered(env)
    wrong = Claim(table="orders", key=order.order_id, path=["status"], value="pending", says="your pending order")
    verdict = Verifier(env, discriminative=True).verify_task(task.model_copy(update={"claims": [*task.claims, wrong]}))
    assert verdict.reasons == ["false_premise"] and "your pending order" in verdict.details[-1]


@pytest.mark.parametrize("seed", [0, 4])
def test_kept_offline_tasks_make_claims_and_all_are_true(env, seed):
    sink = generate_offline(env, n=14, seed=seed)
    kept = sink.kept()
    with_orders = [t for t in kept if any("order_id" in a.arguments for a in t.gold_actions
                                          if env.tools[a.name].kind == "write")]
    assert with_orders and all(t.claims for t in with_orders)
    assert [f for t in kept for f in false_claims(env, t.claims)] == []
    # infeasible requests about another customer's order say so, and the database agrees
    other = [c for t in kept for c in t.claims if c.op == "ne" and c.path == ["user_id"]]
    assert all(holds(env, c) for c in other)


def test_a_revised_write_always_changes_its_record(env):
    """A changing task never 'changes' an address to the one already on file: replayed up to
    the revised write, that write changes the database."""
    sink = generate_offline(env, n=20, seed=9)
    changing = [t for t in sink.kept() if t.condition == "changing"]
    assert changing
    for task in changing:
        first = {_key(a) for a in task.first_goal}
        # the first differing write (a sum redone with `calculate` for it differs too, and changes nothing)
        index = next(i for i, a in enumerate(task.gold_actions)
                     if _key(a) not in first and env.tools[a.name].kind == "write")
        before = env.episode()
        execute_calls(before, task.gold_actions[:index])
        after = before.fork()
        assert not after.call(task.gold_actions[index].name, task.gold_actions[index].arguments).error
        assert after.state_hash() != before.state_hash(), task.id


def _key(action) -> str:
    return json.dumps({"name": action.name, "arguments": action.arguments}, sort_keys=True)
