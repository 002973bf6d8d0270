"""The typed data model, defined once: every program, store table and exporter maps from these."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trajectory2task.domains.kit import Call, Claim

Condition = Literal["general", "ambiguous", "changing", "infeasible"]
CONDITIONS: tuple[Condition, ...] = ("general", "ambiguous", "changing", "infeasible")

FailureReason = Literal[
    "wrong_end_state",  # the rollout's DB end state differs from the gold replay's
    "forbidden_action",  # an action_should_not_take was executed
    "missing_required_action",  # an action_should_take was not executed
    "missing_communication",  # a communicate_info string never appeared in the agent's messages
    "invalid_gold",  # a gold action fails when replayed
    "noop_passes",  # a do-nothing agent would already pass the task
    "not_infeasible",  # a forbidden action neither fails a tool check nor breaks a policy rule
    "invalid_task",  # the task is malformed (no user scenario, unknown tool in actions, ...)
    "no_clarification",  # ambiguous task acted on before the user gave a withheld detail (opt-in)
    "max_turns",  # the conversation hit the turn limit
    "lm_error",  # an LM call failed beyond retries
    "mutant_passes",  # a wrong agent derived from the task (trajectory2task.programs.verification.mutants) passes it
    "false_premise",  # a claim the task makes about the initial database is false
    "single_reading",  # an ambiguous task whose opening has only one reading that runs
    "gold_breaks_policy",  # a gold (or required) write breaks a policy rule for the authenticated user
    "lint",  # the task's text has a lint finding (trajectory2task.programs.verification.lint)
]
FAILURE_REASONS: tuple[str, ...] = FailureReason.__args__  # type: ignore[attr-defined]


class ToolCall(Call):
    """One call of a domain tool."""

    id: str | None = None  # the LM's call id, when the call came from a chat message


class Action(ToolCall):
    """A tool call inside a task's evaluation criteria (tau2 `actions`)."""

    action_id: str | None = None
    requestor: Literal["assistant", "user"] | None = None
    compare_args: list[str] | None = None
    info: str | None = None


class Step(BaseModel):
    """A tool call with what the environment answered."""

    call: ToolCall
    observation: str
    error: bool = False


class Provenance(BaseModel):
    """Where an item came from: which run, which program versions, which seed."""

    source: Literal["tau2", "baseline", "lm", "manual"] = "manual"
    run_id: str | None = None
    program_versions: dict[str, str] = Field(default_factory=dict)
    seed: int | None = None
    trajectory_id: str | None = None


class Trajectory(BaseModel):
    """A valid sequence of executed tool calls, explored from one seed entity."""

    id: str
    domain: str
    steps: list[Step]
    seed_entity: str | None = None
    goal: str | None = None
    initial_state_hash: str
    end_state_hash: str
    provenance: Provenance = Field(default_factory=Provenance)


class UserScenario(BaseModel):
    """What the simulated user knows and wants; the agent never sees it."""

    persona: str | None = None
    reason_for_call: str
    known_info: str | None = None
    unknown_info: str | None = None
    task_instructions: str = ""
    domain: str | None = None
    # ambiguous: details the user reveals only when the agent asks
    withheld_info: list[str] = Field(default_factory=list)
    # changing: when the user changes course, and to what
    change_trigger: str | None = None
    revised_request: str | None = None

    def read_fields(self) -> list[tuple[str, str]]:
        """(field, text) of everything the simulated user reads, in a fixed order."""
        names = ("persona", "reason_for_call", "known_info", "unknown_info", "task_instructions", "change_trigger",
                 "revised_request")
        fields = [(name, value) for name in names if (value := getattr(self, name))]
        return fields + [(f"withheld_info[{i}]", text) for i, text in enumerate(self.withheld_info) if text]

    def read_text(self) -> str:
        """Everything the simulated user reads, as one text."""
        return "\n".join(text for _, text in self.read_fields())

    def folded_instructions(self) -> str:
        """The structured fields folded into one free text (tau2's ``task_instructions``):
        withheld details and the change of mind appended once, in plain sentences."""
        parts = [self.task_instructions.strip()] if self.task_instructions.strip() else []
        if self.withheld_info:
            said = " ".join(_sentence(s) for s in self.withheld_info)
            parts.append(f"Do not volunteer these details; give each one only when the agent asks for it. {said}")
        if self.change_trigger and self.revised_request:
            revised = _sentence(self.revised_request)
            if revised.rstrip(".") not in self.task_instructions:
                trigger = re.sub(r"^\s*when\s+", "", self.change_trigger.strip(), flags=re.IGNORECASE).rstrip(" .,")
                parts.append(f"When {trigger}, change your mind: {revised}")
        return " ".join(parts)


def _sentence(text: str) -> str:
    """A text ending in one full stop (or its own ! or ?)."""
    text = text.strip().rstrip(";,: ")
    return text if text.endswith((".", "!", "?", '"')) else text + "."


