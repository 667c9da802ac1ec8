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
from dataclasses import dataclass, field
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
    "split_text",
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
    """The previewed table inside the attached source: its schema and name, exactly as the source spells them.

    DuckDB binds a name of the attached source exactly when such a relation exists, and otherwise to *a*
    relation whose name differs only in letter case (which one, when there are several, is not specified).
    ``schema_variants`` and ``name_variants`` are the names of the source that fold to the same text as
    ``schema`` (among schemas) and ``name`` (among the relations of ``schema``), the table's own included:
    with them, ``names`` tells whether a written reference binds to this very table. Empty means unknown
    (a table that was not looked up in the source): then only the table itself is assumed to exist.
    """

    schema: str
    name: str
    schema_variants: frozenset[str] = field(default=frozenset(), compare=False)
    name_variants: frozenset[str] = field(default=frozenset(), compare=False)
    #: How ``table_name`` was written: a double-quoted part must match exactly, an unquoted one may differ in case.
    schema_quoted: bool = field(default=False, compare=False)
    name_quoted: bool = field(default=False, compare=False)

    def names(self, schema: str, name: str) -> bool:
        """Whether ``schema.name`` as written in SQL binds to this table (never to a case variant of it)."""
        return _binds(schema, self.schema, self.schema_variants) and _binds(name, self.name, self.name_variants)


def _binds(written: str, actual: str, variants: frozenset[str]) -> bool:
    """Exactly ``actual``; or, with no name spelled exactly ``written``, ``actual`` is its only case variant."""
    if written == actual:
        return True
    others = (variants or frozenset({actual})) - {actual}
    folded = lower_ascii(written)
    return folded == lower_ascii(actual) and not any(lower_ascii(o) == folded for o in others)


def parse_table_name(table_name: str) -> TableRef:
    """``orders`` -> public.orders; ``schema.table``; double-quoted parts may hold any other character."""
    match = _TABLE_NAME.fullmatch(table_name or "")
    if match is None or not table_name.isprintable():
        raise PreviewError(
            f"Invalid table name {table_name!r}: use table or schema.table, double-quoting names with other "
            'characters (e.g. "my schema"."my table").'
        )
    first, second = match.groups()
    if second is None:
        return TableRef("public", _unquote(first), name_quoted=first.startswith('"'))
    return TableRef(
        _unquote(first), _unquote(second), schema_quoted=first.startswith('"'), name_quoted=second.startswith('"')
    )


def _unquote(part: str) -> str:
    return part[1:-1].replace('""', '"') if part.startswith('"') else part


# --- layer 1: sqlparse -----------------------------------------------------------------------------


def split_statements(sql: str) -> list[list[Any]]:
    """Significant tokens of each statement: sqlparse's lexer and splitter, without grouping (no depth limit).

    Block comments are removed first, nested ones included (DuckDB nests them, sqlparse does not: it would
    read ``/* a /* b */ c */`` as a comment followed by code).
    """
    try:
        statements = sqlparse.engine.FilterStack().run(_without_block_comments(sql))
        return [_significant(list(s.flatten())) for s in statements]
    except sqlparse.exceptions.SQLParseError as exc:
        raise PreviewError(f"SQL could not be parsed: {exc}") from None


#: Words that start a query in DuckDB besides SELECT: ``FROM t SELECT ...`` (FROM-first) and ``UNPIVOT t ON ...``.
_QUERY_STARTS = frozenset({"FROM", "UNPIVOT"})


def statement_type(tokens: list[Any]) -> str:
    """The DML word of a statement: the first one, or after ``WITH`` the first outside parentheses.

    DuckDB's FROM-first queries and its ``UNPIVOT`` statement are SELECTs (its parser makes a SELECT node of
    them; layer 2 holds that tree to the same rules as any other).
    """
    depth = 0
    for index, token in enumerate(tokens):
        word = str(token.normalized).upper()
        if depth == 0 and (token.ttype in T.Keyword.DML or (token.ttype in T.Keyword and word in _QUERY_STARTS)):
            return "SELECT" if word in _QUERY_STARTS else word
        if index == 0 and token.ttype not in T.Keyword.CTE:
            return "UNKNOWN"
        depth += {"(": 1, ")": -1}.get(token.value, 0) if token.ttype in T.Punctuation else 0
    return "UNKNOWN"


def split_text(sql: str) -> list[str]:
    """``sql`` cut at each ``;`` that is a token: never inside a string, a quoted name or a comment."""
    parts: list[str] = []
    start = 0
    for kind, begin, end in _segments(sql):
        if kind == "code":
            for offset, char in enumerate(sql[begin:end]):
                if char == ";":
                    parts.append(sql[start : begin + offset])
                    start = begin + offset + 1
    parts.append(sql[start:])
    return parts


def _without_block_comments(sql: str) -> str:
    if "/*" not in sql:
        return sql
    return "".join(" " if kind == "block" else sql[begin:end] for kind, begin, end in _segments(sql))


_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def _segments(sql: str) -> Iterator[tuple[str, int, int]]:
    """``(kind, start, end)`` spans of ``sql``: ``code``, ``string`` (quotes of any kind), ``line`` or ``block``.

    Read as DuckDB reads it: ``'...'`` with ``''``, ``E'...'`` with backslash escapes too, ``"..."`` with ``""``,
    ``$tag$...$tag$``, ``--`` to the end of the line, ``/* ... */`` nested. An unterminated span runs to the end.
    """
    position, length, code_start = 0, len(sql), 0
    while position < length:
        char = sql[position]
        end = -1
        if char == "'" or char == '"':
            escapes = char == "'" and position > 0 and sql[position - 1] in "eE" and not _word_before(sql, position - 1)
            end = _quoted_end(sql, position, char, escapes)
            kind = "string"
        elif char == "$" and (match := _DOLLAR.match(sql, position)) and not _word_before(sql, position):
            close = sql.find(match.group(), match.end())
            end = length if close < 0 else close + len(match.group())
            kind = "string"
        elif sql.startswith("--", position):
            newline = sql.find("\n", position)
            end = length if newline < 0 else newline
            kind = "line"
        elif sql.startswith("/*", position):
            end = _block_end(sql, position)
            kind = "block"
        if end < 0:
            position += 1
            continue
        if code_start < position:
            yield "code", code_start, position
        yield kind, position, end
        position = code_start = end
    if code_start < length:
        yield "code", code_start, length


def _word_before(sql: str, position: int) -> bool:
    return position > 0 and (sql[position - 1].isalnum() or sql[position - 1] in "_$")


def _quoted_end(sql: str, start: int, quote: str, escapes: bool) -> int:
    position = start + 1
    while position < len(sql):
        char = sql[position]
        if escapes and char == "\\":
            position += 2
            continue
        if char == quote:
            if sql.startswith(quote * 2, position):
                position += 2
                continue
            return position + 1
        position += 1
    return len(sql)


def _block_end(sql: str, start: int) -> int:
    depth, position = 0, start
    while position < len(sql):
        if sql.startswith("/*", position):
            depth, position = depth + 1, position + 2
        elif sql.startswith("*/", position):
            depth, position = depth - 1, position + 2
            if depth == 0:
                return position
        else:
            position += 1
    return len(sql)


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
