"""The condition kit in pieces: a domain gives the pieces it knows, the domain-general kit
fills the others, optional functions are left None, and a guarded piece names the function
that raised."""

from __future__ import annotations

import dataclasses

import pytest

from trajectory2task.domains import get_domain
from trajectory2task.domains.generic_kit import GenericConditions
from trajectory2task.domains.kit import (
    ChangeKit,
    ConditionKit,
    GenerationKit,
    KitError,
    KitFault,
    guarded_kit,
)
from trajectory2task.domains.retail.kit import CONDITIONS as RETAIL
from trajectory2task.programs.generation.adapting import BaselineAdaptation
from trajectory2task.programs.verification.conditions import condition_kit
from tests.test_conditions import DB_SEED, DB_USERS, auth, build_general, orders_of


def _retail(conditions: ConditionKit | None):
    domain = get_domain("retail")
    domain = dataclasses.replace(domain, kit=dataclasses.replace(domain.kit, conditions=conditions))
    return domain.environment(domain.generate_db(DB_SEED, DB_USERS))


def _cancel(env):
    """A cancellation by a user with two pending orders ('cancel my pending order' fits both)."""
    db = env.base.db
    user_id = next(u for u in sorted(db.users) if len(orders_of(db, u, "pending")) == 2)
    order = orders_of(db, user_id, "pending")[0]
    return build_general(env, [auth(db, user_id), ("get_order_details", {"order_id": order.order_id}),
                               ("cancel_pending_order", {"order_id": order.order_id, "reason": "no longer needed"})],
                         "cancel")


def _no_change(episode, call):
    return []


def test_the_pieces_a_domain_leaves_out_are_the_generic_kits():
    env = _retail(ConditionKit(change=ChangeKit(change_alternatives=_no_change), wording=RETAIL.wording))
    kit = condition_kit(env)
    assert kit.change.change_alternatives is _no_change and kit.wording is RETAIL.wording
    generic = [kit.identity.identity_lookup, kit.ownership.owner_of_call, kit.ambiguity.ambiguity_proposals,
               kit.infeasibility.infeasible_proposals]
    assert all(isinstance(f.__self__, GenericConditions) for f in generic)
    # the generic kit forgets nothing and claims nothing: those stay None, not stand-ins
    assert kit.identity.forgotten_identity is None
    assert condition_kit(_retail(None)).wording.call_claims is None


def test_an_ambiguity_piece_without_its_wording_is_refused():
    with pytest.raises(KitError, match="WordingKit"):
        ConditionKit(ambiguity=RETAIL.ambiguity)


def test_a_guarded_piece_names_the_function_that_raised_and_keeps_none_as_none():
    def change_alternatives(episode, call):
        raise RuntimeError("no alternatives today\nsecond line")

    exploration = get_domain("retail").kit.exploration
    kit = GenerationKit(exploration=exploration, conditions=ConditionKit(
        change=ChangeKit(change_alternatives=change_alternatives),
        ambiguity=dataclasses.replace(RETAIL.ambiguity, reading_call=None), wording=RETAIL.wording))
    once = guarded_kit(kit)
    with pytest.raises(KitFault) as fault:
        once.conditions.change.change_alternatives(None, {})
    assert str(fault.value) == "the kit's change_alternatives raised RuntimeError: no alternatives today"
    assert once.conditions.ambiguity.reading_call is None and once.conditions.identity is None
    # guarding a guarded kit wraps nothing twice
    twice = guarded_kit(once)
    assert twice.conditions.change.change_alternatives is once.conditions.change.change_alternatives


def test_without_reading_call_an_ambiguous_task_has_no_readings():
    with_readings = _retail(RETAIL)
    task = BaselineAdaptation().adapt(*_cancel(with_readings), "ambiguous", with_readings, seed=0).task
    assert task is not None and len(task.readings) == 2
    without = _retail(dataclasses.replace(RETAIL, ambiguity=dataclasses.replace(RETAIL.ambiguity, reading_call=None)))
    task = BaselineAdaptation().adapt(*_cancel(without), "ambiguous", without, seed=0).task
    assert task is not None and task.readings == []


def test_without_call_claims_the_kit_claims_nothing():
    with_claims = _retail(RETAIL)
    task = BaselineAdaptation().adapt(*_cancel(with_claims), "ambiguous", with_claims, seed=0).task
    assert task is not None and task.claims
    without = _retail(dataclasses.replace(RETAIL, wording=dataclasses.replace(RETAIL.wording, call_claims=None)))
    task = BaselineAdaptation().adapt(*_cancel(without), "ambiguous", without, seed=0).task
    assert task is not None and task.claims == []
