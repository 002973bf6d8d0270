"""The airline domain from the command line: listed, shown with its rules and policy, --policy honoured;
the policy states the reference's rules in its own words."""

from __future__ import annotations

import re

from trajectory2task.domains import get_domain
from tests.airline_ref import require_airline
from tests.cli import run_t2t

TRANSFER_MESSAGE = "YOU ARE BEING TRANSFERRED TO A HUMAN AGENT. PLEASE HOLD ON."


def test_domains_lists_airline():
    result = run_t2t("domains")
    assert result.returncode == 0 and "airline" in result.stdout and "retail" in result.stdout


def test_domain_show_prints_tools_rules_and_policy():
    result = run_t2t("domain", "show", "airline")
    assert result.returncode == 0, result.stderr
    for text in ("search_onestop_flight", "update_reservation_flights", "cancellation_allowed",
                 "basic_economy_flights_fixed", "Airline service desk"):
        assert text in result.stdout


def test_policy_file_replaces_the_builtin_policy(tmp_path):
    policy = tmp_path / "policy.md"
    policy.write_text("Fly nicely.")
    result = run_t2t("domain", "show", "airline", "--policy", str(policy))
    assert result.returncode == 0 and "Fly nicely." in result.stdout and "Airline service desk" not in result.stdout
    domain = get_domain("airline")
    env = domain.environment(domain.generate_db(1, 2), policy="Fly nicely.")
    assert env.policy == "Fly nicely."


def test_policy_states_the_rules():
    policy = re.sub(r"[ \n]+", " ", get_domain("airline").policy)
    for fact in ("2024-05-15", "no more than five", "at most one travel certificate", "at most one credit card",
                 "at most three gift cards", "30 dollars per passenger", "costs 50 dollars", "24 hours",
                 "cannot be changed", "added but never removed", "never added later", "number of passengers may not",
                 "health or weather", "100 dollars per passenger", "50 dollars per passenger", TRANSFER_MESSAGE,
                 "| gold | 2 | 3 | 4 |", "| silver | 1 | 2 | 3 |", "| regular | 0 | 1 | 2 |"):
        assert fact in policy, fact


def test_policy_is_in_our_own_words():
    reference = (require_airline() / "policy.md").read_text()
    ours = re.sub(r"\s+", " ", get_domain("airline").policy.lower())
    sentences = [re.sub(r"\s+", " ", s).strip().lower() for s in re.split(r"(?<=[.!?:])\s+|\n", reference)]
    copied = [s for s in sentences if len(s.split()) >= 7 and s in ours and s != TRANSFER_MESSAGE.lower()]
    assert copied == []
