"""Intent adaptation: the offline baseline and the LM path (DummyLM) give checked, verified tasks.

General tasks are built here from trajectories of calls executed on a generated database
(what the explorer and writer produce), then adapted to each condition.
"""

from __future__ import annotations

import json
from typing import Any

import dspy
import pytest
from dspy.utils import DummyLM

from trajectory2task.domains import get_domain
from trajectory2task.programs.generation.adaptation import IntentAdaptation
from trajectory2task.programs.generation.adapting import AdaptationResult, BaselineAdaptation
from trajectory2task.programs.verification.verifier import Verifier, execute_calls
from trajectory2task.signatures.models import Action, Task, Trajectory
from tests.test_conditions import (
    DB_SEED,
    DB_USERS,
    auth,
    build_general,
    exchange_call,
    orders_of,
    two_delivered_orders_with_same_product,
)

ADAPTED = ("ambiguous", "changing", "infeasible")


@pytest.fixture(scope="module")
def env():
    domain = get_domain("retail")
    return domain.environment(domain.generate_db(DB_SEED, DB_USERS))


@pytest.fixture(scope="module")
def exchange(env) -> tuple[Task, Trajectory]:
    db = env.base.db
    user_id, product, order, _ = two_delivered_orders_with_same_product(db)
    return build_general(env, [auth(db, user_id), ("get_order_details", {"order_id": order.order_id}),
                               exchange_call(db, order, product)], "exchange")


def _user_with_pending_orders(db, count: int) -> str:
    return next(u for u in sorted(db.users) if len(orders_of(db, u, "pending")) == count)


@pytest.fixture(scope="module")
def cancel(env) -> tuple[Task, Trajectory]:
    """A cancellation by a user with two pending orders ('cancel my pending order' fits both)."""
    db = env.base.db
    user_id = _user_with_pending_orders(db, 2)
    order = orders_of(db, user_id, "pending")[0]
    return build_general(env, [auth(db, user_id), ("get_order_details", {"order_id": order.order_id}),
                               ("cancel_pending_order", {"order_id": order.order_id, "reason": "no longer needed"})],
                         "cancel")


def _writes(env, actions: list[Action]) -> list[tuple[str, str]]:
    return [(a.name, json.dumps(a.arguments, sort_keys=True)) for a in actions if env.tools[a.name].kind == "write"]


def _end_state(env, actions: list[Action]) -> str:
    episode = env.episode()
    execute_calls(episode, actions)
    return episode.state_hash()


# ---------------------------------------------------------------- baseline


def test_general_returns_the_task_unchanged(env, exchange):
    task, trajectory = exchange
    result = BaselineAdaptation().adapt(task, trajectory, "general", env, seed=0)
    assert result == AdaptationResult(task=task)


def test_an_unknown_condition_is_an_error(env, exchange):
    with pytest.raises(ValueError, match="unknown condition"):
        BaselineAdaptation().adapt(*exchange, "confused", env, seed=0)


@pytest.mark.parametrize("case", ["exchange", "cancel"])
@pytest.mark.parametrize("condition", ADAPTED)
@pytest.mark.parametrize("seed", [0, 1])
def test_baseline_adapts_each_condition_to_a_task_that_passes_static_verification(env, request, case, condition,
                                                                                  seed):
    parent, trajectory = request.getfixturevalue(case)
    result = BaselineAdaptation().adapt(parent, trajectory, condition, env, seed)
    task = result.task
    assert task is not None, result
    verdict = Verifier(env).verify_task(task)
    assert verdict.passed, verdict
    assert (task.id, task.parent_task_id, task.condition) == (f"{parent.id}-{condition}", parent.id, condition)
    assert task.provenance == parent.provenance and task.condition_evidence
    if condition == "ambiguous":
        assert task.gold_actions == parent.gold_actions and task.expected_state_hash == parent.expected_state_hash
        assert task.scenario.withheld_info
    elif condition == "changing":
        first, revised = _writes(env, parent.gold_actions), _writes(env, task.gold_actions)
        assert len(first) == len(revised) and sum(a != b for a, b in zip(first, revised)) == 1
        assert task.expected_state_hash == _end_state(env, task.gold_actions) != parent.expected_state_hash
        assert task.scenario.change_trigger and task.scenario.revised_request
    else:
        assert task.gold_actions == task.actions_should_take and not _writes(env, task.gold_actions)
        assert task.expected_state_hash == env.initial_hash()
        assert {"DB", "ACTION"} <= set(task.reward_basis)
        assert [env.tools[a.name].kind for a in task.actions_should_not_take] == ["write"]
        assert task.actions_should_take[0].name in ("find_user_id_by_email", "find_user_id_by_name_zip")
        assert any("rejected by the tool" in d or "breaks policy" in d for d in verdict.details)


