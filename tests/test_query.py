"""The statement a preview runs, end to end: built by ``build_statement`` and run in a locked DuckDB session
with a real PostgreSQL ``orders`` table attached READ_ONLY (as the worker's session does).

Every case of the shared corpus runs here; allow cases must run, deny cases must never reach DuckDB.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import duckdb_extension_postgres_scanner
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from rosetta_jobs.errors import PreviewError
from rosetta_jobs.preview import filters, parsing, query, sandbox
from rosetta_jobs.preview.parsing import TableRef, parse, parse_table_name
from rosetta_jobs.preview.query import build_statement
from rosetta_jobs.preview.request import PreviewRequest
from rosetta_jobs.preview.sandbox import check_statement

from .conftest import CORPUS

ALIAS = "pg_src_main"
EXTENSION = (
    Path(duckdb_extension_postgres_scanner.__file__).parent
    / "extensions"
    / f"v{duckdb.__version__}"
    / "postgres_scanner.duckdb_extension"
)
SEED = """
CREATE TABLE public.orders (
  id integer PRIMARY KEY, name text, status text, amount numeric(10, 2), created_at timestamp
);
INSERT INTO public.orders VALUES
  (1, 'alpha', 'A', 5.00, '2024-01-01 10:00'),
  (2, 'beta', 'B', 15.50, '2024-02-01 11:00'),
  (3, 'gamma', 'A', 150.00, '2024-03-01 12:00'),
  (4, 'insert coin', 'DELETE', -2.50, '2024-04-01 13:00'),
  (5, 'O''Neil', 'B', 0, '2024-05-01 14:00');
CREATE TABLE public.secrets (id integer, secret text);
INSERT INTO public.secrets VALUES (1, 'hunter2');
CREATE SCHEMA other;
CREATE TABLE other.x (a integer);
INSERT INTO other.x VALUES (1);
CREATE TABLE other.orders (id integer, name text);
INSERT INTO other.orders VALUES (99, 'elsewhere');
"""


def load_corpus() -> list[Any]:
    cases = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    return [pytest.param(case, id=f"{case['expect']}-{case['why']}") for case in cases]


@pytest.fixture(scope="module")
def session(pg_database: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB session like the worker's: postgres extension from the wheel, source attached, then locked."""
    with psycopg.connect(pg_database, autocommit=True) as pg:
        pg.execute(SEED)
    conn = duckdb.connect(
        ":memory:", config={"autoload_known_extensions": False, "autoinstall_known_extensions": False}
    )
    conn.execute(f"LOAD '{EXTENSION}'")
    conninfo = make_conninfo(pg_database).replace("'", "''")
    conn.execute(f"ATTACH '{conninfo}' AS {ALIAS} (TYPE postgres, READ_ONLY)")
    conn.execute("SET python_enable_replacements = false")
    conn.execute("SET enable_external_access = false")
    conn.execute("SET lock_configuration = true")
    yield conn
    conn.close()


def request(
    sql: str | None = None, *, table: str = "orders", filter_sql: str | None = None, limit: int = 500
) -> PreviewRequest:
    return PreviewRequest(
        sql=sql, source_id=1, destination_id=2, table_name=table, filter_sql=filter_sql, row_limit=limit
    )


