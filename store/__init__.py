"""The task store: one DuckDB file, append-only tables, SQL views, exports.

Knows the pydantic models of `trajectory2task.signatures.models` only (never DSPy, LiteLLM or domains).
The names below load on first use: reading a task file (``trajectory2task.store.files``)
imports neither DuckDB nor pyarrow, so commands that need no store start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "StoreError": ".errors",
    "LMCall": ".records", "Trial": ".records",
    "LATEST_VERSION": ".schema", "STANDARD_VIEWS": ".schema", "TABLE_DOCS": ".schema", "VIEW_DOCS": ".schema",
    "check_read_only_sql": ".sqlcheck",
    "TaskStore": ".taskstore", "iter_batches": ".taskstore", "package_code_version": ".taskstore",
    "read_only_query": ".taskstore",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .errors import StoreError
    from .records import LMCall, Trial
    from .schema import LATEST_VERSION, STANDARD_VIEWS, TABLE_DOCS, VIEW_DOCS
    from .sqlcheck import check_read_only_sql
    from .taskstore import TaskStore, iter_batches, package_code_version, read_only_query
