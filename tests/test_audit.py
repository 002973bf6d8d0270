"""`t2t audit` on tau2's sets and on our exported tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trajectory2task.domains import get_domain
from trajectory2task.store.tau2 import task_to_tau2
from tests.cli import REPO, run_t2t
from tests.offline_tasks import generate_offline

AIRLINE_DIR = REPO.parent / "shared" / "reference" / "tau2-airline"


def _audit(tasks: Path, domain: str, db: Path) -> dict:
    done = run_t2t("audit", str(tasks), "--domain", domain, "--db", str(db), "--json", timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_audit_of_tau2_retail_lists_what_code_can_find(tau2_dir, tau2_tasks_raw, retail):
    report = _audit(tau2_dir / "tasks.json", "retail", tau2_dir / "db.json")
    assert report["counts"]["failing_gold"] == 15 and report["counts"]["noop_passes"] == 11
    # a hand-off changes no record, so tau2's DB-only grading cannot tell it was made
    assert report["non_discriminative_writes"].get("transfer_to_human_agents", 0) > 0
    writes = {name for name, spec in retail.environment(retail.load_db(str(tau2_dir / "db.json"))).tools.items()
              if spec.kind == "write"}
    per_task = [sum(a["name"] in writes for a in t["evaluation_criteria"]["actions"]) for t in tau2_tasks_raw]
    diversity = report["diversity"]
    assert diversity["tasks"] == len(tau2_tasks_raw)
    assert diversity["writes_per_task"]["3+"] == sum(n >= 3 for n in per_task)
    assert diversity["distinct_write_sequences"] > 1 and diversity["gold_length"]["max"] >= 3


def test_audit_of_tau2_airline():
    if get_domain_or_none("airline") is None:
        pytest.skip("no airline domain in this checkout (domains/airline); the airline audit runs once it exists")
    if not (AIRLINE_DIR / "db.json").is_file():
        pytest.skip(f"tau2 airline reference data not found at {AIRLINE_DIR}")
    report = _audit(AIRLINE_DIR / "tasks.json", "airline", AIRLINE_DIR / "db.json")
    raw = json.loads((AIRLINE_DIR / "tasks.json").read_text())
    by_problem: dict[str, set[str]] = {}
    for finding in report["findings"]:
        by_problem.setdefault(finding["problem"], set()).add(finding["task_id"])
    # every gold replays; the 23 tasks that end where they start (and ask nothing to be said
    # that a silent agent fails) pass a do-nothing agent
    assert "failing_gold" not in by_problem and len(by_problem["noop_passes"]) == 23
    # task 13's whole gold is a hand-off: dropping it changes no record and still passes
    assert by_problem["mutant_passes"] == {"13"}
    assert report["non_discriminative_writes"] == {"transfer_to_human_agents": 1}
    assert [a["name"] for a in next(t for t in raw if t["id"] == "13")["evaluation_criteria"]["actions"]] == \
        ["transfer_to_human_agents"]
    # the text: a raw certificate id a customer would say by its kind, and a doubled "and"
    texts = {t["id"]: json.dumps(t["user_scenario"]) for t in raw}
    assert by_problem["lint"] == {"23", "45"} and report["lint_rules"] == {"doubled_word": 2, "raw_id": 1}
    assert "certificate_9984806" in texts["23"] and " and and " in texts["45"]
    diversity = report["diversity"]
    assert diversity["tasks"] == 50 and diversity["writes_per_task"]["0"] == 24
    assert diversity["handoff_tasks"] == 1 and diversity["generic_tool_tasks"] == 1


def get_domain_or_none(name: str):
    try:
        return get_domain(name)
    except LookupError:
        return None


def test_audit_of_our_exported_offline_tasks_finds_nothing(tmp_path):
    domain = get_domain("retail")
    env = domain.environment(domain.generate_db(0, 150))
    db = tmp_path / "db.json"
    db.write_text(env.base.db.model_dump_json())
    sink = generate_offline(env, n=12, seed=3)
    kept = sink.kept()
    (tmp_path / "tasks.json").write_text(json.dumps([task_to_tau2(t) for t in kept]))
    report = _audit(tmp_path / "tasks.json", "retail", db)
    assert not any(report["counts"].values()), report["findings"][:5]
    assert report["diversity"]["tasks"] == len(kept)
    assert set(report["diversity"]["by_condition"]) == {"general", "ambiguous", "changing", "infeasible"}


def test_audit_of_a_missing_file_is_one_error_line(tmp_path):
    done = run_t2t("audit", str(tmp_path / "none.json"), "--domain", "retail")
    assert done.returncode == 2 and done.stderr.startswith("t2t: error:") and len(done.stderr.splitlines()) == 1


def test_exported_tasks_keep_what_our_evaluator_and_stock_tau2_read():
    from trajectory2task.store.tau2 import task_from_tau2

    domain = get_domain("retail")
    env = domain.environment(domain.generate_db(0, 150))
    kept = generate_offline(env, n=8, seed=3).kept()
    for task in kept:
        raw = json.loads(json.dumps(task_to_tau2(task)))
        back = task_from_tau2(raw)
        assert (back.condition, back.first_goal, back.readings, back.claims) == (
            task.condition, task.first_goal, task.readings, task.claims)
        criteria = raw["evaluation_criteria"]
        if task.condition == "infeasible":
            # stock tau2 gates on DB and ACTION; the Retail-3I fields stay for our evaluator
            assert criteria["reward_basis"] == ["DB", "ACTION"] and criteria["actions_should_not_taken"]
            assert all(a["name"] in " ".join(criteria["nl_assertions"]) for a in criteria["actions_should_not_taken"])
        if task.condition == "changing":
            assert criteria["actions_should_not_taken"] and "never calls" in criteria["nl_assertions"][0]


def test_verify_mutants_reports_per_task_on_tau2(tau2_dir):
    done = run_t2t("verify", str(tau2_dir / "tasks.json"), "--domain", "retail", "--db", str(tau2_dir / "db.json"),
                   "--mutants", "--json", timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 114 and all({"task_id", "gold_pass", "mutants", "passing"} <= set(r) for r in lines)
    weak = [r["task_id"] for r in lines if r["passing"]]
    print(f"tau2 retail: {len(weak)} tasks with a passing mutant")
    assert 0 < len(weak) < len(lines)
