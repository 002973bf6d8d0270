"""Metrics come from verdicts and code checks: each test changes one fact and watches the score."""

from __future__ import annotations

import pytest

from trajectory2task.optimize.metrics import (
    DSPyMetric,
    NoveltyReference,
    Score,
    check_task,
    condition_problems,
    gold_replay_runner,
    reveals,
    score_tasks,
    score_trajectories,
    trajectory_entities,
    trajectory_problems,
    user_fidelity,
)
from trajectory2task.programs.verification.verifier import Verifier, execute_calls
from trajectory2task.signatures.models import Action, Message, Rollout, Task, ToolCall, Trajectory, UserScenario, Verdict


@pytest.fixture(scope="module")
def env(retail):
    return retail.environment(retail.generate_db(0, 20))


def _pending_order(env, skip: int = 0):
    ep = env.episode()
    found = [k for k in ep.keys("orders") if ep.get("orders", k).status == "pending"]
    order = ep.get("orders", found[skip])
    return found[skip], order.user_id, ep.get("users", order.user_id).email


def _trajectory(env, calls: list[ToolCall], tid: str = "t1") -> Trajectory:
    episode = env.episode()
    steps = execute_calls(episode, calls)
    return Trajectory(id=tid, domain="retail", steps=steps, initial_state_hash=env.initial_hash(),
                      end_state_hash=episode.state_hash())


def _cancel_calls(env, skip: int = 0) -> list[ToolCall]:
    order_id, user_id, email = _pending_order(env, skip)
    return [ToolCall(name="find_user_id_by_email", arguments={"email": email}),
            ToolCall(name="get_order_details", arguments={"order_id": order_id}),
            ToolCall(name="cancel_pending_order", arguments={"order_id": order_id, "reason": "no longer needed"})]


def _cancel_task(env, skip: int = 0, **changes) -> Task:
    calls = _cancel_calls(env, skip)
    episode = env.episode()
    execute_calls(episode, calls)
    task = Task(id=f"cancel-{skip}", domain="retail",
                scenario=UserScenario(reason_for_call="cancel my pending order"),
                gold_actions=[Action(name=c.name, arguments=c.arguments) for c in calls],
                expected_state_hash=episode.state_hash(), initial_state_hash=env.initial_hash())
    return task.model_copy(update=changes)


# ----------------------------------------------------------------- explorer


def test_valid_trajectory_has_no_problems(env):
    assert trajectory_problems(env, _trajectory(env, _cancel_calls(env))) == []


def test_trajectory_without_write_is_invalid(env):
    problems = trajectory_problems(env, _trajectory(env, _cancel_calls(env)[:2]))
    assert problems == ["the trajectory makes no write"]


def test_trajectory_with_error_step_is_invalid(env):
    calls = _cancel_calls(env) + [ToolCall(name="get_order_details", arguments={"order_id": "#nope"})]
    assert any("errors" in p for p in trajectory_problems(env, _trajectory(env, calls)))


def test_trajectory_whose_recorded_end_state_is_wrong_is_invalid(env):
    trajectory = _trajectory(env, _cancel_calls(env)).model_copy(update={"end_state_hash": env.initial_hash()})
    assert trajectory_problems(env, trajectory) == ["replay does not reach the trajectory's end state"]


def test_entities_are_id_and_email_arguments(env):
    order_id, _, email = _pending_order(env)
    assert trajectory_entities(_trajectory(env, _cancel_calls(env))) == {order_id, email}


def test_explorer_score_is_valid_rate_times_novelty(env):
    first = _trajectory(env, _cancel_calls(env, 0), "a")
    other = _trajectory(env, _cancel_calls(env, 1), "b")
    invalid = _trajectory(env, _cancel_calls(env, 2)[:2], "c")
    assert score_trajectories(env, [first]).value == 1.0
    # the same trajectory twice: the second is valid but brings nothing new
    assert score_trajectories(env, [first, first]).value == pytest.approx(0.5)
    # same tool sequence, new entities: half novel
    assert score_trajectories(env, [first, other]).value == pytest.approx((1.0 + 0.5) / 2)
    # one of two invalid: rate 1/2 x novelty 1
    assert score_trajectories(env, [first, invalid]).value == pytest.approx(0.5)
    # against a reference that already holds it
    seen = NoveltyReference.from_trajectories([first])
    assert score_trajectories(env, [first], seen).value == 0.0
    assert seen.entities  # the caller's reference is not modified by scoring


