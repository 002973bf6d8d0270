"""benchmarks/train_grpo.py in its CPU smoke mode: tasks generated offline, pass@1 before and
after on held-out retail and airline tasks of every condition, GRPO steps between, with the
rewards the trainer logged."""

from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("trl", reason="the rl extra is not installed: pip install 'trajectory2task[rl]'")

from tests.cli import REPO  # noqa: E402


def test_the_training_example_runs_in_smoke_mode(capsys):
    spec = importlib.util.spec_from_file_location("train_grpo", REPO / "benchmarks" / "train_grpo.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    report = script.main(["--smoke", "--json"])
    assert capsys.readouterr().out.strip().endswith("}")
    assert report["train_tasks"] > 0 and len(report["train_rewards"]) == 2
    assert all(r in (0.0, 0.5, 1.0) for r in report["train_rewards"])  # means over 2 generations of 0/1 verdicts
    for phase in ("before", "after"):
        for domain in ("retail", "airline"):
            scores = report[phase][domain]
            assert scores["n"] == report["held_out"][domain] > 0
            assert set(scores["by_condition"]) <= {"general", "ambiguous", "changing", "infeasible"}
            assert 0.0 <= scores["pass_at_1"] <= 1.0
