"""Records the store keeps that are not part of the task data model (signatures.models)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class LMCall(BaseModel):
    """One LM call made by a program role (explorer, writer, adapter, user, agent, judge)."""

    role: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency_s: float = 0.0
    error: str | None = None


class Trial(BaseModel):
    """One optimizer / sweep trial (the shape of an Optuna FrozenTrial, minus the dates)."""

    number: int
    params: dict[str, Any] = Field(default_factory=dict)
    value: float | None = None
    state: str = "COMPLETE"
    user_attrs: dict[str, Any] = Field(default_factory=dict)
