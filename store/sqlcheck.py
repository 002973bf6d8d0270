"""Refuse SQL that is not a single read statement (backs `t2t sql` and `TaskStore.query`)."""

from __future__ import annotations

import re

import duckdb

from .errors import StoreError

# PRAGMAs that only report: anything else (enable_profiling, memory_limit, ...) changes state.
READ_PRAGMAS = frozenset({
    "table_info", "show", "show_tables", "show_tables_expanded", "show_databases",
    "database_list", "database_size", "storage_info", "version", "platform",
    "functions", "collations", "metadata_info", "user_agent",
})

_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)
_PRAGMA = re.compile(r"pragma\s+([a-z_][a-z0-9_]*)", re.I)
_EXPLAIN = re.compile(r"explain\s+(?:analy[sz]e\s+|\(\s*[^)]*\)\s*)?", re.I)


def _strip_leading_comments(sql: str) -> str:
    return sql[_COMMENTS.match(sql).end():]


def check_read_only_sql(sql: str, con: duckdb.DuckDBPyConnection | None = None) -> None:
    """Raise StoreError unless `sql` is exactly one read statement.

    Allowed: SELECT (including WITH, FROM-first, DESCRIBE, SHOW, SUMMARIZE, VALUES), EXPLAIN
    [ANALYZE] of such a statement, and the reporting PRAGMAs in READ_PRAGMAS. Refused: every
    statement that writes, copies, attaches, installs/loads, sets, calls, exports, and any
    text holding more than one statement.
    """
    con = con if con is not None else duckdb.connect(":memory:")
    if not hasattr(con, "extract_statements"):  # very old DuckDB: keyword check only
        _check_by_keyword(sql)
        return
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise StoreError(f"cannot parse SQL: {e}") from None
    if len(statements) != 1:
        raise StoreError(f"expected exactly one SQL statement, got {len(statements)}")
    st = statements[0]
    kind = st.type
    T = duckdb.StatementType
    if kind == T.SELECT:
        return
    text = _strip_leading_comments(st.query)
    if kind == T.PRAGMA:
        m = _PRAGMA.match(text)
        if m and m.group(1).lower() in READ_PRAGMAS:
            return
        raise StoreError(f"refused PRAGMA (only {', '.join(sorted(READ_PRAGMAS))} are allowed)")
    if kind == T.EXPLAIN:
        m = _EXPLAIN.match(text)
        if m:
            inner = text[m.end():]
            try:
                inner_st = con.extract_statements(inner)
            except duckdb.Error as e:
                raise StoreError(f"cannot parse SQL: {e}") from None
            if len(inner_st) == 1 and inner_st[0].type == T.SELECT:
                return
        raise StoreError("refused EXPLAIN of a statement that is not a SELECT")
    raise StoreError(f"refused {kind.name} statement: only read statements are allowed")


_READ_KEYWORDS = frozenset({"select", "with", "from", "describe", "show", "summarize", "values",
                            "explain", "pragma", "table"})


def _check_by_keyword(sql: str) -> None:
    body = _strip_leading_comments(sql).rstrip().rstrip(";")
    if ";" in body:
        raise StoreError("expected exactly one SQL statement")
    word = (body.split(None, 1) or [""])[0].lower()
    if word not in _READ_KEYWORDS:
        raise StoreError(f"refused {word.upper() or 'empty'} statement: only read statements are allowed")
    if word == "pragma":
        m = _PRAGMA.match(body)
        if not (m and m.group(1).lower() in READ_PRAGMAS):
            raise StoreError("refused PRAGMA")
