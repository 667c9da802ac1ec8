"""Prove a preview statement safe before it runs: layers 1 and 2 of the sandbox (design 5.1).

Layer 1 (sqlparse) keeps the old validator's messages for the obvious cases. Layer 2 is the
guarantee: DuckDB's own parser returns the tree that will execute, and every table reference,
table-ish node and function call in it must be on an allow-list. Layer 3, the locked session,
is built elsewhere.
"""

from __future__ import annotations

import functools
import json
import string
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import duckdb
import sqlparse
import sqlparse.engine
import sqlparse.exceptions
from sqlparse import tokens as T

from rosetta_jobs.errors import PreviewError

if TYPE_CHECKING:
    from .query import TableRef

__all__ = [
    "allowed_functions",
    "check_sql",
    "check_statement",
    "check_tokens",
    "deserialize",
    "iter_nodes",
    "lower_ascii",
    "parse",
]

# fmt: off
FORBIDDEN_KEYWORDS = frozenset({
    "INSERT", "UPDATE", "DELETE", "DROP", "ALTER", "TRUNCATE", "CREATE", "GRANT", "REVOKE", "EXEC", "EXECUTE", "CALL",
    "INTO", "MERGE", "REPLACE", "COPY", "EXPORT",
})
FILE_FUNCTIONS = frozenset({"glob", "copy_to", "copy_from", "csv_scan"})
FILE_FUNCTION_PREFIXES = ("read_", "write_", "http_", "parquet_", "sniff_", "iceberg_", "delta_", "sqlite_")

#: Functions of a fresh DuckDB that read settings, the catalog, the environment or session
#: state, have side effects, or take SQL or a table name as text.
DENIED_FUNCTIONS = frozenset({
    "current_setting", "getenv", "getvariable", "version", "current_database", "current_catalog", "current_schema",
    "current_schemas", "current_user", "current_role", "session_user", "user", "current_query", "current_query_id",
    "current_connection_id", "current_transaction_id", "txid_current", "in_search_path", "nextval", "currval",
    "setseed", "sleep_ms", "write_log", "stats", "get_block_size", "json_serialize_sql", "json_deserialize_sql",
    "json_execute_serialized_sql", "json_serialize_plan", "query", "query_table", "parse_duckdb_log_message",
})
DENIED_PREFIXES = ("duckdb_", "pg_", "postgres_", "sqlite_", "pragma_", "__internal", "read_", "write_", "http", "glob")
#: Resolved by DuckDB's binder, so absent from duckdb_functions().
BINDER_FUNCTIONS = frozenset({"unnest", "unlist"})

EXPRESSION_CLASSES = frozenset({
    "BETWEEN", "CASE", "CAST", "COLLATE", "COLUMN_REF", "COMPARISON", "CONJUNCTION", "CONSTANT", "FUNCTION", "LAMBDA",
    "LAMBDA_REF", "OPERATOR", "POSITIONAL_REFERENCE", "STAR", "SUBQUERY", "WINDOW",
})
#: Every other node that carries a ``type``: query nodes, table references, modifiers, orders.
NODE_TYPES = frozenset({
    "SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "BASE_TABLE", "JOIN", "SUBQUERY", "EMPTY",
    "EXPRESSION_LIST", "PIVOT", "ORDER_MODIFIER", "LIMIT_MODIFIER", "LIMIT_PERCENT_MODIFIER", "DISTINCT_MODIFIER",
    "ORDER_DEFAULT", "ASCENDING", "DESCENDING",
})
# fmt: on
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_local = threading.local()


def lower_ascii(name: str) -> str:
    """Fold case the way DuckDB compares identifiers (ASCII only), so 'K' (Kelvin) never equals 'k'."""
    return name.translate(_ASCII_LOWER)


# --- layer 1: sqlparse ---------------------------------------------------------------------------


def check_sql(sql: str) -> None:
    """Exactly one SELECT (``WITH ... SELECT`` counts), with the old validator's messages for DML/DDL and files."""
    statements = [tokens for tokens in _statements(sql) if tokens]
    for tokens in statements:
        _check_words(tokens)
    if not statements:
        raise PreviewError("SQL contains no statement. Preview only supports SELECT queries.")
    if len(statements) > 1:
        raise PreviewError(_one_statement_message(len(statements)))
    if _statement_type(statements[0]) != "SELECT":
        raise PreviewError(
            "SQL must be a single SELECT query (WITH ... SELECT is fine). Preview only supports SELECT queries."
        )


