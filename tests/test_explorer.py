"""Explorers: the seeded random walk and the LM explorer (DummyLM), and what code keeps of them."""

from __future__ import annotations

import itertools
import json
import random

import pytest
from dspy.utils import DummyLM
from pydantic import BaseModel

from trajectory2task.domains.runtime import Domain, Transaction, tool, tool_spec
from trajectory2task.programs.generation.exploration import BaselineExplorer, ExplorationError
from trajectory2task.programs.generation.explorer import Explorer
from trajectory2task.programs.verification.verifier import execute_calls

ID_ARGS = ("user_id", "order_id", "payment_method_id")


@pytest.fixture(scope="module")
def env(retail):
    return retail.environment(retail.generate_db(7, 120))


@pytest.fixture(scope="module")
def walks(env):
    explorer = BaselineExplorer()
    return [explorer.explore(env, seed, trajectory_id=f"t{seed}") for seed in range(40)]


def _writes(env, trajectory):
    return [s for s in trajectory.steps if env.tools[s.call.name].kind == "write"]


# ---------------------------------------------------------------- baseline


def test_baseline_is_deterministic_for_a_seed(env):
    explorer = BaselineExplorer()
    first = explorer.explore(env, 11, trajectory_id="t").trajectory
    again = BaselineExplorer().explore(env, 11, trajectory_id="t").trajectory
    other = explorer.explore(env, 12, trajectory_id="t").trajectory
    assert first is not None and again is not None and other is not None
    assert first.model_dump_json() == again.model_dump_json()
    assert first.model_dump_json() != other.model_dump_json()


def test_baseline_trajectories_are_valid_and_replay(env, walks):
    trajectories = [w.trajectory for w in walks if w.trajectory is not None]
    assert len(trajectories) >= 35
    for trajectory in trajectories:
        assert not any(s.error for s in trajectory.steps)
        assert _writes(env, trajectory), trajectory.id
        episode = env.episode()
        replayed = execute_calls(episode, [s.call for s in trajectory.steps])
        assert [s.observation for s in replayed] == [s.observation for s in trajectory.steps]
        assert episode.state_hash() == trajectory.end_state_hash != env.initial_hash()
        assert trajectory.initial_state_hash == env.initial_hash()


def test_baseline_seeds_with_a_user_or_an_order_and_identifies_its_customer_first(env, walks):
    kinds = set()
    for walk in walks:
        trajectory = walk.trajectory
        if trajectory is None:
            continue
        first = trajectory.steps[0]
        assert first.call.name in ("find_user_id_by_email", "find_user_id_by_name_zip")
        table, _, key = trajectory.seed_entity.partition("/")
        kinds.add(table)
        assert env.domain.owner_of(env.episode(), table, key) == first.observation
        if table == "orders":  # an order seed is looked up right after identification
            assert trajectory.steps[1].call.name == "get_order_details"
            assert trajectory.steps[1].call.arguments == {"order_id": key}
    assert kinds == {"users", "orders"}


def test_baseline_write_arguments_are_grounded_in_earlier_observations(env, walks):
    checked = 0
    for walk in walks:
        trajectory = walk.trajectory
        if trajectory is None:
            continue
        for position, step in enumerate(trajectory.steps):
            if env.tools[step.call.name].kind != "write":
                continue
            seen = " ".join(s.observation for s in trajectory.steps[:position])
            args = step.call.arguments
            for name in ID_ARGS:
                if name in args:
                    assert args[name] in seen, (trajectory.id, step.call.name, name)
            for item_id in args.get("item_ids", []):
                assert item_id in seen
            for old_id, new_id in zip(args.get("item_ids", []), args.get("new_item_ids", [])):
                # the replacement is another variant of the same product, whose details were read before
                order = json.loads(next(s.observation for s in reversed(trajectory.steps[:position])
                                        if s.call.name == "get_order_details"
                                        and s.call.arguments["order_id"] == args["order_id"]))
                product_id = next(i["product_id"] for i in order["items"] if i["item_id"] == old_id)
                product = next(json.loads(s.observation) for s in trajectory.steps[:position]
                               if s.call.name == "get_product_details" and s.call.arguments["product_id"] == product_id)
                assert new_id in product["variants"] and new_id != old_id
            checked += 1
    assert checked >= 35


def test_baseline_reaches_many_write_tools(env):
    explorer = BaselineExplorer()
    tools = {s.call.name for seed in range(80)
             for s in (explorer.explore(env, seed).trajectory or _empty()).steps if env.tools[s.call.name].kind == "write"}
    assert len(tools) >= 5, tools


def test_baseline_target_write_steers_the_first_write(env):
    explorer = BaselineExplorer()

    def first_writes(target):
        hits = 0
        for seed in range(30):
            result = explorer.explore(env, seed, target_write=target, goal="coverage:x/general")
            if result.trajectory is not None:
                assert result.trajectory.goal == "coverage:x/general"
                hits += _writes(env, result.trajectory)[0].call.name == "return_delivered_order_items"
        return hits

    steered, unsteered = first_writes("return_delivered_order_items"), first_writes(None)
    assert steered >= 8 and steered >= 3 * max(unsteered, 1), (steered, unsteered)


class _Empty:
    steps: list = []


def _empty():
    return _Empty()


