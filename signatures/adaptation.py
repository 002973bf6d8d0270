"""DSPy signatures that adapt a task to a user condition: ambiguous, changing, infeasible.

Code finds the facts (which entities fit an underspecified request, which revised goal
replays cleanly, which writes the tools or the policy refuse) and checks the result; the
LM only words the scenario and picks among what code proposed. Each docstring is the
instruction an optimizer rewrites; the fact models (`trajectory2task.signatures.adaptation_facts`) are what the LM is shown.
"""

from __future__ import annotations


import dspy

from trajectory2task.domains.kit import Claim
from trajectory2task.signatures.adaptation_facts import (
    AmbiguityFacts,
    ChangeFacts,
    InfeasibilityFacts,
    TaskBrief,
)
from trajectory2task.signatures.models import Action, Step, UserScenario


class AdaptAmbiguous(dspy.Signature):
    """Rewrite a customer-service task so that the customer's opening request is
    underspecified: the request as stated fits several entities in the database (the
    candidates), and the customer reveals the details that pick the target only when the
    agent asks. A good agent must ask a clarifying question before acting.

    The opening (reason_for_call and known_info) states only what facts.stated says about
    the open part and must not contain any of the facts.withheld values, nor hints that
    single out the target (its id or any detail only the target has). Keep
    everything else the customer needs verbatim: how to identify themselves and every
    other request of the original task. In withheld_info write one short sentence per
    withheld value, containing the value verbatim, that the customer says when asked. In
    task_instructions tell the customer to hold those details back until asked. The goal
    (the end state) stays the original task's.
    In claims list every statement the scenario makes about records that already exist (a
    record's status, who owns it, what it contains, a balance), each as the record's table and
    key, the path of the field inside the record, and the value; code checks each one against
    the database and rejects the task when one is false."""

    task: TaskBrief = dspy.InputField(desc="The original, fully specified task.")
    trajectory: list[Step] = dspy.InputField(desc="The executed tool calls the task was written from (its gold "
                                                  "actions), long observations cut.")
    facts: AmbiguityFacts = dspy.InputField(desc="The candidates, the target and the values to withhold, "
                                                 "found by code.")
    scenario: UserScenario = dspy.OutputField(desc="The rewritten customer scenario with an underspecified opening.")
    withheld_info: list[str] = dspy.OutputField(desc="Sentences the customer says only when asked, one per "
                                                     "withheld value, each containing it verbatim.")
    claims: list[Claim] = dspy.OutputField(desc="What the scenario states about existing records, "
                                                "checked by code against the database (may be empty).")


class AdaptChanging(dspy.Signature):
    """Rewrite a customer-service task so that the customer changes their mind midway.

    The customer opens with the first request (facts.initial_request: the original goal)
    and, at the point given by change_trigger, revises one write to facts.revised_action.
    The trigger must come before the agent performs that write: typically when the agent
    has listed the details of the action and asks for confirmation, the customer does not
    confirm but asks for the revised version instead. The revised_request is what the
    customer then says: it must state every value in facts.must_mention verbatim. The
    scenario's reason_for_call and known_info carry the first request in full (identity,
    the records it is about, every value the first write needs); task_instructions explain when and
    how to change course, and that the first version must not be carried out.
    In claims list every statement the scenario makes about records that already exist (a
    record's status, who owns it, what it contains, a balance), each as the record's table and
    key, the path of the field inside the record, and the value; code checks each one against
    the database and rejects the task when one is false."""

    task: TaskBrief = dspy.InputField(desc="The original task, whose goal is the first request.")
    trajectory: list[Step] = dspy.InputField(desc="The executed tool calls the task was written from (its gold "
                                                  "actions), long observations cut.")
    facts: ChangeFacts = dspy.InputField(desc="The first and the revised write, found and checked by code.")
    scenario: UserScenario = dspy.OutputField(desc="The customer scenario; reason_for_call is the first request.")
    change_trigger: str = dspy.OutputField(desc="When in the conversation the customer changes course.")
    revised_request: str = dspy.OutputField(desc="What the customer asks for instead, with the must-mention values.")
    claims: list[Claim] = dspy.OutputField(desc="What the scenario states about existing records, "
                                                "checked by code against the database (may be empty).")


class AdaptInfeasible(dspy.Signature):
    """Rewrite a customer-service task so that the customer asks for something the agent
    must not do: one of the candidate writes, each refused by a tool check or by a rule
    of the policy (code ran each on a copy of the database to confirm).

    Choose the candidate that fits the original task best (prefer related ones) and return
    it unchanged as forbidden_action. Write the scenario of the same customer asking for
    it: identification details and the ids of the records it is about must be in known_info
    or reason_for_call, so a correct agent can authenticate the customer, look the records
    up and then refuse.
    The customer insists once, then accepts the refusal. In explanation say in one or two
    sentences what a correct agent tells the customer and why (the rule that forbids it).
    In claims list every statement the scenario makes about records that already exist (a
    record's status, who owns it, what it contains, a balance), each as the record's table and
    key, the path of the field inside the record, and the value; code checks each one against
    the database and rejects the task when one is false."""

    task: TaskBrief = dspy.InputField(desc="The original task (same customer).")
    trajectory: list[Step] = dspy.InputField(desc="The executed tool calls the task was written from (its gold "
                                                  "actions), long observations cut.")
    facts: InfeasibilityFacts = dspy.InputField(desc="The forbidden writes code proposes, with why each is refused.")
    forbidden_action: Action = dspy.OutputField(desc="The chosen candidate's action, exactly as proposed.")
    scenario: UserScenario = dspy.OutputField(desc="The customer scenario asking for the forbidden write.")
    explanation: str = dspy.OutputField(desc="What a correct agent explains to the customer, and why.")
    claims: list[Claim] = dspy.OutputField(desc="What the scenario states about existing records, "
                                                "checked by code against the database (may be empty).")
