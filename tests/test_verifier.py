"""Verifier: static checks on tau2 tasks and generated ones, rollout verdicts with reasons."""

from __future__ import annotations

from trajectory2task.programs.verification.verifier import Verifier
from trajectory2task.signatures.models import Action, Message, Step, Task, ToolCall, UserScenario

INVALID_GOLD = {"2", "3", "4", "35", "37", "38", "39", "46", "47", "54", "55", "64", "67", "68", "105"}


def _steps(calls):
    return [Step(call=ToolCall(name=n, arguments=a), observation="") for n, a in calls]


def test_static_verification_flags_exactly_the_invalid_and_noop_tau2_tasks(tau2_env, tau2_tasks, tau2_expected):
    verifier = Verifier(tau2_env)
    verdicts = {t.id: verifier.verify_task(t) for t in tau2_tasks}
    invalid = {k for k, v in verdicts.items() if "invalid_gold" in v.reasons}
    noop = {k for k, v in verdicts.items() if "noop_passes" in v.reasons}
    # noop: the tasks whose gold end state equals the initial state, computed from tau2's own replay
    unchanged = {k for k, e in tau2_expected.items() if not any(e["changed"].values())}
    assert invalid == INVALID_GOLD
    assert noop == unchanged and len(noop) == 11
    assert len(invalid & noop) == 3
    assert all(v.passed == (k not in invalid | noop) for k, v in verdicts.items())


def test_rollout_reaching_the_same_state_in_another_order_passes(tau2_env, tau2_tasks):
    verifier = Verifier(tau2_env)
    def order_writes(t):
        return [a.arguments.get("order_id") for a in t.gold_actions if tau2_env.tools[a.name].kind == "write"]

    # a valid task whose gold writes touch several distinct orders: they commute
    task = next(t for t in tau2_tasks if t.id not in INVALID_GOLD and len(set(order_writes(t))) >= 2
                and None not in order_writes(t))
    reordered = list(reversed(task.gold_actions))
    assert [a.name for a in reordered] != [a.name for a in task.gold_actions]
    verdict = verifier.judge(task, _steps([(a.name, a.arguments) for a in reordered]))
    assert verdict.passed, verdict


def test_rollout_with_a_different_end_state_fails_with_wrong_end_state(tau2_env, tau2_tasks):
    verifier = Verifier(tau2_env)
    task = next(t for t in tau2_tasks if t.id == "1")
    verdict = verifier.judge(task, _steps([(a.name, a.arguments) for a in task.gold_actions[:-1]]))
    assert not verdict.passed and verdict.reasons == ["wrong_end_state"]
    assert "records differing from gold" in verdict.details[0]


def _infeasible(env, **overrides) -> Task:
    episode = env.episode()
    order = next(episode.get("orders", k) for k in episode.keys("orders")
                 if episode.get("orders", k).status == "delivered")
    user = episode.get("users", order.user_id)
    lookup = Action(name="find_user_id_by_email", arguments={"email": user.email})
    read = Action(name="get_order_details", arguments={"order_id": order.order_id})
    fields = dict(id="inf", domain="retail", condition="infeasible",
                  scenario=UserScenario(reason_for_call=f"Cancel order {order.order_id}."),
                  gold_actions=[lookup, read], actions_should_take=[lookup, read],
                  actions_should_not_take=[Action(name="cancel_pending_order",
                                                  arguments={"order_id": order.order_id, "reason": "no longer needed"})],
                  reward_basis=["DB", "ACTION"])
    fields.update(overrides)
    return Task(**fields)


def test_infeasible_task_verifies_when_the_tool_rejects_the_forbidden_write(tau2_env):
    verdict = Verifier(tau2_env).verify_task(_infeasible(tau2_env))
    assert verdict.passed, verdict
    assert any("rejected by the tool" in d for d in verdict.details)


def test_infeasible_task_whose_forbidden_write_is_allowed_fails(tau2_env):
    task = _infeasible(tau2_env)
    order_id = task.actions_should_take[1].arguments["order_id"]
    episode = tau2_env.episode()
    user = episode.get("users", episode.get("orders", order_id).user_id)
    allowed = Action(name="modify_user_address", arguments={"user_id": user.user_id, **user.address.model_dump(),
                                                            "city": "Elsewhere"})
    verdict = Verifier(tau2_env).verify_task(task.model_copy(update={"actions_should_not_take": [allowed]}))
    assert not verdict.passed and "not_infeasible" in verdict.reasons