def run(session: duckdb.DuckDBPyConnection, statement: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = session.execute(statement).to_arrow_table().to_pylist()
    return rows


@pytest.mark.parametrize("case", load_corpus())
def test_corpus_case(session: duckdb.DuckDBPyConnection, case: dict[str, str]) -> None:
    # Given a case of the shared corpus on the table orders
    preview = request(case["sql"])
    if case["expect"] == "deny":
        # When its statement is built
        with pytest.raises(PreviewError) as info:
            build_statement(preview, source_alias=ALIAS)
        # Then it is refused with a message, before anything runs
        assert str(info.value)
        return
    # When its statement is built and run in the locked session
    statement = build_statement(preview, source_alias=ALIAS)
    rows = run(session, statement)
    # Then it returns rows of orders (the CTE case counts them), and the text that ran passes layer 2 as it is
    assert rows
    check_statement(parse(statement), source_alias=ALIAS, table=TableRef("public", "orders"))
    assert statement.endswith(") AS result_sql LIMIT 500")


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT orders.id FROM orders WHERE orders.id < 3 ORDER BY 1", [{"id": 1}, {"id": 2}]),
        ("SELECT o.id FROM orders o WHERE o.amount > 100", [{"id": 3}]),
        ("SELECT 'orders' AS label, count(*) AS n FROM orders", [{"label": "orders", "n": 5}]),
        ("SELECT id FROM public.orders WHERE id = 1", [{"id": 1}]),
        (f"SELECT id FROM {ALIAS}.public.orders WHERE id = 2", [{"id": 2}]),
        (f"SELECT id FROM {ALIAS}.orders WHERE id = 3", [{"id": 3}]),
        ("SELECT id FROM ORDERS WHERE id = 4", [{"id": 4}]),
        ("SELECT id FROM orders WHERE id = 5 -- the last one", [{"id": 5}]),
        ("SELECT id FROM orders WHERE id = 5;\n-- done", [{"id": 5}]),
        ("SELECT name FROM orders WHERE name LIKE '%orders%' OR status = 'DELETE'", [{"name": "insert coin"}]),
        ("WITH a AS (SELECT * FROM orders WHERE status = 'A'), b AS (SELECT id FROM a) SELECT * FROM b ORDER BY id",
         [{"id": 1}, {"id": 3}]),
        ("WITH orders AS (SELECT id FROM orders WHERE id = 2) SELECT * FROM orders", [{"id": 2}]),
        ("SELECT id, rank() OVER (ORDER BY amount DESC) AS r, lag(id) OVER (ORDER BY id) AS prev FROM orders "
         "WHERE id <= 2 ORDER BY id", [{"id": 1, "r": 2, "prev": None}, {"id": 2, "r": 1, "prev": 1}]),
        ("SELECT CASE WHEN amount > 10 THEN 'big' ELSE 'small' END AS size, count(*) AS n FROM orders "
         "GROUP BY ALL ORDER BY size", [{"size": "big", "n": 2}, {"size": "small", "n": 3}]),
        ("SELECT CAST(amount AS INTEGER) AS a, created_at::DATE::VARCHAR AS d FROM orders WHERE id = 2",
         [{"a": 16, "d": "2024-02-01"}]),
        ("SELECT a.id, b.id AS next_id FROM orders a JOIN orders AS b ON b.id = a.id + 1 WHERE a.id = 1",
         [{"id": 1, "next_id": 2}]),
        ("SELECT replace(name, 'a', 'o') AS n, upper(status) AS s FROM orders WHERE id = 1",
         [{"n": "olpho", "s": "A"}]),
        ("SELECT id FROM orders WHERE id = 1 UNION ALL SELECT id FROM orders WHERE id = 2 ORDER BY id",
         [{"id": 1}, {"id": 2}]),
        ("SELECT count(*) AS n FROM orders WHERE created_at < now() AND created_at::DATE < current_date", [{"n": 5}]),
        ("SELECT string_agg(name, '|' ORDER BY id) AS s FROM orders WHERE id IN (SELECT id FROM orders WHERE id < 3)",
         [{"s": "alpha|beta"}]),
        ("SELECT id FROM filtered_source WHERE id = 1", [{"id": 1}]),
    ],
    ids=["qualified-column", "alias", "literal-untouched", "schema-qualified", "fully-qualified", "alias-qualified",
         "upper-case", "trailing-comment", "semicolon-comment", "keywords-in-strings", "ctes", "cte-shadows-table",
         "window", "case", "casts", "self-join", "replace", "union", "now", "subquery", "cte-name"],
)  # fmt: skip
def test_custom_sql_is_rewritten_on_the_tree(session: duckdb.DuckDBPyConnection, sql: str, expected: Any) -> None:
    # Given ordinary SQL against the previewed table, written the ways users write it
    statement = build_statement(request(sql), source_alias=ALIAS)
    # When it runs in the locked session
    rows = run(session, statement)
    # Then it reads orders through filtered_source and gives the expected rows
    assert statement.startswith('WITH filtered_source AS (SELECT * FROM "pg_src_main"."public"."orders" AS "orders"')
    assert rows == expected


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM secrets", "it references secrets"),
        ("SELECT * FROM orders JOIN secrets USING (id)", "it references secrets"),
        ("SELECT * FROM orders WHERE id IN (SELECT id FROM public.secrets)", "it references public.secrets"),
        (f"SELECT * FROM {ALIAS}.public.secrets", f"it references {ALIAS}.public.secrets"),
        (f"SELECT * FROM {ALIAS}.secrets", f"it references {ALIAS}.secrets"),
        ("SELECT * FROM other.x", "it references other.x"),
        ("SELECT * FROM other.orders", "it references other.orders"),
        (f"SELECT * FROM {ALIAS}.information_schema.tables", f"it references {ALIAS}.information_schema.tables"),
        ("SELECT * FROM information_schema.tables", "it references information_schema.tables"),
        ("SELECT * FROM pg_catalog.pg_tables", "it references pg_catalog.pg_tables"),
        ("SELECT * FROM duckdb_tables", "it references duckdb_tables"),
        ("WITH secrets AS (SELECT * FROM secrets) SELECT * FROM secrets", "it references secrets"),
        ("WITH duckdb_tables AS (SELECT * FROM duckdb_tables) SELECT * FROM duckdb_tables", "references duckdb_tables"),
        ("SELECT * FROM read_parquet('s3://bucket/x.parquet')", "forbidden function: read_parquet"),
        ("SELECT * FROM 'https://example.com/x.csv'", "cannot read files or URLs"),
        ("SELECT * FROM '/etc/passwd'", "cannot read files or URLs"),
        ("SELECT * FROM \"glob\"('/*')", "forbidden function: glob"),
        ("SELECT * FROM duckdb_settings()", "Function duckdb_settings is not allowed"),
        ("SELECT * FROM duckdb_databases()", "Function duckdb_databases is not allowed"),
        ("SELECT current_setting('memory_limit') FROM orders", "Function current_setting is not allowed"),
        ("SELECT getenv('HOME') FROM orders", "Function getenv is not allowed"),
        ("SELECT version() FROM orders", "Function version is not allowed"),
        ("SELECT * FROM orders, query('SELECT * FROM secrets')", "Function query is not allowed"),
        ("SELECT * FROM query_table('secrets')", "Function query_table is not allowed"),
        (f"SELECT * FROM postgres_query('{ALIAS}', 'SELECT * FROM secrets')", "Function postgres_query is not allowed"),
        (f"SELECT * FROM postgres_execute('{ALIAS}', 'DROP TABLE orders')", "Function postgres_execute is not allowed"),
        ("SELECT * FROM (SHOW TABLES)", "SHOW, DESCRIBE and SUMMARIZE are not allowed"),
        ("SELECT * FROM (DESCRIBE orders)", "SHOW, DESCRIBE and SUMMARIZE are not allowed"),
        ("SUMMARIZE orders", "SQL must be a single SELECT query"),
        ("SET memory_limit = '100GB'", "SQL must be a single SELECT query"),
        ("RESET ALL", "SQL must be a single SELECT query"),
        ("PRAGMA database_list", "SQL must be a single SELECT query"),
        ("SELECT * FROM pragma_database_list()", "Function pragma_database_list is not allowed"),
        ("DETACH pg_src_main", "SQL must be a single SELECT query"),
        ("USE pg_src_main", "SQL must be a single SELECT query"),
        ("SELECT * FROM orders; SELECT * FROM secrets", "found 2"),
        ("SELECT 1) AS r, (SELECT 1", "SQL syntax error"),
        ("SELECT * FROM orders) AS result_sql; SELECT * FROM secrets --", "found 2"),
        ("SELECT json_serialize_plan('SELECT * FROM secrets') FROM orders", "json_serialize_plan is not allowed"),
        ("SELECT ? FROM orders", "Parameters"),
    ],
)  # fmt: skip
def test_denied_by_class(session: duckdb.DuckDBPyConnection, sql: str, message: str) -> None:
    # Given SQL reaching files, the network, the catalog, settings, other tables or several statements
    # When its statement is built
    with pytest.raises(PreviewError) as info:
        build_statement(request(sql), source_alias=ALIAS)
    # Then it is refused with a message naming the problem
    assert message in str(info.value)


