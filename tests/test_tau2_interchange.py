"""tau2-bench interchange: import and export tasks; the 114 shared tasks round-trip exactly."""

from __future__ import annotations

import json

import pytest

from trajectory2task.signatures.models import Action, Task, UserScenario
from trajectory2task.store.files import InputFileError, load_tasks
from trajectory2task.store.tau2 import task_from_tau2, task_to_tau2


def test_round_trip_of_all_114_shared_tasks(tau2_tasks_raw):
    for raw in tau2_tasks_raw:
        back = task_to_tau2(task_from_tau2(raw))
        assert json.dumps(back, sort_keys=True) == json.dumps(raw, sort_keys=True), raw["id"]


def test_round_trip_survives_json_serialisation_of_the_model(tau2_tasks_raw):
    for raw in tau2_tasks_raw[:20]:
        task = Task.model_validate_json(task_from_tau2(raw).model_dump_json())
        assert json.dumps(task_to_tau2(task), sort_keys=True) == json.dumps(raw, sort_keys=True)


def test_infeasible_task_exports_retail_3i_fields():
    task = Task(id="inf-1", domain="retail", condition="infeasible",
                scenario=UserScenario(reason_for_call="Cancel my delivered order #W1."),
                gold_actions=[Action(name="get_order_details", arguments={"order_id": "#W1"})],
                actions_should_not_take=[Action(name="cancel_pending_order",
                                                arguments={"order_id": "#W1", "reason": "no longer needed"})],
                actions_should_take=[Action(name="get_order_details", arguments={"order_id": "#W1"})])
    criteria = task_to_tau2(task)["evaluation_criteria"]
    assert criteria["actions_should_not_taken"][0]["name"] == "cancel_pending_order"
    assert criteria["actions_should_taken"][0]["arguments"] == {"order_id": "#W1"}
    again = task_from_tau2(task_to_tau2(task))
    assert again.condition == "infeasible"
    assert again.actions_should_not_take[0].arguments == {"order_id": "#W1", "reason": "no longer needed"}


def test_structured_scenario_fields_are_folded_into_instructions():
    task = Task(id="amb-1", domain="retail", condition="ambiguous",
                scenario=UserScenario(reason_for_call="Exchange my keyboard.", withheld_info=["order #W7"],
                                      change_trigger="the agent lists the details",
                                      revised_request="return it instead"))
    text = task_to_tau2(task)["user_scenario"]["instructions"]["task_instructions"]
    assert "order #W7" in text and "return it instead" in text


def test_bad_tasks_are_reported_by_id_and_field_and_the_good_ones_go_on(tmp_path, tau2_tasks_raw):
    good = tau2_tasks_raw[0]
    missing_scenario = {k: v for k, v in tau2_tasks_raw[1].items() if k != "user_scenario"}
    bad_action = json.loads(json.dumps(tau2_tasks_raw[2]))
    bad_action["evaluation_criteria"]["actions"][0]["name"] = 7
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps([good, missing_scenario, bad_action]))
    tasks, problems = load_tasks(path)
    assert [t.id for t in tasks] == [good["id"]]
    assert [(p.entry_id, p.field) for p in problems] == [
        (tau2_tasks_raw[1]["id"], "user_scenario"), (tau2_tasks_raw[2]["id"], "evaluation_criteria.actions[0].name")]
    with pytest.raises(InputFileError, match=f"task {tau2_tasks_raw[1]['id']}: user_scenario"):
        load_tasks(path, strict=True)


def test_json_lines_of_our_own_tasks_load(tmp_path):
    task = Task(id="t1", domain="retail", scenario=UserScenario(reason_for_call="x"))
    path = tmp_path / "tasks.jsonl"
    path.write_text(task.model_dump_json() + "\n" + task_to_tau2(task.model_copy(update={"id": "t2"})).__repr__()
                    .replace("'", '"').replace("None", "null") + "\n")
    tasks, problems = load_tasks(path)
    assert [t.id for t in tasks] == ["t1", "t2"] and not problems
