"""Retail task labels a careful grader would sign, read from what a user gets.

Each dataset is made as a user makes it (`t2t generate` offline, then `t2t export --format
tau2`), and the checks read only the raw exported JSON and the raw db.json: no generator code
judges its own output. The classes checked are those of the issue "Tasks that mean what they
say": a hand-off tau2's retail policy does not require, a required write made pointless by a
later one, an exchange for the very variant held worded as another one, a bare option value,
and the amount questions' seams. Targeted tests beside them show each check can fail.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from tests.cli import run_t2t
from trajectory2task.domains import get_domain
from trajectory2task.domains.kit import Call, Knowledge
from trajectory2task.domains.retail.conditions import infeasible_proposals, options_words
from trajectory2task.domains.retail.exploration import HINTS, build_cancel, build_order_address, build_user_address
from trajectory2task.domains.retail.generate import generate_retail_db

TAU2_RETAIL = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "tau2-retail"
N = 20
WRITES = {"cancel_pending_order", "modify_pending_order_address", "modify_pending_order_payment",
          "modify_pending_order_items", "exchange_delivered_order_items", "return_delivered_order_items",
          "modify_user_address"}
# writes that set one field outright: a second one on the same record leaves the first no effect
OVERWRITING = {"modify_pending_order_address", "modify_pending_order_payment", "modify_user_address"}
QUESTION = re.compile(r"ask the agent [^.]*\.")


@pytest.fixture(scope="module", params=["tau2", "fresh"])
def exported(request, tmp_path_factory) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(the exported tau2 tasks, the raw database they were made on)."""
    folder = tmp_path_factory.mktemp(f"labels-{request.param}")
    if request.param == "tau2":
        db = TAU2_RETAIL / "db.json"
        if not db.is_file():
            pytest.skip(f"tau2 retail reference data not found at {TAU2_RETAIL}")
    else:
        db = folder / "db.json"
        made = run_t2t("domain", "generate-db", "retail", "--seed", "4", "--users", "150", "--out", str(db))
        assert made.returncode == 0, made.stderr
    store, out = folder / "t2t.duckdb", folder / "tasks.json"
    generated = run_t2t("generate", "--n", str(N), "--seed", "17", "--db", str(db), "--store", str(store))
    assert generated.returncode == 0, generated.stderr
    exported = run_t2t("export", "--format", "tau2", "--out", str(out), "--store", str(store))
    assert exported.returncode == 0, exported.stderr
    return json.loads(out.read_text()), json.loads(db.read_text())


def _condition(task: dict[str, Any]) -> str:
    return task["t2t"]["condition"]


def _user_text(task: dict[str, Any]) -> str:
    """Everything the simulated user is told."""
    i = task["user_scenario"]["instructions"]
    return " ".join(x for x in (i.get("reason_for_call"), i.get("task_instructions"), i.get("known_info"),
                                i.get("unknown_info")) if x)


