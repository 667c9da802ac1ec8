"""The size bounds of a preview's result, on Arrow tables DuckDB makes: a value, the table, the JSON."""

from __future__ import annotations

import duckdb
import pytest

from rosetta_jobs.errors import PreviewError
from rosetta_jobs.preview.bounds import check_cells, encode_result, shown_size
from rosetta_jobs.preview.serialize import serialize

KB = 1000


def table(sql: str) -> object:
    con = duckdb.connect()
    try:
        return con.execute(sql).to_arrow_table()
    finally:
        con.close()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT repeat('x', 5000) AS v",
        "SELECT repeat('x', 5000)::BLOB AS v",
        "SELECT [repeat('x', 5000)] AS v",
        "SELECT {'a': {'b': repeat('x', 5000)}} AS v",
        "SELECT map(['k'], [repeat('x', 5000)]) AS v",
        "SELECT map([repeat('x', 5000)], [1]) AS v",
        "SELECT to_json(repeat('x', 5000)) AS v",
        "SELECT [[1], [2]] AS a, repeat('x', 5000)::VARCHAR AS v",
    ],
    ids=["text", "blob", "in-list", "in-struct", "map-value", "map-key", "json", "second-column"],
)
def test_a_value_over_the_cell_cap_is_refused_at_any_depth(sql: str) -> None:
    # Given a 5 KB value, at the top or nested in a list, struct, map or JSON
    arrow = table(sql)
    # When the result is checked with a 4 KB cap
    with pytest.raises(PreviewError) as info:
        check_cells(arrow, max_cell_bytes=4 * KB, max_result_bytes=10**6)  # type: ignore[arg-type]
    # Then it is refused, naming the column and the setting
    assert "column 'v'" in str(info.value) and "PREVIEW_MAX_CELL_BYTES" in str(info.value)


def test_values_under_the_cap_pass() -> None:
    # Given small values of every nested kind, and numbers (which have no cell size)
    arrow = table("SELECT 'x' AS t, [1, 2] AS l, {'a': 'b'} AS s, map(['k'], ['v']) AS m, range(5000) AS n")
    # When checked with a 4 KB cap
    check_cells(arrow, max_cell_bytes=4 * KB, max_result_bytes=10**6)  # type: ignore[arg-type]
    # Then nothing is refused


def test_a_large_value_is_refused_in_a_slice_of_a_table_too() -> None:
    # Given a slice holding only the large row of a table (a slice shares its table's buffers)
    arrow = table("SELECT v FROM (VALUES ('x'), (repeat('y', 5000)), ('z')) t(v)").slice(1, 1)
    # When checked with a 4 KB cap
    with pytest.raises(PreviewError) as info:
        check_cells(arrow, max_cell_bytes=4 * KB, max_result_bytes=10**6)  # type: ignore[arg-type]
    # Then the value is found and refused
    assert "column 'v'" in str(info.value)


def test_a_table_far_over_the_result_cap_is_refused_before_it_is_converted() -> None:
    # Given 2 MB of Arrow data in small cells
    arrow = table("SELECT range(1000) AS l FROM range(250)")
    # When checked against a 100 KB result cap
    with pytest.raises(PreviewError) as info:
        check_cells(arrow, max_cell_bytes=10**6, max_result_bytes=100 * KB)  # type: ignore[arg-type]
    # Then it is refused from Arrow's size alone
    assert "larger than 100 KB (PREVIEW_MAX_RESULT_BYTES)" in str(info.value)


def test_the_json_is_held_to_the_result_cap_exactly() -> None:
    # Given a result whose JSON is just over, then just under, the cap
    result = serialize(table("SELECT repeat('x', 900) AS v FROM range(10)"))  # type: ignore[arg-type]
    size = len(encode_result(result, max_result_bytes=10**6))
    # When it is encoded with each cap
    with pytest.raises(PreviewError):
        encode_result(result, max_result_bytes=size - 1)
    # Then only the one it fits passes, as the bytes that are stored
    assert encode_result(result, max_result_bytes=size).startswith(b'{"columns":["v"]')


@pytest.mark.parametrize(("size", "shown"), [(512, "512 B"), (100_000, "100 KB"), (4_000_000, "4 MB"),
                                              (1_500_000_000, "1.5 GB")])  # fmt: skip
def test_sizes_are_shown_in_the_units_settings_use(size: int, shown: str) -> None:
    assert shown_size(size) == shown
