"""Lint: each rule finds its defect, leaves clean text alone, and offline output has no finding."""

from __future__ import annotations

import pytest

from trajectory2task.domains import get_domain
from trajectory2task.programs.verification.lint import lint_task, private_ids
from trajectory2task.signatures.models import Task, TaskDescription, UserScenario
from tests.offline_tasks import generate_offline


@pytest.fixture(scope="module")
def env():
    domain = get_domain("retail")
    return domain.environment(domain.generate_db(11, 150))


def _task(condition="general", purpose="general: the user asks for 1 change(s): cancel pending order.", **scenario):
    fields = {"reason_for_call": "You want to cancel your pending order #W1 because it is no longer needed.",
              "task_instructions": "Answer the agent's questions."}
    fields.update(scenario)
    return Task(id="t", domain="retail", condition=condition, scenario=UserScenario(**fields),
                description=TaskDescription(purpose=purpose))


def _rules(task, ids=()):
    return sorted({f.rule for f in lint_task(task, ids)})


def test_clean_text_has_no_finding():
    assert lint_task(_task()) == []


@pytest.mark.parametrize("field, text, rule", [
    ("change_trigger", "When when the agent asks you to confirm", "doubled_word"),
    ("reason_for_call", "You want a refund.; Then a new one.", "double_punctuation"),
    ("reason_for_call", "Exchange the mouse for the one with color: black, grip: claw.", "option_list"),
    ("reason_for_call", "Cancel your order (reason: no longer needed).", "option_list"),
])
def test_each_rule_finds_its_defect(field, text, rule):
    assert _rules(_task(**{field: text})) == [rule]


def test_a_sentence_said_twice_is_found_across_fields():
    twice = "You would rather have the blue one instead."
    task = _task(task_instructions=f"Later say: {twice}", revised_request=twice, change_trigger="the agent asks")
    assert "doubled_sentence" in _rules(task)


def test_the_exported_instructions_are_linted_too():
    # the trigger starts with "when" and the export adds its own "When"; the fold removes the doubling
    task = _task(change_trigger="when the agent asks you to confirm", revised_request="You want the blue one.")
    assert "When when" not in task.scenario.folded_instructions()
    assert lint_task(task) == []


def test_raw_ids_are_found_only_for_ids_a_customer_would_not_know(env):
    ids = private_ids(env)
    db = env.base.db
    user = next(u for u in db.users.values() if u.orders)
    method = next(iter(user.payment_methods))
    assert method in ids and user.user_id in ids and user.orders[0] not in ids
    assert _rules(_task(reason_for_call=f"Pay with {method}."), ids) == ["raw_id"]
    assert _rules(_task(reason_for_call=f"It is about order {user.orders[0]}."), ids) == []


def test_descriptions_must_say_what_the_task_is():
    assert _rules(_task(purpose="general task from trajectory x-00001: cancel_pending_order")) == ["stale_description"]
    assert _rules(_task(condition="changing", purpose="general: the user asks for a cancellation.")) == [
        "stale_description"]
    assert _rules(_task(condition="changing", purpose="changing: first a cancellation, then a return.")) == []


def test_offline_generation_keeps_only_tasks_without_findings_and_stores_them(env):
    sink = generate_offline(env, n=10, seed=2)
    assert sink.tasks and all(t.lint is not None for t in sink.tasks)  # every task is linted
    findings = [(t.id, f) for t in sink.tasks for f in t.lint or []]
    assert findings == []
    # and the lint agrees when run again from the task alone
    ids = private_ids(env)
    assert all(lint_task(t, ids) == [] for t in sink.tasks)


def test_a_decimal_point_does_not_end_a_sentence():
    kettle = "You want the kettle with capacity 0.5 liters and color black. Then you want the kettle with capacity 0.7 liters."
    assert lint_task(_task(reason_for_call=kettle)) == []