def test_whole_table_preview_without_custom_sql(session: duckdb.DuckDBPyConnection) -> None:
    # Given no custom SQL and a row limit of 2
    statement = build_statement(request(limit=2), source_alias=ALIAS)
    # When it runs
    rows = run(session, statement)
    # Then it is the spec's plain statement, limited
    assert statement == 'SELECT * FROM "pg_src_main"."public"."orders" AS "orders" LIMIT 2'
    assert len(rows) == 2


def test_row_limit_bounds_both_the_cte_and_the_outer_query(session: duckdb.DuckDBPyConnection) -> None:
    # Given custom SQL and a row limit of 3
    statement = build_statement(request("SELECT id FROM orders ORDER BY id", limit=3), source_alias=ALIAS)
    # When it runs
    rows = run(session, statement)
    # Then the CTE and the outer query both carry LIMIT 3
    assert statement.count("LIMIT 3") == 2
    assert statement.endswith(") AS result_sql LIMIT 3")
    assert len(rows) == 3


def test_v2_filter_applies_inside_the_cte(session: duckdb.DuckDBPyConnection) -> None:
    # Given a v2 filter (status A or name like 'neil') and custom SQL
    filter_sql = json.dumps({"version": 2, "groups": [{"conditions": [
        {"column": "status", "operator": "=", "value": "A"},
        {"column": "name", "operator": "ilike", "value": "neil"}], "intraLogic": "OR"}]})  # fmt: skip
    statement = build_statement(request("SELECT id FROM orders ORDER BY id", filter_sql=filter_sql), source_alias=ALIAS)
    # When it runs
    rows = run(session, statement)
    # Then only the matching rows come back
    assert [r["id"] for r in rows] == [1, 3, 5]


