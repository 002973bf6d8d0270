"""Airline's generation kit: exploration grounding and every condition piece, from airline's
condition functions (``trajectory2task.domains.airline.conditions``)."""

from __future__ import annotations

from trajectory2task.domains.airline.conditions import CONDITIONS as FACTS
from trajectory2task.domains.airline.exploration import EXPLORATION
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

CONDITIONS = ConditionKit(
    identity=IdentityKit(identity_lookup=FACTS.identity_lookup, identity_text=FACTS.identity_text,
                         forgotten_identity=FACTS.forgotten_identity),
    ownership=OwnershipKit(owner_of_call=FACTS.owner_of_call, related_entities=FACTS.related_entities),
    wording=WordingKit(describe_call=FACTS.describe_call, action_label=FACTS.action_label,
                       user_stated_ids=FACTS.user_stated_ids, change_mentions=FACTS.change_mentions,
                       call_claims=FACTS.call_claims),
    ambiguity=AmbiguityKit(ambiguity_proposals=FACTS.ambiguity_proposals, ambiguity_candidates=FACTS.ambiguity_candidates,
                           ambiguity_target=FACTS.ambiguity_target, withheld_values=FACTS.withheld_values,
                           reading_call=FACTS.reading_call),
    change=ChangeKit(change_alternatives=FACTS.change_alternatives),
    infeasibility=InfeasibilityKit(infeasible_proposals=FACTS.infeasible_proposals,
                                   required_lookups=FACTS.required_lookups),
)

KIT = GenerationKit(exploration=EXPLORATION, conditions=CONDITIONS)
