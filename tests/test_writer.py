"""Task writers: the template baseline and the LM writer (DummyLM), and the code checks on them."""

from __future__ import annotations

import itertools
import json

import pytest
from dspy.utils import DummyLM

from trajectory2task.programs.generation.exploration import BaselineExplorer
from trajectory2task.programs.verification.verifier import Verifier
from trajectory2task.programs.generation.writer import TaskWriter
from trajectory2task.programs.generation.writing import BaselineWriter, WriterError
from trajectory2task.signatures.models import Provenance, UserScenario


@pytest.fixture(scope="module")
def env(retail):
    return retail.environment(retail.generate_db(7, 120))


@pytest.fixture(scope="module")
def trajectories(env):
    explorer = BaselineExplorer()
    out = [explorer.explore(env, seed, trajectory_id=f"t{seed}").trajectory for seed in range(30)]
    return [t for t in out if t is not None]


def _writes(env, trajectory):
    return [s.call for s in trajectory.steps if env.tools[s.call.name].kind == "write"]


def _identity_values(trajectory):
    first = trajectory.steps[0].call
    return list(first.arguments.values())


def _only_cancel(env, trajectories, identity_tool):
    """A trajectory whose one write is a cancellation, identified with ``identity_tool``:
    from the shared walks, else from walks steered to a single cancellation."""
    steered = BaselineExplorer(max_writes=1)
    more = (steered.explore(env, seed, trajectory_id=f"c{seed}", target_write="cancel_pending_order").trajectory
            for seed in range(100, 200))
    for trajectory in itertools.chain(trajectories, more):
        if trajectory is not None and [c.name for c in _writes(env, trajectory)] == ["cancel_pending_order"] \
                and trajectory.steps[0].call.name == identity_tool:
            return trajectory
    raise AssertionError(f"no cancel-only trajectory identified by {identity_tool} in 130 seeds")


# ---------------------------------------------------------------- baseline


def test_baseline_task_replays_the_trajectory_and_verifies(env, trajectories):
    writer = BaselineWriter()
    verifier = Verifier(env)
    for trajectory in trajectories:
        result = writer.write(trajectory, env, Provenance(source="baseline", run_id="r"))
        task = result.task
        assert task is not None, result.rejected_reason
        assert [(a.name, a.arguments) for a in task.gold_actions] == [(s.call.name, s.call.arguments)
                                                                      for s in trajectory.steps]
        assert task.expected_state_hash == trajectory.end_state_hash
        assert task.initial_state_hash == env.initial_hash()
        assert task.condition == "general" and task.provenance.trajectory_id == trajectory.id
        assert task.provenance.source == "baseline"
        assert verifier.verify_task(task).passed


def test_baseline_scenario_states_identity_and_the_orders_written(env, trajectories):
    writer = BaselineWriter()
    for trajectory in trajectories:
        scenario = writer.write(trajectory, env).task.scenario
        text = " ".join(filter(None, [scenario.reason_for_call, scenario.known_info, scenario.unknown_info]))
        for value in _identity_values(trajectory):
            assert value in text
        for call in _writes(env, trajectory):
            if "order_id" in call.arguments:
                assert call.arguments["order_id"] in text
            if call.name.endswith("address"):
                assert call.arguments["address1"] in text and call.arguments["zip"] in text
            # items are described, not named by id
            for item_id in call.arguments.get("item_ids", []):
                assert item_id not in text


def test_baseline_writer_is_deterministic(env, trajectories):
    first = BaselineWriter().write(trajectories[0], env).task
    again = BaselineWriter().write(trajectories[0], env).task
    assert first.model_dump_json() == again.model_dump_json()


# ---------------------------------------------------------------- LM writer (DummyLM)


def _lm_writer(answers, attempts=2):
    writer = TaskWriter(attempts=attempts)
    lm = DummyLM(answers)
    writer.set_lm(lm)
    return writer, lm


def _answer(scenario: UserScenario, communicate_info=()):
    return {"scenario": scenario.model_dump_json(), "communicate_info": json.dumps(list(communicate_info)),
            "claims": "[]"}


def _cancel_scenario(trajectory, with_identity=True, with_order=True):
    call = next(s.call for s in trajectory.steps if s.call.name == "cancel_pending_order")
    reason = "I no longer need it" if call.arguments["reason"] == "no longer needed" else "I ordered it by mistake"
    order = call.arguments["order_id"] if with_order else "my recent order"
    identity = trajectory.steps[0].call.arguments["email"] if with_identity else "you forgot your email"
    return UserScenario(reason_for_call=f"You want to cancel {order} because {reason}.",
                        known_info=f"Your email is {identity}.", task_instructions="Be brief.",
                        withheld_info=["not for a general task"])


def test_lm_writer_accepts_a_scenario_with_every_fact(env, trajectories):
    trajectory = _only_cancel(env, trajectories, "find_user_id_by_email")
    observed = json.loads(trajectory.steps[-1].observation)["status"]  # 'cancelled', seen in the observation
    writer, lm = _lm_writer([_answer(_cancel_scenario(trajectory), [observed, "a refund of one million dollars"])])
    result = writer.write(trajectory, env, Provenance(source="lm", run_id="r"))
    task = result.task
    assert task is not None, result.rejected_reason
    assert task.gold_actions[-1].name == "cancel_pending_order" and len(task.gold_actions) == len(trajectory.steps)
    assert task.expected_state_hash == trajectory.end_state_hash and task.provenance.source == "lm"
    # communicate info the agent cannot learn from any observation is dropped; general tasks withhold nothing
    assert task.communicate_info == [observed] and "COMMUNICATE" in task.reward_basis
    assert task.scenario.withheld_info == []
    # the prompt listed the facts the scenario must state
    prompt = lm.history[0]["messages"][-1]["content"]
    assert trajectory.steps[0].call.arguments["email"] in prompt.split("[[ ## required_facts ## ]]")[1]
    assert Verifier(env).verify_task(task).passed


def test_lm_writer_rejects_a_scenario_without_the_authentication_facts(env, trajectories):
    trajectory = _only_cancel(env, trajectories, "find_user_id_by_email")
    bad = _answer(_cancel_scenario(trajectory, with_identity=False))
    writer, lm = _lm_writer([bad, bad])
    result = writer.write(trajectory, env)
    assert result.task is None and len(lm.history) == 2
    assert [f.label for f in result.missing] == ["email"]
    assert "email" in result.rejected_reason


def test_lm_writer_rejects_a_scenario_without_the_order_id(env, trajectories):
    trajectory = _only_cancel(env, trajectories, "find_user_id_by_email")
    writer, _ = _lm_writer([_answer(_cancel_scenario(trajectory, with_order=False))], attempts=1)
    result = writer.write(trajectory, env)
    assert result.task is None and [f.label for f in result.missing] == ["order id"]


def test_lm_writer_asks_again_after_a_scenario_missing_facts(env, trajectories):
    trajectory = _only_cancel(env, trajectories, "find_user_id_by_email")
    writer, lm = _lm_writer([_answer(_cancel_scenario(trajectory, with_identity=False)),
                             _answer(_cancel_scenario(trajectory))])
    assert writer.write(trajectory, env).task is not None and len(lm.history) == 2


def test_lm_writer_output_that_never_parses_raises(env, trajectories):
    # each unparseable answer costs two LM calls: ChatAdapter, then DSPy's JSON fallback
    writer, _ = _lm_writer([{"scenario": "not json", "communicate_info": "[]"}] * 4)
    with pytest.raises(WriterError, match="did not parse"):
        writer.write(trajectories[0], env)