# ----------------------------------------------------------------- tasks


def test_task_passing_static_and_gold_rollout_scores_one(env):
    verifier = Verifier(env)
    check = check_task(verifier, _cancel_task(env), gold_replay_runner(verifier))
    assert check.passed and check.rollout is not None and check.rollout.passed


def test_task_failing_static_verification_scores_zero(env):
    verifier = Verifier(env)
    good = _cancel_task(env, 0)
    broken = _cancel_task(env, 1, id="broken", expected_state_hash=env.initial_hash())
    score = score_tasks(verifier, [good, broken], gold_replay_runner(verifier))
    assert score.value == 0.5
    assert "broken" in score.feedback and "invalid_gold" in score.feedback


def test_missing_tasks_count_as_failures(env):
    verifier = Verifier(env)
    assert score_tasks(verifier, [_cancel_task(env)], expected=4).value == 0.25
    assert score_tasks(verifier, [None]).value == 0.0


def test_ambiguous_task_must_withhold_something_the_opening_does_not_say(env):
    order_id, _, _ = _pending_order(env)
    ok = _cancel_task(env, condition="ambiguous",
                      scenario=UserScenario(reason_for_call="cancel one of my orders",
                                            withheld_info=[f"the order is {order_id}"]))
    assert condition_problems(ok) == []
    leaky = ok.model_copy(update={"scenario": ok.scenario.model_copy(
        update={"reason_for_call": f"cancel order {order_id}"})})
    assert any("reveals" in p for p in condition_problems(leaky))
    empty = ok.model_copy(update={"scenario": ok.scenario.model_copy(update={"withheld_info": []})})
    assert any("withholds nothing" in p for p in condition_problems(empty))


def test_ambiguous_task_solved_without_clarification_counts_against_it(env):
    task = _cancel_task(env, condition="ambiguous",
                        scenario=UserScenario(reason_for_call="cancel one of my orders",
                                              withheld_info=["the order is #W0001"]))
    passed = Verdict(task_id=task.id, passed=True)
    writes = {"cancel_pending_order"}
    cancel = Message(role="assistant", tool_calls=[ToolCall(name="cancel_pending_order")])
    opening = Message(role="user", content="cancel one of my orders")
    silent = Rollout(id="r", task_id=task.id, messages=[
        opening, Message(role="assistant", content="Shall I cancel it? Please confirm."),
        Message(role="user", content="Yes."), cancel])
    asking = Rollout(id="r", task_id=task.id, messages=[
        opening, Message(role="assistant", content="Which order do you mean?"),
        Message(role="user", content="It is #W0001."), cancel])
    too_late = Rollout(id="r", task_id=task.id, messages=[
        opening, cancel, Message(role="user", content="I meant #W0001.")])
    for rollout in (silent, too_late):
        assert any("without the user giving any withheld detail" in p
                   for p in condition_problems(task, rollout, passed, writes, privileged_agent=False))
    assert condition_problems(task, asking, passed, writes, privileged_agent=False) == []
    # the oracle knows the gold: acting without asking proves nothing
    assert condition_problems(task, silent, passed, writes, privileged_agent=True) == []
    flagged = Verdict(task_id=task.id, passed=False, reasons=["no_clarification"])
    assert condition_problems(task, asking, flagged, writes)


def test_changing_and_infeasible_need_their_fields(env):
    changing = _cancel_task(env, condition="changing")
    assert len(condition_problems(changing)) == 2
    fixed = changing.model_copy(update={"scenario": changing.scenario.model_copy(
        update={"change_trigger": "after the agent lists the order", "revised_request": "change the address instead"})})
    assert condition_problems(fixed) == []
    assert len(condition_problems(_cancel_task(env, condition="infeasible"))) == 2


