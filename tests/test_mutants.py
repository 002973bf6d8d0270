"""Mutants: every plausible wrong agent fails a kept task, judged by the verifier as a rollout."""

from __future__ import annotations

from collections import Counter

import pytest

from trajectory2task.domains import get_domain
from trajectory2task.programs.verification.mutants import derive_mutants, run_mutants
from trajectory2task.programs.verification.verifier import Verifier, execute_calls
from trajectory2task.signatures.models import Action, Task, ToolCall, UserScenario
from tests.offline_tasks import generate_offline

DB_SEED, DB_USERS = 3, 200


@pytest.fixture(scope="module")
def env():
    domain = get_domain("retail")
    return domain.environment(domain.generate_db(DB_SEED, DB_USERS))


@pytest.fixture(scope="module")
def offline(env):
    return generate_offline(env, n=16, seed=5)


def _user_with_order(env, status: str):
    episode = env.episode()
    order = next(episode.get("orders", k) for k in sorted(episode.keys("orders"))
                 if episode.get("orders", k).status == status)
    return episode.get("users", order.user_id), order


def test_a_refused_forbidden_write_still_fails_the_rollout(env):
    """The tool refuses the cancellation of a delivered order, so the database is unchanged;
    the attempt was issued, and the verdict counts it."""
    user, order = _user_with_order(env, "delivered")
    lookup = Action(name="find_user_id_by_email", arguments={"email": user.email})
    read = Action(name="get_order_details", arguments={"order_id": order.order_id})
    forbidden = Action(name="cancel_pending_order", arguments={"order_id": order.order_id, "reason": "no longer needed"})
    task = Task(id="inf", domain="retail", condition="infeasible", scenario=UserScenario(reason_for_call="x"),
                gold_actions=[lookup, read], actions_should_take=[lookup, read], actions_should_not_take=[forbidden],
                expected_state_hash=env.initial_hash(), reward_basis=["DB", "ACTION"])
    episode = env.episode()
    steps = execute_calls(episode, [lookup, read, forbidden])
    assert steps[-1].error and episode.state_hash() == env.initial_hash()
    verdict = Verifier(env).judge(task, steps)
    assert verdict.reasons == ["forbidden_action"]
    report = run_mutants(Verifier(env), task)
    assert report.gold_passed and report.passing == []
    assert [o.reasons for o in report.outcomes if o.kind == "forbidden_attempt"] == [["forbidden_action"]]


def test_a_write_that_a_later_write_overwrites_is_found_and_rejected(env):
    """Two default-address changes: the first is not necessary, so dropping it passes."""
    user, _ = _user_with_order(env, "pending")
    address = user.address.model_dump()
    first = Action(name="modify_user_address", arguments={"user_id": user.user_id, **address, "city": "Firstville"})
    second = Action(name="modify_user_address", arguments={"user_id": user.user_id, **address, "city": "Lastville"})
    lookup = Action(name="find_user_id_by_email", arguments={"email": user.email})
    gold = [lookup, first, second]
    end = env.episode()
    execute_calls(end, gold)
    task = Task(id="twice", domain="retail", scenario=UserScenario(reason_for_call="x"), gold_actions=gold,
                expected_state_hash=end.state_hash(), description=None)
    report = run_mutants(Verifier(env), task)
    assert report.passing == ["drop_write[1]:modify_user_address"]
    assert Verifier(env).verify_task(task).passed  # the plain static check cannot see it
    verdict = Verifier(env, discriminative=True).verify_task(task)
    assert verdict.reasons == ["mutant_passes"] and "drop_write[1]:modify_user_address" in verdict.details[0]


def test_a_changing_task_without_its_forbidden_first_write_lets_first_then_revised_pass(env, offline):
    """The first goal's write is recorded as an action that must not be taken: without it, an
    agent that makes the first address change and then the revised one ends where the gold does."""
    changing = [t for t in offline.kept() if t.condition == "changing"]
    assert changing and all(t.first_goal and t.actions_should_not_take for t in changing)
    verifier = Verifier(env)
    address = [t for t in changing if t.actions_should_not_take[0].name in ("modify_user_address",
                                                                            "modify_pending_order_address")]
    for task in address:
        stripped = task.model_copy(update={"actions_should_not_take": []})
        assert "first_then_revised" in run_mutants(verifier, stripped).passing
        assert "first_then_revised" not in run_mutants(verifier, task).passing