class Reading(BaseModel):
    """One reading of an ambiguous opening request: a candidate and the write it means."""

    candidate: str  # the candidate's key, as the domain's kit names it
    action_index: int  # position in the gold actions of the write the request leaves open
    action: Action  # that write, for this candidate
    target: bool = False  # the reading the user means (the gold write)


class LintFinding(BaseModel):
    """A defect in a task's text (trajectory2task.programs.verification.lint)."""

    rule: str
    field: str
    excerpt: str


class TaskDescription(BaseModel):
    purpose: str | None = None
    relevant_policies: str | None = None
    notes: str | None = None


class Task(BaseModel):
    """A verifiable task: a user scenario plus code-checkable success criteria."""

    id: str
    domain: str
    condition: Condition = "general"
    parent_task_id: str | None = None
    scenario: UserScenario
    gold_actions: list[Action] = Field(default_factory=list)
    expected_state_hash: str | None = None  # gold replay end state on the DB below
    initial_state_hash: str | None = None  # the DB the task was made for
    actions_should_not_take: list[Action] = Field(default_factory=list)
    actions_should_take: list[Action] = Field(default_factory=list)
    communicate_info: list[str] = Field(default_factory=list)
    nl_assertions: list[str] | None = None
    reward_basis: list[str] = Field(default_factory=lambda: ["DB"])
    description: TaskDescription | None = None
    condition_evidence: str | None = None  # what the code check found (e.g. the matching entities)
    first_goal: list[Action] = Field(default_factory=list)  # changing: the gold of the user's first request
    readings: list[Reading] = Field(default_factory=list)  # ambiguous: every reading of the opening request
    claims: list[Claim] = Field(default_factory=list)  # what the scenario asserts about the initial database
    lint: list[LintFinding] | None = None  # text findings; None: not linted
    provenance: Provenance = Field(default_factory=Provenance)
    initial_state: Any = None  # tau2's per-task initial state, kept for the round trip
    extra: dict[str, Any] = Field(default_factory=dict)  # tau2 keys we do not model


class Message(BaseModel):
    """A chat message in a rollout, OpenAI-shaped."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class TokenUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = 0.0  # USD; None: some of the calls are of a model with no known price

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(prompt_tokens=self.prompt_tokens + other.prompt_tokens,
                          completion_tokens=self.completion_tokens + other.completion_tokens,
                          cost=None if self.cost is None or other.cost is None else self.cost + other.cost)


class LMCall(BaseModel):
    """One LM call made by a program role (explorer, writer, adapter, user, agent, judge)."""

    role: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None  # USD (trajectory2task.programs.lm.prices); None: the model has no known price
    latency_s: float | None = None  # DSPy's history has no latency; set by callers that time calls
    error: str | None = None  # failed calls never reach DSPy's history; callers record them


Termination = Literal["user_stop", "transfer", "max_turns", "agent_stop", "lm_error", "recorded"]


class Rollout(BaseModel):
    """One conversation of an agent with a simulated user on a task's environment."""

    id: str
    task_id: str
    agent_model: str = ""
    user_model: str = ""
    trial: int = 0
    messages: list[Message] = Field(default_factory=list)
    steps: list[Step] = Field(default_factory=list)
    end_state_hash: str | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    termination: Termination = "recorded"
    error: str | None = None


class Verdict(BaseModel):
    """Whether a task (statically) or a rollout passed, and why not."""

    model_config = ConfigDict(populate_by_name=True)

    task_id: str
    rollout_id: str | None = None
    passed: bool = Field(alias="pass")
    reasons: list[FailureReason] = Field(default_factory=list)
    details: list[str] = Field(default_factory=list)

    def public(self) -> dict[str, Any]:
        """The JSON shape printed by the command line."""
        return self.model_dump(by_alias=True, exclude_none=True)


# ---------------------------------------------------------------- generation items

ItemReason = Literal[
    "lm_error",  # an LM call failed beyond the LM layer's retries, or its output never parsed
    "no_trajectory",  # exploration ended without a valid trajectory (no write, no replay, ...)
    "writer_rejected",  # the written scenario missed facts the agent must learn
    "kit_error",  # a function of the domain's generation kit raised
]


class GenerationItem(BaseModel):
    """What became of one item of a generation run."""

    index: int
    seed: int
    status: Literal["done", "failed"]
    stage: Literal["explore", "write", "adapt"] | None = None  # where a failed item stopped
    reason: ItemReason | None = None
    detail: str | None = None
    trajectory_id: str | None = None
    general_task_id: str | None = None
    tasks: dict[str, str] = Field(default_factory=dict)  # condition -> task id stored
    verified: dict[str, bool] = Field(default_factory=dict)  # condition -> static verdict passed
    rejected: dict[str, str] = Field(default_factory=dict)  # condition -> why no task
    proposals: int = 0
    dropped_calls: int = 0
