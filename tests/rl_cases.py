"""Shared by the RL-adapter tests: offline tasks of every condition, an agent driver that sees
only what an adapter returns, and the wrong agents whose reward must never be 1."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from trajectory2task.programs.loop.agent import AgentReply, DoNothingAgent, OracleAgent
from trajectory2task.programs.loop.domain_env import load_environment
from trajectory2task.programs.verification.mutants import derive_mutants
from trajectory2task.signatures.models import Action, Message, Task
from tests.cli import run_t2t
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


class Transcript:
    """What an agent did in one episode, as `t2t verify --rollouts` reads it: the calls that ran
    (the first of each turn) and the spoken messages."""

    def __init__(self, task_id: str, opening: str) -> None:
        self.task_id = task_id
        self.tool_calls: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = [{"role": "user", "content": opening}]

    def recording(self, act: Act) -> Act:
        def recorded(reply: AgentReply) -> tuple[list[Message], bool]:
            if reply.tool_calls:
                call = {"name": reply.tool_calls[0].name, "arguments": reply.tool_calls[0].arguments}
                self.tool_calls.append(call)
                self.messages.append({"role": "assistant", "content": reply.content, "tool_calls": [call]})
            else:
                self.messages.append({"role": "assistant", "content": reply.content})
            seen, done = act(reply)
            self.messages += [{"role": m.role, "content": m.content} for m in seen if m.role == "user"]
            return seen, done

        return recorded

    def line(self) -> str:
        return json.dumps({"task_id": self.task_id, "tool_calls": self.tool_calls, "messages": self.messages})


def t2t_verify(domain: str, tasks: list[Task], transcripts: list[Transcript], directory: Path) -> list[dict[str, Any]]:
    """`t2t verify --rollouts` (the real command, in a subprocess) on the transcripts: one verdict each."""
    tasks_file = directory / f"{domain}-tasks.jsonl"
    tasks_file.write_text("".join(t.model_dump_json() + "\n" for t in tasks))
    rollouts = directory / f"{domain}-rollouts.jsonl"
    rollouts.write_text("".join(t.line() + "\n" for t in transcripts))
    done = run_t2t("verify", str(tasks_file), "--domain", domain, "--rollouts", str(rollouts), "--json", timeout=300)
    assert done.returncode == 0, done.stderr
    verdicts = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert [v["task_id"] for v in verdicts] == [t.task_id for t in transcripts]
    return verdicts


class BreakingUser:
    """A simulated user that answers the opening, then whose LM fails (as a `SimulatedUser`)."""

    name = "breaking"

    def session(self, scenario: Any) -> Any:
        from trajectory2task.programs.loop.user_sim import LMTurnError, UserReply

        class Session:
            def reply(self, conversation: Any) -> UserReply:
                if conversation:
                    raise LMTurnError("user simulator: boom", "user")
                return UserReply(text="Hello, I need help.")

        return Session()
