"""Column lineage of a table sync's SQL, and the ``worker.lineage.generate`` job that stores it.

``parse_lineage`` returns the dict of ``../shared/spec/rosetta-tasks.md`` 8.2 (``version``,
``source_tables``, ``source_columns``, ``output_columns``, ``column_lineage``, ``referenced_tables``,
``parsed_at``, ``error`` on a parse failure), parsed with sqlglot's postgres dialect as the Celery worker
did, with the fixes of defect F29:

- column references are resolved through aliases, CTEs and derived tables (sqlglot's scopes) down to
  the tables they read, so ``p.amount`` becomes ``public.orders.amount``;
- CTEs are listed under ``ctes`` (``[{name, source_tables, columns}]``, as the backend's own parser
  writes them), not as tables;
- ``schema.table`` matches ``source_table`` when the names agree (``public.orders`` is ``orders``);
- a ``*`` never replaces a column the SELECT names explicitly;
- a parse error carries sqlglot's message without its ANSI underline codes.

``generate`` is the job: parse, store on ``pipelines_destination_table_sync``, and on any failure
mark the row FAILED and write the ``lineage_error_sync_<id>`` notification.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlglot
from loguru import logger
from psycopg.types.json import Jsonb
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.scope import Scope, build_scope

from .notifications import notify_error
from .redact import redact

if TYPE_CHECKING:
    from .catalog import Catalog

__all__ = ["DIALECT", "TRANSFORMS", "VERSION", "failed", "generate", "parse_lineage"]

VERSION = 1
DIALECT = "postgres"
#: Every ``transform`` a column can get (the Celery worker's set).
TRANSFORMS = ("direct", "SUM", "COUNT", "AVG", "MAX", "MIN", "CONCAT", "CASE", "expression")
_AGGREGATES: tuple[tuple[type[exp.Expr], str], ...] = (
    (exp.Sum, "SUM"),
    (exp.Count, "COUNT"),
    (exp.Avg, "AVG"),
    (exp.Max, "MAX"),
    (exp.Min, "MIN"),
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SPACES = re.compile(r"\s+")
#: Characters of an error kept in ``lineage_error`` (the Celery worker's cut).
ERROR_LIMIT = 1000

_SAVE_SQL = (
    "UPDATE pipelines_destination_table_sync SET lineage_metadata = %s, lineage_status = 'COMPLETED',"
    " lineage_error = NULL, lineage_generated_at = now(), updated_at = now() WHERE id = %s"
)
_FAIL_SQL = (
    "UPDATE pipelines_destination_table_sync SET lineage_status = 'FAILED', lineage_error = %s, updated_at = now()"
    " WHERE id = %s"
)


# --- the job ---------------------------------------------------------------------------------------------------
def generate(
    catalog: Catalog,
    table_sync_id: int,
    custom_sql: str | None,
    source_table: str,
    source_columns: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Parse, store and answer as the Celery worker did: ``{"success", "table_sync_id", "lineage"|"error"}``.

    A SQL that does not parse is a *result* (a lineage with ``error``, COMPLETED); any other failure
    (the config database, a missing row) marks the row FAILED and is answered with ``success: false``.
    """
    try:
        lineage = parse_lineage(custom_sql, source_table, source_columns)
        with catalog.connection() as conn:
            updated = conn.execute(_SAVE_SQL, (Jsonb(lineage), int(table_sync_id))).rowcount
        if not updated:
            raise LookupError(f"Table sync {table_sync_id} not found")
    except Exception as exc:
        return failed(catalog, table_sync_id, source_table, redact(str(exc)) or type(exc).__name__)
    return {"success": True, "table_sync_id": table_sync_id, "lineage": lineage}


def failed(catalog: Catalog, table_sync_id: Any, source_table: str, error: str) -> dict[str, Any]:
    """Mark the table sync FAILED and notify, both best effort; the answer of a failed generation."""
    try:
        with catalog.connection() as conn:
            conn.execute(_FAIL_SQL, (error[:ERROR_LIMIT], int(table_sync_id)))
    except Exception as exc:
        logger.warning("lineage of table sync {}: could not mark it FAILED: {}", table_sync_id, redact(str(exc)))
    notify_error(
        catalog,
        f"lineage_error_sync_{table_sync_id}",
        f"Lineage Generation Failed — {source_table}",
        f"Table sync ID {table_sync_id} (table: {source_table}) lineage generation failed in the worker. "
        f"Error: {error}",
    )
    return {"success": False, "table_sync_id": table_sync_id, "error": error}


