"""The command line for domains, replay and verify, including its error behaviour."""

from __future__ import annotations

import json

import pytest

from tests.cli import run_t2t

INVALID_GOLD = ["2", "3", "4", "35", "37", "38", "39", "46", "47", "54", "55", "64", "67", "68", "105"]


def test_domains_lists_retail():
    result = run_t2t("domains")
    assert result.returncode == 0 and "retail" in result.stdout


def test_domain_show_prints_tools_parameters_and_policy():
    result = run_t2t("domain", "show", "retail")
    assert result.returncode == 0
    out = result.stdout
    assert "modify_pending_order_items" in out and "list[string]" in out
    assert "Identity first" in out  # the policy text


def test_domain_show_with_policy_file(tmp_path):
    policy = tmp_path / "policy.md"
    policy.write_text("Custom store rules: be brief.")
    result = run_t2t("domain", "show", "retail", "--policy", str(policy))
    assert result.returncode == 0 and "Custom store rules" in result.stdout and "Identity first" not in result.stdout


def test_replay_json_reports_exactly_the_15_tasks_with_failing_gold_actions(tau2_dir, tau2_expected):
    result = run_t2t("replay", "--domain", "retail", "--db", str(tau2_dir / "db.json"),
                     str(tau2_dir / "tasks.json"), "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 114
    assert [r["task_id"] for r in lines if r["errors"]] == INVALID_GOLD
    for row in lines:
        expected = tau2_expected[row["task_id"]]
        assert row["errors"] == expected["errors"]
        assert row["changed"] == {t: sorted(ids) for t, ids in expected["changed"].items() if ids}
        assert set(row) == {"task_id", "errors", "changed", "end_state_hash"}


def test_replay_table_has_a_summary(tau2_dir):
    result = run_t2t("replay", "--db", str(tau2_dir / "db.json"), str(tau2_dir / "tasks.json"))
    assert result.returncode == 0
    assert "114 tasks replayed, 15 with failing gold actions" in result.stdout


def test_verify_flags_invalid_gold_and_noop_tasks(tau2_dir):
    result = run_t2t("verify", "--domain", "retail", "--db", str(tau2_dir / "db.json"),
                     str(tau2_dir / "tasks.json"), "--json")
    assert result.returncode == 0, result.stderr
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(verdicts) == 114 and all({"task_id", "pass", "reasons"} <= set(v) for v in verdicts)
    assert [v["task_id"] for v in verdicts if "invalid_gold" in v["reasons"]] == INVALID_GOLD
    assert len([v for v in verdicts if "noop_passes" in v["reasons"]]) == 11


def test_verify_judges_recorded_rollouts_in_input_order(tau2_dir, tau2_tasks_raw, tmp_path):
    task = next(t for t in tau2_tasks_raw if t["id"] == "1")
    calls = [{"name": a["name"], "arguments": a["arguments"]} for a in task["evaluation_criteria"]["actions"]]
    rollouts = tmp_path / "rollouts.jsonl"
    rollouts.write_text("\n".join(json.dumps(r) for r in [
        {"task_id": "1", "tool_calls": calls[:-1]},
        {"task_id": "1", "tool_calls": calls, "messages": [{"role": "assistant", "content": "done"}]},
        {"task_id": "1", "tool_calls": list(reversed(calls))},
    ]) + "\n")
    result = run_t2t("verify", "--db", str(tau2_dir / "db.json"), str(tau2_dir / "tasks.json"),
                     "--rollouts", str(rollouts), "--json")
    assert result.returncode == 0, result.stderr
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(v["pass"], v["reasons"]) for v in verdicts] == [(False, ["wrong_end_state"]), (True, []), (True, [])]


@pytest.mark.parametrize("args, message", [
    (["replay", "missing.json"], "missing.json: no such file"),
    (["replay", "--domain", "railway", "TASKS"], "unknown domain 'railway'"),
    (["replay", "--db", "nope.json", "TASKS"], "nope.json: no such database file"),
    (["domain", "show", "bank"], "unknown domain 'bank'"),
])
def test_bad_input_gives_one_line_on_stderr_and_non_zero_exit(args, message, tau2_dir):
    args = [str(tau2_dir / "tasks.json") if a == "TASKS" else a for a in args]
    result = run_t2t(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("t2t: error: ")
    assert message in result.stderr


def test_bad_json_and_unknown_tool_are_clear_errors(tmp_path, tau2_dir, tau2_tasks_raw):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": "1",')
    result = run_t2t("replay", "--db", str(tau2_dir / "db.json"), str(bad))
    assert result.returncode == 2 and "invalid JSON" in result.stderr and len(result.stderr.splitlines()) == 1
    task = json.loads(json.dumps(tau2_tasks_raw[0]))
    task["evaluation_criteria"]["actions"][0]["name"] = "teleport_order"
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([task]))
    result = run_t2t("replay", "--db", str(tau2_dir / "db.json"), str(unknown))
    assert result.returncode == 2 and "unknown tool(s) for domain retail: teleport_order" in result.stderr


def test_generate_db_same_seed_same_bytes_and_consistent(tmp_path):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    for path, seed in ((a, "7"), (b, "7"), (c, "8")):
        result = run_t2t("domain", "generate-db", "retail", "--seed", seed, "--users", "50", "--out", str(path))
        assert result.returncode == 0, result.stderr
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert len(json.loads(a.read_text())["users"]) == 50
    check = run_t2t("domain", "check", "retail", "--db", str(a))
    assert check.returncode == 0 and "0 problem(s)" in check.stdout


def test_check_reports_an_inconsistent_database(tmp_path):
    path = tmp_path / "db.json"
    run_t2t("domain", "generate-db", "retail", "--users", "20", "--out", str(path))
    data = json.loads(path.read_text())
    order = next(iter(data["orders"].values()))
    order["user_id"] = "nobody_0000"
    path.write_text(json.dumps(data))
    result = run_t2t("domain", "check", "retail", "--db", str(path))
    assert result.returncode == 1 and "nobody_0000" in result.stdout


def test_replay_on_a_policy_file_and_a_bad_db_file(tmp_path, tau2_dir):
    bad_db = tmp_path / "db.json"
    bad_db.write_text(json.dumps({"products": {}, "users": {"u": {"user_id": "u"}}, "orders": {}}))
    result = run_t2t("replay", "--db", str(bad_db), str(tau2_dir / "tasks.json"))
    assert result.returncode == 2 and "not a retail database" in result.stderr
