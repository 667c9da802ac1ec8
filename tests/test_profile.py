"""Column profiles (spec 2.9): the Celery worker's keys, JSON-safe, rendered like the preview's cells."""

from __future__ import annotations

import json
from typing import Any

import duckdb

from rosetta_jobs.preview.profile import TOP_VALUES, profile
from rosetta_jobs.preview.serialize import serialize

BASE_KEYS = ["column", "type", "total_count", "null_count", "null_percent", "distinct_count", "distinct_percent"]


def profiles(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, dict[str, Any]]:
    """The profile of ``sql``'s result, by column name, after a strict JSON round trip."""
    result = profile(con.execute(sql).to_arrow_table())
    cached = json.loads(json.dumps(result, allow_nan=False))
    assert cached == result
    return {entry["column"]: entry for entry in result}


def test_integer_column_has_every_numeric_statistic(con: duckdb.DuckDBPyConnection) -> None:
    # Given an integer column with a NULL
    sql = "SELECT v FROM (VALUES (1), (2), (2), (7), (NULL)) t(v)"
    # When it is profiled
    entry = profiles(con, sql)["v"]
    # Then counts, range, mean, population standard deviation and the exact median are there
    assert entry == {
        "column": "v",
        "type": "int32",
        "total_count": 5,
        "null_count": 1,
        "null_percent": 20.0,
        "distinct_count": 4,
        "distinct_percent": 80.0,
        "min": 1,
        "max": 7,
        "mean": 3.0,
        "std_dev": 2.3452,
        "median": 2.0,
        "top_values": [
            {"value": 2, "count": 2, "percent": 40.0},
            {"value": 1, "count": 1, "percent": 20.0},
            {"value": 7, "count": 1, "percent": 20.0},
            {"value": None, "count": 1, "percent": 20.0},
        ],
    }


def test_decimal_and_huge_integer_statistics_are_json_numbers_or_exact_text(con: duckdb.DuckDBPyConnection) -> None:
    # Given DECIMAL and HUGEINT/UBIGINT columns (the Celery worker's Decimal mean made the result uncacheable)
    sql = """
        SELECT d, h, u FROM (VALUES
            (1.125::DECIMAL(18,3), 1::HUGEINT, 1::UBIGINT),
            (2.5, 170141183460469231731687303715884105727, 18446744073709551615)
        ) t(d, h, u)
    """
    # When they are profiled
    result = profiles(con, sql)
    # Then min/max follow the cell rules (exact strings past 2**53) and the statistics are floats
    assert {k: result["d"][k] for k in ("min", "max", "mean", "std_dev", "median")} == {
        "min": 1.125,
        "max": 2.5,
        "mean": 1.8125,
        "std_dev": 0.6875,
        "median": 1.8125,
    }
    assert (result["h"]["min"], result["h"]["max"]) == (1, "170141183460469231731687303715884105727")
    assert (result["u"]["min"], result["u"]["max"]) == (1, "18446744073709551615")
    assert all(isinstance(result[c][k], float) for c in "dhu" for k in ("mean", "std_dev", "median"))


def test_nan_and_infinity_never_reach_the_json(con: duckdb.DuckDBPyConnection) -> None:
    # Given a double column with NaN and infinity, and one with NaN only
    sql = "SELECT v::DOUBLE AS v, 'nan'::DOUBLE AS n FROM (VALUES ('1.5'), ('nan'), ('inf'), ('-2')) t(v)"
    # When it is profiled (the helper asserts allow_nan=False works)
    result = profiles(con, sql)
    # Then a non-finite statistic is null, and a range of only NaN is left out
    v = result["v"]
    assert (v["min"], v["max"], v["mean"], v["std_dev"]) == (-2.0, None, None, None)
    assert "min" not in result["n"] and "max" not in result["n"]


def test_temporal_and_binary_ranges_are_rendered_like_cells(con: duckdb.DuckDBPyConnection) -> None:
    # Given dates, times, timestamps, timestamptz and blobs (the Celery worker wrote "2024-01-02 03:04:05" and b'..')
    sql = """
        SELECT * FROM (VALUES
            (DATE '2024-01-01', TIME '01:02:03', TIMESTAMP '2024-01-02 03:04:05', TIMESTAMPTZ '2024-01-02 03:04:05+00',
             '\\xDE\\xAD'::BLOB, 'b'),
            (DATE '2024-12-31', TIME '23:59:59.5', TIMESTAMP '2024-01-03 00:00:00.25',
             TIMESTAMPTZ '2025-01-01 00:00:00+00', '\\x00'::BLOB, 'a')
        ) t(d, t, ts, tz, b, s)
    """
    # When they are profiled
    result = profiles(con, sql)
    # Then min and max use the same ISO / base64 text as the preview rows
    ranges = {name: (entry["min"], entry["max"]) for name, entry in result.items()}
    assert ranges == {
        "d": ("2024-01-01", "2024-12-31"),
        "t": ("01:02:03", "23:59:59.500000"),
        "ts": ("2024-01-02T03:04:05", "2024-01-03T00:00:00.250000"),
        "tz": ("2024-01-02T03:04:05+00:00", "2025-01-01T00:00:00+00:00"),
        "b": ("AA==", "3q0="),
        "s": ("a", "b"),
    }
    assert "mean" not in result["d"]


