"""The Postgres writer: an output node's rows into its destination table, APPEND, REPLACE or UPSERT.

The original's writer (``../shared/spec/rosetta-tasks.md`` 5.4) with its defects fixed:

- it writes from the output's materialised rows (a temp table), so what is counted is what is written
  and ``row_count_out`` is the rows the statement reports, not a second count of the source (F21);
- REPLACE empties and refills the table in one destination transaction: a failed insert leaves the old
  rows, and an output with no rows empties the table, as REPLACE says (F17);
- UPSERT checks its keys against the output's columns, and with no column besides the keys it only
  inserts the rows that are missing (F18); rows whose key is NULL never match, so they are inserted;
- the conversions for ``json``/``jsonb``, array and PostGIS targets are the original's, and an UPSERT
  that needs them goes through a staging table whose UPDATE and INSERT run in one Postgres transaction;
- a table that does not exist yet is created from the output's columns (the editor lets users type a
  new table name);
- every name is quoted exactly as the destination spells it.
"""

from __future__ import annotations

import contextlib
import random
import string
from collections.abc import Sequence

import duckdb

from .compiler import OutputPlan, ident, literal
from .graph import NodeError

__all__ = ["conversion", "write_output"]

_ELEMENTS = {
    "int2": "SMALLINT", "int4": "INTEGER", "int8": "BIGINT", "float4": "FLOAT", "float8": "DOUBLE",
    "numeric": "DOUBLE", "text": "VARCHAR", "varchar": "VARCHAR", "bpchar": "VARCHAR", "bool": "BOOLEAN",
    "date": "DATE", "timestamp": "TIMESTAMP", "timestamptz": "TIMESTAMPTZ", "uuid": "VARCHAR", "json": "JSON",
    "jsonb": "JSON",
}  # fmt: skip


def conversion(column: str, source_type: str, target_udt: str | None) -> str:
    """The expression that writes ``column`` (DuckDB type ``source_type``) into a target column of ``target_udt``."""
    c = ident(column)
    udt = (target_udt or "").lower()
    if udt in ("geometry", "geography"):
        if "GEOMETRY" in source_type.upper():
            return f"ST_AsText({c})"
        return f"CASE WHEN {c} IS NULL THEN NULL ELSE {c}::VARCHAR END"  # WKT/EWKT text, parsed by PostGIS
    if udt in ("json", "jsonb"):
        return f"CASE WHEN {c} IS NULL THEN NULL ELSE {c}::JSON END"
    if udt.startswith("_"):
        element = _ELEMENTS.get(udt[1:], "VARCHAR")
        if "[]" in source_type or "LIST" in source_type.upper():
            return f"CASE WHEN {c} IS NULL THEN NULL ELSE {c}::{element}[] END"
        shape = literal('["' + element + '"]')
        return f"CASE WHEN {c} IS NULL THEN NULL ELSE json_transform({c}::JSON, {shape}) END"
    return c


def write_output(con: duckdb.DuckDBPyConnection, output: OutputPlan, *, source: str, alias: str) -> int:
    """Write temp table ``source`` to ``output``'s table on the destination attached as ``alias``; rows written."""
    described = con.execute(f"SELECT * FROM {source} LIMIT 0").description or []
    columns = [(str(d[0]), str(d[1])) for d in described]
    target = _target(con, output, alias)
    fqt = f"{ident(alias)}.{ident(output.schema)}.{ident(output.table if target is None else target[0])}"
    if target is None:  # a new table, with the output's columns
        return _count(con.execute(f"CREATE TABLE {fqt} AS SELECT * FROM {source}"))
    table, udts = target
    by_name = {name.lower(): name for name in udts}
    missing = [name for name, _ in columns if name.lower() not in by_name]
    if missing:
        raise NodeError(
            output.node.id,
            f"Output node {output.node.id}: column(s) {', '.join(missing)} of its input are not in table "
            f"{output.schema}.{table}: add them to the table, or select fewer columns upstream",
        )
    names = [by_name[name.lower()] for name, _ in columns]
    exprs = [conversion(name, kind, udts[by_name[name.lower()]]) for name, kind in columns]
    select = ", ".join(e if e == ident(n) else f"{e} AS {ident(t)}" for e, n, t in zip(exprs, (c for c, _ in columns),
                                                                                      names, strict=True))  # fmt: skip
    column_list = ", ".join(ident(n) for n in names)
    insert = f"INSERT INTO {fqt} ({column_list}) SELECT {select} FROM {source}"
    if output.write_mode == "APPEND":
        return _count(con.execute(insert))
    if output.write_mode == "REPLACE":
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"DELETE FROM {fqt}")
            written = _count(con.execute(insert))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return written
    keys = _keys(output, names)
    converted = any(e != ident(c) for e, (c, _) in zip(exprs, columns, strict=True))
    if converted:
        return _staged(con, output, alias=alias, table=table, names=names, keys=keys, select=select, source=source)
    return _merge(con, fqt, names=names, keys=keys, source=source)


