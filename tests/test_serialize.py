"""Arrow -> preview JSON: every DuckDB type of the spec's matrix (2.7), with the section-13 defects fixed."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from rosetta_jobs.preview.serialize import MAX_SAFE_INTEGER, column_label, column_names, json_values, serialize

#: One row of every type in the spec's matrix, plus the types section 13 says were mishandled.
MATRIX_SQL = """
SELECT
    (-128)::TINYINT                                       AS tiny,
    32767::SMALLINT                                       AS small,
    (-2147483648)::INTEGER                                AS int,
    9223372036854775807::BIGINT                           AS big,
    18446744073709551615::UBIGINT                         AS ubig,
    170141183460469231731687303715884105727::HUGEINT      AS huge,
    123.456::DECIMAL(18,3)                                AS dec18,
    1234567890123456789012345678.1234567891::DECIMAL(38,10) AS dec38,
    'nan'::DOUBLE                                         AS nan,
    'inf'::DOUBLE                                         AS pinf,
    '-inf'::DOUBLE                                        AS ninf,
    1.1::FLOAT                                            AS real,
    true                                                  AS flag,
    'héllo'                                               AS text,
    '{"a": [1, 2.5, null], "b": {"c": "d"}}'::JSON        AS doc,
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::UUID          AS uid,
    DATE '2024-02-29'                                     AS day,
    TIME '13:45:01.5'                                     AS clock,
    TIMESTAMP '2024-01-02 03:04:05.123456'                AS stamp,
    TIMESTAMPTZ '2024-01-02 03:04:05+07'                  AS stamptz,
    INTERVAL '1 month 2 days 3 seconds'                   AS span,
    '\\xDE\\xAD\\xBE\\xEF'::BLOB                          AS blob,
    [DATE '2024-01-01', NULL, DATE '2024-12-31']          AS days,
    {'price': 9.99::DECIMAL(5,2), 'total': 12345678901234567.89::DECIMAL(38,2)} AS price,
    MAP {'k1': 1, 'k2': 2}                                AS attrs,
    'ok'::mood                                            AS mood
