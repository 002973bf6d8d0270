"""Domain runtime: transactions, argument validation, schemas, canonical hashing, diffs, cheap episodes."""

from __future__ import annotations

import json

import pytest

from trajectory2task.domains.runtime import ToolResult


@pytest.fixture(scope="module")
def env(retail):
    return retail.environment(retail.generate_db(3, 60))


def _order_with_status(env, status):
    for key in env.episode().keys("orders"):
        order = env.episode().get("orders", key)
        if order.status == status:
            return order
    raise AssertionError(f"no {status} order")


def test_failing_call_changes_nothing(env):
    order = _order_with_status(env, "pending")
    episode = env.episode()
    before = episode.state_hash()
    result = episode.call("cancel_pending_order", {"order_id": order.order_id, "reason": "because"})
    assert result.error and result.error_message == "Invalid reason"
    assert episode.state_hash() == before and episode.changed() == {}


def test_partial_write_of_failing_call_is_rolled_back(env):
    # modify_pending_order_payment writes the user's gift card only after checks pass; a failure
    # after the order was taken for update must leave both records untouched.
    order = _order_with_status(env, "pending")
    episode = env.episode()
    result = episode.call("modify_pending_order_payment",
                          {"order_id": order.order_id, "payment_method_id": order.payment_history[0].payment_method_id})
    assert result.error
    assert episode.changed() == {}


@pytest.mark.parametrize("arguments, fragment", [
    ({}, "missing argument 'order_id'"),
    ({"order_id": "#W1", "extra": 1}, "unexpected argument 'extra'"),
    ({"order_id": ["#W1"]}, "'order_id'"),
])
def test_bad_arguments_are_error_observations(env, arguments, fragment):
    result = env.episode().call("get_order_details", arguments)
    assert isinstance(result, ToolResult) and result.error and fragment in result.output


def test_unknown_tool_and_non_object_arguments_are_error_observations(env):
    episode = env.episode()
    assert episode.call("drop_database", {}).error
    assert episode.call("get_order_details", ["#W1"]).error  # type: ignore[arg-type]


def test_exception_inside_tool_is_an_observation(env, monkeypatch):
    spec = env.tools["calculate"]

    def broken(tx, expression):
        raise RuntimeError("boom")

    monkeypatch.setitem(env.tools, "calculate", type(spec)(spec.name, spec.kind, spec.description, broken,
                                                           spec.arguments_model))
    result = env.episode().call("calculate", {"expression": "1+1"})
    assert result.error and "boom" in result.output


def test_openai_schemas_come_from_signatures(env):
    schemas = {s["function"]["name"]: s for s in env.tool_schemas()}
    items = schemas["modify_pending_order_items"]["function"]
    assert items["parameters"]["required"] == ["order_id", "item_ids", "new_item_ids", "payment_method_id"]
    item_ids = items["parameters"]["properties"]["item_ids"]
    assert {k: item_ids[k] for k in ("items", "type")} == {"items": {"type": "string"}, "type": "array"}
    # each parameter carries its line of the docstring's Args: section, as tau2's schemas do
    assert item_ids["description"].startswith("Item ids in the order to change")
    assert all("description" in p for s in schemas.values() for p in s["function"]["parameters"]["properties"].values())
    assert items["description"].startswith("Swap items of a pending order")
    assert "Args:" not in items["description"]
    assert schemas["list_all_product_types"]["function"]["parameters"]["properties"] == {}
    json.dumps(schemas)


def test_equal_states_hash_equal_whatever_the_dict_order(retail):
    db = retail.generate_db(5, 30)
    reordered = json.loads(db.model_dump_json())
    reordered["users"] = dict(reversed(list(reordered["users"].items())))
    for user in reordered["users"].values():
        user["payment_methods"] = dict(reversed(list(user["payment_methods"].items())))
        for method in user["payment_methods"].values():
            method_items = list(method.items())
            method.clear()
            method.update(reversed(method_items))
    a = retail.environment(db)
    b = retail.environment(retail.db_model.model_validate(reordered))
    assert a.initial_hash() == b.initial_hash()


def test_same_end_state_by_different_call_order_hashes_equal(env):
    user_id = next(iter(env.episode().keys("users")))
    first, second = env.episode(), env.episode()
    address = {"address1": "1 Elm St", "address2": "", "city": "Austin", "state": "TX", "country": "USA", "zip": "73301"}
    other = dict(address, address1="2 Oak St")
    first.call("modify_user_address", {"user_id": user_id, **other})
    first.call("modify_user_address", {"user_id": user_id, **address})
    second.call("modify_user_address", {"user_id": user_id, **address})
    assert first.state_hash() == second.state_hash() != env.initial_hash()
    assert first.diff(second) == {}
    assert first.changed() == {"users": [user_id]}


