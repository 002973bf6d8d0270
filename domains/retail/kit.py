"""Retail's generation kit: exploration grounding plus every condition piece, from retail's
condition functions (``trajectory2task.domains.retail.conditions``)."""

from __future__ import annotations

from trajectory2task.domains.kit import (
    AmbiguityKit,
    ChangeKit,
    ConditionKit,
    GenerationKit,
    IdentityKit,
    InfeasibilityKit,
    OwnershipKit,
    WordingKit,
)
from trajectory2task.domains.retail import conditions
from trajectory2task.domains.retail.exploration import EXPLORATION
from trajectory2task.domains.retail.rules import owner_of_call

CONDITIONS = ConditionKit(
    identity=IdentityKit(identity_lookup=conditions.identity_lookup, identity_text=conditions.identity_text,
                         forgotten_identity=conditions.forgotten_identity),
    ownership=OwnershipKit(owner_of_call=owner_of_call, related_entities=conditions.related_entities),
    wording=WordingKit(describe_call=conditions.describe_call, action_label=conditions.action_label,
                       user_stated_ids=conditions.user_stated_ids, change_mentions=conditions.change_mentions,
                       call_claims=conditions.call_claims),
    ambiguity=AmbiguityKit(ambiguity_proposals=conditions.ambiguity_proposals,
                           ambiguity_candidates=conditions.ambiguity_candidates,
                           ambiguity_target=conditions.ambiguity_target, withheld_values=conditions.withheld_values,
                           reading_call=conditions.reading_call),
    change=ChangeKit(change_alternatives=conditions.change_alternatives),
    infeasibility=InfeasibilityKit(infeasible_proposals=conditions.infeasible_proposals,
                                   required_lookups=conditions.required_lookups),
)

KIT = GenerationKit(exploration=EXPLORATION, conditions=CONDITIONS)