# ---------------------------------------------------------------- LM explorer (DummyLM)


def _seed_user(env, seed):
    return env.domain.kit.exploration.sample_seed(env.episode(), random.Random(seed)).customer


def _answer(name, **arguments):
    return {"tool_call": json.dumps({"name": name, "arguments": arguments})}


def _lm_explorer(answers, **kwargs):
    explorer = Explorer(max_writes=1, **kwargs)
    lm = DummyLM(answers)
    explorer.set_lm(lm)
    return explorer, lm


def test_lm_explorer_drops_invalid_calls_and_shows_their_error_next(env):
    user = _seed_user(env, 5)
    answers = [
        _answer("get_order_details", order_id="#W9999991"),  # no such order: dropped
        _answer("find_user_id_by_email", email=user["email"]),
        _answer("get_user_details", user_id=user["user_id"]),
        _answer("modify_user_address", user_id=user["user_id"], address1="1 Test Road", address2="", city="Boise",
                state="ID", country="USA", zip="83701"),
    ]
    explorer, lm = _lm_explorer(answers)
    result = explorer.explore(env, 5, trajectory_id="lm-1")
    trajectory = result.trajectory
    assert trajectory is not None, result.rejected_reason
    assert [s.call.name for s in trajectory.steps] == ["find_user_id_by_email", "get_user_details",
                                                       "modify_user_address"]
    assert [s.call.name for s in result.dropped] == ["get_order_details"] and result.proposals == 4
    # the second proposal was shown the first one's error; the third was not
    second_prompt = lm.history[1]["messages"][-1]["content"]
    third_prompt = lm.history[2]["messages"][-1]["content"]
    assert "Order not found" in second_prompt and "Order not found" not in third_prompt
    # the trajectory it shows holds the kept steps only
    shown = third_prompt.split("[[ ## trajectory ## ]]")[1].split("[[ ## previous_error ## ]]")[0]
    assert user["user_id"] in shown and "#W9999991" not in shown
    episode = env.episode()
    execute_calls(episode, [s.call for s in trajectory.steps])
    assert episode.state_hash() == trajectory.end_state_hash


def test_lm_explorer_without_a_write_in_the_step_limit_gives_no_trajectory(env):
    user = _seed_user(env, 6)
    answers = [_answer("find_user_id_by_email", email=user["email"])] + [
        _answer("get_user_details", user_id=user["user_id"]) for _ in range(3)]
    explorer, _ = _lm_explorer(answers, max_steps=4)
    result = explorer.explore(env, 6)
    assert result.trajectory is None and "no successful write" in result.rejected_reason


def test_lm_explorer_output_that_never_parses_raises(env):
    # each unparseable answer costs two LM calls: ChatAdapter, then DSPy's JSON fallback
    explorer, lm = _lm_explorer([{"tool_call": "not a call"}] * 4, parse_attempts=2)
    with pytest.raises(ExplorationError, match="did not parse after 2 attempts"):
        explorer.explore(env, 7)
    assert len(lm.history) == 4


def test_lm_explorer_retries_an_unparseable_proposal(env):
    user = _seed_user(env, 8)
    answers = [{"tool_call": "garbage"}, {"tool_call": "garbage"},
               _answer("find_user_id_by_email", email=user["email"]),
               _answer("modify_user_address", user_id=user["user_id"], address1="2 Test Road", address2="",
                       city="Boise", state="ID", country="USA", zip="83702")]
    explorer, _ = _lm_explorer(answers)
    result = explorer.explore(env, 8)
    assert result.trajectory is not None and len(result.trajectory.steps) == 2 and result.proposals == 2


# ---------------------------------------------------------------- the replay check


_CALLS = itertools.count()


class Note(BaseModel):
    text: str


class NotesDB(BaseModel):
    notes: dict[str, Note]


@tool("read")
def peek(tx: Transaction) -> str:
    """Read something that depends on hidden state outside the database (a bug in a tool)."""
    return f"peek number {next(_CALLS)}"


@tool("write")
def edit(tx: Transaction, key: str, text: str) -> Note:
    """Change a note."""
    note = tx.for_update("notes", key)
    note.text = text
    return note


NOTES = Domain(name="notes", summary="Notes.", db_model=NotesDB, tools=(tool_spec(peek), tool_spec(edit)),
               policy="Anything goes.")


def test_a_trajectory_that_does_not_replay_is_dropped():
    env = NOTES.environment(NotesDB(notes={"a": Note(text="old")}))
    explorer, _ = _lm_explorer([_answer("peek"), _answer("edit", key="a", text="new")])
    result = explorer.explore(env, 0)
    assert result.trajectory is None
    assert "does not replay" in result.rejected_reason and "peek" in result.rejected_reason
    # the same calls without the hidden-state read are kept
    explorer, _ = _lm_explorer([_answer("edit", key="a", text="new")])
    assert explorer.explore(env, 0).trajectory is not None


def test_explorer_state_round_trips_through_dspy_state():
    explorer = Explorer()
    explorer.propose.signature = explorer.propose.signature.with_instructions("Explore boldly.")
    state = explorer.dump_state()
    fresh = Explorer()
    fresh.load_state(state)
    assert fresh.propose.signature.instructions == "Explore boldly."
