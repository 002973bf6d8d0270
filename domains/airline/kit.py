"""Airline's generation kit: exploration grounding and the condition facts module."""

from __future__ import annotations

from trajectory2task.domains.airline.conditions import CONDITIONS
from trajectory2task.domains.airline.exploration import EXPLORATION
from trajectory2task.domains.kit import GenerationKit

KIT = GenerationKit(exploration=EXPLORATION, conditions=CONDITIONS)