def test_top_values_are_the_ten_most_frequent_ties_in_first_seen_order(con: duckdb.DuckDBPyConnection) -> None:
    # Given 14 distinct values: 'x' three times, then NULL twice, then 12 values once each
    sql = """
        SELECT v FROM (
            SELECT 'x' AS v, 0 AS o FROM range(3)
            UNION ALL SELECT NULL, 1 FROM range(2)
            UNION ALL SELECT 'v' || lpad(i::VARCHAR, 2, '0'), 2 + i FROM range(12) t(i)
        ) ORDER BY o
    """
    # When it is profiled
    top = profiles(con, sql)["v"]["top_values"]
    # Then ten entries, by count, nulls counted as a value, ties kept in order of first appearance
    assert len(top) == TOP_VALUES
    assert [(e["value"], e["count"], e["percent"]) for e in top[:3]] == [
        ("x", 3, 17.65),
        (None, 2, 11.76),
        ("v00", 1, 5.88),
    ]
    assert [e["value"] for e in top[2:]] == [f"v{i:02d}" for i in range(8)]


def test_enum_and_boolean_get_counts_and_top_values(con: duckdb.DuckDBPyConnection) -> None:
    # Given an ENUM column and a BOOLEAN column
    sql = "SELECT m::mood AS m, b FROM (VALUES ('ok', true), ('ok', false), ('sad', true)) t(m, b)"
    # When they are profiled
    result = profiles(con, sql)
    # Then the ENUM's values are its labels; booleans have no range, only counts
    assert result["m"]["type"] == "dictionary<values=string, indices=uint8, ordered=0>"
    assert [(e["value"], e["count"]) for e in result["m"]["top_values"]] == [("ok", 2), ("sad", 1)]
    assert result["m"]["distinct_count"] == 2
    assert sorted(result["b"]) == sorted([*BASE_KEYS, "top_values"])


def test_types_without_statistics_keep_their_base_keys_and_spare_the_others(con: duckdb.DuckDBPyConnection) -> None:
    # Given lists, structs, maps and intervals (no distinct count or range in Arrow) next to an integer column
    sql = """
        SELECT [1, 2] AS l, {'a': 1} AS s, MAP {'k': 1} AS m, INTERVAL 1 DAY AS i, 5 AS n
        UNION ALL SELECT NULL, NULL, NULL, INTERVAL 2 HOUR, 6
    """
    # When they are profiled
    result = profiles(con, sql)
    # Then nested columns have the base keys with distinct null, intervals have counts, and n is fully profiled
    for name in ("l", "s", "m"):
        assert list(result[name]) == BASE_KEYS
        assert (result[name]["null_count"], result[name]["distinct_count"]) == (1, None)
    assert result["i"]["distinct_count"] == 2 and "min" not in result["i"]
    assert [e["value"] for e in result["i"]["top_values"]] == ["P1D", "PT2H"]
    assert (result["n"]["min"], result["n"]["max"], result["n"]["median"]) == (5, 6, 5.5)


def test_lossless_extension_columns_are_profiled_with_cell_rendering() -> None:
    # Given JSON and UUID columns exported as Arrow extension types
    con = duckdb.connect()
    try:
        con.execute("SET arrow_lossless_conversion = true")
        sql = """
            SELECT j::JSON AS j, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::UUID AS u
            FROM (VALUES ('{"a": 1}'), ('[1]'), ('[1]')) t(j)
        """
        # When they are profiled
        result = profiles(con, sql)
    finally:
        con.close()
    # Then their top values are JSON values and canonical UUID text
    assert [(e["value"], e["count"]) for e in result["j"]["top_values"]] == [([1], 2), ({"a": 1}, 1)]
    assert result["u"]["top_values"] == [
        {"value": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "count": 3, "percent": 100.0}
    ]


def test_empty_table_has_only_the_base_keys_at_zero(con: duckdb.DuckDBPyConnection) -> None:
    # Given a result with columns but no rows
    sql = "SELECT 1 AS a, 'x' AS b, [1] AS c WHERE false"
    # When it is profiled
    result = profile(con.execute(sql).to_arrow_table())
    # Then each column has the base keys only, all zero
    assert [list(entry) for entry in result] == [BASE_KEYS] * 3
    assert all(entry[k] == 0 for entry in result for k in BASE_KEYS[2:])


def test_duplicate_columns_are_named_like_the_preview_columns(con: duckdb.DuckDBPyConnection) -> None:
    # Given two columns called id
    table = con.execute("SELECT 1 AS id, 2 AS id").to_arrow_table()
    # When the table is profiled and serialised
    names = [entry["column"] for entry in profile(table)]
    # Then the profile names match the preview's columns, each with its own data
    assert names == serialize(table)["columns"] == ["id", "id_2"]
    assert [entry["max"] for entry in profile(table)] == [1, 2]


def test_whole_matrix_profile_is_strict_json(con: duckdb.DuckDBPyConnection) -> None:
    # Given the serializer's type matrix
    from .test_serialize import MATRIX_SQL

    table = con.execute(MATRIX_SQL).to_arrow_table()
    # When it is profiled
    result = profile(table)
    # Then there is one entry per column, each with the base keys, and JSON takes it with NaN forbidden
    assert [entry["column"] for entry in result] == table.column_names
    assert all(set(BASE_KEYS) <= set(entry) for entry in result)
    assert json.loads(json.dumps(result, allow_nan=False)) == result