def _writes(actions: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [a for a in actions or [] if a["name"] in WRITES]


def _record(write: dict[str, Any]) -> str:
    return str(write["arguments"].get("order_id") or write["arguments"].get("user_id"))


# ---------------------------------------------------------------- a. hand-offs


def test_no_task_requires_a_hand_off_that_taus_retail_policy_does_not(exported):
    """tau2's retail policy refuses what it forbids (a processed order's cancellation among
    them) and transfers only requests outside the agent's actions; every infeasible request
    here is a forbidden write, so none may grade a transfer or tell the user to expect one."""
    tasks, db = exported
    infeasible = [t for t in tasks if _condition(t) == "infeasible"]
    assert len(infeasible) >= N // 2
    for task in tasks:
        criteria = task["evaluation_criteria"]
        required = (criteria.get("actions") or []) + (criteria.get("actions_should_taken") or [])
        assert all(a["name"] != "transfer_to_human_agents" for a in required), task["id"]
        assert "human agent" not in _user_text(task), task["id"]
    # every refused cancellation is one the policy forbids: the raw database shows the order
    # is not pending, or is not the authenticated user's
    refused = 0
    for task in infeasible:
        user_id = _authenticated(task, db)
        for forbidden in task["evaluation_criteria"]["actions_should_not_taken"]:
            if forbidden["name"] == "cancel_pending_order":
                order = db["orders"][forbidden["arguments"]["order_id"]]
                assert order["status"] != "pending" or order["user_id"] != user_id, task["id"]
                refused += 1
    assert refused


def test_a_refusal_for_another_users_order_requires_no_read_of_it(exported):
    """The customer says the order is a family member's: the policy's refusal needs no look-up,
    so none is graded (an agent that reads it anyway is not failed for that)."""
    tasks, db = exported
    others = 0
    for task in (t for t in tasks if _condition(t) == "infeasible"):
        user_id = _authenticated(task, db)
        for forbidden in task["evaluation_criteria"]["actions_should_not_taken"]:
            order_id = forbidden["arguments"].get("order_id")
            if order_id is None or db["orders"][order_id]["user_id"] == user_id:
                continue
            others += 1
            reads = [a for a in task["evaluation_criteria"]["actions"] if a["arguments"].get("order_id") == order_id]
            assert reads == [], (task["id"], reads)
    assert others >= 1


def _authenticated(task: dict[str, Any], db: dict[str, Any]) -> str:
    """The user id the task's identity look-up finds in the raw database."""
    lookup = next(a for a in task["evaluation_criteria"]["actions_should_taken"] if a["name"].startswith("find_user"))
    args = lookup["arguments"]
    return next(key for key, user in db["users"].items()
                if user["email"] == args.get("email") or (user["name"]["first_name"], user["name"]["last_name"],
                                                          user["address"]["zip"]) ==
                (args.get("first_name"), args.get("last_name"), args.get("zip")))


def test_a_processed_orders_cancellation_is_refused_without_a_hand_off():
    db = generate_retail_db(7, 60)
    env = get_domain("retail").environment(db)
    order = next(o for o in db.orders.values() if o.status == "processed")
    proposals = infeasible_proposals(env.episode(), order.user_id, [])
    cancels = [p for p in proposals if p.action.name == "cancel_pending_order"
               and p.action.arguments["order_id"] == order.order_id]
    assert cancels and all(p.handoff is None for p in proposals)
    # and the policy text sends no processed order to a human agent
    policy = get_domain("retail").policy
    assert not any("processed" in s and ("human" in s or "transfer" in s) for s in re.split(r"\n\n|\. ", policy))


# ---------------------------------------------------------------- b. pointless writes


def test_no_required_write_is_made_pointless_by_a_later_one(exported):
    tasks, _ = exported
    multi = 0
    for task in tasks:
        writes = _writes(task["evaluation_criteria"].get("actions"))
        multi += len(writes) > 1
        for position, earlier in enumerate(writes):
            for later in writes[position + 1:]:
                if _record(later) != _record(earlier):
                    continue
                assert later["name"] != "cancel_pending_order", (task["id"], earlier, later)
                assert not (later["name"] == earlier["name"] and earlier["name"] in OVERWRITING), \
                    (task["id"], earlier, later)
    assert multi >= N // 4


def _absorbed(episode: Any, knowledge: Knowledge, name: str, arguments: dict[str, Any]) -> None:
    result = episode.call(name, arguments)
    assert not result.error, result.output
    knowledge.absorb(Call(name=name, arguments=arguments), result.output)


def test_exploration_never_cancels_or_rewrites_what_it_already_changed():
    db = generate_retail_db(7, 60)
    env = get_domain("retail").environment(db)
    order = next(o for o in db.orders.values() if o.status == "pending")
    episode, knowledge = env.episode(), Knowledge(HINTS)
    _absorbed(episode, knowledge, "get_order_details", {"order_id": order.order_id})
    _absorbed(episode, knowledge, "get_user_details", {"user_id": order.user_id})
    rngs = [random.Random(seed) for seed in range(10)]
    # the only order and user known: before any write, each builder picks them
    assert all(build_cancel(knowledge, r)["order_id"] == order.order_id for r in rngs)
    assert all(build_order_address(knowledge, r)["order_id"] == order.order_id for r in rngs)
    assert all(build_user_address(knowledge, r)["user_id"] == order.user_id for r in rngs)
    new_address = {"address1": "1 Elm Street", "address2": "", "city": "Austin", "state": "TX",
                   "country": "USA", "zip": "78701"}
    _absorbed(episode, knowledge, "modify_pending_order_address", {"order_id": order.order_id, **new_address})
    _absorbed(episode, knowledge, "modify_user_address", {"user_id": order.user_id, **new_address})
    # the order is still pending, yet cancelling it or changing its address again would leave
    # the first change pointless
    assert all(build_cancel(knowledge, r) is None for r in rngs)
    assert all(build_order_address(knowledge, r) is None for r in rngs)
    assert all(build_user_address(knowledge, r) is None for r in rngs)


# ---------------------------------------------------------------- c. variants and option values


SAME_VARIANT = re.compile(r"\bexactly like it\b")


def test_an_exchange_for_the_variant_held_is_asked_for_as_one_exactly_like_it(exported):
    tasks, db = exported
    same = 0
    for task in tasks:
        for forbidden in task["evaluation_criteria"].get("actions_should_not_taken") or []:
            args = forbidden["arguments"]
            pairs = list(zip(args.get("item_ids") or [], args.get("new_item_ids") or []))
            if not any(old == new for old, new in pairs):
                continue
            same += 1
            request = task["user_scenario"]["instructions"]["reason_for_call"]
            assert SAME_VARIANT.search(request), (task["id"], request)
            # no option list that reads as another variant, and no price difference to settle
            assert not re.search(r"for (the )?one with|price difference", request), (task["id"], request)
            # the refusal is the policy's: an exchange must change the options
            order = db["orders"][args["order_id"]]
            assert order["status"] == "delivered" and forbidden["name"] == "exchange_delivered_order_items"
    assert same >= 1


def _option_lists(text: str, names: list[str]) -> list[tuple[str, str]]:
    """(product name, option list) of every "the <product> for (the) one with <list>" and
    "the <product> with <list>" in ``text``."""
    out = []
    for name in names:
        for match in re.finditer(r"\bthe " + re.escape(name) + r"( for (?:the )?one)? with (.+?)"
                                 r"(?= and the [A-Z]| for | in your| in one of your| from your| from one of your|, settling|; |\. |\.$|$)", text):
            out.append((name, match.group(2)))
    return out


def _names_its_option(part: str, options: dict[str, set[str]]) -> bool:
    """A part of an option list names its option: "size S", or a value that says it ("Brand A",
    "full size", "bagless" of bagged/bagless)."""
    for key, values in options.items():
        if part.startswith(key + " ") and part[len(key) + 1:] in values:
            return True
        if part in values and (set(key.lower().split()) <= set(part.lower().split())
                               or part.lower() in key.lower().split("/")):
            return True
    return False


def test_option_values_are_never_said_bare(exported):
    tasks, db = exported
    options: dict[str, dict[str, set[str]]] = {}
    for product in db["products"].values():
        for variant in product["variants"].values():
            for key, value in variant["options"].items():
                options.setdefault(product["name"], {}).setdefault(key, set()).add(value)
    names = sorted(options, key=len, reverse=True)
    checked = 0
    for task in tasks:
        for name, listed in _option_lists(_user_text(task), names):
            for part in re.split(r", | and ", listed):
                checked += 1
                assert _names_its_option(part, options[name]), (task["id"], name, part, listed)
    assert checked >= N


def test_a_value_contained_in_its_options_name_is_said_with_the_name():
    # "S" is inside "size" and "no" inside "noise cancelling": alone they would be bare
    assert options_words({"size": "S", "color": "black"}) == "size S and color black"
    assert options_words({"noise cancelling": "no"}) == "noise cancelling no"
    assert options_words({"brand": "Brand A", "bagged/bagless": "bagless"}) == "Brand A and bagless"


# ---------------------------------------------------------------- d. amounts and their questions


def test_each_amount_is_asked_for_once_and_never_told_to_the_user(exported):
    tasks, _ = exported
    asked = 0
    for task in tasks:
        text, told = _user_text(task), task["evaluation_criteria"].get("communicate_info") or []
        questions = QUESTION.findall(text)
        asked += len(questions)
        assert len(questions) == len(set(questions)), task["id"]
        assert len(set(questions)) >= len(told), (task["id"], questions, told)  # one question, one value
        for amount in told:
            assert not re.search(r"(?<![\d.])" + re.escape(amount) + r"(?!\d)", text), (task["id"], amount)
    assert asked >= N // 3


def _difference(db: dict[str, Any], write: dict[str, Any]) -> float:
    order = db["orders"][write["arguments"]["order_id"]]
    prices = {i["item_id"]: i["price"] for i in order["items"]}
    variants = {k: v for p in db["products"].values() for k, v in p["variants"].items()}
    return sum(variants[new]["price"] - prices[old]
               for old, new in zip(write["arguments"]["item_ids"], write["arguments"]["new_item_ids"]))


def test_a_changing_tasks_questions_name_nothing_only_the_revised_goal_has(exported):
    """The questions come before the change of mind: they must read true of the first goal."""
    tasks, db = exported
    compared = 0
    for task in (t for t in tasks if _condition(t) == "changing"):
        before_change = task["user_scenario"]["instructions"]["task_instructions"].split("change your mind")[0]
        first, revised = _writes(task["t2t"]["first_goal"]), _writes(task["evaluation_criteria"]["actions"])
        for initial, final in zip(first, revised):
            if initial == final or "order_id" not in final["arguments"]:
                continue
            order = db["orders"][final["arguments"]["order_id"]]
            names = {i["item_id"]: i["name"] for i in order["items"]}
            only_revised = ({names[i] for i in final["arguments"].get("item_ids") or []}
                            - {names[i] for i in initial["arguments"].get("item_ids") or []})
            for question in QUESTION.findall(before_change):
                compared += 1
                assert not any(name in question for name in only_revised), (task["id"], question)
                if "new_item_ids" in final["arguments"]:
                    ways = {_difference(db, w) > 0 for w in (initial, final)}
                    assert len(ways) == 1 or not re.search(r"you pay|you get back", question), \
                        (task["id"], question)
    assert compared >= 1