# --- the parser ------------------------------------------------------------------------------------------------
def parse_lineage(
    sql: str | None, source_table: str, source_columns: Sequence[str] | None = None, *, now: dt.datetime | None = None
) -> dict[str, Any]:
    """The lineage dict of ``sql`` over ``source_table`` (whose columns are ``source_columns``). Never raises
    on bad SQL: a parse failure is an *error lineage*."""
    columns = [str(column) for column in source_columns or []]
    parsed_at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat()
    text = (sql or "").strip()
    if not text or _is_whole_table(text, source_table):
        return _direct(source_table, columns, parsed_at)
    try:
        statements = [s for s in sqlglot.parse(text, dialect=DIALECT) if s is not None]
        if len(statements) != 1:
            raise ValueError(f"Expected one SQL statement, got {len(statements)}")
        statement = statements[0]
        while isinstance(statement, exp.Subquery) and isinstance(statement.this, exp.Query):
            statement = statement.this  # ``(SELECT ...)``: the query inside the parentheses
        root = build_scope(statement) if isinstance(statement, exp.Query) else None
        if root is None:
            raise ValueError(f"Expected a SELECT query, got {statement.key.upper()}")
        return _Lineage(statement, root, source_table, columns).result(parsed_at)
    except (SqlglotError, ValueError) as exc:
        return _error(source_table, _ANSI.sub("", str(exc)), parsed_at)
    except RecursionError:
        return _error(source_table, "SQL is nested too deeply to parse", parsed_at)
    except Exception as exc:  # spec 8.2: a parse failure of any kind is an error lineage, never a failed task
        return _error(source_table, _ANSI.sub("", f"{type(exc).__name__}: {exc}"), parsed_at)


def _is_whole_table(sql: str, source_table: str) -> bool:
    """``SELECT * FROM <source_table>`` in any spacing and case: the sync copies the table as it is."""
    collapsed = _SPACES.sub(" ", sql).strip().rstrip(";").strip().upper()
    return collapsed == f"SELECT * FROM {source_table.upper()}"


def _direct(source_table: str, columns: list[str], parsed_at: str) -> dict[str, Any]:
    return {
        "version": VERSION,
        "source_tables": [{"table": source_table, "type": "source"}],
        "source_columns": [f"{source_table}.{column}" for column in columns],
        "output_columns": list(columns),
        "column_lineage": {
            column: {"sources": [f"{source_table}.{column}"], "transform": "direct"} for column in columns
        },
        "referenced_tables": [source_table],
        "ctes": [],
        "parsed_at": parsed_at,
    }


def _error(source_table: str, message: str, parsed_at: str) -> dict[str, Any]:
    return {
        "version": VERSION,
        "error": message,
        "source_tables": [{"table": source_table, "type": "source"}],
        "source_columns": [],
        "output_columns": [],
        "column_lineage": {},
        "referenced_tables": [source_table],
        "ctes": [],
        "parsed_at": parsed_at,
    }


def _same_table(written: str, source_table: str) -> bool:
    """Schema-insensitive and case-insensitive: ``public.orders`` is ``orders``, ``sales.orders`` is not
    ``public.orders``."""
    a, b = written.lower().split("."), source_table.lower().split(".")
    if a[-1] != b[-1]:
        return False
    return len(a) == 1 or len(b) == 1 or a[-2] == b[-2]


def _table_id(table: exp.Table) -> str:
    """``schema.name`` or ``name`` as written (the Celery worker's form); a table function by its alias."""
    if not isinstance(table.this, exp.Identifier):
        return table.alias_or_name
    return f"{table.db}.{table.name}" if table.db else table.name


@dataclass
class _Origin:
    """Where one output column comes from: ``table.column`` strings, and how it was computed."""

    sources: list[str]
    transform: str


Source = exp.Table | Scope