# ----------------------------------------------------------------- user simulator


def _ambiguous_changing(condition: str) -> Task:
    return Task(id="u", domain="retail", condition=condition,
                scenario=UserScenario(reason_for_call="I want to exchange my keyboard",
                                      withheld_info=["order #W2378156"], change_trigger="after the details",
                                      revised_request="return the keyboard instead"))


def test_user_fidelity_rewards_keeping_details_back_and_stopping():
    task = _ambiguous_changing("ambiguous")
    good = [Message(role="user", content="I want to exchange my keyboard"),
            Message(role="assistant", content="Which order?"), Message(role="user", content="order #W2378156")]
    early = [Message(role="user", content="Exchange the keyboard in #W2378156")] + good[1:]
    assert user_fidelity(task, good, "user_stop").value == 1.0
    assert user_fidelity(task, early, "user_stop").value == 0.5
    assert user_fidelity(task, good, "max_turns").value == 0.5
    assert user_fidelity(task, [], "user_stop").value == 0.0


def test_user_fidelity_wants_the_change_after_the_opening_and_before_the_agent_acts():
    task = _ambiguous_changing("changing")
    writes = {"exchange_delivered_order_items"}
    act = Message(role="assistant", tool_calls=[ToolCall(name="exchange_delivered_order_items")])
    on_time = [Message(role="user", content="I want to exchange my keyboard"),
               Message(role="assistant", content="Here are the details. Confirm?"),
               Message(role="user", content="Actually, return the keyboard instead."), act]
    never = on_time[:2]
    late = [on_time[0], act, on_time[2]]
    assert user_fidelity(task, on_time, "user_stop", write_tools=writes).value == 1.0
    assert user_fidelity(task, never, "user_stop", write_tools=writes).value == pytest.approx(2 / 3)
    assert user_fidelity(task, late, "user_stop", write_tools=writes).value == pytest.approx(3 / 4)


def test_user_fidelity_wants_no_stop_before_the_goal_is_met():
    task = _ambiguous_changing("general")
    said = [Message(role="user", content="I want to exchange my keyboard")]
    failed = Verdict(task_id="u", passed=False, reasons=["wrong_end_state"])
    assert user_fidelity(task, said, "user_stop", Verdict(task_id="u", passed=True)).value == 1.0
    assert user_fidelity(task, said, "user_stop", failed).value == 0.5
    infeasible = task.model_copy(update={"condition": "infeasible"})
    assert user_fidelity(infeasible, said, "user_stop", failed).value == 1.0


def test_reveals_matches_identifiers_and_words():
    assert reveals("it is order #W123", "the order id is #W123")
    assert not reveals("one of my orders", "the order id is #W123")
    assert reveals("I'd like the blue one", "blue")
    assert not reveals("", "blue")
    # a sentence's final period does not hide its last word: gray is not khaki
    assert not reveals("the one with size: large, color: gray", "The color is khaki.")
    assert reveals("the khaki one, color khaki", "The color is khaki.")


# ----------------------------------------------------------------- DSPy adapter


def test_dspy_metric_returns_float_strict_pass_and_gepa_feedback():
    half = DSPyMetric(lambda example, prediction: Score(value=0.5, feedback="half right"))
    assert half(None, None) == 0.5
    assert half(None, None, trace=[]) == 0.0
    full = DSPyMetric(lambda example, prediction: Score(value=1.0))
    assert full(None, None, trace=[]) == 1.0
    rich = half.with_feedback()(None, None, None, "predict", None)
    assert rich.score == 0.5 and rich.feedback == "half right"
    lenient = DSPyMetric(lambda example, prediction: Score(value=0.5), pass_threshold=0.5)
    assert lenient(None, None, trace=[]) == 1.0 and lenient.with_feedback().pass_threshold == 0.5