"""

#: A literal of every type of the matrix, for the NULL tests.
LITERALS = {
    "TINYINT": "1", "SMALLINT": "1", "INTEGER": "1", "BIGINT": "1", "UBIGINT": "1", "HUGEINT": "1",
    "DECIMAL(18,3)": "1.5", "DECIMAL(38,10)": "1.5", "DOUBLE": "1.5", "FLOAT": "1.5", "BOOLEAN": "true",
    "VARCHAR": "'x'", "JSON": "'{}'", "UUID": "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "DATE": "'2024-01-01'",
    "TIME": "'01:00'", "TIMESTAMP": "'2024-01-01 00:00'", "TIMESTAMPTZ": "'2024-01-01 00:00:00+00'",
    "INTERVAL": "INTERVAL 1 DAY", "BLOB": "'\\x00'", "DATE[]": "[DATE '2024-01-01']",
    "STRUCT(a DECIMAL(5,2))": "{'a': 1.5}", "MAP(VARCHAR, INTEGER)": "MAP {'a': 1}", "mood": "'sad'",
}  # fmt: skip


def first_row(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = serialize(con.execute(sql).to_arrow_table())["data"]
    return rows[0]


def column(con: duckdb.DuckDBPyConnection, sql: str) -> list[Any]:
    """The serialised values of the first column of ``sql``."""
    return json_values(con.execute(sql).to_arrow_table().column(0))


def round_trip(value: Any) -> Any:
    return json.loads(json.dumps(value, allow_nan=False))


# --------------------------------------------------------------------------- the whole matrix


def test_matrix_serialises_to_the_documented_values(con: duckdb.DuckDBPyConnection) -> None:
    # Given one row of every type of the spec's matrix
    sql = MATRIX_SQL
    # When it is serialised
    row = first_row(con, sql)
    # Then each cell has the value docs/serialisation.md promises
    assert row == {
        "tiny": -128,
        "small": 32767,
        "int": -2147483648,
        "big": "9223372036854775807",
        "ubig": "18446744073709551615",
        "huge": "170141183460469231731687303715884105727",
        "dec18": 123.456,
        "dec38": "1234567890123456789012345678.1234567891",
        "nan": None,
        "pinf": None,
        "ninf": None,
        "real": 1.1,
        "flag": True,
        "text": "héllo",
        "doc": '{"a": [1, 2.5, null], "b": {"c": "d"}}',
        "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "day": "2024-02-29",
        "clock": "13:45:01.500000",
        "stamp": "2024-01-02T03:04:05.123456",
        "stamptz": "2024-01-01T20:04:05+00:00",
        "span": "P1M2DT3S",
        "blob": "3q2+7w==",
        "days": ["2024-01-01", None, "2024-12-31"],
        "price": {"price": 9.99, "total": "12345678901234567.89"},
        "attrs": {"k1": 1, "k2": 2},
        "mood": "ok",
    }


def test_matrix_is_strict_json_and_identical_after_a_json_round_trip(con: duckdb.DuckDBPyConnection) -> None:
    # Given the matrix, fresh from DuckDB
    result = serialize(con.execute(MATRIX_SQL).to_arrow_table())
    # When it goes through JSON the way the cache stores it (NaN forbidden)
    text = json.dumps(result, allow_nan=False)
    cached = json.loads(text)
    # Then the cached copy equals the fresh one, and so does its JSON text
    assert cached == result
    assert json.dumps(cached, allow_nan=False) == text
    assert result["error"] is None


def test_labels_come_from_the_arrow_type(con: duckdb.DuckDBPyConnection) -> None:
    # Given the matrix, whose intervals, lists, structs, maps and enums were "number" under substring matching
    sql = MATRIX_SQL
    # When it is serialised
    result = serialize(con.execute(sql).to_arrow_table())
    # Then every label follows the type: numbers, booleans, dates/timestamps, and text for all the rest
    labels = dict(zip(result["columns"], result["column_types"], strict=True))
    numbers = ["tiny", "small", "int", "big", "ubig", "huge", "dec18", "dec38", "nan", "pinf", "ninf", "real"]
    assert {name: labels[name] for name in numbers} == dict.fromkeys(numbers, "number")
    assert labels["flag"] == "boolean"
    assert {labels["day"], labels["stamp"], labels["stamptz"]} == {"date"}
    texts = ["text", "doc", "uid", "clock", "span", "blob", "days", "price", "attrs", "mood"]
    assert {name: labels[name] for name in texts} == dict.fromkeys(texts, "text")


def test_column_label_of_dictionary_is_its_value_label() -> None:
    # Given dictionary types over ints and over strings (DuckDB ENUMs are the latter)
    ints, strings = pa.dictionary(pa.int8(), pa.int64()), pa.dictionary(pa.uint8(), pa.string())
    # When they are labelled
    labels = column_label(ints), column_label(strings)
    # Then the label is the value type's, not the index type's
    assert labels == ("number", "text")


@pytest.mark.parametrize("duck_type", list(LITERALS))
def test_null_of_every_type_is_null(con: duckdb.DuckDBPyConnection, duck_type: str) -> None:
    # Given a column of the type holding a value, a NULL, and a column holding only NULLs
    literal = LITERALS[duck_type]
    sql = f"""
        SELECT v, n FROM (VALUES ({literal}::{duck_type}, NULL::{duck_type}, 1), (NULL, NULL, 2)) t(v, n, o)
        ORDER BY o
    """
    # When the columns are serialised
    rows = serialize(con.execute(sql).to_arrow_table())["data"]
    # Then the value is a value and every NULL is JSON null
    assert rows[0]["v"] is not None
    assert [rows[1]["v"], rows[0]["n"], rows[1]["n"]] == [None, None, None]


# --------------------------------------------------------------------------- numbers


def test_integers_beyond_2_53_become_exact_strings(con: duckdb.DuckDBPyConnection) -> None:
    # Given integers on both sides of JavaScript's safe range, in BIGINT, UBIGINT and HUGEINT
    sql = f"""
        SELECT * FROM (VALUES
            ({MAX_SAFE_INTEGER}::BIGINT, {MAX_SAFE_INTEGER}::UBIGINT, {MAX_SAFE_INTEGER}::HUGEINT),
            ({MAX_SAFE_INTEGER + 1}, {MAX_SAFE_INTEGER + 1}, {MAX_SAFE_INTEGER + 1}),
            (-{MAX_SAFE_INTEGER}, 0, -{MAX_SAFE_INTEGER}),
            (-{MAX_SAFE_INTEGER + 1}, 18446744073709551615, -170141183460469231731687303715884105727 - 1),
            (-9223372036854775808, 1, 170141183460469231731687303715884105727)
        ) t(big, ubig, huge)
    """
    # When they are serialised
    result = serialize(con.execute(sql).to_arrow_table())
    # Then safe values are JSON numbers and the others are their exact decimal digits as strings
    assert [list(row.values()) for row in result["data"]] == [
        [MAX_SAFE_INTEGER, MAX_SAFE_INTEGER, MAX_SAFE_INTEGER],
        [str(MAX_SAFE_INTEGER + 1)] * 3,
        [-MAX_SAFE_INTEGER, 0, -MAX_SAFE_INTEGER],
        [str(-MAX_SAFE_INTEGER - 1), "18446744073709551615", str(-(2**127))],
        ["-9223372036854775808", 1, str(2**127 - 1)],
    ]
    assert result["column_types"] == ["number", "number", "number"]


def test_decimals_are_floats_when_a_double_keeps_them_and_exact_text_otherwise(con: duckdb.DuckDBPyConnection) -> None:
    # Given decimals with 15 significant digits or fewer, and with more
    sql = """
        SELECT * FROM (VALUES
            (123.456::DECIMAL(18,3), 1.5::DECIMAL(38,10)),
            (123456789012.345, 12345.6789012345),
            (1234567890123.456, 1234567890123456789012345678.1234567891),
            (-0.001, -0.0000000001),
            (0, 0)
        ) t(d18, d38)
    """
    # When they are serialised
    rows = serialize(con.execute(sql).to_arrow_table())["data"]
    # Then up to 15 significant digits give the float that prints as the same number; more give exact text
    assert [(row["d18"], row["d38"]) for row in rows] == [
        (123.456, 1.5),
        (123456789012.345, 12345.6789012345),
        ("1234567890123.456", "1234567890123456789012345678.1234567891"),
        (-0.001, -1e-10),
        (0.0, 0.0),
    ]


def test_every_decimal_reads_back_as_its_exact_value(con: duckdb.DuckDBPyConnection) -> None:
    # Given 6,000 pseudo-random DECIMAL(18,3) and DECIMAL(38,10) values with 1 to 18 digits
    sql = """
        SELECT (h % (10::HUGEINT ** (1 + i % 18)))::DECIMAL(18,0) * 0.001::DECIMAL(4,3) AS d18,
               (h % (10::HUGEINT ** (1 + i % 18)))::DECIMAL(18,0) * 0.0000000001::DECIMAL(11,10) AS d38
        FROM (SELECT i, hash(i)::HUGEINT - 9223372036854775808 AS h FROM range(3000) t(i))
    """
    table = con.execute(sql).to_arrow_table()
    # When they are serialised and read back the way a JSON client would
    values = [round_trip(v) for name in ("d18", "d38") for v in json_values(table.column(name))]
    exact = [v for name in ("d18", "d38") for v in table.column(name).to_pylist()]
    # Then a number prints as exactly the decimal, and only decimals a double cannot print are strings
    for value, decimal in zip(values, exact, strict=True):
        if isinstance(value, str):
            assert Decimal(value) == decimal and len(decimal.normalize().as_tuple().digits) > 15
        else:
            assert Decimal(repr(value)) == decimal


def test_nan_and_infinity_become_null(con: duckdb.DuckDBPyConnection) -> None:
    # Given doubles and floats with NaN and both infinities between finite values
    sql = "SELECT v::DOUBLE AS d, v::FLOAT AS f FROM (VALUES ('1.5'), ('nan'), ('inf'), ('-inf'), ('-2.25')) t(v)"
    # When they are serialised
    result = serialize(con.execute(sql).to_arrow_table())
    # Then the non-finite ones are null, the rest unchanged, and the result is strict JSON
    assert [row["d"] for row in result["data"]] == [1.5, None, None, None, -2.25]
    assert [row["f"] for row in result["data"]] == [1.5, None, None, None, -2.25]
    json.dumps(result, allow_nan=False)


def test_float_prints_its_shortest_text_not_its_double_expansion(con: duckdb.DuckDBPyConnection) -> None:
    # Given FLOAT (float32) values that have no exact double twin
    sql = "SELECT v::FLOAT FROM (VALUES (1.1), (0.1), (3.4028235e38)) t(v)"
    # When they are serialised
    values = column(con, sql)
    # Then they print as DuckDB prints them, not as 1.100000023841858
    assert values == [1.1, 0.1, 3.4028235e38]


# --------------------------------------------------------------------------- dates and times


def test_dates_times_and_timestamps_are_iso_8601(con: duckdb.DuckDBPyConnection) -> None:
    # Given dates, times and timestamps of every precision, with and without a fractional part
    sql = """
        SELECT DATE '2024-02-29' AS d, TIME '13:45:01' AS t, TIME '00:00:00.000001' AS t_us,
               TIMESTAMP '2024-01-02 03:04:05' AS ts, TIMESTAMP '2024-01-02 03:04:05.5' AS ts_frac,
               TIMESTAMP_S '2024-01-02 03:04:05' AS ts_s, TIMESTAMP_MS '2024-01-02 03:04:05.12' AS ts_ms,
               TIMESTAMP_NS '2024-01-02 03:04:05.123456789' AS ts_ns,
               TIMESTAMPTZ '2024-06-30 23:59:59.25+00' AS tz, TIMESTAMPTZ '2024-01-02 00:00:00-03' AS tz_west
    """
    # When they are serialised
    row = first_row(con, sql)
    # Then: ISO with a T, the fraction at the column's precision and dropped when zero, +00:00 for UTC
    assert row == {
        "d": "2024-02-29",
        "t": "13:45:01",
        "t_us": "00:00:00.000001",
        "ts": "2024-01-02T03:04:05",
        "ts_frac": "2024-01-02T03:04:05.500000",
        "ts_s": "2024-01-02T03:04:05",
        "ts_ms": "2024-01-02T03:04:05.120",
        "ts_ns": "2024-01-02T03:04:05.123456789",
        "tz": "2024-06-30T23:59:59.250000+00:00",
        "tz_west": "2024-01-02T03:00:00+00:00",
    }


def test_timestamps_match_python_isoformat_across_years_1_to_9999(con: duckdb.DuckDBPyConnection) -> None:
    # Given 5,000 pseudo-random microsecond timestamps and dates spread over years 1..9999
    sql = """
        SELECT TIMESTAMP '0001-01-01' + to_microseconds((hash(i) % 315537897599999999)::BIGINT) AS ts,
               (TIMESTAMP '0001-01-01' + to_microseconds((hash(i) % 315537897599999999)::BIGINT))::TIMESTAMPTZ AS tz,
               (TIMESTAMP '0001-01-01' + to_microseconds((hash(i) % 315537897599999999)::BIGINT))::DATE AS d,
               (TIMESTAMP '0001-01-01' + to_microseconds((hash(i) % 315537897599999999)::BIGINT))::TIME AS t
        FROM range(5000) t(i)
    """
    table = con.execute(sql).to_arrow_table()
    # When they are serialised
    ours = {name: json_values(table.column(name)) for name in table.column_names}
    # Then each equals Python's isoformat of the same value (what the Celery worker produced, minus its bugs)
    for name in table.column_names:
        assert ours[name] == [v.isoformat() for v in table.column(name).to_pylist()], name


def test_values_python_cannot_hold_are_still_rendered(con: duckdb.DuckDBPyConnection) -> None:
    # Given DuckDB's infinities, a BC date, a year past 9999 and the time 24:00:00
    sql = """
        SELECT * FROM (VALUES
            ('infinity'::DATE, 'infinity'::TIMESTAMP, 'infinity'::TIMESTAMPTZ, TIME '24:00:00'),
            ('-infinity', '-infinity', '-infinity', NULL),
            ('0044-03-15 (BC)', '12345-01-02 03:04:05.5', '0001-01-01 (BC) 00:00:00+00', NULL)
        ) t(d, ts, tz, t)
    """
    # When they are serialised (the Celery worker's to_pylist raised on all of these)
    rows = serialize(con.execute(sql).to_arrow_table())["data"]
    # Then infinities read as DuckDB prints them, other years in ISO 8601 astronomical numbering
    assert rows == [
        {"d": "infinity", "ts": "infinity", "tz": "infinity", "t": "24:00:00"},
        {"d": "-infinity", "ts": "-infinity", "tz": "-infinity", "t": None},
        {"d": "-0043-03-15", "ts": "12345-01-02T03:04:05.500000", "tz": "0000-01-01T00:00:00+00:00", "t": None},
    ]


def test_timestamptz_in_another_session_zone_keeps_that_offset() -> None:
    # Given a session whose TimeZone is not UTC (the preview's is; the rule must hold anyway)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'Asia/Jakarta'")
        sql = "SELECT TIMESTAMPTZ '2024-01-02 03:04:05+00' AS tz, TIMESTAMPTZ '2024-01-02 03:04:05.25+00' AS tz_frac"
        # When the timestamps are serialised
        row = first_row(con, sql)
    finally:
        con.close()
    # Then they are rendered in that zone with its offset, like Python's isoformat
    assert row == {"tz": "2024-01-02T10:04:05+07:00", "tz_frac": "2024-01-02T10:04:05.250000+07:00"}


# --------------------------------------------------------------------------- text-like


def test_blob_is_standard_base64(con: duckdb.DuckDBPyConnection) -> None:
    # Given blobs whose base64 needs '+', '/' and padding, and an empty blob
    sql = "SELECT v FROM (VALUES ('\\xFB\\xFF\\xBF'::BLOB, 1), (''::BLOB, 2), ('\\x00'::BLOB, 3)) t(v, o) ORDER BY o"
    # When they are serialised
    values = column(con, sql)
    # Then the text is standard (not url-safe) base64 of the bytes
    assert values == ["+/+/", "", "AA=="]
    assert base64.b64decode(values[0]) == b"\xfb\xff\xbf"


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        ("INTERVAL '1 month 2 days 3 seconds'", "P1M2DT3S"),
        ("INTERVAL '14 months'", "P1Y2M"),
        ("INTERVAL '1 month -2 days 3.5 seconds'", "P1M-2DT3.5S"),
        ("-INTERVAL '1 year 2 months 1 hour 30 minutes 1.25 seconds'", "P-1Y-2MT-1H-30M-1.25S"),
        ("INTERVAL '26 hours 0.000001 seconds'", "PT26H0.000001S"),
        ("INTERVAL '0 seconds'", "PT0S"),
    ],
)
def test_intervals_are_iso_8601_durations(con: duckdb.DuckDBPyConnection, interval: str, expected: str) -> None:
    # Given an INTERVAL (the Celery worker's result was a tuple orjson could not even cache)
    sql = f"SELECT {interval}"
    # When it is serialised
    values = column(con, sql)
    # Then it is an ISO 8601 duration, each part signed as PostgreSQL's iso_8601 style writes it
    assert values == [expected]


def test_enum_is_its_value(con: duckdb.DuckDBPyConnection) -> None:
    # Given an ENUM column (an Arrow dictionary) with a NULL
    sql = "SELECT v::mood AS m FROM (VALUES ('happy'), (NULL), ('sad')) t(v)"
    # When it is serialised
    result = serialize(con.execute(sql).to_arrow_table())
    # Then cells are the labels, and the column is text
    assert [row["m"] for row in result["data"]] == ["happy", None, "sad"]
    assert result["column_types"] == ["text"]


# --------------------------------------------------------------------------- nested


def test_nested_values_follow_the_same_rules_as_columns(con: duckdb.DuckDBPyConnection) -> None:
    # Given lists, structs and maps holding dates, decimals, big ints, NaN, blobs and timestamps
    sql = """
        SELECT [DATE '2024-01-01', NULL] AS dates,
               {'price': 9.99::DECIMAL(5,2), 'big': 18446744073709551615::UBIGINT, 'x': 'nan'::DOUBLE} AS s,
               [[TIMESTAMP '2024-01-02 03:04:05'], []] AS nested,
               MAP {'a': ['\\x01'::BLOB], 'b': NULL} AS text_keys,
               MAP {1: 'one', 2: 'two'} AS int_keys,
               MAP {DATE '2024-01-01': 1.5::DECIMAL(3,1)} AS date_keys,
               [{'at': TIME '01:02:03', 'span': INTERVAL 1 HOUR}] AS list_of_structs,
               [1, 2]::INTEGER[2] AS fixed
    """
    # When they are serialised
    row = first_row(con, sql)
    # Then every nested value is JSON-native by the column rules; maps with text keys are objects
    assert row == {
        "dates": ["2024-01-01", None],
        "s": {"price": 9.99, "big": "18446744073709551615", "x": None},
        "nested": [["2024-01-02T03:04:05"], []],
        "text_keys": {"a": ["AQ=="], "b": None},
        "int_keys": [[1, "one"], [2, "two"]],
        "date_keys": [["2024-01-01", 1.5]],
        "list_of_structs": [{"at": "01:02:03", "span": "PT1H"}],
        "fixed": [1, 2],
    }


def test_nested_values_of_a_sliced_table_keep_their_rows(con: duckdb.DuckDBPyConnection) -> None:
    # Given nested columns with NULLs, and a slice of the table that starts mid-way (non-zero Arrow offsets)
    sql = """
        SELECT i, CASE WHEN i % 3 = 0 THEN NULL ELSE [i, i + 1] END AS l,
               CASE WHEN i % 4 = 0 THEN NULL ELSE {'i': i} END AS s,
               CASE WHEN i % 5 = 0 THEN NULL ELSE MAP {'k' || i: i} END AS m,
               (CASE WHEN i % 2 = 0 THEN NULL ELSE [i, i] END)::INTEGER[2] AS f
        FROM range(1, 40) t(i)
    """
    table = con.execute(sql).to_arrow_table().slice(7, 20)
    # When the slice is serialised
    rows = serialize(table)["data"]
    # Then every row holds its own values, nulls where DuckDB had them
    for row in rows:
        i = row["i"]
        assert row["l"] == (None if i % 3 == 0 else [i, i + 1])
        assert row["s"] == (None if i % 4 == 0 else {"i": i})
        assert row["m"] == (None if i % 5 == 0 else {f"k{i}": i})
        assert row["f"] == (None if i % 2 == 0 else [i, i])
    assert [row["i"] for row in rows] == list(range(8, 28))


def test_lossless_arrow_export_gives_json_values_and_exact_duckdb_types() -> None:
    # Given a session with arrow_lossless_conversion, which exports JSON, UUID, HUGEINT, TIMETZ, BIT and BOOLEAN
    # as Arrow extension types (by default JSON is indistinguishable from VARCHAR)
    con = duckdb.connect()
    try:
        con.execute("SET arrow_lossless_conversion = true")
        sql = """
            SELECT '{"a": 18446744073709551615, "b": [1.5, NaN], "c": "x"}'::JSON AS doc,
                   '[1, 2]'::JSON AS arr, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::UUID AS uid,
                   170141183460469231731687303715884105727::HUGEINT AS huge, 7::HUGEINT AS small_huge,
                   18446744073709551616::UHUGEINT AS uhuge, -123456789012345678901234567890::VARINT AS varint,
                   TIMETZ '13:45:01.5-05:30' AS timetz, '10101'::BIT AS bits, true AS flag
        """
        # When the row is serialised
        result = serialize(con.execute(sql).to_arrow_table())
    finally:
        con.close()
    # Then JSON columns are JSON values (by the same rules), and the DuckDB-specific types are decoded
    assert result["data"][0] == {
        "doc": {"a": "18446744073709551615", "b": [1.5, None], "c": "x"},
        "arr": [1, 2],
        "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "huge": "170141183460469231731687303715884105727",
        "small_huge": 7,
        "uhuge": "18446744073709551616",
        "varint": "-123456789012345678901234567890",
        "timetz": "13:45:01.500000-05:30",
        "bits": "10101",
        "flag": True,
    }
    labels = dict(zip(result["columns"], result["column_types"], strict=True))
    assert [name for name, label in labels.items() if label == "number"] == ["huge", "small_huge", "uhuge", "varint"]
    assert labels["flag"] == "boolean"
    assert {labels[name] for name in ("doc", "arr", "uid", "timetz", "bits")} == {"text"}


def test_json_is_text_under_duckdbs_default_arrow_export(con: duckdb.DuckDBPyConnection) -> None:
    # Given DuckDB's default export, where a JSON column arrives as a plain Arrow string
    sql = """SELECT '{"a": 1}'::JSON AS doc"""
    # When it is serialised
    result = serialize(con.execute(sql).to_arrow_table())
    # Then it stays the JSON text (nothing in the Arrow type says it is JSON; see docs/serialisation.md)
    assert result["data"] == [{"doc": '{"a": 1}'}]


# --------------------------------------------------------------------------- columns and rows


def test_duplicate_column_names_are_kept_distinct(con: duckdb.DuckDBPyConnection) -> None:
    # Given a query whose columns share a name (the Celery worker kept only the last one's data)
    sql = "SELECT 1 AS id, 2 AS id, 'x' AS name, 3 AS id"
    # When it is serialised
    result = serialize(con.execute(sql).to_arrow_table())
    # Then each column gets its own key, the same in `columns` and in the rows
    assert result["columns"] == ["id", "id_2", "name", "id_3"]
    assert result["data"] == [{"id": 1, "id_2": 2, "name": "x", "id_3": 3}]
    assert result["column_types"] == ["number", "number", "text", "number"]


def test_renamed_duplicates_never_take_an_existing_name(con: duckdb.DuckDBPyConnection) -> None:
    # Given a duplicate 'id' next to a real column already called 'id_2'
    sql = "SELECT 1 AS id, 2 AS id, 3 AS id_2"
    # When it is serialised
    result = serialize(con.execute(sql).to_arrow_table())
    # Then the duplicate skips to id_3 and the real id_2 keeps its name and value
    assert result["columns"] == ["id", "id_3", "id_2"]
    assert result["data"] == [{"id": 1, "id_3": 2, "id_2": 3}]


def test_column_names_is_stable_for_many_duplicates() -> None:
    # Given names with repeated duplicates and suffix look-alikes
    names = ["a", "a", "a_2", "a", "b", "a_3", "b"]
    # When they are made unique
    unique = column_names(names)
    # Then the result is unique, keeps every original first occurrence, and keeps the order
    assert unique == ["a", "a_4", "a_2", "a_5", "b", "a_3", "b_2"]
    assert len(set(unique)) == len(names)


def test_reader_and_table_give_the_same_result(con: duckdb.DuckDBPyConnection) -> None:
    # Given the matrix as a table, and 3,000 rows streamed as 1024-row record batches
    table = con.execute(MATRIX_SQL).to_arrow_table()
    reader = con.execute(MATRIX_SQL).fetch_record_batch()
    many = """
        SELECT i, i::VARCHAR AS s, DATE '2024-01-01' + i::INTEGER AS d, (['sad', 'ok', 'happy'])[i % 3 + 1]::mood AS m
        FROM range(3000) t(i)
    """
    # When both forms are serialised
    same = serialize(table) == serialize(reader)
    streamed = serialize(con.execute(many).fetch_record_batch(rows_per_batch=1024))
    # Then the results are identical, across batch boundaries too
    assert same
    assert streamed == serialize(con.execute(many).to_arrow_table())
    assert [row["i"] for row in streamed["data"]] == list(range(3000))
    assert [row["m"] for row in streamed["data"][1023:1026]] == ["sad", "ok", "happy"]


def test_max_rows_stops_reading_the_stream(con: duckdb.DuckDBPyConnection) -> None:
    # Given a stream of 100-row batches over 10,000 rows
    reader = con.execute("SELECT i FROM range(10000) t(i)").fetch_record_batch(rows_per_batch=100)
    # When 250 rows are serialised from it
    result = serialize(reader, max_rows=250)
    # Then exactly 250 rows come back and the rest of the stream was left unread
    assert [row["i"] for row in result["data"]] == list(range(250))
    assert reader.read_next_batch().column(0)[0].as_py() == 300


def test_max_rows_cuts_a_table(con: duckdb.DuckDBPyConnection) -> None:
    # Given a 10-row table
    table = con.execute("SELECT i FROM range(10) t(i)").to_arrow_table()
    # When it is serialised with max_rows 3, and with 0
    three, zero = serialize(table, max_rows=3), serialize(table, max_rows=0)
    # Then only those rows are in data, columns unchanged
    assert three["data"] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert zero == {"columns": ["i"], "column_types": ["number"], "data": [], "error": None}


def test_negative_max_rows_is_refused(con: duckdb.DuckDBPyConnection) -> None:
    # Given a table
    table = con.execute("SELECT 1 AS i").to_arrow_table()
    # When max_rows is negative
    with pytest.raises(ValueError, match="max_rows"):
        serialize(table, max_rows=-1)
    # Then it is a caller error, not an empty result


def test_empty_result_keeps_its_columns(con: duckdb.DuckDBPyConnection) -> None:
    # Given a query with no rows
    sql = "SELECT 1 AS a, 'x' AS b, DATE '2024-01-01' AS c WHERE false"
    # When it is serialised
    result = serialize(con.execute(sql).to_arrow_table())
    # Then columns and labels are there and data is empty
    assert result == {"columns": ["a", "b", "c"], "column_types": ["number", "text", "date"], "data": [], "error": None}
