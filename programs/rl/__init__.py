"""Our task sets as environments for the RL and evaluation stacks people already use: TRL's
``environment_factory`` (`trajectory2task.programs.rl.trl_env`), OpenEnv's HTTP servers
(`trajectory2task.programs.rl.openenv_env`) and the ``verifiers`` library
(`trajectory2task.programs.rl.verifiers_env`). All of them drive one episode core,
`trajectory2task.programs.loop.episode`; docs/rl.md says how each grades each condition.

Each integration's packages are the optional ``rl`` extra; a missing one is reported in one
line naming what to install (`require_rl_extra`).
"""

from __future__ import annotations

import importlib

RL_EXTRA_HINT = "pip install 'trajectory2task[rl]'"


class RLExtraMissing(ImportError):
    """An RL integration's packages are not installed; the message is one line saying what to install."""


def require_rl_extra(what: str, packages: tuple[str, ...]) -> None:
    """Raise `RLExtraMissing` unless the packages (module names) import."""
    missing = []
    for name in packages:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise RLExtraMissing(f"{what} needs {', '.join(missing)} (not installed): {RL_EXTRA_HINT}")