def check_tokens(sql: str) -> None:
    """Forbidden keywords, then file/HTTP functions, outside strings and comments; the first match wins."""
    _check_words([token for tokens in _statements(sql) for token in tokens])


def _statements(sql: str) -> list[list[Any]]:
    """Significant tokens of each statement: sqlparse's lexer and splitter, without grouping (no depth limit)."""
    try:
        return [_significant(list(s.flatten())) for s in sqlparse.engine.FilterStack().run(sql)]
    except sqlparse.exceptions.SQLParseError as exc:
        raise PreviewError(f"SQL could not be parsed: {exc}") from None


def _statement_type(tokens: list[Any]) -> str:
    """The DML word of a statement: the first one, or after ``WITH`` the first outside parentheses."""
    depth = 0
    for index, token in enumerate(tokens):
        if token.ttype in T.Keyword.DML and depth == 0:
            return str(token.normalized).upper()
        if index == 0 and token.ttype not in T.Keyword.CTE:
            return "UNKNOWN"
        depth += {"(": 1, ")": -1}.get(token.value, 0) if token.ttype in T.Punctuation else 0
    return "UNKNOWN"


def _check_words(tokens: list[Any]) -> None:
    for index, token in enumerate(tokens):
        word = token.normalized.upper()
        is_word = token.ttype in T.Keyword or token.ttype in T.Name  # sqlparse calls EXPORT a name
        if is_word and word in FORBIDDEN_KEYWORDS and not (word == "REPLACE" and _is_call(tokens, index)):
            raise PreviewError(f"SQL contains forbidden keyword: {word}. Preview only supports SELECT queries.")
    for index, token in enumerate(tokens):
        name = _name_of(token)
        if name and _is_file_function(lower_ascii(name)) and _is_call(tokens, index):
            raise PreviewError(
                f"SQL contains forbidden function: {name}. File access and HTTP functions are not allowed in preview."
            )


def _significant(tokens: list[Any]) -> list[Any]:
    return [t for t in tokens if not t.is_whitespace and t.ttype not in T.Comment]


def _is_call(tokens: list[Any], index: int) -> bool:
    """A name followed by '(': ``replace(...)`` and ``* REPLACE (...)`` are SELECT features, not the statement."""
    return index + 1 < len(tokens) and tokens[index + 1].value == "("


def _name_of(token: Any) -> str | None:
    if token.ttype in T.Literal.String.Symbol:
        return str(token.value[1:-1].replace('""', '"'))
    if token.ttype in T.Name or token.ttype in T.Keyword:
        return str(token.value)
    return None


def _is_file_function(name: str) -> bool:
    return name in FILE_FUNCTIONS or name.startswith(FILE_FUNCTION_PREFIXES)


def _one_statement_message(count: int) -> str:
    return (
        f"Preview SQL must be exactly one SELECT statement; found {count}. "
        "Remove everything after the first statement (one trailing ';' is fine)."
    )


# --- layer 2: DuckDB's parser ------------------------------------------------------------------------


def _fresh_connection() -> duckdb.DuckDBPyConnection:
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
        conn = _local.conn = _fresh_connection()
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


@functools.cache
def allowed_functions() -> frozenset[str]:
    """Scalar, aggregate (incl. window) and macro functions of a fresh, extension-free DuckDB, minus the denied ones."""
    conn = _fresh_connection()
    try:
        rows = conn.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() "
            "WHERE schema_name = 'main' AND function_type IN ('scalar', 'aggregate', 'macro')"
        ).fetchall()
    finally:
        conn.close()
    names = {lower_ascii(row[0]) for row in rows} | BINDER_FUNCTIONS
    return frozenset(n for n in names if n not in DENIED_FUNCTIONS and not n.startswith(DENIED_PREFIXES))


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