def test_legacy_filter_applies(session: duckdb.DuckDBPyConnection) -> None:
    # Given the spec's legacy form
    statement = build_statement(request(filter_sql="status = 'B'; amount > 10"), source_alias=ALIAS)
    # When it runs
    rows = run(session, statement)
    # Then both parts hold
    assert [r["id"] for r in rows] == [2]


@pytest.mark.parametrize(
    "filter_sql",
    [
        "1=1) UNION SELECT * FROM read_csv('/etc/passwd') --",
        "1=1) UNION ALL SELECT * FROM pg_src_main.public.secrets --",
        "1=1) UNION ALL SELECT id, secret, NULL, NULL, NULL FROM secrets WHERE (1=1",
        "id IN (SELECT id FROM secrets)",
        "1=1) --",
        "1=1 /*",
        "1=1) LIMIT 100000000 --",
        "1=1) ORDER BY (1",
        "EXISTS (SELECT * FROM duckdb_tables)",
        "current_setting('threads') IS NOT NULL",
        "1=1); SET threads=1; SELECT (1",
    ],
)
def test_legacy_filter_is_held_to_the_sandbox(session: duckdb.DuckDBPyConnection, filter_sql: str) -> None:
    # Given a legacy filter that tries to leave the WHERE, drop the LIMIT or read something else
    # When the statement is built, with and without custom SQL
    for sql in (None, "SELECT * FROM orders"):
        with pytest.raises(PreviewError):
            build_statement(request(sql, filter_sql=filter_sql), source_alias=ALIAS)
    # Then it is refused both times


def test_schema_qualified_table(session: duckdb.DuckDBPyConnection) -> None:
    # Given a preview of other.orders and SQL naming it bare
    statement = build_statement(request("SELECT id, name FROM orders", table="other.orders"), source_alias=ALIAS)
    # When it runs
    rows = run(session, statement)
    # Then it reads other.orders, and public.orders is now "another table"
    assert rows == [{"id": 99, "name": "elsewhere"}]
    with pytest.raises(PreviewError) as info:
        build_statement(request("SELECT * FROM public.orders", table="other.orders"), source_alias=ALIAS)
    assert str(info.value).startswith("Preview SQL may only read the table other.orders; it references public.orders.")


@pytest.mark.parametrize(
    ("table_name", "expected"),
    [
        ("orders", TableRef("public", "orders")),
        ("public.orders", TableRef("public", "orders")),
        (" other . orders ", TableRef("other", "orders")),
        ('"My Schema"."Order ""Items"""', TableRef("My Schema", 'Order "Items"')),
        ('"a.b"', TableRef("public", "a.b")),
    ],
)
def test_parse_table_name(table_name: str, expected: TableRef) -> None:
    # Given a table name as the backend sends it
    # When it is parsed
    result = parse_table_name(table_name)
    # Then schema and name are split, quotes removed, public by default
    assert result == expected


@pytest.mark.parametrize(
    "table_name",
    ["", "a.b.c", "orders; DROP TABLE x", "orders--", 'a"b', '"unterminated', "1orders", "a.", "or\nders", "x y"],
)
def test_parse_table_name_refuses_anything_else(table_name: str) -> None:
    # Given a table name that is not table or schema.table
    # When it is parsed
    with pytest.raises(PreviewError) as info:
        parse_table_name(table_name)
    # Then the message shows the accepted forms
    assert "use table or schema.table" in str(info.value)