class _Lineage:
    """The lineage of one parsed query: its scopes, resolved lazily and remembered per scope."""

    def __init__(self, statement: exp.Expr, root: Scope, source_table: str, columns: list[str]) -> None:
        self.statement = statement
        self.root = root
        self.source_table = source_table
        self.columns = columns
        self._outputs: dict[int, dict[str, _Origin]] = {}
        self._scopes = {id(scope.expression): scope for scope in root.traverse()}

    def result(self, parsed_at: str) -> dict[str, Any]:
        tables = self.tables()
        outputs = self.outputs(self.root)
        lineage = {name: {"sources": o.sources, "transform": o.transform} for name, o in outputs.items()}
        return {
            "version": VERSION,
            "source_tables": [
                {"table": t, "type": "source" if _same_table(t, self.source_table) else "join"} for t in tables
            ],
            "source_columns": sorted({source for origin in outputs.values() for source in origin.sources}),
            "output_columns": list(outputs),
            "column_lineage": lineage,
            "referenced_tables": tables,
            "ctes": self.ctes(),
            "parsed_at": parsed_at,
        }

    # --- tables and CTEs ---------------------------------------------------------------------------------------
    def tables(self) -> list[str]:
        """Every table the query reads, in sqlglot's (breadth-first) order; CTE names are not tables."""
        ctes = {cte.alias_or_name.lower() for cte in self.statement.find_all(exp.CTE)}
        found: dict[str, None] = {}
        for table in self.statement.find_all(exp.Table):
            if not isinstance(table.this, exp.Identifier) or (not table.db and table.name.lower() in ctes):
                continue
            found.setdefault(_table_id(table))
        return list(found)

    def ctes(self) -> list[dict[str, Any]]:
        """``[{name, source_tables, columns}]`` of every CTE, as the backend's own parser lists them."""
        result = []
        for scope in self.root.traverse():
            cte = scope.expression.parent
            if not scope.is_cte or not isinstance(cte, exp.CTE):
                continue
            name = cte.alias_or_name
            sources = [source for source in self._read_by(scope) if source != name]  # not its own recursion
            result.append({"name": name, "source_tables": sources, "columns": list(self.outputs(scope))})
        return result

    def _read_by(self, scope: Scope) -> list[str]:
        """The tables and CTEs a scope selects from (a UNION's: those of its branches)."""
        names: dict[str, None] = {}
        for branch in scope.set_operation_scopes or [scope]:
            if branch is not scope:
                names.update(dict.fromkeys(self._read_by(branch)))
                continue
            for alias, (node, source) in scope.selected_sources.items():
                name = _table_id(source) if isinstance(source, exp.Table) else getattr(node, "name", "") or alias
                names.setdefault(name)
        return list(names)

    # --- columns -----------------------------------------------------------------------------------------------
    def outputs(self, scope: Scope) -> dict[str, _Origin]:
        """The output columns of a scope, in order, each with its origin (remembered)."""
        key = id(scope.expression)
        if key not in self._outputs:
            self._outputs[key] = {}  # a recursive CTE reading itself finds no columns instead of looping
            self._outputs[key] = self._set_operation(scope) if scope.set_operation_scopes else self._select(scope)
        return self._outputs[key]

    def _select(self, scope: Scope) -> dict[str, _Origin]:
        select = scope.expression
        outputs: dict[str, _Origin] = {}
        explicit: set[str] = set()
        for projection in select.expressions if isinstance(select, exp.Select) else []:
            star = _star_qualifier(projection)
            if star is None:
                name = _output_name(projection)
                outputs[name] = self.expression(scope, projection.unalias())
                explicit.add(name)
                continue
            for source in self._star_sources(scope, star):
                for column in self._known_columns(source):
                    if column not in explicit:
                        outputs[column] = self._through(source, column)
        return outputs

    def _set_operation(self, scope: Scope) -> dict[str, _Origin]:
        """A UNION's columns are its first branch's names, fed by every branch's column at that position."""
        branches = [list(self.outputs(branch).values()) for branch in scope.set_operation_scopes]
        names = list(self.outputs(scope.set_operation_scopes[0])) if branches else []
        outputs = {}
        for position, name in enumerate(names):
            origins = [branch[position] for branch in branches if position < len(branch)]
            outputs[name] = _merge(origins, _first_transform(origins))
        return outputs

    def expression(self, scope: Scope, node: exp.Expr) -> _Origin:
        """The origin of one projection: its column references resolved, its transform named."""
        references = [
            column
            for column in node.walk(prune=lambda n: isinstance(n, exp.Query) and n is not node)
            if isinstance(column, exp.Column) and not isinstance(column.this, exp.Star)
        ]
        origins = [self.column(scope, column.table, column.name) for column in references]
        for query in _nested_queries(node):  # scalar subqueries read what their own outputs read
            inner = self._scopes.get(id(query))
            if inner is not None:
                origins.extend(self.outputs(inner).values())
        transform = _transform(node, len(references))
        if transform == "direct":  # a column passed through keeps what was done to it below
            transform = _first_transform(origins)
        if not origins:
            return _Origin([f"{self._first_label(scope)}.*"], transform)
        return _merge(origins, transform)

    def column(self, scope: Scope, qualifier: str, name: str) -> _Origin:
        """The origin of ``qualifier.name`` (or a bare ``name``) read in ``scope``."""
        source = self._pick(scope, qualifier, name)
        if source is None:
            return _Origin([f"{qualifier or self._first_label(scope)}.{name}"], "direct")
        return self._through(source, name, alias=qualifier)

    def _through(self, source: Source, name: str, *, alias: str = "") -> _Origin:
        found = self._find(source, name)
        return found or _Origin([f"{alias or self._first_label(source)}.{name}"], "direct")

    def _find(self, source: Source, name: str) -> _Origin | None:
        """``name`` followed down through a source: a table's column, a named output, or what a ``*`` passes on."""
        if isinstance(source, exp.Table):
            return _Origin([f"{_table_id(source)}.{name}"], "direct")
        outputs = self.outputs(source)
        if name in outputs:
            return outputs[name]
        for projection in _projections(source):
            star = _star_qualifier(projection)
            if star is None:
                continue
            inners = self._star_sources(source, star)
            for inner in sorted(inners, key=lambda s: name not in self._known_columns(s)):
                found = self._find(inner, name)
                if found is not None:
                    return found
        return None

    def _pick(self, scope: Scope, qualifier: str, name: str) -> Source | None:
        """The source a column reads: its qualifier's, else the one source that has it, else the first."""
        selected = {alias: source for alias, (_, source) in scope.selected_sources.items()}
        if qualifier:
            return selected.get(qualifier) or scope.sources.get(qualifier)
        candidates = list(selected.values())
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        for candidate in candidates:
            if name in self._known_columns(candidate):
                return candidate
        unknown = [c for c in candidates if isinstance(c, exp.Table) and not self._is_source(c)]
        return unknown[0] if unknown else candidates[0]

    def _star_sources(self, scope: Scope, qualifier: str) -> list[Source]:
        selected = [(alias, source) for alias, (_, source) in scope.selected_sources.items()]
        return [source for alias, source in selected if not qualifier or alias == qualifier]

    def _known_columns(self, source: Source) -> list[str]:
        """The columns a source has, as far as the query and ``source_columns`` tell."""
        if isinstance(source, exp.Table):
            return self.columns if self._is_source(source) else []
        return list(self.outputs(source))

    def _is_source(self, table: exp.Table) -> bool:
        return isinstance(table.this, exp.Identifier) and _same_table(_table_id(table), self.source_table)

    def _first_label(self, source: Source) -> str:
        """The table a column-less expression (``COUNT(*)``) is said to read: the first one it selects from."""
        if isinstance(source, exp.Table):
            return _table_id(source)
        for _, inner in source.selected_sources.values():
            return self._first_label(inner)
        return self.source_table


