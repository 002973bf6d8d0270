"""Offline generation is discriminative in every built-in domain, on a fresh and on tau2's database.

For retail and airline, each on a freshly generated database and on tau2's own, the
offline pipeline's kept tasks are audited by ``t2t audit``'s code and, where it can be done
without it, by code here that shares nothing with the generator: a replay-only judge for
the wrong agents, a reader of the raw database JSON for the claims, regular expressions
for the text, and the payment records the tools write for the amounts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from trajectory2task.domains import get_domain
from trajectory2task.programs.verification.audit import audit
from tests.offline_tasks import generate_offline

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
N = 40
CASES = [("retail", "fresh"), ("retail", "tau2"), ("airline", "fresh"), ("airline", "tau2")]


def _environment(domain_name: str, source: str) -> tuple[Any, dict[str, Any]]:
    domain = get_domain(domain_name)
    if source == "fresh":
        db = domain.generate_db(0, 200)
        return domain.environment(db), json.loads(db.model_dump_json())
    path = REFERENCE / f"tau2-{domain_name}" / "db.json"
    if not path.is_file():
        pytest.skip(f"tau2 {domain_name} reference data not found at {path.parent}")
    return domain.environment(domain.load_db(str(path))), json.loads(path.read_text())


@pytest.fixture(scope="module", params=CASES, ids=[f"{d}-{s}" for d, s in CASES])
def generated(request):
    env, raw = _environment(*request.param)
    return env, raw, generate_offline(env, n=N, seed=0).kept()


# ---------------------------------------------------------------- a judge of our own


def _replay(env, calls) -> tuple[str, list[tuple[str, dict, str, bool]]]:
    episode = env.episode()
    steps = []
    for call in calls:
        result = episode.call(call.name, call.arguments)
        steps.append((call.name, dict(call.arguments), result.output, result.error))
    return episode.state_hash(), steps


def _same(a, b) -> bool:
    return a.name == b.name and json.dumps(a.arguments, sort_keys=True) == json.dumps(b.arguments, sort_keys=True)


def _passes(env, task, calls, speaks: bool = True) -> bool:
    """Replay and compare: the end state, no forbidden call issued (refused or not), every
    required call made, and silence fails a task that asks for something to be said."""
    end, _ = _replay(env, calls)
    if end != task.expected_state_hash:
        return False
    if any(_same(c, f) for c in calls for f in task.actions_should_not_take):
        return False
    required = task.actions_should_take
    if any(not any(c.name == r.name and all(json.dumps(c.arguments.get(k), sort_keys=True)
                                            == json.dumps(r.arguments.get(k), sort_keys=True)
                                            for k in (r.compare_args if r.compare_args is not None else r.arguments))
                   for c in calls) for r in required):
        return False
    return speaks or not task.communicate_info


def _acts(env, name: str) -> bool:
    spec = env.tools[name]
    return spec.kind == "write" or spec.ends_conversation


def test_every_wrong_agent_fails_by_replay_alone(generated):
    env, _, tasks = generated
    assert {t.condition for t in tasks} == {"general", "ambiguous", "changing", "infeasible"}
    for task in tasks:
        gold = list(task.gold_actions)
        assert _passes(env, task, gold), task.id
        assert not _passes(env, task, [], speaks=False), f"{task.id}: do-nothing passes"
        calls = list(task.actions_should_take or gold) if task.condition == "infeasible" else gold
        for index, call in enumerate(calls):
            if _acts(env, call.name):
                assert not _passes(env, task, calls[:index] + calls[index + 1:]), f"{task.id}: {call.name} skippable"
        if task.condition == "infeasible":
            for forbidden in task.actions_should_not_take:
                assert not _passes(env, task, calls + [forbidden]), task.id
        if task.condition == "changing":
            assert task.first_goal and not _passes(env, task, list(task.first_goal)), task.id
            first_writes = [a for a in task.first_goal if _acts(env, a.name) and not any(_same(a, g) for g in gold)]
            assert first_writes and not _passes(env, task, first_writes + gold), task.id
            # the revised write changes its record from what is on file just before it
            for index, action in enumerate(gold):
                if _acts(env, action.name) and not any(_same(action, f) for f in task.first_goal):
                    before, _ = _replay(env, gold[:index])
                    after, _ = _replay(env, gold[:index + 1])
                    assert before != after, task.id
        if task.condition == "ambiguous":
            others = [r for r in task.readings if not r.target]
            assert others, f"{task.id}: only one reading"
            for reading in others:
                mutated = list(gold)
                mutated[reading.action_index] = reading.action
                assert not _passes(env, task, mutated), f"{task.id}: reading {reading.candidate} passes"


# ---------------------------------------------------------------- claims, read from the raw JSON


def _lookup(raw: dict[str, Any], claim) -> Any:
    value: Any = raw.get(claim.table, {}).get(claim.key)
    for step in claim.path:
        if isinstance(step, int):
            value = value[step] if isinstance(value, list) and -len(value) <= step < len(value) else None
        elif isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list):
            value = next((e for e in value if isinstance(e, dict) and step in e.values()), None)
        else:
            value = None
    return value


def test_every_claim_holds_in_the_raw_database(generated):
    _, raw, tasks = generated
    claimed = 0
    for task in tasks:
        for claim in task.claims:
            found = _lookup(raw, claim)
            claimed += 1
            if claim.op == "eq":
                assert found == claim.value, (task.id, claim)
            elif claim.op == "ne":
                assert found is not None and found != claim.value, (task.id, claim)
            else:
                assert claim.value in found, (task.id, claim)
    assert claimed > len(tasks)  # the writer and the adapter state what their words assert


# ---------------------------------------------------------------- text, by regular expressions


def _private_ids(domain: str, raw: dict[str, Any]) -> set[str]:
    """Ids no customer says: payment-method ids; in retail also item, product and user ids."""
    out = {k for u in raw["users"].values() for k in u.get("payment_methods", {})}
    if domain == "retail":
        out |= set(raw["users"]) | set(raw["products"])
        out |= {v for p in raw["products"].values() for v in p["variants"]}
    return {i for i in out if len(i) >= 5 and re.search(r"\d", i)}


def test_the_text_is_what_a_customer_would_say(generated):
    env, raw, tasks = generated
    private = _private_ids(env.domain.name, raw)
    for task in tasks:
        s = task.scenario
        text = "\n".join(t for t in (s.persona, s.reason_for_call, s.known_info, s.unknown_info, s.task_instructions,
                                     s.change_trigger, s.revised_request, *s.withheld_info) if t)
        assert not re.search(r"\b(\w+)\s+\1\b", text, re.IGNORECASE), (task.id, text)
        assert not re.search(r"[.;,]\s*[.;,]", text.replace("...", "")), (task.id, text)
        assert not re.search(r"\b\w+: \w+, \w+: \w+", text), (task.id, text)
        leaked = {token for token in re.findall(r"[A-Za-z0-9_#]+", text) if token in private}
        assert not leaked, (task.id, leaked)
        assert task.lint == [], (task.id, task.lint)


# ---------------------------------------------------------------- breadth and amounts


def _amount(text: str) -> float:
    return float(text)


def test_breadth_items_are_present(generated):
    env, _, tasks = generated
    writes = {n for n, s in env.tools.items() if s.kind == "write"}
    handoff = {n for n, s in env.tools.items() if s.ends_conversation}
    assert sum(sum(a.name in writes for a in t.gold_actions) >= 3 for t in tasks) >= 3
    told = [t for t in tasks if t.communicate_info]
    assert len(told) >= len(tasks) // 5 and all("COMMUNICATE" in t.reward_basis for t in told)
    assert any(t.condition == c for t in told for c in ("general", "ambiguous", "changing"))
    assert sum(any(a.name == "calculate" for a in t.gold_actions) for t in tasks) >= 3
    handed = [t for t in tasks if t.condition == "infeasible" and any(a.name in handoff for a in t.actions_should_take)]
    if env.domain.name == "airline":  # a trip under way: the policy sends the user to a human
        assert handed, "no infeasible task whose correct handling is a hand-off"
    else:  # tau2's retail policy refuses; it never requires a hand-off for a refusal
        assert not handed, [t.id for t in handed]


def test_calculate_answers_equal_the_amounts_the_tools_charge(generated):
    env, _, tasks = generated
    checked = charged = 0
    for task in tasks:
        _, steps = _replay(env, task.gold_actions)
        amounts = [_amount(i) for i in task.communicate_info if re.fullmatch(r"-?\d+(\.\d+)?", i)]
        for index, (name, arguments, output, error) in enumerate(steps):
            if name != "calculate":
                continue
            assert not error and any(abs(float(output) - a) < 0.005 for a in amounts), (task.id, output, amounts)
            checked += 1
        # each amount is what a write of the gold then charges or refunds, where the tool records it
        episode = env.episode()
        for action in task.gold_actions:
            prior = episode.fork()
            episode.call(action.name, action.arguments)
            if env.tools[action.name].kind != "write":
                continue
            for table, keys in episode.diff(prior).items():
                for key in keys:
                    record = episode.record(table, key) or {}
                    if "payment_history" not in record:
                        continue
                    old = (prior.record(table, key) or {}).get("payment_history", [])
                    moved = abs(sum(p["amount"] for p in record["payment_history"][len(old):]))
                    if moved and any(abs(moved - a) < 0.005 for a in amounts):
                        charged += 1
    assert checked >= 3 and charged >= 3


def test_audit_finds_nothing_and_reports_breadth_per_condition(generated):
    env, _, tasks = generated
    report = audit(env, tasks)
    assert not any(report.counts.values()), report.findings[:5]
    d = report.diversity
    assert set(d.by_condition_and_tool) == {"general", "ambiguous", "changing", "infeasible"}
    assert d.writes_per_task["3+"] > 0 and d.communicate_share > 0 and d.generic_tool_tasks > 0
    assert (d.handoff_tasks > 0) == (env.domain.name == "airline")