def test_quoted_table_name_reaches_duckdb_as_one_identifier(session: duckdb.DuckDBPyConnection) -> None:
    # Given a table name that would break out of a naive quote
    # When the statement is built
    statement = build_statement(request(table='"orders"" AS x, secrets --"'), source_alias=ALIAS)
    # Then it stays one identifier: the table simply does not exist
    with pytest.raises(duckdb.CatalogException):
        run(session, statement)


@pytest.mark.parametrize("limit", [0, -1, True, "500"])
def test_row_limit_must_be_a_positive_integer(limit: object) -> None:
    # Given a row limit that is not a positive integer
    preview = PreviewRequest(sql=None, source_id=1, destination_id=2, table_name="orders", row_limit=limit)  # type: ignore[arg-type]
    # When the statement is built
    with pytest.raises(PreviewError) as info:
        build_statement(preview, source_alias=ALIAS)
    # Then it is refused instead of reaching SQL
    assert "row limit must be a positive integer" in str(info.value)


def count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """Wrap ``parsing.<name>`` wherever the preview's SQL modules hold it; the list collects its SQL arguments."""
    calls: list[str] = []
    real = getattr(parsing, name)

    def counted(sql: str) -> Any:
        calls.append(sql)
        return real(sql)

    for module in (parsing, sandbox, filters, query):
        if getattr(module, name, None) is real:
            monkeypatch.setattr(module, name, counted)
    return calls


def test_custom_sql_with_a_legacy_filter_is_parsed_once_per_stage(
    session: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a process that has built a preview before, and parsers that count their calls
    user_sql = "SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY status"
    preview = request(user_sql, filter_sql="amount > 10; status <> 'DELETE'")
    build_statement(preview, source_alias=ALIAS)
    duckdb_parses = count_calls(monkeypatch, "parse")
    lexes = count_calls(monkeypatch, "split_statements")
    # When a custom-SQL preview with a legacy filter is built
    statement = build_statement(preview, source_alias=ALIAS)
    # Then DuckDB parses three statements, each once: the filter's probe, the user's SQL, the final statement
    assert len(duckdb_parses) == 3
    assert duckdb_parses[1:] == [user_sql, statement]
    assert "amount > 10" in duckdb_parses[0]
    # And sqlparse lexes the user's SQL once (and each legacy part once, for the token checks)
    assert lexes == ["amount > 10", "status <> 'DELETE'", user_sql]
    # And the statement is the one that runs
    assert run(session, statement) == [{"status": "A", "n": 1}, {"status": "B", "n": 1}]


def test_a_reference_to_a_case_variant_is_not_rewritten() -> None:
    # Given orders beside a table ORDERS in the source
    table = TableRef("public", "orders", schema_variants=frozenset({"public"}),
                     name_variants=frozenset({"orders", "ORDERS"}))  # fmt: skip
    # When custom SQL names ORDERS, or a legacy filter reads it
    for preview in (request("SELECT * FROM ORDERS"),
                    request(filter_sql=f"id IN (SELECT id FROM {ALIAS}.public.ORDERS)")):  # fmt: skip
        # Then the statement is refused: ORDERS is another table, not the previewed one
        with pytest.raises(PreviewError, match="may only read the table orders"):
            build_statement(preview, source_alias=ALIAS, table=table)
    # And orders itself, in any case when it has no variant, is still the previewed table
    statement = build_statement(request("SELECT * FROM Orders"), source_alias=ALIAS)
    assert "filtered_source" in statement


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sql": "SELECT 1\x00"}, "sql contains a NUL character"),
        ({"filter_sql": "a = 1\x00"}, "filter_sql contains a NUL character"),
        ({"table_name": "orders\x00"}, "table_name contains a NUL character"),
        ({"sql": "SELECT " + "1," * 60_000 + "1"}, "sql is 120,008 bytes; a preview accepts at most 100,000 bytes"),
        ({"filter_sql": "é" * 50_001}, "filter_sql is 100,002 bytes"),
        ({"table_name": "t" * 1_001}, "table_name is longer than 1,000 characters"),
    ],
)
def test_input_is_refused_before_parsing(fields: dict[str, str], message: str) -> None:
    # Given a NUL or a text over its cap
    preview = PreviewRequest(**{"sql": None, "source_id": 1, "destination_id": 2, "table_name": "orders", **fields})  # type: ignore[arg-type]
    # When the statement is built
    with pytest.raises(PreviewError) as info:
        build_statement(preview, source_alias=ALIAS)
    # Then it is refused with a message naming the field
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    "sql",
    [
        "FROM orders SELECT id, amount",
        "FROM orders",
        "UNPIVOT (SELECT id, name, status FROM orders) ON name, status INTO NAME k VALUE v",
        "/* a /* nested */ comment */ SELECT id FROM orders",
    ],
)
def test_duckdb_select_forms_run(session: duckdb.DuckDBPyConnection, sql: str) -> None:
    # Given a SELECT written in one of DuckDB's own forms
    # When its statement is built and run
    rows = run(session, build_statement(request(sql), source_alias=ALIAS))
    # Then it returns rows of orders
    assert rows