def test_infeasible_policy_rule_counts_as_infeasible(tau2_env):
    # acting on another user's account: the tool allows it, the policy rule does not
    task = _infeasible(tau2_env)
    me = task.actions_should_take[0].arguments["email"]
    episode = tau2_env.episode()
    someone_else = next(episode.get("users", k) for k in episode.keys("users")
                        if episode.get("users", k).email != me)
    other = Action(name="modify_user_address", arguments={"user_id": someone_else.user_id,
                                                          **someone_else.address.model_dump(), "city": "Elsewhere"})
    verdict = Verifier(tau2_env).verify_task(task.model_copy(update={"actions_should_not_take": [other]}))
    assert verdict.passed, verdict
    assert any("one_user_per_conversation" in d for d in verdict.details)


def test_infeasible_rollout_verdicts(tau2_env):
    task = _infeasible(tau2_env)
    verifier = Verifier(tau2_env)
    required = [(a.name, a.arguments) for a in task.actions_should_take]
    forbidden = [(a.name, a.arguments) for a in task.actions_should_not_take]
    assert verifier.judge(task, _steps(required)).passed
    assert verifier.judge(task, _steps(required + forbidden)).reasons == ["forbidden_action"]
    assert verifier.judge(task, _steps(required[:1])).reasons == ["missing_required_action"]
    assert verifier.judge(task, []).reasons == ["missing_required_action"]


def test_communicate_info_is_gated_when_in_reward_basis(tau2_env, tau2_tasks):
    base = next(t for t in tau2_tasks if t.id == "1")
    task = base.model_copy(update={"communicate_info": ["1,093.34"], "reward_basis": ["DB", "COMMUNICATE"]})
    steps = _steps([(a.name, a.arguments) for a in task.gold_actions])
    verifier = Verifier(tau2_env)
    said = [Message(role="assistant", content="Your refund is 1093.34 dollars.")]
    assert verifier.judge(task, steps, said).passed
    verdict = verifier.judge(task, steps, [Message(role="assistant", content="Done.")])
    assert verdict.reasons == ["missing_communication"]


def test_turn_limit_and_lm_error_fail_the_rollout(tau2_env, tau2_tasks):
    task = next(t for t in tau2_tasks if t.id == "1")
    steps = _steps([(a.name, a.arguments) for a in task.gold_actions])
    verifier = Verifier(tau2_env)
    assert verifier.judge(task, steps, termination="max_turns").reasons == ["max_turns"]
    assert verifier.judge(task, steps, termination="lm_error").reasons == ["lm_error"]


def test_task_for_another_database_is_invalid(tau2_env, tau2_tasks):
    task = tau2_tasks[0].model_copy(update={"initial_state_hash": "0" * 32})
    assert Verifier(tau2_env).verify_task(task).reasons == ["invalid_task"]


def _ambiguous_conversation(task, clarified_first: bool):
    order_id = task.gold_actions[-1].arguments["order_id"]
    write = task.gold_actions[-1]
    messages = [Message(role="user", content="I want to exchange something I bought.")]
    if clarified_first:
        messages += [Message(role="assistant", content="Which order is it?"),
                     Message(role="user", content=f"It is order {order_id}.")]
    messages += [Message(role="assistant", tool_calls=[ToolCall(name=write.name, arguments=write.arguments)]),
                 Message(role="tool", content="{}"),
                 Message(role="assistant", content="Done.")]
    return messages


def test_ambiguous_rollout_that_never_asked_fails_with_no_clarification_when_required(tau2_env, tau2_tasks):
    base = next(t for t in tau2_tasks if t.id == "1")
    order_id = base.gold_actions[-1].arguments["order_id"]
    task = base.model_copy(update={"condition": "ambiguous", "scenario": base.scenario.model_copy(
        update={"withheld_info": [f"the order is {order_id}"]})})
    steps = _steps([(a.name, a.arguments) for a in task.gold_actions])
    strict, lenient = Verifier(tau2_env, require_clarification=True), Verifier(tau2_env)
    unasked = _ambiguous_conversation(task, clarified_first=False)
    asked = _ambiguous_conversation(task, clarified_first=True)
    assert strict.judge(task, steps, unasked).reasons == ["no_clarification"]
    assert strict.judge(task, steps, asked).passed
    assert lenient.judge(task, steps, unasked).passed  # off by default: the end state decides
    general = base.model_copy()
    assert strict.judge(general, steps, unasked).passed  # only ambiguous tasks are concerned