def test_reverting_a_change_restores_the_initial_hash(env):
    user = env.episode().get("users", next(iter(env.episode().keys("users"))))
    episode = env.episode()
    new = {"address1": "9 Pine St", "address2": "", "city": "Reno", "state": "NV", "country": "USA", "zip": "89501"}
    episode.call("modify_user_address", {"user_id": user.user_id, **new})
    episode.call("modify_user_address", {"user_id": user.user_id, **user.address.model_dump()})
    assert episode.state_hash() == env.initial_hash() and episode.changed() == {}


def test_diff_names_changed_records(env):
    order = _order_with_status(env, "pending")
    a, b = env.episode(), env.episode()
    a.call("cancel_pending_order", {"order_id": order.order_id, "reason": "no longer needed"})
    diff = a.diff(b)
    assert order.order_id in diff["orders"]


def test_episodes_are_isolated_and_do_not_copy_the_database(env):
    order = _order_with_status(env, "pending")
    a, b = env.episode(), env.episode()
    a.call("cancel_pending_order", {"order_id": order.order_id, "reason": "no longer needed"})
    assert a.get("orders", order.order_id).status == "cancelled"
    assert b.get("orders", order.order_id).status == "pending"
    assert env.base.tables["orders"][order.order_id].status == "pending"
    # b shares every record with the base; nothing was copied for it
    assert b.get("orders", order.order_id) is env.base.tables["orders"][order.order_id]


def test_fork_continues_from_current_state_independently(env):
    order = _order_with_status(env, "pending")
    a = env.episode()
    a.call("modify_pending_order_address", {"order_id": order.order_id, "address1": "5 Bay Rd", "address2": "",
                                            "city": "Miami", "state": "FL", "country": "USA", "zip": "33101"})
    twin = a.fork()
    twin.call("cancel_pending_order", {"order_id": order.order_id, "reason": "ordered by mistake"})
    assert a.get("orders", order.order_id).status == "pending"
    assert twin.get("orders", order.order_id).status == "cancelled"
    assert twin.get("orders", order.order_id).address.city == "Miami"


def test_policy_file_replaces_builtin_policy(retail, tmp_path):
    env = retail.environment(retail.generate_db(1, 5), policy="Only be nice.")
    assert env.policy == "Only be nice." and "Identity first" in retail.policy


def test_transaction_values_are_keys_then_get_with_committed_pending_and_new_records(env):
    from trajectory2task.domains.runtime import Transaction

    episode = env.episode()
    order = _order_with_status(env, "pending")
    # a committed change (overlay) and a committed new record
    assert not episode.call("cancel_pending_order", {"order_id": order.order_id, "reason": "no longer needed"}).error
    first_user = next(iter(episode.keys("users")))
    committed = Transaction(episode)
    committed.insert("users", "new-committed", committed.get("users", first_user).model_copy(deep=True))
    episode._commit(committed)
    # an uncommitted change and an uncommitted new record in a second transaction
    tx = Transaction(episode)
    tx.for_update("orders", next(iter(episode.keys("orders"))))
    tx.insert("users", "new-pending", tx.get("users", first_user).model_copy(deep=True))
    for table in ("orders", "users", "products"):
        expected = [tx.get(table, key) for key in tx.keys(table)]
        assert [id(r) for r in tx.values(table)] == [id(r) for r in expected]
    assert sum(1 for _ in tx.values("users")) == sum(1 for _ in env.episode().keys("users")) + 2


# ---------------------------------------------------------------- the replay tree


def _write_calls(env):
    """Two writes on one pending order, the second on the state the first left."""
    order = _order_with_status(env, "pending")
    address = {"order_id": order.order_id, "address1": "5 Bay Rd", "address2": "", "city": "Miami", "state": "FL",
               "country": "USA", "zip": "33101"}
    return order, [("get_order_details", {"order_id": order.order_id}),
                   ("modify_pending_order_address", address),
                   ("cancel_pending_order", {"order_id": order.order_id, "reason": "ordered by mistake"})]


def _replayed(episode, calls):
    return [episode.call(name, arguments) for name, arguments in calls], episode.state_hash(), episode.changed()


def test_a_replayed_sequence_gives_what_a_fresh_environment_gives(retail, env):
    _, calls = _write_calls(env)
    first = _replayed(env.episode(), calls)
    again = _replayed(env.episode(), calls)  # every call found in the tree
    fresh = retail.environment(retail.generate_db(3, 60))  # no tree yet: every call runs
    assert again == first == _replayed(fresh.episode(), calls)
    assert again[0][1] is first[0][1]  # the same result object: the second replay ran nothing


