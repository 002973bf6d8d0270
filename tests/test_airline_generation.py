"""Airline generation kit: offline `t2t generate --domain airline --n 40` in four conditions, every
write tool reached, infeasible tasks from the policy rules and tool checks, bench calibration,
and the same command through the LM programs (a scripted local LM server)."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trajectory2task.domains import get_domain
from trajectory2task.domains.runtime import PolicyContext
from trajectory2task.store import TaskStore
from trajectory2task.cli import app
from tests.airline_ref import require_airline
from tests.llm_server import ScriptedLLMServer, Text, chat_fields, output_field_names
from tests.test_generate_lm import _adaptation_answer, _inputs, _json

CONDITIONS = ("general", "ambiguous", "changing", "infeasible")
AIRLINE = get_domain("airline")
WRITE_TOOLS = sorted(t.name for t in AIRLINE.tools if t.kind == "write")


def _generate(store: Path, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["generate", "--domain", "airline", "--store", str(store), "--json", *args],
                                env={k: None for k in os.environ if k.startswith("T2T_")})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """`t2t generate --domain airline --n 40` as a user runs it: on a freshly generated database."""
    store = tmp_path_factory.mktemp("airline_gen") / "t2t.duckdb"
    summary = _generate(store, "--n", "40")
    with TaskStore(store, read_only=True) as s:
        _, [(config,)] = s.query("SELECT config FROM runs")
    config = json.loads(config)
    env = AIRLINE.environment(AIRLINE.generate_db(config["seed"], config["db_users"]))
    return store, summary, env


@pytest.fixture(scope="module")
def generated_on_tau2(tmp_path_factory):
    ref = require_airline()
    store = tmp_path_factory.mktemp("airline_gen_tau2") / "t2t.duckdb"
    summary = _generate(store, "--n", "40", "--db", str(ref / "db.json"))
    return store, summary, AIRLINE.environment(AIRLINE.load_db(str(ref / "db.json")))


def _verified(store: Path) -> dict[str, int]:
    with TaskStore(store, read_only=True) as s:
        _, rows = s.query("SELECT condition, count(*) FILTER (WHERE verified) FROM tasks_latest GROUP BY 1")
    return dict(rows)


def _tasks(store: Path, where: str = "TRUE"):
    with TaskStore(store, read_only=True) as s:
        return s.tasks(where)


def _refusal(env, task) -> str:
    """Replays an infeasible task's required actions, then its forbidden write on a fork:
    'tool' when a tool refuses it, the broken rule's id when a policy rule does, '' if neither."""
    episode = env.episode()
    user_id = None
    for action in task.actions_should_take:
        result = episode.call(action.name, action.arguments)
        assert not result.error, (task.id, action.name, result.output)
        spec = env.tools[action.name]
        if spec.authenticates is not None and user_id is None:
            user_id = spec.authenticates(action.arguments, result.output)
    assert user_id is not None
    forbidden = task.actions_should_not_take[0]
    if episode.fork().call(forbidden.name, forbidden.arguments).error_kind == "refused":
        return "tool"
    violations = env.policy_violations(episode, forbidden.name, forbidden.arguments, PolicyContext(user_id=user_id))
    return violations[0].split(":")[0] if violations else ""


@pytest.mark.parametrize("which", ["generated", "generated_on_tau2"])
def test_n40_verifies_at_least_ten_tasks_in_each_condition(which, request):
    store, summary, _ = request.getfixturevalue(which)
    assert summary["source"] == "baseline" and summary["items"] == 40
    verified = _verified(store)
    assert all(verified.get(c, 0) >= 10 for c in CONDITIONS), verified
    # every stored task passed its static verification
    with TaskStore(store, read_only=True) as s:
        _, [(unverified,)] = s.query("SELECT count(*) FILTER (WHERE NOT verified) FROM tasks_latest")
    assert unverified == 0


@pytest.mark.parametrize("which", ["generated", "generated_on_tau2"])
def test_infeasible_tasks_are_refused_by_policy_rules_and_tool_checks(which, request):
    store, _, env = request.getfixturevalue(which)
    refusals = Counter(_refusal(env, t) for t in _tasks(store, "condition = 'infeasible'"))
    assert "" not in refusals, refusals
    rules = {r.rule_id for r in AIRLINE.policy_rules}
    assert len(set(refusals) & rules) >= 5, refusals  # drawn from several policy rules, not one


def test_every_write_tool_is_reached(generated, generated_on_tau2):
    for store, _, _ in (generated, generated_on_tau2):
        used = Counter(a.name for t in _tasks(store, "condition = 'general'") for a in t.gold_actions
                       if a.name in WRITE_TOOLS)
        assert sorted(used) == WRITE_TOOLS, used