def _cancelled_order(env, case) -> tuple[str, list[str]]:
    """The order the cancel case cancels, and every pending order of its user."""
    order_id = case[0].gold_actions[-1].arguments["order_id"]
    user_id = env.base.db.orders[order_id].user_id
    return order_id, [o.order_id for o in orders_of(env.base.db, user_id, "pending")]


def test_baseline_ambiguous_cancel_withholds_which_of_the_two_pending_orders(env, cancel):
    task = BaselineAdaptation().adapt(*cancel, "ambiguous", env, seed=0).task
    order_id, pending = _cancelled_order(env, cancel)
    assert order_id not in task.scenario.reason_for_call and order_id not in (task.scenario.known_info or "")
    assert any(order_id in line for line in task.scenario.withheld_info)
    assert len(pending) == 2 and all(o in task.condition_evidence for o in pending)


@pytest.mark.parametrize("condition", ADAPTED)
def test_baseline_is_deterministic_for_a_seed(env, exchange, condition):
    runs = [BaselineAdaptation().adapt(*exchange, condition, env, seed=5).model_dump_json() for _ in range(2)]
    assert runs[0] == runs[1]


def test_baseline_seeds_give_different_adaptations(env, exchange):
    for condition in ADAPTED:
        outputs = {BaselineAdaptation().adapt(*exchange, condition, env, seed=s).model_dump_json() for s in range(6)}
        assert len(outputs) > 1, condition


def test_adaptation_of_a_task_a_do_nothing_agent_passes_is_rejected(env):
    db = env.base.db
    user_id = _user_with_pending_orders(db, 2)
    order = orders_of(db, user_id, "pending")[0]
    # the 'change' ships the order where it already goes: the database does not change
    same_address = ("modify_pending_order_address", {"order_id": order.order_id, **order.address.model_dump()})
    parent, trajectory = build_general(env, [auth(db, user_id), same_address], "same-address")
    result = BaselineAdaptation().adapt(parent, trajectory, "ambiguous", env, seed=0)
    assert (result.task, result.rejected_reason) == (None, "noop_passes")


def test_a_task_with_nothing_ambiguous_is_rejected_with_no_candidates(env):
    db = env.base.db
    user_id = _user_with_pending_orders(db, 1)
    order = orders_of(db, user_id, "pending")[0]
    parent, trajectory = build_general(env, [auth(db, user_id), ("cancel_pending_order", {
        "order_id": order.order_id, "reason": "ordered by mistake"})], "lonely")
    result = BaselineAdaptation().adapt(parent, trajectory, "ambiguous", env, seed=0)
    assert (result.task, result.rejected_reason) == (None, "no_candidates")


# ---------------------------------------------------------------- LM path (DummyLM)


def _lm_adapt(env, case, condition: str, answer: dict[str, Any], seed: int = 0) -> tuple[AdaptationResult, DummyLM]:
    lm = DummyLM([{"claims": [], **answer}])
    return IntentAdaptation(lm=lm).adapt(*case, condition, env, seed), lm


def _prompt(lm: DummyLM) -> str:
    return "\n".join(m["content"] for m in lm.history[-1]["messages"])