def _star_qualifier(projection: exp.Expr) -> str | None:
    """``""`` for ``*``, ``"t"`` for ``t.*``, ``None`` for any other projection."""
    if isinstance(projection, exp.Star):
        return ""
    if isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star):
        return projection.table
    return None


def _projections(scope: Scope) -> list[exp.Expr]:
    select = scope.expression
    return list(select.expressions) if isinstance(select, exp.Select) else []


def _output_name(projection: exp.Expr) -> str:
    """An alias, a bare column's name, else the expression's SQL text (the Celery worker's rule)."""
    if isinstance(projection, exp.Alias):
        return projection.alias
    if isinstance(projection, exp.Column):
        return projection.name
    return projection.sql(dialect=DIALECT)


def _transform(node: exp.Expr, references: int) -> str:
    """The first aggregate, ``||``/CONCAT or CASE found; else ``expression`` for several columns (or a
    window function), else ``direct``."""
    for kind, name in _AGGREGATES:
        if node.find(kind) is not None:
            return name
    if node.find(exp.DPipe, exp.Concat) is not None:
        return "CONCAT"
    if node.find(exp.Case) is not None:
        return "CASE"
    if references > 1 or node.find(exp.Window) is not None:
        return "expression"
    return "direct"


def _first_transform(origins: Iterable[_Origin]) -> str:
    return next((o.transform for o in origins if o.transform != "direct"), "direct")


def _merge(origins: Sequence[_Origin], transform: str) -> _Origin:
    sources: dict[str, None] = {}
    for origin in origins:
        for source in origin.sources:
            sources.setdefault(source)
    return _Origin(list(sources), transform)


def _nested_queries(node: exp.Expr) -> Iterator[exp.Expr]:
    """The queries directly inside an expression (scalar subqueries, ``IN (SELECT ...)``), by their SELECT."""
    for inner in node.walk(prune=lambda n: isinstance(n, exp.Query) and n is not node):
        if inner is not node and isinstance(inner, exp.Query):
            yield inner.unnest() if isinstance(inner, exp.Subquery) else inner
