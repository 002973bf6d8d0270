"""Airline's generation kit: exploration grounding and the condition facts module."""

from __future__ import annotations

from domains.airline.conditions import CONDITIONS
from domains.airline.exploration import EXPLORATION
from domains.kit import GenerationKit

KIT = GenerationKit(exploration=EXPLORATION, conditions=CONDITIONS)