def test_lm_ambiguous_scenario_that_holds_the_details_back_is_accepted(env, cancel):
    reference = BaselineAdaptation().adapt(*cancel, "ambiguous", env, seed=0).task
    scenario = reference.scenario.model_copy(update={"withheld_info": []})
    result, lm = _lm_adapt(env, cancel, "ambiguous", {"scenario": scenario.model_dump(),
                                                      "withheld_info": reference.scenario.withheld_info})
    assert result.task is not None, result
    assert result.task.scenario.withheld_info == reference.scenario.withheld_info
    assert Verifier(env).verify_task(result.task).passed
    _, pending = _cancelled_order(env, cancel)
    assert all(order_id in _prompt(lm) for order_id in pending)  # the LM saw the candidates code found


def test_lm_that_leaks_the_withheld_order_id_into_the_opening_is_rejected(env, cancel):
    reference = BaselineAdaptation().adapt(*cancel, "ambiguous", env, seed=0).task
    order_id = cancel[0].gold_actions[-1].arguments["order_id"]
    leaky = reference.scenario.model_copy(update={"reason_for_call": f"Please cancel my order {order_id}.",
                                                  "withheld_info": []})
    result, _ = _lm_adapt(env, cancel, "ambiguous", {"scenario": leaky.model_dump(),
                                                     "withheld_info": reference.scenario.withheld_info})
    assert (result.task, result.rejected_reason) == (None, "withheld_info_leaked")


def test_lm_changing_scenario_that_states_the_revision_is_accepted_with_the_code_chosen_goal(env, exchange):
    reference = BaselineAdaptation().adapt(*exchange, "changing", env, seed=0).task
    scenario = reference.scenario
    answer = {"scenario": scenario.model_copy(update={"change_trigger": None, "revised_request": None}).model_dump(),
              "change_trigger": scenario.change_trigger, "revised_request": scenario.revised_request}
    result, lm = _lm_adapt(env, exchange, "changing", answer)
    assert result.task is not None, result
    assert result.task.gold_actions == reference.gold_actions  # code picks the revised goal, not the LM
    assert result.task.scenario.revised_request == scenario.revised_request
    # the LM was shown the revised write's new values (they are nowhere in the trajectory)
    revised, first = next((a, b) for a, b in zip(reference.gold_actions, exchange[0].gold_actions) if a != b)
    changed = [v for k, v in revised.arguments.items() if first.arguments.get(k) != v]
    assert changed and all(json.dumps(v) not in exchange[1].model_dump_json() for v in changed)
    assert all(json.dumps(v).replace(" ", "") in _prompt(lm).replace(" ", "") for v in changed)


def test_lm_changing_request_that_omits_the_revised_values_is_rejected(env, exchange):
    reference = BaselineAdaptation().adapt(*exchange, "changing", env, seed=0).task
    answer = {"scenario": reference.scenario.model_dump(), "change_trigger": reference.scenario.change_trigger,
              "revised_request": "Actually, I would like a different one."}
    result, _ = _lm_adapt(env, exchange, "changing", answer)
    assert (result.task, result.rejected_reason) == (None, "revised_request_incomplete")


def _infeasible_answer(reference: Task, forbidden: Action, scenario_text: str | None = None) -> dict[str, Any]:
    scenario = reference.scenario
    if scenario_text is not None:
        scenario = scenario.model_copy(update={"reason_for_call": scenario_text})
    return {"forbidden_action": forbidden.model_dump(), "scenario": scenario.model_dump(),
            "explanation": "The agent must refuse."}


def test_lm_choosing_a_proposed_forbidden_write_is_accepted(env, cancel):
    reference = BaselineAdaptation().adapt(*cancel, "infeasible", env, seed=0).task
    forbidden = reference.actions_should_not_take[0]
    result, lm = _lm_adapt(env, cancel, "infeasible", _infeasible_answer(reference, forbidden))
    assert result.task is not None, result
    assert result.task.actions_should_not_take == [forbidden]
    assert result.task.description.relevant_policies == "The agent must refuse."
    assert Verifier(env).verify_task(result.task).passed
    assert '"candidates"' in _prompt(lm)


