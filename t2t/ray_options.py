"""``--ray [ADDRESS]``: run a command's work on Ray (the optional ``[ray]`` extra).

The flag alone starts a Ray on this machine for the run (every core); with an address it
joins a running cluster; ``T2T_RAY_ADDRESS`` does the same when the flag is not given
(``trajectory2task.programs.distributed.cluster``). Ray is imported only when asked for.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from trajectory2task.errors import UserError

RayOpt = Annotated[Optional[str], typer.Option(
    "--ray", metavar="[ADDRESS]",  # bare --ray: completed to --ray=local (trajectory2task.cli.OPTIONAL_VALUES)
    help="Run on Ray: alone, a Ray on this machine (every core); with ADDRESS (auto, ray://HOST:10001, "
         "HOST:6379) a running cluster (env T2T_RAY_ADDRESS). The store is written here only.")]


def ray_target_of(flag: Optional[str]) -> Any:
    """The ``RayTarget`` the flag (or ``T2T_RAY_ADDRESS``) asks for, None for none; a bad
    address is a `UserError`."""
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