def test_every_kept_offline_task_fails_all_its_mutants_and_its_gold_passes(env, offline):
    verifier = Verifier(env)
    kinds: Counter[tuple[str, str]] = Counter()
    for task in offline.kept():
        report = run_mutants(verifier, task)
        assert report.gold_passed, (task.id, report.gold_reasons)
        assert report.passing == [], (task.id, report.passing)
        kinds.update((task.condition, o.kind) for o in report.outcomes)
    for condition, kind in [("general", "drop_write"), ("changing", "first_goal"), ("changing", "first_then_revised"),
                            ("ambiguous", "other_reading"), ("infeasible", "forbidden_attempt")]:
        assert kinds[(condition, kind)] > 0, (condition, kind, kinds)


def test_ambiguous_tasks_have_two_or_more_readings_that_run(env, offline):
    for task in [t for t in offline.kept() if t.condition == "ambiguous"]:
        report = run_mutants(Verifier(env), task)
        assert report.executable_readings is not None and report.executable_readings >= 2
        assert sum(r.target for r in task.readings) == 1


def test_mutants_come_from_the_task_alone(env, offline):
    task = next(t for t in offline.kept() if t.condition == "general")
    writes = [a for a in task.gold_actions if env.tools[a.name].kind == "write"]
    mutants = derive_mutants(env, task)
    assert [m.kind for m in mutants] == ["do_nothing"] + ["drop_write"] * len(writes)
    assert all(len(m.calls) == len(task.gold_actions) - 1 for m in mutants[1:])


def test_mutant_report_on_tau2_retail(tau2_env, tau2_tasks):
    """Reported, not asserted to be zero: tau2's set has tasks code can show to be weak."""
    verifier = Verifier(tau2_env)
    reports = [run_mutants(verifier, t) for t in tau2_tasks]
    noop = {r.task_id for r in reports if "do_nothing" in r.passing}
    static = {t.id for t in tau2_tasks if "noop_passes" in verifier.verify_task(t).reasons}
    assert noop == static  # the do-nothing mutant is the static noop check, replayed another way
    failing_gold = {r.task_id for r in reports if not r.gold_passed}
    assert failing_gold == {t.id for t in tau2_tasks if verifier.replay_gold(t).errors}
    weak_writes = Counter(o.name.split(":")[1] for r in reports for o in r.outcomes
                          if o.kind == "drop_write" and o.passed)
    print(f"tau2 retail: {len(noop)} noop-passable, {len(failing_gold)} failing gold, "
          f"non-discriminative writes by tool: {dict(weak_writes)}")
    assert len(reports) == len(tau2_tasks)


def test_infeasible_tasks_whose_policy_requires_a_hand_off_fail_without_it():
    """Airline's policy sends a user who wants a trip already under way cancelled to a human
    agent: the hand-off is a required action, so an agent that only refuses fails."""
    domain = get_domain("airline")
    env = domain.environment(domain.generate_db(0, 500))
    sink = generate_offline(env, n=40, seed=0)
    handoffs = [t for t in sink.kept() if any(env.tools[a.name].ends_conversation for a in t.actions_should_take)]
    assert handoffs
    for task in handoffs:
        report = run_mutants(Verifier(env), task)
        dropped = [o for o in report.outcomes if o.kind == "drop_write" and o.name.endswith("transfer_to_human_agents")]
        assert report.gold_passed and dropped and dropped[0].reasons == ["missing_required_action"]
        assert task.actions_should_take[-1].compare_args == []


def test_verify_mutants_prints_its_table_and_summary_and_exits_zero(tmp_path):
    # the README's `t2t verify tasks.json --mutants` (a NameError after the table once)
    from tests.cli import run_t2t

    store, tasks = tmp_path / "t2t.duckdb", tmp_path / "tasks.json"
    assert run_t2t("generate", "--n", "1", "--conditions", "general", "--store", str(store)).returncode == 0
    assert run_t2t("export", "--format", "tau2", "--out", str(tasks), "--store", str(store)).returncode == 0
    result = run_t2t("verify", str(tasks), "--mutants")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "tasks with a passing mutant" in result.stdout