def test_a_node_keeps_its_state_when_the_episode_that_made_it_writes_on(retail, env):
    order, calls = _write_calls(env)
    walker = env.episode()
    walker.call(*calls[1])  # makes the node after the address change, sharing walker's state
    walker.call(*calls[2])  # then writes on: must copy before, not change the node's state
    after_first = env.episode()
    after_first.call(*calls[1])  # found in the tree
    assert after_first.get("orders", order.order_id).status == "pending"
    assert after_first.get("orders", order.order_id).address.city == "Miami"
    fresh = retail.environment(retail.generate_db(3, 60)).episode()
    fresh.call(*calls[1])
    assert after_first.state_hash() == fresh.state_hash() != walker.state_hash()
    # a fork shares the state until one of the two writes
    twin = after_first.fork()
    twin.call(*calls[2])
    assert after_first.get("orders", order.order_id).status == "pending"
    assert twin.state_hash() == walker.state_hash()


def test_calls_the_tree_cannot_name_run_as_before(env, monkeypatch):
    order, calls = _write_calls(env)
    episode = env.episode()
    # a tuple is no JSON value: this call is run, and the episode leaves the tree
    assert "unexpected argument 'x'" in episode.call("get_order_details", {"order_id": order.order_id, "x": ()}).output
    episode.call(*calls[1])
    assert episode.get("orders", order.order_id).address.city == "Miami"
    # NaN equals nothing, so it never matches a call seen before
    nan_calls = [env.episode().call("calculate", {"expression": float("nan")}) for _ in range(2)]
    assert nan_calls[0] is not nan_calls[1]
    # a tool replaced on the environment is a new tool, whatever its name
    spec = env.tools["calculate"]
    env.episode().call("calculate", {"expression": "1+1"})

    def broken(tx, expression):
        raise RuntimeError("boom")

    monkeypatch.setitem(env.tools, "calculate", type(spec)(spec.name, spec.kind, spec.description, broken,
                                                           spec.arguments_model))
    assert "boom" in env.episode().call("calculate", {"expression": "1+1"}).output


def test_the_tree_is_dropped_past_its_bound_and_its_episodes_go_on(retail):
    from trajectory2task.domains.runtime import ReplayCache

    env = retail.environment(retail.generate_db(3, 60))
    env.replays = ReplayCache(env.base, max_nodes=2)
    _, calls = _write_calls(env)
    walker = env.episode()
    _replayed(walker, calls)  # three nodes: the tree is dropped on the third
    assert env.replays.nodes <= 2
    fresh = retail.environment(retail.generate_db(3, 60))
    assert _replayed(env.episode(), calls) == _replayed(fresh.episode(), calls)
    walker.call("get_user_details", {"user_id": "nobody"})  # an episode on a dropped node still works
    assert walker.changed() == _replayed(fresh.episode(), calls)[2]


def test_private_copies_equal_pydantics_deep_copies(env):
    from trajectory2task.domains.runtime import _private_copy

    for table in ("users", "orders", "products"):
        for record in list(env.base.tables[table].values())[:20]:
            copied, reference = _private_copy(record), record.model_copy(deep=True)
            assert copied == reference and copied.model_fields_set == reference.model_fields_set
            assert copied.model_dump_json() == record.model_dump_json()
    user = next(iter(env.base.tables["users"].values()))
    copied = _private_copy(user)
    copied.orders.append("#W-new")
    copied.address.city = "Elsewhere"
    assert "#W-new" not in user.orders and user.address.city != "Elsewhere"


def test_private_copies_of_models_with_extra_values_are_deep_copies():
    from pydantic import BaseModel, ConfigDict

    from trajectory2task.domains.runtime import _private_copy

    class Loose(BaseModel):
        model_config = ConfigDict(extra="allow")
        tags: list[str] = []

    record = Loose(tags=["a"], note={"k": [1]})
    copied = _private_copy(record)
    assert copied == record and copied.model_extra == {"note": {"k": [1]}}
    copied.model_extra["note"]["k"].append(2)
    copied.tags.append("b")
    assert record.model_extra == {"note": {"k": [1]}} and record.tags == ["a"]


def test_an_environment_sent_to_another_process_takes_an_empty_tree(retail):
    pickle = pytest.importorskip("ray.cloudpickle")  # how an environment reaches a Ray actor

    env = retail.environment(retail.generate_db(3, 60))
    _, calls = _write_calls(env)
    ran = _replayed(env.episode(), calls)
    assert env.replays.nodes == 3
    copy = pickle.loads(pickle.dumps(env))
    assert copy.replays.nodes == 0 and not copy.replays.root.children
    assert _replayed(copy.episode(), calls) == ran
