"""What a bench run will send to its LMs, measured before any call is made.

Each sampled task is first played offline by the reference pair, the oracle agent and the
scripted user (``RolloutEngine`` with no LM). On that conversation every turn an LM would
take is rendered as the LM programs send it: each agent turn with the agent's adapter (the
policy, the conversation so far and, natively, the tool schemas) and each user turn with the
user simulator's (its scenario and the spoken conversation); a tokenizer counts them, the
reference replies give the completion sizes. A model agent talks longer or shorter than the
oracle: the upper bound takes every agent turn ``--max-turns`` allows, a user turn after each
(plus the opening), each at the largest prompt seen.

A unit here is one task and trial: every LM agent plays it once, each against its own user.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from trajectory2task.domains import Environment
from trajectory2task.programs.lm.estimate import RolePrompts, RunEstimate
from trajectory2task.programs.lm.tokens import Tokenizer
from trajectory2task.programs.loop.agent import LMAgent, OracleAgent
from trajectory2task.programs.loop.rollout import RolloutEngine
from trajectory2task.programs.loop.user_sim import LMUser, ScriptedUser
from trajectory2task.signatures.conversation import ConversationTurn
from trajectory2task.signatures.models import Message, Task


def estimate_rollouts(env: Environment[Any], tasks: Sequence[Task], *, agents: Sequence[LMAgent],
                      user: LMUser | None, trials: int, max_turns: int,
                      tokenizer: Callable[[str, bool], Tokenizer], models: dict[str, str],
                      user_adapter: Any = None, sample: int = 5) -> RunEstimate:
    """``tokenizer(role, with_tools)`` counts a role's messages (with the tool schemas when the
    agent sends them natively); ``models`` maps each role (``agent <model>``, ``user``) to its model."""
    engine = RolloutEngine(env, ScriptedUser(env.domain.tools), [OracleAgent(env)], max_turns=max_turns)
    sampled = list(tasks)[:sample]
    agent_roles = {agent.name: RolePrompts(role=f"agent {agent.name}", calls_per_item=0.0,
                                           max_calls_per_item=max_turns) for agent in agents}
    user_role = RolePrompts(role="user", calls_per_item=0.0,
                            max_calls_per_item=len(agents) * (max_turns + 1))
    agent_turns = user_turns = 0
    for task in sampled:
        messages = engine.run(task, "oracle").rollout.messages
        for index, message in enumerate(messages):
            if message.role == "assistant":
                agent_turns += 1
                for agent in agents:
                    role = f"agent {agent.name}"
                    _count_agent_turn(agent, agent_roles[agent.name], messages[1:index], message,
                                      tokenizer(role, agent.program.native_function_calling), tokenizer(role, False))
            elif message.role == "user" and user is not None:
                user_turns += 1
                spoken = [ConversationTurn(role="user" if m.role == "user" else "agent", content=m.content or "")
                          for m in messages[1:index] if m.role == "user" or (m.role == "assistant" and m.content
                                                                             and not m.tool_calls)]
                inputs = {"scenario": task.scenario, "conversation": spoken}
                signature = user.program.respond.signature
                count = tokenizer("user", False)
                user_role.prompt_tokens.append(count(user_adapter.format(signature, [], inputs)))
                user_role.completion_tokens.append(count([{"role": "assistant", "content": json.dumps(
                    {"message": message.content or ""})}]))
    shown = len(sampled) or 1
    for role in agent_roles.values():
        role.calls_per_item = agent_turns / shown
    user_role.calls_per_item = len(agents) * user_turns / shown
    roles = [*agent_roles.values(), *([user_role] if user is not None else [])]
    return RunEstimate(units=len(tasks) * trials, sampled=len(sampled), roles=roles, models=models)


def _count_agent_turn(agent: LMAgent, role: RolePrompts, conversation: list[Message], reply: Message,
                      count: Tokenizer, count_text: Tokenizer) -> None:
    program = agent.program
    role.prompt_tokens.append(count(program.messages(agent.policy, conversation, agent.tools)))
    answer = {"message": reply.content or "",
              "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in reply.tool_calls or []]}
    role.completion_tokens.append(count_text([{"role": "assistant", "content": json.dumps(answer)}]))
