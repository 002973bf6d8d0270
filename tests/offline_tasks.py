"""Offline generation into memory, shared by the discriminative-verification tests."""

from __future__ import annotations

from typing import Any

from trajectory2task.programs.generation.adapting import BaselineAdaptation
from trajectory2task.programs.generation.exploration import BaselineExplorer
from trajectory2task.programs.generation.pipeline import GenerationConfig, GenerationPipeline
from trajectory2task.programs.generation.writing import BaselineWriter
from trajectory2task.signatures.models import GenerationItem, Task, Verdict


class MemorySink:
    """An ItemSink that keeps everything in lists."""

    def __init__(self) -> None:
        self.items: list[GenerationItem] = []
        self.tasks: list[Task] = []
        self.verdicts: list[Verdict] = []

    def recorded(self, run_id: str) -> list[GenerationItem]:
        return []

    def add(self, run_id: str, item: GenerationItem, trajectories: Any, tasks: Any, verdicts: Any,
            lm_calls: Any) -> None:
        self.items.append(item)
        self.tasks += tasks
        self.verdicts += verdicts

    def finish(self, run_id: str, status: str) -> None:
        pass

    def kept(self) -> list[Task]:
        """The tasks that passed static verification (what a run keeps)."""
        return [t for t, v in zip(self.tasks, self.verdicts) if v.passed]


def generate_offline(env: Any, n: int, seed: int = 0) -> MemorySink:
    sink = MemorySink()
    config = GenerationConfig(domain=env.domain.name, n=n, seed=seed, db_initial_hash=env.initial_hash(),
                              id_prefix=f"off{seed}")
    GenerationPipeline(env, sink, config, explorer=BaselineExplorer(), writer=BaselineWriter(),
                       adaptation=BaselineAdaptation()).run("run")
    return sink
