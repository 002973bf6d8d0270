"""Retail's generation kit: exploration grounding plus the condition facts module."""

from __future__ import annotations

from domains.kit import GenerationKit
from domains.retail import conditions
from domains.retail.exploration import EXPLORATION

KIT = GenerationKit(exploration=EXPLORATION, conditions=conditions)
