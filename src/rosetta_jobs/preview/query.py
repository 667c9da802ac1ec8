"""The one statement a preview runs (spec 2.5, 12.7), built and then proved safe as a whole.

Custom SQL is rewritten on DuckDB's parsed tree, not by regex: every reference to the previewed
table becomes the ``filtered_source`` CTE, so ``orders.id`` still binds, string literals and
comments stay as written, and a trailing ``;`` or ``-- comment`` is harmless.

This is the top of the preview's SQL modules: ``parsing`` reads SQL, ``sandbox`` judges it and
``filters`` translates ``filter_sql``; only this module combines them. Each distinct statement is
parsed once per build: the filter's probe (for a filter written as SQL), the user's SQL and the final statement.
A statement without user SQL is judged once per shape: its v2 filter's values do not change the verdict.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from rosetta_jobs.errors import PreviewError

from .filters import build_filter, quote_identifier
from .parsing import TableRef, deserialize, iter_nodes, lower_ascii, parse, parse_table_name
from .request import PreviewRequest
from .sandbox import check_sql, check_statement, check_tokens

__all__ = ["CTE_NAME", "RESULT_ALIAS", "build_statement"]

CTE_NAME = "filtered_source"
RESULT_ALIAS = "result_sql"
#: The longest statement shape whose verdict is remembered (``_check_plain``): the cache stays < 1 MB.
_SHAPE_CHARS = 4096


def build_statement(request: PreviewRequest, *, source_alias: str, table: TableRef | None = None) -> str:
    """The final SQL for ``request``, with layers 1 and 2 applied to exactly this text.

    ``table`` is the previewed table as the source spells it (``identity.resolve_table``); without it,
    ``request.table_name`` is taken as written and assumed to have no case variants in the source.
    """
    request.check_input()
    try:
        return _build(request, source_alias, table or parse_table_name(request.table_name))
    except RecursionError:
        raise PreviewError("SQL is nested too deeply to preview; simplify the query.") from None


def _build(request: PreviewRequest, source_alias: str, table: TableRef) -> str:
    limit = _row_limit(request.row_limit)
    row_filter = build_filter(request.filter_sql)
    for part in row_filter.sql_parts:
        check_tokens(part)
    where = row_filter.where
    if row_filter.sql_parts:
        # SQL as the user wrote it (the legacy form). A v2 filter is ours: quoted names, quoted or numeric
        # literals and listed operators, with nothing to escape the WHERE; the whole statement is checked below.
        _check_where(where)
    source_table = ".".join(quote_identifier(p) for p in (source_alias, table.schema, table.name))
    head, tail = f"SELECT * FROM {source_table} AS {quote_identifier(table.name)}", f" LIMIT {limit}"
    source = head + where + tail
    custom = request.custom_sql
    if custom is None:
        shape = None if row_filter.shape is None else head + row_filter.shape + tail
        if shape is not None and len(shape) <= _SHAPE_CHARS:  # every part is ours: one verdict per shape
            _check_plain(shape, source_alias, dataclasses.astuple(table), limit)
            return source
        statement = source
    else:
        user_sql = _rewrite(custom, table, source_alias)
        statement = f"WITH {CTE_NAME} AS ({source}) SELECT * FROM ({user_sql}) AS {RESULT_ALIAS} LIMIT {limit}"
    _check(statement, source_alias=source_alias, table=table, limit=limit, custom=custom is not None)
    return statement


def _check(statement: str, *, source_alias: str, table: TableRef, limit: int, custom: bool) -> None:
    tree = parse(statement)
    check_statement(tree, source_alias=source_alias, table=table)
    _check_shape(tree, limit=limit, custom=custom)


@functools.lru_cache(maxsize=256)
def _check_plain(shape: str, source_alias: str, table: tuple[Any, ...], limit: int) -> None:
    """``_check`` of a statement without user SQL, remembered by shape: parsing it was ~0.7 ms a preview.

    Only a pass is remembered (a refusal raises, and ``lru_cache`` keeps no exception). ``table`` is the
    ``TableRef``'s fields: its equality leaves out the variants the verdict depends on.
    """
    _check(shape, source_alias=source_alias, table=TableRef(*table), limit=limit, custom=False)


def _row_limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PreviewError(f"The preview row limit must be a positive integer, not {value!r}.")
    return value


def _rewrite(sql: str, table: TableRef, source_alias: str) -> str:
    """The user's SELECT with each reference to the previewed table pointed at ``filtered_source``."""
    check_sql(sql)
    tree = parse(sql)
    statements = tree.get("statements") or []
    if len(statements) != 1:
        raise PreviewError(f"Preview SQL must be exactly one SELECT statement; found {len(statements)}.")
    for node, scope in iter_nodes(statements[0].get("node")):
        if node.get("type") == "BASE_TABLE" and "class" not in node and _is_previewed(node, scope, table, source_alias):
            node["alias"] = node.get("alias") or node.get("table_name")
            node.update(catalog_name="", schema_name="", table_name=CTE_NAME)
    return deserialize(tree)


