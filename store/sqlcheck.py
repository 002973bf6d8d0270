"""SQL the user writes: one SELECT statement, or a filter confined to a WHERE clause.

Both checks ask DuckDB's own parser (``extract_statements``, ``json_serialize_sql``), so
comments, nested comments and dollar quotes are read exactly as DuckDB would run them.
The checks decide what may run; the connection they run on (read-only, no file access, no
extensions, see ``taskstore.SAFE_SETTINGS``) limits what a statement that passes can reach.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

from .errors import StoreError

# The column a query template names where the user's filter goes (see confine_filter).
FILTER_SLOT = "t2t_filter_slot"

# Keys of the serialized parse tree that record where a node sits in the text, not what it is.
_POSITION_KEYS = frozenset({"query_location", "query_location_length"})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_read_only_sql(sql: str, con: duckdb.DuckDBPyConnection | None = None) -> None:
    """Raise StoreError unless `sql` is exactly one SELECT statement as DuckDB parses it.

    SELECT covers WITH, FROM-first queries, VALUES, DESCRIBE, SHOW and SUMMARIZE; every
    other statement type (EXPLAIN and PRAGMA included) is refused: table functions such
    as ``pragma_table_info('tasks')`` give the same answers as a SELECT.
    """
    con = con if con is not None else duckdb.connect(":memory:")
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise StoreError(f"cannot parse SQL: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise StoreError(f"expected exactly one SQL statement, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise StoreError(f"refused {kind.name} statement: only a SELECT may run here")


def _parse_tree(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    """DuckDB's parse of one SELECT, as the JSON `json_serialize_sql` gives."""
    try:
        raw = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0]
    except duckdb.Error as exc:
        raise StoreError(f"cannot parse SQL filter: {_first_line(exc)}") from None
    tree = json.loads(raw)
    if tree.get("error"):
        raise StoreError(f"cannot parse SQL filter: {tree.get('error_message', 'syntax error')}".splitlines()[0])
    if len(tree.get("statements", [])) != 1:
        raise StoreError("an SQL filter must be one expression, not several statements")
    return tree["statements"][0]["node"]  # without named_param_map, which lists the filter's `?`s


def _is_slot(node: Any) -> bool:
    return (isinstance(node, dict) and node.get("class") == "COLUMN_REF"
            and node.get("column_names") == [FILTER_SLOT])


def _same_outside_slot(template: Any, filled: Any) -> bool:
    """True when two parse trees are equal everywhere except where `template` holds the
    slot column; what `filled` has there (the user's expression) is not compared."""
    if _is_slot(template):
        return True
    if isinstance(template, dict):
        if not isinstance(filled, dict):
            return False
        keys = set(template) - _POSITION_KEYS
        if keys != set(filled) - _POSITION_KEYS:
            return False
        if template.get("class") == "CONJUNCTION" and template.get("type") == filled.get("type"):
            return all(_same_outside_slot(template[k], filled[k]) for k in keys - {"children"}) and \
                _same_conjuncts(template["children"], filled["children"])
        return all(_same_outside_slot(template[k], filled[k]) for k in keys)
    if isinstance(template, list):
        return (isinstance(filled, list) and len(template) == len(filled)
                and all(_same_outside_slot(a, b) for a, b in zip(template, filled)))
    return template == filled


def _same_conjuncts(template: list[Any], filled: list[Any]) -> bool:
    """Children of one AND (or OR). DuckDB flattens `a AND (b AND c)` to AND(a, b, c), so a
    slot child of the template may stand for one or more children of the filled tree; the
    template's other children must match in order around them."""
    slots = [i for i, child in enumerate(template) if _is_slot(child)]
    if not slots:
        return _same_outside_slot(template, filled)
    at = slots[0]
    after = len(template) - at - 1
    if len(filled) < len(template):
        return False
    return (_same_outside_slot(template[:at], filled[:at])
            and _same_outside_slot(template[at + 1:], filled[len(filled) - after:]))


def confine_filter(template: str, where: str, con: duckdb.DuckDBPyConnection | None = None) -> str:
    """The SELECT `template` with its FILTER_SLOT replaced by the user's filter `where`.

    The filter must stay one expression in that place: DuckDB parses the filled query and
    the template, and the two trees must be identical outside the slot. A filter that
    closes a parenthesis to add a UNION, an ORDER BY, another statement or a comment that
    swallows the rest of the query changes the tree elsewhere, and is refused.
    """
    con = con if con is not None else duckdb.connect(":memory:")
    # the newlines end a trailing `--` comment in the filter before the closing parenthesis
    filled = template.replace(FILTER_SLOT, "(\n" + where + "\n)")
    template_tree = _parse_tree(con, template)
    filled_tree = _parse_tree(con, filled)
    if not _same_outside_slot(template_tree, filled_tree):
        raise StoreError("an SQL filter must be one expression (a WHERE condition); this one reaches outside it")
    return filled
