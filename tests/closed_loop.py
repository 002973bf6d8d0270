"""Test support for the closed loop: hand-made tasks in every condition on a generated
retail database, and a scripted "LM" (for tests/llm_server.py) that plays the agent and
the user by plan.

The tasks are built from whatever the seeded generator produced (a user with three pending
orders and a delivered one), statically verified, and carry the hashes of that database,
which `t2t bench` rebuilds with its default `--seed 0`.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import defaultdict
from functools import lru_cache
from typing import Any

from trajectory2task.domains import get_domain
from trajectory2task.programs.loop.user_sim import ScriptedUser
from trajectory2task.programs.verification.verifier import Verifier
from trajectory2task.signatures.models import Action, Task, UserScenario
from tests.llm_server import Fault, Reply, Text, ToolCalls, chat_fields, output_field_names

DB_SEED = 0
DB_USERS = 500  # what `t2t bench` generates without --db


@lru_cache(maxsize=1)
def environment() -> Any:
    domain = get_domain("retail")
    return domain.environment(domain.generate_db(DB_SEED, DB_USERS))


def _customer(env: Any) -> tuple[Any, list[str], str]:
    db = env.base.db
    for user in db.users.values():
        orders = [db.orders[o] for o in user.orders if o in db.orders]
        pending = [o.order_id for o in orders if o.status == "pending"]
        delivered = [o.order_id for o in orders if o.status == "delivered"]
        if len(pending) >= 3 and delivered:
            return user, pending, delivered[0]
    raise AssertionError("the generated database has no user with 3 pending orders and a delivered one")


def _a(name: str, **arguments: Any) -> Action:
    return Action(name=name, arguments=arguments)


def make_tasks(env: Any | None = None) -> dict[str, Task]:
    """Five verified tasks: two general, one ambiguous, one changing, one infeasible."""
    env = env or environment()
    user, pending, delivered = _customer(env)
    login = _a("find_user_id_by_email", email=user.email)
    known = f"Your email is {user.email}."
    o1, o2, o3 = pending[:3]

    def cancel(order_id: str, reason: str) -> list[Action]:
        return [login, _a("get_order_details", order_id=order_id),
                _a("cancel_pending_order", order_id=order_id, reason=reason)]

    tasks = [
        Task(id="general-1", domain="retail", condition="general", gold_actions=cancel(o1, "no longer needed"),
             scenario=UserScenario(reason_for_call=f"You want to cancel your order {o1}: you no longer need it.",
                                   known_info=known)),
        Task(id="general-2", domain="retail", condition="general", gold_actions=cancel(o2, "ordered by mistake"),
             scenario=UserScenario(reason_for_call=f"You ordered {o2} by mistake and want it cancelled.",
                                   known_info=known)),
        Task(id="ambiguous-1", domain="retail", condition="ambiguous", parent_task_id="general-1",
             gold_actions=cancel(o3, "no longer needed"),
             scenario=UserScenario(reason_for_call="You want to cancel one of your pending orders.",
                                   known_info=known,
                                   withheld_info=[f"The order to cancel is {o3}, which you no longer need."])),
        Task(id="changing-1", domain="retail", condition="changing", parent_task_id="general-1",
             gold_actions=cancel(o2, "no longer needed"),
             scenario=UserScenario(reason_for_call=f"You want to cancel your order {o1}.", known_info=known,
                                   change_trigger="when the agent asks you to confirm the cancellation",
                                   revised_request=f"Actually, keep {o1} and cancel {o2} instead: "
                                                   "you no longer need it.")),
        Task(id="infeasible-1", domain="retail", condition="infeasible", parent_task_id="general-1",
             gold_actions=[login, _a("get_order_details", order_id=delivered)],
             actions_should_take=[login, _a("get_order_details", order_id=delivered)],
             actions_should_not_take=[_a("cancel_pending_order", order_id=delivered, reason="no longer needed")],
             scenario=UserScenario(reason_for_call=f"You want to cancel your order {delivered}, which was "
                                                   "already delivered.", known_info=known)),
    ]
    verifier = Verifier(env)
    out = {}
    for task in tasks:
        gold = verifier.replay_gold(task)
        task = task.model_copy(update={"expected_state_hash": gold.end_state_hash,
                                       "initial_state_hash": env.initial_hash()})
        verdict = Verifier(env).verify_task(task)
        assert verdict.passed, (task.id, verdict)
        out[task.id] = task
    return out


def store_tasks(store: Any, tasks: dict[str, Task]) -> str:
    """Add the tasks and their static verdicts to a store (as `t2t generate` would)."""
    env = environment()
    run_id = store.start_run("generate", {"test": "closed_loop"})
    store.add_tasks(run_id, list(tasks.values()))
    verifier = Verifier(env)
    store.add_verdicts(run_id, [verifier.verify_task(t) for t in tasks.values()], kind="static")
    store.finish_run(run_id)
    return run_id


def opening_of(task: Task) -> str:
    return ScriptedUser(get_domain("retail").tools).session(task.scenario).opening()


# ============================================================================ scripted LM


def _tool_call(action: Action) -> ToolCalls:
    return ToolCalls([(action.name, dict(action.arguments))])


def write_tools(env) -> set[str]:
    return {name for name, spec in env.tools.items() if spec.kind == "write"}


class PlannedAgentLM:
    """A responder for ScriptedLLMServer that plays agents by plan.

    `plans[(model, task_id)]` is a list of plan names, consumed one per conversation as
    conversations of that task start (then `default_plan`, if given); the order in which
    trials start does not matter for counting: each plan is used exactly once. The first
    reply of a conversation (a tool call) carries a tag as its content, by which later
    requests of the conversation are recognised.

    Plans:
    - "pass": the task's gold actions one per turn, asking for a "yes" before the first
      write, then a closing message; infeasible tasks end with a refusal.
    - "fail": one look-up, then a refusal every turn (infeasible tasks: the forbidden write).
    - "lm_error": one look-up, then HTTP 500 on every later request of the conversation.
    """

    def __init__(self, tasks: dict[str, Task], plans: dict[tuple[str, str], list[str]],
                 write_tools: set[str], default_plan: str | None = None) -> None:
        self.by_opening = {opening_of(t): t for t in tasks.values()}
        # the server sees the model without its provider prefix ("openai/gpt-4o" -> "gpt-4o")
        self.plans = {(model.split("/", 1)[-1], task_id): list(value) for (model, task_id), value in plans.items()}
        self.write_tools = write_tools
        self.default_plan = default_plan  # for conversations beyond the planned ones (None: an error)
        self.lock = threading.Lock()
        self.conversations: dict[str, tuple[Task, str]] = {}  # first call id -> (task, plan)
        self.started: dict[tuple[str, str], int] = defaultdict(int)
        self.requests = itertools.count()

    def _task_of(self, body: dict[str, Any]) -> Task:
        for message in body["messages"]:
            if message["role"] == "user":
                return self.by_opening[message["content"]]
        raise AssertionError("agent request without a user message")

    def __call__(self, body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        calls = [c for m in messages if m["role"] == "assistant" for c in (m.get("tool_calls") or [])]
        model = body["model"]
        if not calls:  # a new conversation: its plan starts with a look-up, tagged with the conversation
            task = self._task_of(body)
            with self.lock:
                key = (model, task.id)
                self.started[key] += 1
                planned = self.plans.get(key)
                plan = planned.pop(0) if planned or self.default_plan is None else self.default_plan
                tag = f"conversation {next(self.requests)}"
                self.conversations[tag] = (task, plan)
            action = task.gold_actions[0]
            return ToolCalls([(action.name, dict(action.arguments))], content=tag)
        first = next(m for m in messages if m["role"] == "assistant")
        task, plan = self.conversations[first["content"]]
        done = len(calls)
        texts = [m["content"] for m in messages
                 if m["role"] == "assistant" and m.get("content") and not m.get("tool_calls")]
        if plan == "lm_error":
            return Fault(500)
        if plan == "fail":
            if task.condition == "infeasible" and done == 1:
                return _tool_call(task.actions_should_not_take[0])
            return Text("I'm sorry, but I can't help with that.")
        if done < len(task.gold_actions):
            action = task.gold_actions[done]
            if action.name in self.write_tools and not texts:
                return Text(f"I will run {action.name} on {json.dumps(action.arguments)}. Do you confirm (yes/no)?")
            return _tool_call(action)
        if task.condition == "infeasible":
            return Text("I'm sorry, but I cannot cancel an order that was already delivered.")
        return Text("Your order has been cancelled.")


def user_reply(message: str) -> Text:
    """A user-simulator reply in ChatAdapter format."""
    return Text(chat_fields(message=message))


def is_user_request(body: dict[str, Any]) -> bool:
    return "tools" not in body and output_field_names(body) == ["message"]
