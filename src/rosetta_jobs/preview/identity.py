"""Which relation of the source ``table_name`` names: exactly one table or view, in a schema previews may read.

The backend forwards ``table_name`` from the user unchecked, so it is input like ``sql``. It is resolved
against the source's own catalog (``pg_class``, read through the attached session) to the exact spelling
of one relation, before any statement is built:

- a double-quoted part must match exactly; an unquoted one matches exactly, or else the one name of the
  source that differs from it only in letter case (two or more such names: ambiguous, refused);
- the relation is an ordinary or partitioned table, a view or a materialized view;
- its schema is not a system schema (``pg_catalog``, ``information_schema``, ``pg_toast``, any ``pg_*``),
  and is one of ``PREVIEW_SCHEMAS`` when that is set.

The answer also carries the source's case variants of the schema and table name, so that the statement
checks (``TableRef.names``) can tell a reference to this table from one to ``"ORDERS"`` beside ``orders``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import PreviewError
from .parsing import TableRef, lower_ascii, parse_table_name

if TYPE_CHECKING:
    import duckdb

__all__ = ["PREVIEWABLE_KINDS", "is_system_schema", "resolve_table"]

#: ``pg_class.relkind`` of what a preview may read: table, partitioned table, view, materialized view.
PREVIEWABLE_KINDS = frozenset({"r", "p", "v", "m"})

_FOLD = "translate({}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
#: Schemas folding like the written one, each with its relations folding like the written name (or NULL).
#: The names arrive hex-encoded, so nothing the user wrote is ever SQL text on the source.
_LOOKUP = (
    "SELECT n.nspname::text, c.relname::text, c.relkind::text FROM pg_catalog.pg_namespace n "
    "LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND {rel} = {name} WHERE {nsp} = {schema}"
)


def is_system_schema(schema: str) -> bool:
    """PostgreSQL's own schemas (``pg_*`` is reserved to the system) and the SQL-standard catalog views."""
    folded = lower_ascii(schema)
    return folded.startswith("pg_") or folded == "information_schema"


def resolve_table(
    con: duckdb.DuckDBPyConnection, *, alias: str, table_name: str, schemas: frozenset[str] = frozenset()
) -> TableRef:
    """The one relation ``table_name`` names in the source attached as ``alias``, spelled as the source spells it."""
    written = parse_table_name(table_name)
    if is_system_schema(written.schema):
        raise PreviewError(
            f"Cannot preview {table_name}: system catalogs (pg_catalog, information_schema, pg_toast) are not "
            "tables of the source."
        )
    rows = con.execute("SELECT * FROM postgres_query(?, ?)", [alias, _lookup(written)]).fetchall()
    schema = _pick(written.schema, {str(row[0]) for row in rows}, exact=written.schema_quoted, what=table_name)
    relations = {str(row[1]): str(row[2]) for row in rows if row[0] == schema and row[1] is not None}
    name = _pick(written.name, set(relations), exact=written.name_quoted, what=table_name) if schema else None
    if schema is None or name is None or is_system_schema(schema) or (schemas and schema not in schemas):
        raise PreviewError(
            f"Cannot preview {table_name}: the source has no table or view of that name in a schema previews may "
            "read. Check the table's name (double-quote parts with capitals or other characters)."
        )
    if relations[name] not in PREVIEWABLE_KINDS:
        raise PreviewError(f"Cannot preview {table_name}: it is not a table or a view.")
    return TableRef(
        schema,
        name,
        schema_variants=frozenset(str(row[0]) for row in rows),
        name_variants=frozenset(relations),
        schema_quoted=written.schema_quoted,
        name_quoted=written.name_quoted,
    )


def _lookup(written: TableRef) -> str:
    def text(value: str) -> str:
        return f"convert_from(decode('{value.encode('utf-8').hex()}', 'hex'), 'UTF8')"

    return _LOOKUP.format(
        rel=_FOLD.format("c.relname"),
        name=_FOLD.format(text(written.name)),
        nsp=_FOLD.format("n.nspname"),
        schema=_FOLD.format(text(written.schema)),
    )


def _pick(written: str, names: set[str], *, exact: bool, what: str) -> str | None:
    """``written`` itself, else (unquoted) the one name differing only in case; ``None`` when there is none."""
    if written in names:
        return written
    if exact:
        return None
    folded = [name for name in names if lower_ascii(name) == lower_ascii(written)]
    if len(folded) > 1:
        raise PreviewError(
            f"Cannot preview {what}: the name is ambiguous, several names of the source differ from it only in "
            'letter case. Double-quote it to name one exactly (e.g. "Orders").'
        )
    return folded[0] if folded else None
