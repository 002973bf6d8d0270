"""Records the store keeps that are not part of the task data model (signatures.models)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from signatures.models import LMCall

__all__ = ["LMCall", "Trial"]


class Trial(BaseModel):
    """One optimizer / sweep trial (the shape of an Optuna FrozenTrial, minus the dates)."""

    number: int
    params: dict[str, Any] = Field(default_factory=dict)
    value: float | None = None
    state: str = "COMPLETE"
    user_attrs: dict[str, Any] = Field(default_factory=dict)
