"""Which Ray cluster a run uses, and joining it.

``--ray`` with no value (or ``T2T_RAY_ADDRESS=local``) starts a Ray on this machine for the
run; ``--ray ADDRESS`` (``ray://host:10001``, ``host:6379`` or ``auto``) joins a running
cluster. Nothing here imports Ray until a run asks for it: without the flag a run stays one
process and needs no Ray installed.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import dataclass
from typing import Any

RAY_ADDRESS_ENV = "T2T_RAY_ADDRESS"
LOCAL = "local"
# Ray's notice, at each local start, that it turned token authentication on: a warning on
# stderr for every `t2t ... --ray` run, which is not the user's to act on (the local Ray is
# the run's own and goes with it)
_TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
# what ray.init accepts as an address: "auto", ray://host:port, or host:port (a GCS address)
_ADDRESS = re.compile(r"^(auto|ray://[A-Za-z0-9_.\-\[\]:]+:\d{1,5}|[A-Za-z0-9_.\-\[\]:]+:\d{1,5})$")
# A Ray started for a run prestarts one idle worker process per CPU for its first driver. The
# run's actors do take those processes, but starting them (about a third of a second of CPU
# each) lengthens ray.init: measured on 2 cores, init took 2.5-4.0 s with them against 2.0-3.2 s
# without, and the 400 items after it no less time (medians 7.87 and 7.83 s over 3 rounds).
# Ray has no public switch; its raylet reads this variable (unknown ones it ignores), and
# tests/test_ray_cluster.py checks that a local start leaves no idle worker.
_NO_PRESTART = ("RAY_prestart_worker_first_driver", "0")


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be joined."""


@dataclass(frozen=True)
class RayTarget:
    """Where Ray work runs: ``address`` None starts a local Ray with ``num_cpus`` (None: all)."""

    address: str | None = None
    num_cpus: int | None = None

    @property
    def local(self) -> bool:
        return self.address is None

    def describe(self) -> str:
        return "a local Ray" if self.local else f"the Ray cluster at {self.address}"


def ray_target(flag: str | None, *, environ: dict[str, str] | None = None) -> RayTarget | None:
    """The target a ``--ray`` flag asks for: ``None`` (flag absent and ``T2T_RAY_ADDRESS``
    unset) means no Ray; ``""`` or ``"local"`` a local Ray; anything else a cluster address.
    Raises ValueError, naming the source, for an address Ray would not accept."""
    env = os.environ if environ is None else environ
    source, value = ("--ray", flag) if flag is not None else (RAY_ADDRESS_ENV, env.get(RAY_ADDRESS_ENV))
    if value is None:
        return None
    value = value.strip()
    if value in ("", LOCAL):
        return RayTarget()
    if not _ADDRESS.match(value) or any(c.isspace() for c in value):
        raise ValueError(f"{source}: {value!r} is not a Ray address; give 'local', 'auto', "
                         "ray://HOST:PORT or HOST:PORT")
    return RayTarget(address=value)


def _check_reachable(target: RayTarget, timeout_s: float = 5.0) -> None:
    """Raise RayUnavailable when nothing listens at the target's host:port: Ray itself would
    retry for a minute or more, logging to stderr, before giving up."""
    address = target.address
    if address is None or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise RayUnavailable(f"cannot join {target.describe()}: nothing answers at {host}:{port} ({why}); "
                             "is the cluster running? (ray start --head)") from None


def connect(target: RayTarget) -> Any:
    """Join (or start) the Ray the target names and return the ``ray`` module. A Ray this
    process already joined is used as it is (a notebook's ``ray.init`` wins)."""
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable("--ray needs Ray: pip install 'trajectory2task[ray]'") from exc
    if ray.is_initialized():
        return ray
    if target.local:
        logging.getLogger(_TOKEN_NOTICE_LOGGER).setLevel(logging.ERROR)
    _check_reachable(target)
    try:
        if target.local:  # "local": a new Ray of this run's own, never one another process started here
            name, value = _NO_PRESTART
            added = name not in os.environ  # a user's own setting stands
            if added:
                os.environ[name] = value  # read by the Ray processes this call starts
            try:
                ray.init(address="local", num_cpus=target.num_cpus, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            finally:
                if added:
                    os.environ.pop(name, None)
        else:
            ray.init(address=target.address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RayUnavailable(f"cannot join {target.describe()}: {first}") from exc
    return ray