def test_lm_choosing_a_forbidden_write_that_succeeds_is_rejected(env, cancel):
    reference = BaselineAdaptation().adapt(*cancel, "infeasible", env, seed=0).task
    own_pending = cancel[0].gold_actions[-1]  # the user's own pending order: cancelling it is allowed
    result, _ = _lm_adapt(env, cancel, "infeasible", _infeasible_answer(
        reference, own_pending, f"You want to cancel order {own_pending.arguments['order_id']}."))
    assert (result.task, result.rejected_reason) == (None, "forbidden_action_succeeds")


def test_lm_choosing_a_write_code_did_not_propose_is_rejected(env, cancel):
    reference = BaselineAdaptation().adapt(*cancel, "infeasible", env, seed=0).task
    user_id = env.base.db.orders[cancel[0].gold_actions[-1].arguments["order_id"]].user_id
    foreign = next(o for o in env.base.db.orders.values() if o.status == "delivered" and o.user_id != user_id)
    made_up = Action(name="cancel_pending_order",
                     arguments={"order_id": foreign.order_id, "reason": "no longer needed"})
    result, _ = _lm_adapt(env, cancel, "infeasible", _infeasible_answer(
        reference, made_up, f"You want to cancel order {foreign.order_id}."))
    assert (result.task, result.rejected_reason) == (None, "not_a_candidate")


def test_intent_adaptation_has_one_predictor_per_condition_and_saves_without_its_lm():
    adaptation = IntentAdaptation(lm=DummyLM([]))
    assert [name for name, _ in adaptation.named_predictors()] == ["ambiguous", "changing", "infeasible"]
    state = adaptation.dump_state()
    restored = IntentAdaptation()
    restored.load_state(json.loads(json.dumps(state)))
    assert restored.ambiguous.signature.instructions == adaptation.ambiguous.signature.instructions
    assert isinstance(restored, dspy.Module)


def test_changing_drops_what_the_agent_had_to_say_about_the_first_goal_only(env, exchange):
    parent, trajectory = exchange
    user_id = trajectory.steps[0].observation
    first_difference = str(json.loads(trajectory.steps[-1].observation)["exchange_price_difference"])
    told = parent.model_copy(update={"communicate_info": [user_id, first_difference],
                                     "reward_basis": ["DB", "COMMUNICATE"]})

    def revised_difference(task: Task) -> str:
        steps = execute_calls(env.episode(), task.gold_actions)
        return str(json.loads(steps[-1].observation)["exchange_price_difference"])

    # a seed whose revision swaps the new variant for one of another price
    task = next(t for t in (BaselineAdaptation().adapt(told, trajectory, "changing", env, seed=s).task for s in range(20))
                if revised_difference(t) != first_difference)
    # the revised goal's own amount, worked out by the kit, replaces the first goal's; the
    # parent's other string (still observed) stays
    revised = abs(float(revised_difference(task)))
    assert first_difference not in task.communicate_info and user_id in task.communicate_info
    amounts = [float(i) for i in task.communicate_info if i != user_id]
    assert amounts == [pytest.approx(revised)] and task.reward_basis == ["DB", "COMMUNICATE"]
    # and the user asks for it
    assert "Before you confirm, ask the agent how much" in task.scenario.task_instructions


def test_lm_claim_that_the_database_contradicts_rejects_the_task(env, cancel):
    """The LM's own claims are checked against the database by code the LM does not write."""
    reference = BaselineAdaptation().adapt(*cancel, "ambiguous", env, seed=0).task
    scenario = reference.scenario.model_copy(update={"withheld_info": []})
    order_id = cancel[0].gold_actions[-1].arguments["order_id"]
    false = {"table": "orders", "key": order_id, "path": ["status"], "value": "delivered",
             "says": "your delivered order"}
    answer = {"scenario": scenario.model_dump(), "withheld_info": reference.scenario.withheld_info}
    result, _ = _lm_adapt(env, cancel, "ambiguous", {**answer, "claims": [false]})
    assert (result.task, result.rejected_reason) == (None, "false_premise")
    true = {**false, "value": env.episode().record("orders", order_id)["status"]}
    result, _ = _lm_adapt(env, cancel, "ambiguous", {**answer, "claims": [true]})
    assert result.task is not None  # a true claim passes (and merges with the kit's own claim of the status)
