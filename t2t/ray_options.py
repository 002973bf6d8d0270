"""The ``--ray [ADDRESS]`` option of the commands that can run on Ray, and its parsing.

A bare ``--ray`` means a Ray on this machine. Typer has no option with an optional value, so
`with_bare_ray_flag` gives a bare one its value (``local``) before the arguments are parsed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Optional

import typer

from trajectory2task.errors import UserError

RAY_FLAG = "--ray"

RayOpt = Annotated[Optional[str], typer.Option(
    RAY_FLAG, metavar="[ADDRESS]",
    help="Run on Ray: alone (or 'local') a Ray started on this machine; ADDRESS (auto, ray://HOST:PORT, "
         "HOST:PORT) joins a running cluster. Default: $T2T_RAY_ADDRESS, else no Ray (one process).")]


def with_bare_ray_flag(args: Sequence[str]) -> list[str]:
    """``args`` with ``local`` after a ``--ray`` that has no value (last, or before another option)."""
    out: list[str] = []
    for index, arg in enumerate(args):
        out.append(arg)
        if arg == RAY_FLAG and (index + 1 == len(args) or args[index + 1].startswith("-")):
            out.append("local")
    return out


def ray_target_of(flag: str | None) -> Any:
    """The `RayTarget` of ``--ray`` / ``T2T_RAY_ADDRESS`` (None: no Ray); a bad address is a `UserError`."""
    from trajectory2task.programs.distributed.cluster import ray_target

    try:
        return ray_target(flag)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def join_ray(target: Any) -> Any:
    """The ``ray`` module, joined to (or having started) the target's Ray; `UserError` when it cannot."""
    from trajectory2task.programs.distributed.cluster import RayUnavailable, connect

    try:
        return connect(target)
    except RayUnavailable as exc:
        raise UserError(str(exc)) from None
