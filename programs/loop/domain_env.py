"""A domain's environment by name, over a database file or the domain's generated one.

Its own module so that the RL adapters (TRL, OpenEnv, verifiers) can load an environment
without importing Gymnasium (`trajectory2task.programs.loop.environment` re-exports both)."""

from __future__ import annotations

import functools
import os
from typing import Any

from trajectory2task.domains import Environment


@functools.lru_cache(maxsize=4)
def load_environment(domain: str, db: str | None = None, db_seed: int = 0, db_users: int = 500) -> Environment[Any]:
    """A domain's environment over a database file or a generated one (kept: ``gymnasium.make``
    builds an env more than once)."""
    from trajectory2task.domains import get_domain

    kit = get_domain(domain)
    if db is not None:
        return kit.environment(read_db(kit, db))
    if kit.generate_db is None:
        raise ValueError(f"domain {domain} has no database generator: pass db")
    return kit.environment(kit.generate_db(db_seed, db_users))


def read_db(kit: Any, path: str | os.PathLike[str]) -> Any:
    """A domain's database from a JSON file: a regular file of bounded size, read without
    blocking (a FIFO, a device or a directory is refused at once), valid for the domain.
    Raises `trajectory2task.store.files.InputFileError` (a ValueError) in one line."""
    from pydantic import ValidationError

    from trajectory2task.store.files import InputFileError, read_input_bytes

    data = read_input_bytes(path, "database JSON file")
    try:
        return kit.db_model.model_validate_json(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "the file"
        raise InputFileError(f"{path}: not a {kit.name} database: {where}: {err['msg']}") from None