def check_statement(tree: dict[str, Any], *, source_alias: str, table: TableRef) -> None:
    """Allow one SELECT reading only ``<alias>.<schema>.<table>`` and CTEs in scope, calling allow-listed functions."""
    statements = tree.get("statements") or []
    if len(statements) != 1:
        raise PreviewError(_one_statement_message(len(statements)))
    statement = statements[0]
    if statement.get("named_param_map"):
        raise PreviewError("Parameters ($1, ?) are not supported in a preview: write the values into the SQL.")
    root = statement.get("node") or {}
    if root.get("type") not in ("SELECT_NODE", "SET_OPERATION_NODE"):
        raise PreviewError("Preview only supports SELECT queries.")
    source = (lower_ascii(source_alias), lower_ascii(table.schema), lower_ascii(table.name))
    for node, scope in iter_nodes(root):
        _check_node(node, scope, source, table)


def _check_node(node: dict[str, Any], scope: frozenset[str], source: tuple[str, str, str], table: TableRef) -> None:
    if "class" in node:
        _check_expression(node)
        return
    kind = node.get("type")
    if kind == "BASE_TABLE":
        _check_table(node, scope, source, table)
    elif kind == "TABLE_FUNCTION":
        name = (node.get("function") or {}).get("function_name", "?")
        raise PreviewError(
            f"Function {name} is not allowed in a preview: table functions read files, the network or other "
            f"databases. Write your query against the table {_shown(table)}."
        )
    elif kind == "SHOW_REF":
        raise PreviewError("SHOW, DESCRIBE and SUMMARIZE are not allowed in a preview: write a SELECT query.")
    elif isinstance(kind, str) and kind not in NODE_TYPES and not kind.endswith("_TYPE_INFO"):
        raise PreviewError(f"This SQL construct ({kind}) is not allowed in a preview: write a plain SELECT query.")
    elif node.get("schema") or node.get("catalog"):
        qualified = ".".join(str(node.get(k) or "") for k in ("catalog", "schema", "name") if node.get(k))
        raise PreviewError(f"Type {qualified} is not allowed in a preview: use built-in types without a schema.")


def _check_expression(node: dict[str, Any]) -> None:
    kind = node["class"]
    if kind == "PARAMETER":
        raise PreviewError("Parameters ($1, ?) are not supported in a preview: write the values into the SQL.")
    if kind not in EXPRESSION_CLASSES:
        raise PreviewError(f"This SQL expression ({kind}) is not allowed in a preview.")
    if kind not in ("FUNCTION", "WINDOW"):
        return
    name = str(node.get("function_name", ""))
    if node.get("catalog") or lower_ascii(str(node.get("schema") or "main")) != "main":  # sugar expands to main.f
        qualified = ".".join(str(p) for p in (node.get("catalog"), node.get("schema"), name) if p)
        raise PreviewError(
            f"Function {qualified} is not allowed in a preview: call functions by their plain name ({name}), "
            "without a schema or catalog."
        )
    if lower_ascii(name) not in allowed_functions():
        raise PreviewError(
            f"Function {name} is not allowed in a preview: it reads files, settings, the catalog, the environment or "
            "session state, or runs SQL given as text. Use ordinary string, date, math, list, aggregate and window "
            "functions."
        )


def _check_table(node: dict[str, Any], scope: frozenset[str], source: tuple[str, str, str], table: TableRef) -> None:
    catalog, schema, name = (str(node.get(k) or "") for k in ("catalog_name", "schema_name", "table_name"))
    key = (lower_ascii(catalog), lower_ascii(schema), lower_ascii(name))
    if node.get("at_clause"):
        raise PreviewError("AT (time travel) clauses are not allowed in a preview.")
    if (not catalog and not schema and key[2] in scope) or key == source:
        return
    written = ".".join(p for p in (catalog, schema, name) if p)
    if any(ch in name for ch in "/\\:") or "." in name:
        raise PreviewError(
            f"Preview SQL cannot read files or URLs ('{written}'). Write your query against the table {_shown(table)}."
        )
    raise PreviewError(
        f"Preview SQL may only read the table {_shown(table)}; it references {written}. "
        f"Write your query against {_shown(table)} (CTEs defined with WITH are fine)."
    )


def _shown(table: TableRef) -> str:
    return table.name if table.schema == "public" else f"{table.schema}.{table.name}"
