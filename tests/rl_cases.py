"""Shared by the RL-adapter tests: offline tasks of every condition, an agent driver that sees
only what an adapter returns, and the wrong agents whose reward must never be 1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

from trajectory2task.programs.loop.agent import AgentReply, DoNothingAgent, OracleAgent
from trajectory2task.programs.loop.environment import load_environment
from trajectory2task.programs.verification.mutants import derive_mutants
from trajectory2task.signatures.models import Action, Message, Task
from tests.offline_tasks import generate_offline

DOMAINS = ("retail", "airline")
CONDITIONS = {"general", "ambiguous", "changing", "infeasible"}


@lru_cache(maxsize=2)
def offline_tasks(domain: str) -> tuple[Task, ...]:
    """Verified tasks of every condition, generated offline on the domain's seed-0 database."""
    tasks = generate_offline(load_environment(domain), n=4).kept()
    assert {t.condition for t in tasks} == CONDITIONS, domain
    return tuple(tasks)


def one_per_condition(domain: str) -> list[Task]:
    """The first task of each condition (keeps slow adapters' tests short)."""
    out: dict[str, Task] = {}
    for task in offline_tasks(domain):
        out.setdefault(task.condition, task)
    return [out[c] for c in sorted(out)]


# An adapter turn: the agent's reply in, (what the agent sees next, whether the episode ended) out.
Act = Callable[[AgentReply], tuple[list[Message], bool]]


def drive(session: Any, opening: str, act: Act, limit: int = 60) -> None:
    """Play an agent session through an adapter, building the agent's view of the conversation
    only from what the adapter returned. Stops when the episode ends, the agent says nothing,
    or after ``limit`` turns."""
    conversation = [Message(role="user", content=opening)]
    for _ in range(limit):
        reply: AgentReply = session.reply(conversation)
        if not reply.tool_calls and not reply.content:
            return
        conversation.append(Message(role="assistant", content=reply.content, tool_calls=[
            {"id": c.id or f"c{len(conversation)}", "name": c.name, "arguments": c.arguments}
            for c in reply.tool_calls] or None))
        seen, done = act(reply)
        for message in seen:
            if message.role == "tool" and conversation[-1].tool_calls:
                message = message.model_copy(update={"tool_call_id": conversation[-1].tool_calls[0].id})
            conversation.append(message)
        if done:
            return


def _as_actions(calls: list[Any]) -> list[Action]:
    return [Action(action_id=f"m{i}", name=c.name, arguments=dict(c.arguments)) for i, c in enumerate(calls)]


def wrong_agents(domain: str, task: Task) -> Iterator[tuple[str, Any]]:
    """Agents `t2t verify` fails on ``task``: do-nothing, and each of the verifier's own
    mutants that act (a write dropped from the gold; for an infeasible task, a forbidden
    write attempted), played by the oracle on a task whose gold is the mutant's calls."""
    environment = load_environment(domain)
    yield "do_nothing", DoNothingAgent(environment).session(task)
    for mutant in derive_mutants(environment, task):
        if mutant.kind not in ("drop_write", "forbidden_attempt"):
            continue
        wrong = task.model_copy(update={"gold_actions": _as_actions(mutant.calls), "actions_should_take": []})
        yield mutant.name, OracleAgent(environment).session(wrong)
