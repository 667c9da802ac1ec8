"""Prove a compiled node reads only what the graph names, with the preview's allow-lists (layer 2).

Filters, expressions and SQL nodes are the user's text (``../shared/spec/rosetta-tasks.md`` F7), so each
step's query (``Step.query``: the body inside one subquery) goes through DuckDB's own parser, and the
tree must be exactly that one subquery, reading only:

- the names of the node's inputs (a CTE in a preview, a temp table in a run) and its own CTEs;
- for an input node, its one table of its attached database;

and calling only the functions ``preview.sandbox.allowed_functions`` allows: no table functions (files,
URLs, other databases), no settings, no catalog, no SQL given as text. The locked session (``work``) is
the layer below: no file, network or setting can be reached even by a check that missed something.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import duckdb

from ..preview.parsing import fresh_connection, iter_nodes, lower_ascii
from ..preview.sandbox import EXPRESSION_CLASSES, NODE_TYPES, allowed_functions
from .compiler import Step
from .graph import NodeError

__all__ = ["check_step"]

_local = threading.local()


def check_step(step: Step, *, inputs: list[str]) -> None:
    """Refuse ``step`` (``NodeError``) unless it reads only ``inputs`` (names) and its own table, if an input."""
    if step.body is None:
        return
    for function in step.functions:
        if lower_ascii(function) not in allowed_functions():
            _refuse(step, f"function {function} is not allowed: use an aggregate such as SUM, AVG, MIN, MAX, COUNT")
    if step.generated:
        return  # only quoted names and checked function names: nothing of the user's to read
    root = _parse(step)
    scope = frozenset(lower_ascii(name) for name in inputs)
    for node, names in iter_nodes(root["from_table"]["subquery"]["node"], scope):
        _check(step, node, names)


def _parse(step: Step) -> dict[str, Any]:
    connection = getattr(_local, "connection", None)
    if connection is None:
        connection = _local.connection = fresh_connection()
    try:
        row = connection.execute("SELECT json_serialize_sql(?)", [step.query]).fetchone()
        tree: dict[str, Any] = json.loads(row[0] if row else "{}")
    except duckdb.Error as exc:
        _refuse(step, f"its SQL could not be parsed: {exc}")
    except RecursionError:
        _refuse(step, "its SQL is nested too deeply")
    if tree.get("error"):
        message = tree.get("error_message", "unknown error")
        if tree.get("error_type") == "parser":
            _refuse(step, f"SQL syntax error: {message}")
        _refuse(step, f"only one SELECT query is allowed ({message}); a PIVOT in a SQL node needs an IN (...) list")
    statements = tree.get("statements") or []
    root = (statements[0].get("node") or {}) if len(statements) == 1 else {}
    source = root.get("from_table") or {}
    whole = (
        root.get("type") == "SELECT_NODE"
        and source.get("type") == "SUBQUERY"
        and source.get("alias") == "__node"
        and len(root.get("select_list") or []) == 1
        and not root.get("where_clause")
        and not root.get("modifiers")
        and not (root.get("cte_map") or {}).get("map")
        and not root.get("group_expressions")
    )
    if not whole:
        _refuse(step, "its SQL must be one SELECT query (no ';', no unbalanced parentheses)")
    return root


def _check(step: Step, node: dict[str, Any], scope: frozenset[str]) -> None:
    if "class" in node:
        _check_expression(step, node)
        return
    kind = node.get("type")
    if kind == "BASE_TABLE":
        _check_table(step, node, scope)
    elif kind == "TABLE_FUNCTION":
        name = (node.get("function") or {}).get("function_name", "?")
        _refuse(step, f"function {name} is not allowed: table functions read files, the network or other databases")
    elif kind == "SHOW_REF":
        _refuse(step, "SHOW, DESCRIBE and SUMMARIZE are not allowed: write a SELECT query")
    elif isinstance(kind, str) and kind not in NODE_TYPES and not kind.endswith("_TYPE_INFO"):
        _refuse(step, f"this SQL construct ({kind}) is not allowed: write a plain SELECT query")
    elif node.get("schema") or node.get("catalog"):
        qualified = ".".join(str(node.get(k) or "") for k in ("catalog", "schema", "name") if node.get(k))
        _refuse(step, f"type {qualified} is not allowed: use built-in types without a schema")


def _check_expression(step: Step, node: dict[str, Any]) -> None:
    kind = node["class"]
    if kind == "PARAMETER":
        _refuse(step, "parameters ($1, ?) are not supported: write the values into the SQL")
    if kind not in EXPRESSION_CLASSES:
        _refuse(step, f"this SQL expression ({kind}) is not allowed")
    if kind not in ("FUNCTION", "WINDOW"):
        return
    name = str(node.get("function_name", ""))
    if node.get("catalog") or lower_ascii(str(node.get("schema") or "main")) != "main":
        _refuse(step, f"function {name} must be called by its plain name, without a schema or catalog")
    if lower_ascii(name) not in allowed_functions():
        _refuse(
            step,
            f"function {name} is not allowed: it reads files, settings, the catalog, the environment or session "
            "state, or runs SQL given as text",
        )


def _check_table(step: Step, node: dict[str, Any], scope: frozenset[str]) -> None:
    catalog, schema, name = (str(node.get(k) or "") for k in ("catalog_name", "schema_name", "table_name"))
    if node.get("at_clause"):
        _refuse(step, "AT (time travel) clauses are not allowed")
    if not catalog and not schema and lower_ascii(name) in scope:
        return
    own = step.table
    if own is not None and catalog and lower_ascii(catalog) == own[0] and (schema, name) == own[1:]:
        return
    written = ".".join(p for p in (catalog, schema, name) if p)
    if step.node.type == "sql":
        _refuse(step, f"it reads '{written}': a SQL node reads only its inputs, {{{{input}}}} or {{{{input_N}}}}")
    _refuse(step, f"it reads '{written}': a node reads only its inputs")


def _refuse(step: Step, reason: str) -> Any:
    node = step.node
    kind = {"new_rows": "New Rows", "sql": "SQL"}.get(node.type, node.type.capitalize())
    raise NodeError(node.id, f"{kind} node {node.id} refused: {reason}")
