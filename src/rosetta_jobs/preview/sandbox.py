"""Prove a preview statement safe before it runs: layers 1 and 2 of the sandbox (design 5.1).

Layer 1 (sqlparse) keeps the old validator's messages for the obvious cases. Layer 2 is the
guarantee: DuckDB's own parser returns the tree that will execute, and every table reference,
table-ish node and function call in it must be on an allow-list. Layer 3, the locked session,
is built elsewhere. Reading the SQL (both parsers) is ``parsing``'s job; this module only judges.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlparse import tokens as T

from rosetta_jobs.errors import PreviewError

from .parsing import TableRef, fresh_connection, iter_nodes, lower_ascii, split_statements, statement_type

__all__ = ["allowed_functions", "check_sql", "check_statement", "check_tokens"]

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


# --- layer 1: sqlparse ---------------------------------------------------------------------------


def check_sql(sql: str) -> None:
    """Exactly one SELECT (``WITH ... SELECT`` counts), with the old validator's messages for DML/DDL and files."""
    statements = [tokens for tokens in split_statements(sql) if tokens]
    for tokens in statements:
        _check_words(tokens)
    if not statements:
        raise PreviewError("SQL contains no statement. Preview only supports SELECT queries.")
    if len(statements) > 1:
        raise PreviewError(_one_statement_message(len(statements)))
    if statement_type(statements[0]) != "SELECT":
        raise PreviewError(
            "SQL must be a single SELECT query (WITH ... SELECT is fine). Preview only supports SELECT queries."
        )


def check_tokens(sql: str) -> None:
    """Forbidden keywords, then file/HTTP functions, outside strings and comments; the first match wins."""
    _check_words([token for tokens in split_statements(sql) for token in tokens])


def _check_words(tokens: list[Any]) -> None:
    unpivot = False
    for index, token in enumerate(tokens):
        word = token.normalized.upper()
        is_word = token.ttype in T.Keyword or token.ttype in T.Name  # sqlparse calls EXPORT a name
        unpivot = unpivot or (is_word and word == "UNPIVOT")
        if is_word and word in FORBIDDEN_KEYWORDS and not _is_select_feature(tokens, index, word, unpivot=unpivot):
            raise PreviewError(f"SQL contains forbidden keyword: {word}. Preview only supports SELECT queries.")
    for index, token in enumerate(tokens):
        name = _name_of(token)
        if name and _is_file_function(lower_ascii(name)) and _is_call(tokens, index):
            raise PreviewError(
                f"SQL contains forbidden function: {name}. File access and HTTP functions are not allowed in preview."
            )


def _is_select_feature(tokens: list[Any], index: int, word: str, *, unpivot: bool) -> bool:
    """``replace(...)``, ``* REPLACE (...)`` and ``UNPIVOT ... INTO NAME k VALUE v`` are SELECTs, not statements."""
    if word == "REPLACE":
        return _is_call(tokens, index)
    if word == "INTO" and unpivot:
        return index + 1 < len(tokens) and str(tokens[index + 1].normalized).upper() == "NAME"
    return False


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


# --- layer 2: DuckDB's tree ---------------------------------------------------------------------------


@functools.cache
def allowed_functions() -> frozenset[str]:
    """Scalar, aggregate (incl. window) and macro functions of a fresh, extension-free DuckDB, minus the denied ones."""
    conn = fresh_connection()
    try:
        rows = conn.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() "
            "WHERE schema_name = 'main' AND function_type IN ('scalar', 'aggregate', 'macro')"
        ).fetchall()
    finally:
        conn.close()
    names = {lower_ascii(row[0]) for row in rows} | BINDER_FUNCTIONS
    return frozenset(n for n in names if n not in DENIED_FUNCTIONS and not n.startswith(DENIED_PREFIXES))


def check_statement(tree: dict[str, Any], *, source_alias: str, table: TableRef) -> None:
    """Allow one SELECT reading only ``<alias>.<schema>.<table>`` and CTEs in scope, calling allow-listed functions.

    A reference to the source must bind to ``table`` itself (``TableRef.names``): a relation whose name differs
    only in letter case (``"ORDERS"`` beside ``orders``, or ``"PUBLIC".orders``) is another table.
    """
    statements = tree.get("statements") or []
    if len(statements) != 1:
        raise PreviewError(_one_statement_message(len(statements)))
    statement = statements[0]
    if statement.get("named_param_map"):
        raise PreviewError("Parameters ($1, ?) are not supported in a preview: write the values into the SQL.")
    root = statement.get("node") or {}
    if root.get("type") not in ("SELECT_NODE", "SET_OPERATION_NODE"):
        raise PreviewError("Preview only supports SELECT queries.")
    for node, scope in iter_nodes(root):
        _check_node(node, scope, source_alias, table)


def _check_node(node: dict[str, Any], scope: frozenset[str], source: str, table: TableRef) -> None:
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


def _check_table(node: dict[str, Any], scope: frozenset[str], source: str, table: TableRef) -> None:
    catalog, schema, name = (str(node.get(k) or "") for k in ("catalog_name", "schema_name", "table_name"))
    if node.get("at_clause"):
        raise PreviewError("AT (time travel) clauses are not allowed in a preview.")
    if not catalog and not schema and lower_ascii(name) in scope:
        return
    # The catalog is the attached source: its alias is ours, lower case, and no other catalog folds to it.
    if catalog and lower_ascii(catalog) == lower_ascii(source) and table.names(schema, name):
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