def test_parse_table_name_remembers_quoting() -> None:
    # Given quoted and unquoted parts, When parsed
    written = parse_table_name('"My".orders')
    # Then quoting is kept for the exact-name rule, and equality ignores it
    assert written.schema_quoted and not written.name_quoted
    assert written == TableRef("My", "orders")


def v2_filter(*conditions: tuple[str, str, Any]) -> str:
    listed = [{"column": column, "operator": operator, "value": value} for column, operator, value in conditions]
    return json.dumps({"version": 2, "groups": [{"conditions": listed}]})


def test_previews_whose_filters_differ_only_in_values_are_judged_once(
    session: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a process that judged no statement yet, and a parser that counts its calls
    query._check_plain.cache_clear()
    parses = count_calls(monkeypatch, "parse")
    # When three previews are built whose v2 filters differ only in their values
    values = ((1, "a"), (10, "a"), (4, "GAM"))
    filters = [v2_filter(("amount", ">", low), ("name", "ILIKE", text)) for low, text in values]
    statements = [build_statement(request(filter_sql=f), source_alias=ALIAS) for f in filters]
    # Then DuckDB parsed one statement: their shape, with a constant of each value's kind
    assert parses == [f'SELECT * FROM "{ALIAS}"."public"."orders" AS "orders" WHERE ("amount" > 0 AND '
                      "\"name\" ILIKE '') LIMIT 500"]  # fmt: skip
    assert '("amount" > 4 AND "name" ILIKE \'%GAM%\')' in statements[2]
    # And each statement runs with its own values
    assert [[r["id"] for r in run(session, s)] for s in statements] == [[1, 2, 3], [2, 3], [3]]


def test_a_hostile_value_in_a_judged_shape_stays_one_literal(session: duckdb.DuckDBPyConnection) -> None:
    # Given a shape judged before, with a harmless value
    build_statement(request(filter_sql=v2_filter(("name", "=", "alpha"))), source_alias=ALIAS)
    # When the same shape comes with values written to escape the literal
    for value in ("x' OR 1=1 --", "x'); SELECT * FROM secrets; --", "x\\' UNION SELECT 1, secret FROM secrets"):
        statement = build_statement(request(filter_sql=v2_filter(("name", "=", value))), source_alias=ALIAS)
        # Then each is one string constant of one condition: nothing matches and nothing else is read
        condition = parse(statement)["statements"][0]["node"]["where_clause"]
        assert condition["class"] == "COMPARISON"
        assert condition["right"] == {**condition["right"], "class": "CONSTANT"}
        assert condition["right"]["value"]["value"] == value
        assert run(session, statement) == []


def test_the_same_shape_on_a_table_with_other_case_variants_is_judged_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a shape judged for orders when the source had no case variant of it
    query._check_plain.cache_clear()
    preview = request(filter_sql=v2_filter(("id", "=", 1)))
    build_statement(preview, source_alias=ALIAS, table=TableRef("public", "orders"))
    parses = count_calls(monkeypatch, "parse")
    # When it comes again for orders beside an ORDERS (the equality of TableRef leaves variants out)
    variant = TableRef("public", "orders", name_variants=frozenset({"orders", "ORDERS"}))
    build_statement(preview, source_alias=ALIAS, table=variant)
    build_statement(preview, source_alias=ALIAS, table=variant)
    # Then it is judged again for that table, once
    assert len(parses) == 1
