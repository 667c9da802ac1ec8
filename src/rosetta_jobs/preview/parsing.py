"""Reading SQL, never judging it: the bottom of the preview's SQL modules.

The sandbox's checks, the filter builder and the statement builder all read SQL the same two ways,
sqlparse's lexer (layer 1) and DuckDB's own parser (layer 2), and share the previewed table's
name. They live here, below all three, so that those modules depend on this one and never on
each other's internals. Nothing here imports another preview SQL module.
"""

from __future__ import annotations

import json
import re
import string
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import sqlparse
import sqlparse.engine
import sqlparse.exceptions
from sqlparse import tokens as T

from rosetta_jobs.errors import PreviewError

__all__ = [
    "TableRef",
    "deserialize",
    "fresh_connection",
    "iter_nodes",
    "lower_ascii",
    "parse",
    "parse_table_name",
    "split_statements",
    "statement_type",
]

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_PART = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")'
_TABLE_NAME = re.compile(rf"\s*({_PART})\s*(?:\.\s*({_PART})\s*)?")
_local = threading.local()


def lower_ascii(name: str) -> str:
    """Fold case the way DuckDB compares identifiers (ASCII only), so 'K' (Kelvin) never equals 'k'."""
    return name.translate(_ASCII_LOWER)


# --- the previewed table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TableRef:
    """The previewed table inside the attached source."""

    schema: str
    name: str


def parse_table_name(table_name: str) -> TableRef:
    """``orders`` -> public.orders; ``schema.table``; double-quoted parts may hold any other character."""
    match = _TABLE_NAME.fullmatch(table_name or "")
    if match is None or not table_name.isprintable():
        raise PreviewError(
            f"Invalid table name {table_name!r}: use table or schema.table, double-quoting names with other "
            'characters (e.g. "my schema"."my table").'
        )
    first, second = (_unquote(part) if part else None for part in match.groups())
    assert first is not None  # the pattern requires the first part
    return TableRef("public", first) if second is None else TableRef(first, second)


def _unquote(part: str) -> str:
    return part[1:-1].replace('""', '"') if part.startswith('"') else part


# --- layer 1: sqlparse -----------------------------------------------------------------------------


def split_statements(sql: str) -> list[list[Any]]:
    """Significant tokens of each statement: sqlparse's lexer and splitter, without grouping (no depth limit)."""
    try:
        return [_significant(list(s.flatten())) for s in sqlparse.engine.FilterStack().run(sql)]
    except sqlparse.exceptions.SQLParseError as exc:
        raise PreviewError(f"SQL could not be parsed: {exc}") from None


def statement_type(tokens: list[Any]) -> str:
    """The DML word of a statement: the first one, or after ``WITH`` the first outside parentheses."""
    depth = 0
    for index, token in enumerate(tokens):
        if token.ttype in T.Keyword.DML and depth == 0:
            return str(token.normalized).upper()
        if index == 0 and token.ttype not in T.Keyword.CTE:
            return "UNKNOWN"
        depth += {"(": 1, ")": -1}.get(token.value, 0) if token.ttype in T.Punctuation else 0
    return "UNKNOWN"


def _significant(tokens: list[Any]) -> list[Any]:
    return [t for t in tokens if not t.is_whitespace and t.ttype not in T.Comment]


# --- layer 2: DuckDB's parser ------------------------------------------------------------------------


def fresh_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that can load nothing and reach nothing: enough to parse and to list functions."""
    config: dict[str, str | bool | int | float | list[str]] = {
        "autoload_known_extensions": False,
        "autoinstall_known_extensions": False,
        "enable_external_access": False,
    }
    conn = duckdb.connect(":memory:", config=config)
    conn.execute("SET lock_configuration = true")
    return conn


def _parser() -> duckdb.DuckDBPyConnection:
    """One private, extension-free connection per thread: parsing needs no source and no shared state."""
    conn: duckdb.DuckDBPyConnection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = fresh_connection()
    return conn


def parse(sql: str) -> dict[str, Any]:
    """The statement tree DuckDB will execute (``json_serialize_sql``); a syntax error names DuckDB's reason."""
    try:
        row = _parser().execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
        tree: dict[str, Any] = json.loads(row[0] if row else "{}")
    except duckdb.Error as exc:
        raise PreviewError(f"SQL could not be parsed: {exc}") from None
    except RecursionError:  # json's decoder guards its own depth
        raise PreviewError("SQL is nested too deeply to preview; simplify the query.") from None
    if tree.get("error"):
        message = tree.get("error_message", "unknown error")
        if tree.get("error_type") == "parser":
            raise PreviewError(f"SQL syntax error: {message}")
        raise PreviewError(f"Preview only supports SELECT queries ({message}).")
    return tree


def deserialize(tree: dict[str, Any]) -> str:
    """SQL text for an (edited) tree, written by DuckDB itself (``json_deserialize_sql``)."""
    try:
        row = _parser().execute("SELECT json_deserialize_sql(?::JSON)", [json.dumps(tree)]).fetchone()
    except RecursionError:
        raise PreviewError("SQL is nested too deeply to preview; simplify the query.") from None
    except duckdb.Error as exc:
        raise PreviewError(f"SQL could not be rewritten for the preview: {exc}") from None
    return str(row[0]) if row else ""


def iter_nodes(value: Any, scope: frozenset[str] = frozenset()) -> Iterator[tuple[dict[str, Any], frozenset[str]]]:
    """Every dict of the tree, parent first, with the CTE names DuckDB's binder resolves a bare name to there.

    Scope follows DuckDB: a CTE body sees the CTEs before it (not itself), the query sees all of them, and only
    the recursive term of a recursive CTE sees its own name. Anything else would fall through to the catalog.
    Iterative, so a deep tree cannot exhaust Python's stack.
    """
    stack: list[tuple[Any, frozenset[str]]] = [(value, scope)]
    while stack:
        item, item_scope = stack.pop()
        if isinstance(item, list):
            stack.extend((child, item_scope) for child in reversed(item))
        elif isinstance(item, dict):
            yield item, item_scope
            stack.extend(reversed(list(_children(item, item_scope))))


def _children(node: dict[str, Any], scope: frozenset[str]) -> Iterator[tuple[Any, frozenset[str]]]:
    inner = scope
    for entry in (node.get("cte_map") or {}).get("map", []):
        yield entry.get("value"), inner
        inner = inner | {lower_ascii(str(entry.get("key", "")))}
    for key, child in node.items():
        if key == "right" and node.get("type") == "RECURSIVE_CTE_NODE":
            yield child, inner | {lower_ascii(str(node.get("cte_name", "")))}
        elif key != "cte_map":
            yield child, inner
