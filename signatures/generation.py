"""DSPy signatures of the generation steps: propose an exploration call, write a task.

Each docstring is the instruction an optimizer rewrites; the fields are typed with the
pydantic models of ``trajectory2task.signatures.models`` and carry a one-line description each.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any, Literal

import dspy
from pydantic import BaseModel, Field, create_model

from trajectory2task.domains.kit import Claim
from trajectory2task.signatures.models import Step, ToolCall, UserScenario


class ProposeExplorationCall(dspy.Signature):
    """You explore a customer-service tool environment to record a realistic, valid sequence
    of tool calls, the kind a support agent makes while serving one customer.

    Propose the single next tool call. Start from the seed entity: identify the customer
    with a look-up tool, then read the records you need before you change anything, and use only ids and values that appeared in earlier observations or
    in the seed entity. Every write must be allowed by the policy and act on this customer
    only. If the previous proposal failed, read its error and propose a corrected call.
    Stop proposing reads once you know enough: the goal counts successful writes."""

    domain_summary: str = dspy.InputField(desc="What the environment is: its entities and what can be done.")
    policy: str = dspy.InputField(desc="The rules a support agent must follow in this domain.")
    tools: list[str] = dspy.InputField(desc="The tools, one a line: name(parameter: type, optional?: type) "
                                            "[read|write|generic] -- what it does.")
    seed_entity: str = dspy.InputField(desc="The customer to serve and what they would tell an agent.")
    exploration_goal: str = dspy.InputField(desc="What the trajectory must achieve, e.g. how many writes.")
    trajectory: list[Step] = dspy.InputField(desc="The successful calls so far, each with its observation.")
    previous_error: str = dspy.InputField(desc="Error of the previous proposal (dropped), or empty if none.")
    tool_call: ToolCall = dspy.OutputField(desc="The next call: a tool name and its JSON arguments.")


@lru_cache(maxsize=64)
def proposed_tool_call(tool_names: tuple[str, ...]) -> type[BaseModel]:
    """The proposal's model for these tools: its name typed as a ``Literal`` of them. One class
    per tool set, whatever instruction the signature carries: demos made under one instruction
    must pickle (DSPy's cache keys) under the next an optimizer tries."""
    # a module attribute of its own, so that DSPy's cache can pickle demos holding one
    name = "ProposedToolCall_" + hashlib.blake2b("|".join(tool_names).encode(), digest_size=6).hexdigest()
    proposed = create_model(
        name, __base__=BaseModel, __module__=__name__,
        name=(Literal[tool_names], Field(description="One of the domain's tools.")),  # type: ignore[valid-type]
        arguments=(dict[str, Any], Field(default_factory=dict, description="The call's arguments.")))
    globals()[name] = proposed
    return proposed


@lru_cache(maxsize=64)
def exploration_signature(base: type[dspy.Signature], tool_names: tuple[str, ...]) -> type[dspy.Signature]:
    """``base`` (a `ProposeExplorationCall`, its instruction as an optimizer left it) with the
    proposal's tool name typed as a ``Literal`` of these tools (`proposed_tool_call`): a schema
    for constrained decoding that can only name them, and a parse that rejects any other name."""
    return base.with_updated_fields("tool_call", type_=proposed_tool_call(tool_names))


class WriteTask(dspy.Signature):
    """Turn a recorded tool-call trajectory into the scenario of a simulated customer who
    contacts support and, by following it, leads an agent to the same final database state.

    Write in the second person ("You want to ..."). The agent starts knowing nothing: the
    scenario must hold every fact the agent has to learn from the customer, namely how to
    identify them, which of their records the request is about, what exactly they want
    changed and why, in words a customer would use. Every required fact listed must appear
    verbatim. Do not mention tool names or ids the customer would not know. Put in
    communicate_info only short strings (such as an amount) that the agent must tell the
    customer and that appear in the trajectory's observations; leave it empty otherwise.
    In claims list every statement the scenario makes about records that already exist (a
    record's status, who owns it, what it contains, a balance), each as the record's table and
    key, the path of the field inside the record, and the value; code checks each one against
    the database and rejects the task when one is false."""

    trajectory: list[Step] = dspy.InputField(desc="The executed tool calls with their observations, first to last "
                                                  "(long observations cut).")
    required_facts: list[str] = dspy.InputField(desc="Facts the scenario must state verbatim.")
    previous_error: str = dspy.InputField(desc="Why the previous answer was not accepted; empty on the first try.")
    scenario: UserScenario = dspy.OutputField(desc="The customer's persona, reason for call, known and unknown info, "
                                                   "and instructions.")
    communicate_info: list[str] = dspy.OutputField(desc="Strings the agent must say to the customer (often empty).")
    claims: list[Claim] = dspy.OutputField(desc="What the scenario states about existing records, "
                                                "checked by code against the database (may be empty).")
