"""trajectory2task: verifiable tool-calling tasks from explored trajectories, as DSPy programs.

The package root is the application layer (the `t2t` command lives in ``trajectory2task.cli``);
the library is in its subpackages: ``domains`` (the domain contract and the built-in domains),
``signatures`` (typed DSPy signatures and pydantic models), ``programs`` (the DSPy programs),
``optimize`` (metrics and sweeps) and ``store`` (the DuckDB task store).

The names below are imported on first use, so ``import trajectory2task`` stays cheap and a
command that needs no LM or store imports neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # the domain contract
    "Domain": "trajectory2task.domains.runtime",
    "Environment": "trajectory2task.domains.runtime",
    "Episode": "trajectory2task.domains.runtime",
    "ToolSpec": "trajectory2task.domains.runtime",
    "ToolError": "trajectory2task.domains.runtime",
    "tool": "trajectory2task.domains.runtime",
    "get_domain": "trajectory2task.domains",
    "list_domains": "trajectory2task.domains",
    # the data every program reads and writes
    "Task": "trajectory2task.signatures.models",
    "Trajectory": "trajectory2task.signatures.models",
    "Rollout": "trajectory2task.signatures.models",
    "Verdict": "trajectory2task.signatures.models",
    # the programs
    "Explorer": "trajectory2task.programs.generation.explorer",
    "TaskWriter": "trajectory2task.programs.generation.writer",
    "IntentAdaptation": "trajectory2task.programs.generation.adaptation",
    "UserSimulator": "trajectory2task.programs.loop.user_sim",
    "ToolCallingAgent": "trajectory2task.programs.loop.agent",
    "EpisodeAgent": "trajectory2task.optimize.compile",
    "EpisodeUser": "trajectory2task.optimize.compile",
    "Verifier": "trajectory2task.programs.verification.verifier",
    # the store
    "TaskStore": "trajectory2task.store",
    "read_only_query": "trajectory2task.store",
    # metrics
    "check_task": "trajectory2task.optimize.metrics",
    "check_trajectory": "trajectory2task.optimize.metrics",
    "Score": "trajectory2task.optimize.metrics",
    # the use cases behind the commands
    "generate": "trajectory2task.usecases",
    "GenerateResult": "trajectory2task.usecases",
    "verify": "trajectory2task.usecases",
    "audit": "trajectory2task.usecases",
    "bench": "trajectory2task.usecases",
    "trainset": "trajectory2task.usecases",
    "export": "trajectory2task.usecases",
    "metric": "trajectory2task.usecases",
    "BenchResult": "trajectory2task.usecases",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trajectory2task' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static checkers see the real names
    from trajectory2task.domains import get_domain, list_domains
    from trajectory2task.domains.runtime import Domain, Environment, Episode, ToolError, ToolSpec, tool
    from trajectory2task.optimize.metrics import Score, check_task, check_trajectory
    from trajectory2task.programs.generation.adaptation import IntentAdaptation
    from trajectory2task.programs.generation.explorer import Explorer
    from trajectory2task.programs.generation.writer import TaskWriter
    from trajectory2task.optimize.compile import EpisodeAgent, EpisodeUser
    from trajectory2task.programs.loop.agent import ToolCallingAgent
    from trajectory2task.programs.loop.user_sim import UserSimulator
    from trajectory2task.programs.verification.verifier import Verifier
    from trajectory2task.signatures.models import Rollout, Task, Trajectory, Verdict
    from trajectory2task.store import TaskStore, read_only_query
    from trajectory2task.usecases import (BenchResult, GenerateResult, audit, bench, export, generate, metric,
                                          trainset, verify)
