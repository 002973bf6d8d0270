"""Signatures of the closed loop: the simulated user and the agent under test.

The two sides see different worlds. The user simulator gets the user scenario and the
words exchanged so far, never the task's gold actions or criteria. The agent gets the
policy, the tools (`dspy.Tool`) and the conversation as a `dspy.History` of chat messages
(its own tool calls and their results included), never the scenario; it answers with a
message or `dspy.ToolCalls`.
"""

from __future__ import annotations

from typing import Any, Literal

import dspy
from pydantic import BaseModel, Field

from trajectory2task.signatures.models import Message, UserScenario

STOP_SIGNAL = "###STOP###"  # the user simulator ends the conversation with this token


class ConversationTurn(BaseModel):
    """One spoken turn as the simulated user sees it: tool calls and results are hidden."""

    role: Literal["agent", "user"]
    content: str


class AgentToolCall(BaseModel):
    """A tool call as the agent LM wrote it.

    ``arguments_error`` is set (and ``arguments`` left empty) when the LM's arguments were
    not a JSON object; the rollout shows that error to the agent instead of running the call.
    """

    id: str | None = None
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    arguments_error: str | None = None


class SimulateUser(dspy.Signature):
    """You are a customer talking to a customer-service agent. Play the scenario faithfully,
    in the first person, one short message at a time.

    - Open with the reason for your call, in your own words, without volunteering every detail.
    - Give identifying information only when the agent asks for it.
    - Details listed in `withheld_info` are revealed only when the agent asks about them; if
      the agent acts without asking, do not correct it unprompted.
    - When `change_trigger` happens in the conversation, change your request to
      `revised_request` and stick to the revised request from then on.
    - If the agent refuses or says something is impossible, insist at most once within what
      your scenario allows; do not invent new needs, facts or ids.
    - Answer "yes" to a confirmation only when the action matches what you currently want.
    - When your goal is met, or it clearly cannot be met, end with a short message that
      contains ###STOP###. Never say ###STOP### before then.
    """

    scenario: UserScenario = dspy.InputField(desc="who you are, what you want and what you know")
    conversation: list[ConversationTurn] = dspy.InputField(
        desc="the conversation so far, oldest first; empty when you open the call")
    message: str = dspy.OutputField(desc="your next message to the agent")


class AgentTurn(dspy.Signature):
    """You are a customer-service agent. Follow the policy exactly. Each turn, either call
    one tool or write one message to the user, never both. Identify the user before
    anything else, ask when a request is ambiguous, get an explicit "yes" before any change
    to the database, refuse what the policy forbids, and transfer to a human agent only
    when the policy says so."""

    policy: str = dspy.InputField(desc="the policy you must follow")
    history: dspy.History = dspy.InputField(
        desc="the conversation so far as chat messages: the user's, yours, your tool calls and their results")
    tools: list[dspy.Tool] = dspy.InputField(desc="the tools you may call")
    message: str = dspy.OutputField(desc="your message to the user; empty when you call a tool")
    tool_calls: dspy.ToolCalls = dspy.OutputField(
        desc="the tool call to make this turn (at most one); none when you write to the user")
