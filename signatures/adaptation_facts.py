"""The facts code finds for an intent adaptation (which entities fit an underspecified
request, which revised goal replays cleanly, which writes are refused), as the LM is shown
them (`trajectory2task.signatures.adaptation`) and as the offline adaptation words them.
Plain pydantic models: no DSPy, so an offline run never loads it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from trajectory2task.domains.kit import Claim, EntityCandidate
from trajectory2task.signatures.models import Action, Task, UserScenario


class TaskBrief(BaseModel):
    """What an intent adaptation needs of the original task: its scenario, without ids, hashes or
    provenance the LM has no use for. Its goal, the gold actions, is the trajectory's calls,
    which the adaptation is shown with their observations (not twice)."""

    scenario: UserScenario
    communicate_info: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, task: Task) -> TaskBrief:
        return cls(scenario=task.scenario, communicate_info=list(task.communicate_info))


class AmbiguityFacts(BaseModel):
    """What code found for an ambiguous adaptation."""

    kind: str = Field(description="what the opening request leaves open, as the domain names it")
    open_question: str = Field(description="the same, in words")
    action_index: int = Field(description="position in the gold actions of the write the request leaves open")
    stated: dict[str, Any] = Field(description="the constraints the opening request states, in the domain's terms")
    target: str = Field(description="key of the candidate the clarified goal acts on")
    candidates: list[EntityCandidate] = Field(description="every entity that fits the stated constraints (>= 2)")
    withheld: list[str] = Field(description="values that single out the target: the user says them only when asked")
    withheld_sentences: list[str] = Field(description="a plain wording of each withheld value, as said when asked")
    open_request: str = Field(description="a plain wording of the request with the open part left open")


class ChangeFacts(BaseModel):
    """What code found for a changing-intent adaptation: the first goal and the revised one."""

    action_index: int = Field(description="position in the gold actions of the write the user revises")
    initial_action: Action = Field(description="the write the user first asks for")
    revised_action: Action = Field(description="the write the user asks for after changing course (the gold one)")
    difference: str = Field(description="what differs between the two writes")
    initial_request: str = Field(description="a plain wording of the whole first request")
    revised_request: str = Field(description="a plain wording of the revised write")
    action_label: str = Field(description="how the user names the write that changes "
                                          "(a short noun phrase naming the write)")
    must_mention: list[str] = Field(description="values the revised request must state verbatim")


class InfeasibleCandidate(BaseModel):
    """A write the user could ask for that a tool check or a policy rule refuses (confirmed by running it)."""

    rule: str
    action: Action
    fact: str = Field(description="why it cannot be done")
    finding: str = Field(description="what running it on a copy of the database gave")
    request: str = Field(description="a plain wording of the request")
    related: bool = Field(description="whether it acts on a record the original task touches")
    claims: list[Claim] = Field(default_factory=list,
                                description="what the plain wording asserts about the database, checked by code")
    handoff: Action | None = Field(default=None, description="the hand-off the policy requires after refusing, "
                                                             "if any (a required action)")


class InfeasibilityFacts(BaseModel):
    user_id: str
    candidates: list[InfeasibleCandidate]
