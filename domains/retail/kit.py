"""Retail's generation kit: exploration grounding plus the condition facts module."""

from __future__ import annotations

from trajectory2task.domains.kit import GenerationKit
from trajectory2task.domains.retail import conditions
from trajectory2task.domains.retail.exploration import EXPLORATION

KIT = GenerationKit(exploration=EXPLORATION, conditions=conditions)
