"""`t2t audit`'s rows that only a domain's policy defines (trajectory2task.domains.audit_checks).

Hand-made tasks (raw tau2 JSON, the records picked from the raw db.json by this file's own
reading of it) that each row must flag, beside the same task made right, which it must not;
tau2's own task sets and our generated tasks, on which every row finds nothing; and a domain
without a check for a class, whose row reads "n/a".
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import trajectory2task as t2t
from tests.cli import REPO, run_t2t
from trajectory2task.domains import get_domain
from trajectory2task.domains.audit_checks import DOMAIN_AUDIT_CLASSES
from trajectory2task.programs.verification.audit import PROBLEMS, audit

REFERENCE = REPO.parent / "shared" / "reference"


def _task(task_id: str, condition: str, reason: str, actions: list[dict[str, Any]],
          forbidden: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    calls = [{"action_id": str(i), **a} for i, a in enumerate(actions)]
    criteria: dict[str, Any] = {"actions": calls, "reward_basis": ["DB"]}
    if forbidden is not None:
        criteria.update(actions_should_not_taken=forbidden, actions_should_taken=calls, reward_basis=["DB", "ACTION"])
    return {"id": task_id, "user_scenario": {"instructions": {"reason_for_call": reason, "known_info": "",
                                                              "task_instructions": "", "domain": ""}},
            "evaluation_criteria": criteria, "t2t": {"condition": condition}}


def _audit(tmp: Path, domain: str, db: dict[str, Any], tasks: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    (tmp / "db.json").write_text(json.dumps(db))
    (tmp / "tasks.json").write_text(json.dumps(tasks))
    args = ("audit", str(tmp / "tasks.json"), "--domain", domain, "--db", str(tmp / "db.json"))
    done, table = run_t2t(*args, "--json", timeout=300), run_t2t(*args, timeout=300)
    assert done.returncode == 0 and table.returncode == 0, done.stderr + table.stderr
    return json.loads(done.stdout), table.stdout


def _flagged(report: dict[str, Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for finding in report["findings"]:
        out.setdefault(finding["problem"], set()).add(finding["task_id"])
    return out


def _generated_db(domain: str) -> dict[str, Any]:
    return json.loads(get_domain(domain).generate_db(5, 200).model_dump_json())


# ---------------------------------------------------------------- retail


def _says_its_option(name: str, value: str) -> bool:
    return set(name.lower().split()) <= set(value.lower().split()) or value.lower() in name.lower().split("/")


def test_retail_rows_flag_hand_made_faults_and_not_their_fixes(tmp_path):
    db = _generated_db("retail")
    processed = next(o for o in db["orders"].values() if o["status"] == "processed")
    delivered = next(o for o in db["orders"].values() if o["status"] == "delivered")
    variants = {k: (p, v) for p in db["products"].values() for k, v in p["variants"].items()}
    item = delivered["items"][0]
    product = variants[item["item_id"]][0]
    # another variant of the same product, with an option whose value alone does not say it
    other, option, value = next((key, option, value) for key, variant in product["variants"].items()
                                if key != item["item_id"] for option, value in variant["options"].items()
                                if not _says_its_option(option, value))
    look = {"name": "get_order_details", "arguments": {"order_id": processed["order_id"]}}
    cancel = {"name": "cancel_pending_order", "arguments": {"order_id": processed["order_id"],
                                                            "reason": "no longer needed"}}
    handoff = {"name": "transfer_to_human_agents", "arguments": {"summary": "The user wants the order cancelled."}}
    payment = next(iter(db["users"][delivered["user_id"]]["payment_methods"]))
    read = {"name": "get_order_details", "arguments": {"order_id": delivered["order_id"]}}

    def exchange(new: str) -> dict[str, Any]:
        return {"name": "exchange_delivered_order_items", "arguments": {
            "order_id": delivered["order_id"], "item_ids": [item["item_id"]], "new_item_ids": [new],
            "payment_method_id": payment}}

    name = item["name"]
    tasks = [
        # a processed order's cancellation is refused, never handed off
        _task("handoff-bad", "infeasible", "You want to cancel your order.", [look, handoff], [cancel]),
        _task("handoff-ok", "infeasible", "You want to cancel your order.", [look], [cancel]),
        # the very variant held, worded as if it were another one
        _task("same-bad", "infeasible", f"You want to exchange the {name} for a new one with the options "
                                        "you like.", [read], [exchange(item["item_id"])]),
        _task("same-ok", "infeasible", f"You want to exchange the {name} for another one exactly like it.",
              [read], [exchange(item["item_id"])]),
        # an option value standing alone, then said with its name
        _task("bare-bad", "general", f"You want to exchange the {name} for one with {value}.", [read, exchange(other)]),
        _task("bare-ok", "general", f"You want to exchange the {name} for one with {option} {value}.",
              [read, exchange(other)]),
    ]
    report, table = _audit(tmp_path, "retail", db, tasks)
    flagged = _flagged(report)
    assert flagged.get("handoff_not_required") == {"handoff-bad"}, report["findings"]
    assert flagged.get("same_variant_request") == {"same-bad", "bare-bad"}, report["findings"]
    assert report["counts"]["handoff_not_required"] == 1 and report["counts"]["same_variant_request"] == 2
    # retail's policy sets no compensation: the row is not applicable, not a clean 0
    assert report["counts"]["compensation_off_policy"] is None
    row = next(line for line in table.splitlines() if "compensation_off_policy" in line)
    assert "n/a" in row and "0" not in row.replace("compensation_off_policy", "")
    assert "n/a: a class only a domain's policy defines" in table


# ---------------------------------------------------------------- airline


def _status(db: dict[str, Any], segment: dict[str, Any]) -> str | None:
    entry = db["flights"].get(segment["flight_number"], {}).get("dates", {}).get(segment["date"])
    return entry["status"] if entry else None


def test_airline_rows_flag_hand_made_faults_and_not_their_fixes(tmp_path):
    db = _generated_db("airline")
    reservations = db["reservations"].values()

    def eligible(r: dict[str, Any]) -> bool:
        return db["users"][r["user_id"]]["membership"] != "regular" or r["insurance"] == "yes" \
            or r["cabin"] == "business"

    # a user the policy owes 100 per passenger: an eligible reservation with a cancelled flight
    owed = next(r for r in reservations if eligible(r) and any(_status(db, s) == "cancelled" for s in r["flights"]))
    due = 100 * len(owed["passengers"])
    owner = owed["user_id"]
    # a user owed nothing: no reservation with a cancelled or delayed flight
    nothing = next(u for u, user in db["users"].items() if user["reservations"] and not any(
        _status(db, s) in ("cancelled", "delayed")
        for r in user["reservations"] for s in db["reservations"][r]["flights"]))
    unflown = next(r for r in reservations if r.get("status") != "cancelled"
                   and all(_status(db, s) not in ("landed", "flying") for s in r["flights"]))
    flown = next(r for r in reservations if r.get("status") != "cancelled"
                 and any(_status(db, s) in ("landed", "flying") for s in r["flights"]))
    payment = next(k for k, m in db["users"][unflown["user_id"]]["payment_methods"].items()
                   if m["source"] in ("credit_card", "gift_card"))

    def profile(user_id: str) -> dict[str, Any]:
        return {"name": "get_user_details", "arguments": {"user_id": user_id}}

    def certificate(user_id: str, amount: int) -> dict[str, Any]:
        return {"name": "send_certificate", "arguments": {"user_id": user_id, "amount": amount}}

    def cancel(r: dict[str, Any]) -> dict[str, Any]:
        return {"name": "cancel_reservation", "arguments": {"reservation_id": r["reservation_id"]}}

    handoff = {"name": "transfer_to_human_agents", "arguments": {"summary": "The user wants to cancel."}}

    def bags(total: int) -> dict[str, Any]:
        return {"name": "update_reservation_baggages", "arguments": {
            "reservation_id": unflown["reservation_id"], "total_baggages": total,
            "nonfree_baggages": unflown["nonfree_baggages"], "payment_id": payment}}

    ask = "You want a travel certificate for your cancelled flight."
    tasks = [
        _task("grant-bad", "general", ask, [profile(owner), certificate(owner, due + 50)]),
        _task("grant-ok", "general", ask, [profile(owner), certificate(owner, due)]),
        # refused outright although the policy sets a certificate: an agent offering it fails
        _task("refuse-bad", "infeasible", ask, [profile(owner)], [certificate(owner, due + 400)]),
        _task("refuse-ok", "infeasible", ask, [profile(nothing)], [certificate(nothing, 100)]),
        _task("refuse-granted", "infeasible", ask, [profile(owner), certificate(owner, due)],
              [certificate(owner, due + 400)]),
        # a changing task whose first request grants what the policy does not set
        {**_task("first-bad", "changing", ask, [profile(owner), certificate(owner, due)]),
         "t2t": {"condition": "changing", "first_goal": [profile(owner), certificate(owner, due * 3)]}},
        # only a cancellation with a flown segment goes to a human
        _task("handoff-bad", "infeasible", "You want to cancel.", [profile(unflown["user_id"]), handoff],
              [cancel(unflown)]),
        _task("handoff-ok", "infeasible", "You want to cancel.", [profile(flown["user_id"]), handoff], [cancel(flown)]),
        # a bag change to the bags the reservation already has
        _task("same-bad", "general", "You want to change your bags.", [profile(unflown["user_id"]),
                                                                     bags(unflown["total_baggages"])]),
        _task("same-ok", "general", "You want to add a bag.", [profile(unflown["user_id"]),
                                                             bags(unflown["total_baggages"] + 1)]),
    ]
    report, _ = _audit(tmp_path, "airline", db, tasks)
    flagged = _flagged(report)
    assert flagged.get("compensation_off_policy") == {"grant-bad", "refuse-bad", "first-bad"}, report["findings"]
    assert flagged.get("handoff_not_required") == {"handoff-bad"}, report["findings"]
    assert flagged.get("same_variant_request") == {"same-bad"}, report["findings"]
    detail = next(f["detail"] for f in report["findings"] if f["task_id"] == "refuse-bad")
    assert f"forbids {owner} a certificate, yet the policy sets {due} for " in detail, detail


# ---------------------------------------------------------------- tau2's tasks and ours


@pytest.mark.parametrize("domain", ["retail", "airline"])
def test_taus_own_tasks_show_nothing_in_the_domain_rows(domain):
    folder = REFERENCE / f"tau2-{domain}"
    if not (folder / "db.json").is_file():
        pytest.skip(f"tau2 {domain} reference data not found at {folder}")
    from trajectory2task.store.files import load_tasks

    spec = get_domain(domain)
    env = spec.environment(spec.load_db(str(folder / "db.json")))
    tasks, _ = load_tasks(folder / "tasks.json")
    findings = [(t.id, c.cls, line) for t in tasks for c in spec.audit_checks for line in c.check(t, env)]
    assert findings == []
    # what the rows had to read there: tau2's hand-offs (none with a refused write beside it)
    handoffs = sum(any(env.tools[a.name].ends_conversation for a in t.gold_actions) for t in tasks)
    assert handoffs == {"retail": 4, "airline": 1}[domain]


@pytest.mark.parametrize("domain", ["retail", "airline"])
def test_our_generated_tasks_show_nothing_in_the_domain_rows_and_hold_what_they_check(domain):
    result = t2t.generate(domain, n=40, seed=17)
    verified = {v.task_id for v in result.verdicts if v.passed}
    tasks = [t for t in result.tasks if t.id in verified]
    spec = get_domain(domain)
    env = spec.environment(spec.generate_db(17, 500))
    report = audit(env, tasks)
    assert {c: report.counts[c] for c in DOMAIN_AUDIT_CLASSES} == (
        {"compensation_off_policy": None, "handoff_not_required": 0, "same_variant_request": 0}
        if domain == "retail" else dict.fromkeys(DOMAIN_AUDIT_CLASSES, 0)), report.findings[:5]
    # the cases the rows judge are there to judge
    forbidden = Counter(a.name for t in tasks for a in t.actions_should_not_take)
    handoffs = [t for t in tasks if any(env.tools[a.name].ends_conversation for a in t.gold_actions)]
    if domain == "retail":
        same = [t for t in tasks for a in t.actions_should_not_take
                if any(o == n for o, n in zip(a.arguments.get("item_ids") or [],
                                              a.arguments.get("new_item_ids") or []))]
        assert same and forbidden["cancel_pending_order"] and not handoffs
    else:
        assert forbidden["send_certificate"] and handoffs and all(t.actions_should_not_take for t in handoffs)


def test_every_domain_row_is_in_the_audit_table():
    assert set(DOMAIN_AUDIT_CLASSES) <= set(PROBLEMS)
    assert [c.cls for c in get_domain("airline").audit_checks] == list(DOMAIN_AUDIT_CLASSES)