def test_gold_writes_pass_the_policy_and_replay_to_the_expected_state(generated):
    store, _, env = generated
    for task in _tasks(store, "condition IN ('general', 'ambiguous', 'changing')"):
        episode = env.episode()
        user_id = None
        for action in task.gold_actions:
            spec = env.tools[action.name]
            if spec.kind == "write":
                assert env.policy_violations(episode, action.name, action.arguments,
                                             PolicyContext(user_id=user_id)) == [], (task.id, action)
            result = episode.call(action.name, action.arguments)
            assert not result.error, (task.id, action.name, result.output)
            if spec.authenticates is not None and user_id is None:
                user_id = spec.authenticates(action.arguments, result.output)
        assert episode.state_hash() == task.expected_state_hash


def test_requests_name_no_payment_or_flight_ids(generated):
    """Customers name cards by brand and digits and flights by time; they do quote reservation ids."""
    store, _, _ = generated
    for task in _tasks(store, "condition = 'general'"):
        text = task.scenario.reason_for_call
        assert not re.search(r"credit_card_\d|HAT\d{3}", text), text
        assert not re.search(r"\{'|\"flight_number\"", text), text


def test_bench_calibrates_on_the_generated_tasks(generated):
    store, _, _ = generated
    result = CliRunner().invoke(app, ["bench", "--domain", "airline", "--store", str(store), "--json"],
                                env={k: None for k in os.environ if k.startswith("T2T_")})
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    cells, summary = lines[:-1], lines[-1]
    assert summary["calibration"] == []
    total = sum(_verified(store).values())
    by_agent = {c["agent_model"]: c for c in cells if c["condition"] == "all"}
    assert by_agent["do-nothing"]["passed"] == 0 and by_agent["oracle"]["passed"] == total == \
        by_agent["oracle"]["rollouts"]


# ---------------------------------------------------------------- through the LM programs


ASKED: list[str] = []  # the programs that sent requests, in order


def _respond(body: dict[str, Any]):
    """A scripted LM for airline: authenticate by user id, read the reservation, cancel it."""
    fields = output_field_names(body)
    inputs = _inputs(body)
    ASKED.append("explorer" if fields == ["tool_call"] else "writer" if "communicate_info" in fields else "adapter")
    if fields == ["tool_call"]:
        steps = _json(inputs["trajectory"]) or []
        if not steps:
            user_id = re.search(r"user id (\w+)", inputs["seed_entity"]).group(1)
            answer = {"tool_call": {"name": "get_user_details", "arguments": {"user_id": user_id}}}
        else:
            named = re.search(r"reservation ([A-Z0-9]{6})\b", inputs["seed_entity"])
            rid = named.group(1) if named else json.loads(steps[0]["observation"])["reservations"][0]
            if len(steps) == 1:
                answer = {"tool_call": {"name": "get_reservation_details", "arguments": {"reservation_id": rid}}}
            else:
                answer = {"tool_call": {"name": "cancel_reservation", "arguments": {"reservation_id": rid}}}
    elif "communicate_info" in fields:
        facts = "; ".join(_json(inputs["required_facts"]))
        answer = {"scenario": {"reason_for_call": f"You want to cancel a trip. Details: {facts}.",
                               "task_instructions": "Answer what the agent asks."}, "communicate_info": [],
                  "claims": []}
    else:
        answer = _adaptation_answer(fields, inputs)
    return Text(json.dumps(answer)) if body.get("response_format") else Text(chat_fields(**answer))


def test_generate_with_an_lm_uses_the_lm_programs(tmp_path):
    store = tmp_path / "lm.duckdb"
    ASKED.clear()
    with ScriptedLLMServer(responder=_respond) as server:
        result = CliRunner().invoke(app, [
            "generate", "--domain", "airline", "--users", "60", "--seed", "2", "--lm", "openai/gpt-4o-mini",
            "--api-base", server.base_url, "--n", "6", "--workers", "1", "--store", str(store), "--json"],
            env={k: None for k in os.environ if k.startswith("T2T_")})
        assert server.errors == []
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["source"] == "lm"
    assert set(ASKED) == {"explorer", "writer", "adapter"}, Counter(ASKED)
    verified = _verified(store)
    assert set(verified) == set(CONDITIONS) and all(verified.values()), verified
    tasks = _tasks(store)
    assert tasks and all(t.provenance.source == "lm" for t in tasks)
    general = _tasks(store, "condition = 'general'")
    assert all([a.name for a in t.gold_actions][-1] == "cancel_reservation" for t in general)
