"""Where things are: the store file and the database a command runs on."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trajectory2task.errors import UserError

DEFAULT_STORE = "t2t.duckdb"
DEFAULT_DB_SEED = 0
DEFAULT_DB_USERS = 500
DEFAULT_GENERATE_N = 40  # generate --n: items to explore
# Documented limits (docs/cli.md): a generated database is built in memory (about 20 kB and
# 1.4 ms per user here), and bench plans tasks x agents x trials rollouts up front.
MAX_DB_USERS = 100_000
MAX_TRIALS = 1_000
MAX_WORKERS = 256  # items or rollouts in flight at once (generate --workers, bench --concurrency)
# Other count flags, each bounded so a typo (an extra three zeros) is refused, not a run that
# allocates or loops for hours: bench --max-turns, sweep --n (items a trial), optimize's budgets
MAX_TURNS = 1_000
MAX_ITEMS_PER_TRIAL = 10_000
MAX_DEMOS = 100
MAX_CANDIDATES = 1_000
MAX_METRIC_CALLS = 100_000


def store_path(flag: str | None) -> Path:
    """The workspace store: --store, else $T2T_STORE, else ./t2t.duckdb."""
    return Path(flag or os.environ.get("T2T_STORE") or DEFAULT_STORE)


def resolve_domain(name: str) -> Any:
    from trajectory2task.domains import UnknownDomainError, get_domain

    # a built-in name or an importable module path (package.module); anything else, such
    # as a relative '.foo', is not a name import_module can take
    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise UserError(f"--domain {name!r}: not a domain name or a module path such as package.module")
    try:
        return get_domain(name)
    except UnknownDomainError as exc:
        raise UserError(str(exc)) from None
    except ImportError as exc:
        raise UserError(f"domain '{name}' cannot be imported: {exc}") from None


def read_text_file(path: str, what: str) -> str:
    """A UTF-8 text file named on the command line (a policy, an LM config), refused in
    one line when it is missing, not a regular file, too large or not UTF-8."""
    from trajectory2task.store.files import InputFileError, read_input_text

    try:
        return read_input_text(path, what)
    except InputFileError as exc:
        raise UserError(f"{what}: {exc}") from None


def check_lm_config_file(path: str | None) -> None:
    """Refuse an unreadable --lm-config before the LM layer parses it."""
    if path is not None:
        read_text_file(path, "--lm-config")


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
        if not path.exists():
            raise UserError(f"{path}: no such database file")
        if not path.is_file():
            raise UserError(f"{path}: not a regular file, expected a database JSON file")
        from trajectory2task.store.files import InputFileError, read_input_bytes

        try:  # bounded and non-blocking: a huge file, a FIFO or a device is one error line
            data = read_input_bytes(path, "--db")
        except InputFileError as exc:
            raise UserError(str(exc)) from None
        try:
            with _long_lived_objects():
                db = domain.db_model.model_validate_json(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise UserError(f"{path}: not a {domain.name} database: {where}: {err['msg']}") from None
    policy = None if policy_path is None else read_text_file(policy_path, "--policy")
    with _long_lived_objects():
        return domain.environment(db, policy)


@contextmanager
def _long_lived_objects() -> Iterator[None]:
    """Around code that makes thousands of objects living as long as the command (a database
    and its record hashes): the garbage collector pauses meanwhile, its passes would find no
    garbage, and then what exists is frozen out of its later scans (``gc.freeze``), each of
    which would walk it all again."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
    gc.freeze()