def _is_previewed(node: dict[str, Any], scope: frozenset[str], table: TableRef, source_alias: str) -> bool:
    """``orders`` (unless a CTE of that name is in scope), ``public.orders``, ``<alias>.[public.]orders``.

    Each part must bind to the previewed table itself (``TableRef.names``), never to a case variant of it:
    what is not rewritten here is left for ``check_statement`` to refuse.
    """
    catalog, schema, name = (str(node.get(k) or "") for k in ("catalog_name", "schema_name", "table_name"))
    alias = lower_ascii(source_alias)
    if catalog:
        return lower_ascii(catalog) == alias and table.names(schema, name)
    if not schema:
        return lower_ascii(name) not in scope and table.names(table.schema, name)
    if lower_ascii(schema) == alias and table.schema == "public":
        return table.names("public", name)
    return table.names(schema, name)


def _strip(value: Any) -> Any:
    """The tree without source positions, for comparing shapes."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "query_location"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _where_shape(sql: str) -> Any:
    tree = _strip(parse(sql))
    for statement in tree.get("statements") or []:
        statement.get("node", {}).pop("where_clause", None)
    return tree


@functools.cache
def _baseline_shape() -> Any:
    """The shape every probe must have: a constant, so DuckDB parses it once per process. Never mutate it."""
    return _where_shape("SELECT * FROM t WHERE TRUE LIMIT 1")


def _check_where(where: str) -> None:
    """The filter must be one condition: nothing of it may end up outside the WHERE (a UNION, a comment eating the
    LIMIT, a second statement). Same text, same lexical context, so the final statement parses it the same way."""
    try:
        probe = _where_shape(f"SELECT * FROM t{where} LIMIT 1")
    except PreviewError as exc:
        raise PreviewError(f"Invalid filter: {exc}") from None
    if probe != _baseline_shape():
        raise PreviewError("Invalid filter: it must be a condition on the table's columns, not a query or statement.")


def _check_shape(tree: dict[str, Any], *, limit: int, custom: bool) -> None:
    """What runs is the statement we meant: the outer SELECT with our LIMIT (and our CTE and alias)."""
    node = (tree.get("statements") or [{}])[0].get("node") or {}
    limits = [m for m in node.get("modifiers", []) if m.get("type") == "LIMIT_MODIFIER"]
    constant = ((limits[0].get("limit") or {}).get("value") or {}).get("value") if len(limits) == 1 else None
    ok = node.get("type") == "SELECT_NODE" and constant == limit and limits[0].get("offset") is None
    if ok and custom:
        ctes = [entry.get("key") for entry in node.get("cte_map", {}).get("map", [])]
        ok = ctes == [CTE_NAME] and (node.get("from_table") or {}).get("alias") == RESULT_ALIAS
    if not ok:
        raise PreviewError("Preview SQL could not be wrapped safely: write one SELECT query on the table.")
