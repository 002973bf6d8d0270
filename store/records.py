"""Records the store keeps that are not part of the task data model (trajectory2task.signatures.models)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from trajectory2task.signatures.models import LMCall

__all__ = ["FinetuneRun", "LMCall", "LossPoint", "Trial"]


class Trial(BaseModel):
    """One optimizer / sweep trial (the shape of an Optuna FrozenTrial, minus the dates)."""

    number: int
    params: dict[str, Any] = Field(default_factory=dict)
    value: float | None = None
    state: str = "COMPLETE"
    user_attrs: dict[str, Any] = Field(default_factory=dict)


class LossPoint(BaseModel):
    """The training loss at one logged step."""

    step: int
    loss: float
    epoch: float | None = None


class FinetuneRun(BaseModel):
    """One `t2t finetune` run as the store's ``finetune_runs`` keeps it."""

    run_id: str
    base: str
    method: Literal["lora", "full"]
    config: dict[str, Any]
    data_source: str  # "store" or the JSONL file trained on
    data_sql: str | None = None  # the filter over rollouts_latest, with ? for data_params
    data_params: list[Any] = Field(default_factory=list)
    n_rows: int  # conversations selected
    n_examples: int  # training sequences made from them
    losses: list[LossPoint] = Field(default_factory=list)
    output: str | None = None
    merged_output: str | None = None
    status: Literal["finished", "failed", "interrupted"]
    error: str | None = None
    wall_s: float | None = None
