"""How fast is ``serialize`` next to the Celery worker's row-by-row serializer?

Run: ``.venv/bin/python bench/bench_serializer.py [--runs N]``. Builds a 12-column table of mixed
types with DuckDB at 500 and 50,000 rows and prints, per size, the median wall time of our
column-wise ``serialize`` and of a baseline that does what the Celery worker did (spec 2.7):
``to_pylist()`` of each 1024-row batch, one dict per row, and a per-cell conversion of
datetime/date (``isoformat``), bytes (base64) and Decimal (``float``). Both read the same
record batches; neither is asked to produce identical output (the baseline keeps the
Celery defects: NaN, big ints, nested values untouched).

Timings are information, not a test: nothing here asserts on them.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa

from rosetta_jobs.preview.serialize import serialize

BATCH_ROWS = 1024

QUERY = """
SELECT
    i::INTEGER                                              AS id,
    (i * 7919)::BIGINT                                      AS amount_cents,
    CASE WHEN i % 97 = 0 THEN 'nan'::DOUBLE ELSE i / 3.0 END::DOUBLE AS ratio,
    'customer-' || i::VARCHAR                               AS name,
    i % 2 = 0                                               AS active,
    DATE '2020-01-01' + (i % 1500)::INTEGER                 AS signup_date,
    TIMESTAMP '2024-01-01 00:00:00' + to_microseconds(i * 1000003) AS created_at,
    TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds(i)    AS updated_at,
    (i * 1.125)::DECIMAL(18,3)                              AS price,
    CASE WHEN i % 5 = 0 THEN NULL ELSE 'status-' || (i % 7)::VARCHAR END AS status,
    ('\\x' || lpad(to_hex(i), 8, '0'))::BLOB                AS payload,
    uuid()                                                  AS uid
FROM range(?) t(i)
"""


def build(rows: int) -> pa.Table:
    """The bench table, materialised once and re-cut into 1024-row batches like the worker's stream."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        table = con.execute(QUERY, [rows]).to_arrow_table()
    finally:
        con.close()
    return pa.Table.from_batches(table.to_batches(max_chunksize=BATCH_ROWS), schema=table.schema)


def _celery_cell(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Decimal):
        return float(value)
    return value


def celery_baseline(table: pa.Table) -> dict[str, Any]:
    """The Celery worker's loop: Python objects for every cell, then a dict per row."""
    columns = table.column_names
    data: list[dict[str, Any]] = []
    for batch in table.to_reader(max_chunksize=BATCH_ROWS):
        for row in batch.to_pylist():
            data.append({key: _celery_cell(value) for key, value in row.items()})
    return {"columns": columns, "column_types": [], "data": data, "error": None}


def median_ms(func: Callable[[pa.Table], Any], table: pa.Table, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func(table)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=0, help="runs per measurement (default: 31 small, 7 large)")
    args = parser.parse_args()
    print(f"{'rows':>7}  {'ours ms':>9}  {'baseline ms':>11}  {'speed-up':>8}")
    for rows, default_runs in ((500, 31), (50_000, 7)):
        runs = args.runs or default_runs
        table = build(rows)
        serialize(table.to_reader())  # warm both paths (imports, kernels) before timing
        celery_baseline(table)
        ours = median_ms(lambda t: serialize(t.to_reader()), table, runs)
        baseline = median_ms(celery_baseline, table, runs)
        print(f"{rows:>7}  {ours:>9.2f}  {baseline:>11.2f}  {baseline / ours:>7.1f}x")
    versions = f"pyarrow {pa.__version__}, duckdb {duckdb.__version__}"
    print(f"(median of N runs; 12 columns; {BATCH_ROWS}-row batches; {versions})")


if __name__ == "__main__":
    main()
