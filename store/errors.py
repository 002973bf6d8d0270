"""The one exception type the store raises."""

from __future__ import annotations


class StoreError(Exception):
    """Any failure of the task store: missing file, bad schema, refused SQL, DuckDB errors."""
