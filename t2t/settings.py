"""Where things are: the store file and the database a command runs on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from t2t.errors import UserError

DEFAULT_STORE = "t2t.duckdb"
DEFAULT_DB_SEED = 0
DEFAULT_DB_USERS = 500


def store_path(flag: str | None) -> Path:
    """The workspace store: --store, else $T2T_STORE, else ./t2t.duckdb."""
    return Path(flag or os.environ.get("T2T_STORE") or DEFAULT_STORE)


def resolve_domain(name: str) -> Any:
    from domains import UnknownDomainError, get_domain

    try:
        return get_domain(name)
    except UnknownDomainError as exc:
        raise UserError(str(exc)) from None


def load_environment(domain_name: str, db_path: str | None, policy_path: str | None = None,
                     seed: int = DEFAULT_DB_SEED, users: int = DEFAULT_DB_USERS) -> Any:
    """An environment over --db, or over a freshly generated database when no file is given."""
    from pydantic import ValidationError

    domain = resolve_domain(domain_name)
    if db_path is None:
        if domain.generate_db is None:
            raise UserError(f"domain {domain.name} has no database generator: pass --db")
        db = domain.generate_db(seed, users)
    else:
        path = Path(db_path)
        if not path.is_file():
            raise UserError(f"{path}: no such database file")
        try:
            db = domain.load_db(str(path))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise UserError(f"{path}: not a {domain.name} database: {where}: {err['msg']}") from None
    policy = None
    if policy_path is not None:
        p = Path(policy_path)
        if not p.is_file():
            raise UserError(f"{p}: no such policy file")
        policy = p.read_text(encoding="utf-8")
    return domain.environment(db, policy)