def _target(con: duckdb.DuckDBPyConnection, output: OutputPlan, alias: str) -> tuple[str, dict[str, str]] | None:
    """The table's name as the destination spells it and its columns' ``udt_name``; ``None`` if it does not exist."""
    rows = con.execute(
        f"SELECT table_name, column_name, udt_name FROM {ident(alias)}.information_schema.columns"
        f" WHERE table_schema = {literal(output.schema)} AND lower(table_name) = lower({literal(output.table)})"
        " ORDER BY ordinal_position"
    ).fetchall()
    names = {str(r[0]) for r in rows}
    if not names:
        return None
    table = output.table if output.table in names else sorted(names)[0]
    return table, {str(r[1]): str(r[2]) for r in rows if r[0] == table}


def _keys(output: OutputPlan, names: Sequence[str]) -> list[str]:
    by_name = {name.lower(): name for name in names}
    missing = [key for key in output.upsert_keys if key.lower() not in by_name]
    if missing:
        raise NodeError(
            output.node.id,
            f"Output node {output.node.id}: upsert key(s) {', '.join(missing)} are not columns of its input "
            f"({', '.join(names)})",
        )
    return [by_name[key.lower()] for key in output.upsert_keys]


def _merge(con: duckdb.DuckDBPyConnection, fqt: str, *, names: list[str], keys: list[str], source: str) -> int:
    on = " AND ".join(f"tgt.{ident(k)} = src.{ident(k)}" for k in keys)
    rest = [n for n in names if n not in keys]
    sql = f"MERGE INTO {fqt} AS tgt USING (SELECT {', '.join(ident(n) for n in names)} FROM {source}) AS src ON ({on})"
    if rest:
        sql += " WHEN MATCHED THEN UPDATE SET " + ", ".join(f"{ident(n)} = src.{ident(n)}" for n in rest)
    values = ", ".join(f"src.{ident(n)}" for n in names)
    sql += f" WHEN NOT MATCHED THEN INSERT ({', '.join(ident(n) for n in names)}) VALUES ({values})"
    return _count(con.execute(sql))


def _staged(
    con: duckdb.DuckDBPyConnection,
    output: OutputPlan,
    *,
    alias: str,
    table: str,
    names: list[str],
    keys: list[str],
    select: str,
    source: str,
) -> int:
    """UPSERT through a staging table on the destination (DuckDB's MERGE loses the json/array conversions)."""
    staging = "__rosetta_stg_" + "".join(random.choices(string.ascii_lowercase, k=8))
    schema = ident(output.schema)
    target, stage = f"{schema}.{ident(table)}", f"{schema}.{ident(staging)}"

    def native(sql: str) -> None:
        con.execute(f"CALL postgres_execute({literal(alias)}, {literal(sql)})")

    native(f"CREATE TABLE {stage} (LIKE {target})")
    try:
        written = _count(
            con.execute(
                f"INSERT INTO {ident(alias)}.{schema}.{ident(staging)} ({', '.join(ident(n) for n in names)})"
                f" SELECT {select} FROM {source}"
            )
        )
        match = " AND ".join(f"tgt.{ident(k)} = src.{ident(k)}" for k in keys)
        rest = [n for n in names if n not in keys]
        statements = []
        if rest:
            assignments = ", ".join(f"{ident(n)} = src.{ident(n)}" for n in rest)
            statements.append(f"UPDATE {target} AS tgt SET {assignments} FROM {stage} AS src WHERE {match}")
        cols = ", ".join(ident(n) for n in names)
        statements.append(
            f"INSERT INTO {target} ({cols}) SELECT {', '.join(f'src.{ident(n)}' for n in names)} FROM {stage} AS src"
            f" WHERE NOT EXISTS (SELECT 1 FROM {target} AS tgt WHERE {match})"
        )
        native("; ".join(statements))  # one simple query: one implicit transaction on the destination
        return written
    finally:
        with contextlib.suppress(duckdb.Error):
            native(f"DROP TABLE IF EXISTS {stage}")


def _count(result: duckdb.DuckDBPyConnection) -> int:
    row = result.fetchone()
    return int(row[0]) if row and row[0] is not None else 0
