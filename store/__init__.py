"""The task store: one DuckDB file, append-only tables, SQL views, exports.

Knows the pydantic models of `trajectory2task.signatures.models` only (never DSPy, LiteLLM or domains).
"""

from .errors import StoreError
from .records import LMCall, Trial
from .schema import LATEST_VERSION, STANDARD_VIEWS, TABLE_DOCS, VIEW_DOCS
from .sqlcheck import check_read_only_sql
from .taskstore import TaskStore, iter_batches, package_code_version, read_only_query

__all__ = [
    "LATEST_VERSION",
    "LMCall",
    "STANDARD_VIEWS",
    "StoreError",
    "TABLE_DOCS",
    "TaskStore",
    "Trial",
    "VIEW_DOCS",
    "check_read_only_sql",
    "iter_batches",
    "package_code_version",
    "read_only_query",
]
