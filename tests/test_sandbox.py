"""Layers 1 (sqlparse) and 2 (DuckDB's parse tree) of the preview sandbox, on their own.

``test_query.py`` runs the same rules end to end against a real attached PostgreSQL table.
"""

from __future__ import annotations

import threading

import pytest

from rosetta_jobs.errors import PreviewError
from rosetta_jobs.preview.parsing import TableRef, iter_nodes, parse
from rosetta_jobs.preview.sandbox import allowed_functions, check_sql, check_statement

ALIAS = "pg_src_main"
ORDERS = TableRef("public", "orders")
SOURCE = f"{ALIAS}.public.orders"


def check(sql: str) -> None:
    """Layer 2 alone, on SQL as written (no rewrite): the source table must be named in full."""
    check_statement(parse(sql), source_alias=ALIAS, table=ORDERS)


# --- layer 1 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM orders",
        "select id from orders where status = 'DELETE'",
        "SELECT replace(name, 'a', 'b') FROM orders",
        "SELECT replace (name, 'a', 'b') FROM orders",
        "SELECT * REPLACE (upper(name) AS name) FROM orders",
        "-- DROP TABLE x\nSELECT 1 FROM orders",
        "/* INSERT INTO x */ SELECT 1",
        "SELECT lower(name) LIKE '%insert%' FROM orders",
        "SELECT $$DROP$$ AS a",
        "WITH big AS (SELECT * FROM orders) SELECT * FROM big",
        "SELECT * FROM orders;",
        "SELECT * FROM orders; -- the end",
        'SELECT "delete" FROM orders',
        "SELECT created_at, updated_at FROM orders",
        "FROM orders",
        "FROM orders SELECT id, amount",
        "UNPIVOT orders ON name, status INTO NAME k VALUE v",
        "/* outer /* inner DROP */ still DELETE a comment */ SELECT 1 FROM orders",
    ],
)
def test_layer1_allows_ordinary_select(sql: str) -> None:
    # Given a SELECT whose keywords are only in strings, comments, names or functions
    # When layer 1 checks it
    check_sql(sql)
    # Then it passes (no exception)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM orders; DROP TABLE orders", "SQL contains forbidden keyword: DROP."),
        ("delete from orders", "SQL contains forbidden keyword: DELETE."),
        ("SELECT * INTO t2 FROM orders", "SQL contains forbidden keyword: INTO."),
        ("COPY (SELECT 1) TO 'out.csv'", "SQL contains forbidden keyword: COPY."),
        ("EXPORT DATABASE 'x'", "SQL contains forbidden keyword: EXPORT."),
        ("CALL pragma_database_list()", "SQL contains forbidden keyword: CALL."),
        ("SELECT * FROM READ_CSV_AUTO('/etc/passwd')", "SQL contains forbidden function: READ_CSV_AUTO."),
        ("SELECT * FROM read_csv/**/('/etc/passwd')", "SQL contains forbidden function: read_csv."),
        ("SELECT * FROM \"read_text\"('/app/.env')", "SQL contains forbidden function: read_text."),
        ("SELECT * FROM glob('/*')", "SQL contains forbidden function: glob."),
        ("SELECT * FROM read_ndjson('x')", "SQL contains forbidden function: read_ndjson."),
        ("SELECT * FROM parquet_scan('x')", "SQL contains forbidden function: parquet_scan."),
        ("SELECT * FROM sniff_csv('x')", "SQL contains forbidden function: sniff_csv."),
        ("SELECT http_get('https://example.com')", "SQL contains forbidden function: http_get."),
        ("SELECT 1; SELECT 2", "Preview SQL must be exactly one SELECT statement; found 2."),
        ("SET threads = 1", "SQL must be a single SELECT query"),
        ("RESET threads", "SQL must be a single SELECT query"),
        ("PRAGMA database_list", "SQL must be a single SELECT query"),
        ("ATTACH 'dbname=postgres' AS other (TYPE postgres)", "SQL must be a single SELECT query"),
        ("INSTALL httpfs", "SQL must be a single SELECT query"),
        ("LOAD httpfs", "SQL must be a single SELECT query"),
        ("EXPLAIN SELECT 1", "SQL must be a single SELECT query"),
        ("PIVOT orders ON status USING sum(amount)", "SQL must be a single SELECT query"),
        ("SELECT * INTO NAME FROM orders", "SQL contains forbidden keyword: INTO."),
        ("-- nothing but a comment", "SQL contains no statement."),
    ],
)
def test_layer1_denies_with_the_spec_messages(sql: str, message: str) -> None:
    # Given SQL that is not one plain SELECT
    # When layer 1 checks it
    with pytest.raises(PreviewError) as info:
        check_sql(sql)
    # Then the message is the spec's (keywords first, then functions), or names the problem
    assert str(info.value).startswith(message)


# --- layer 2: parse ------------------------------------------------------------------------------------


def test_parse_returns_duckdbs_tree() -> None:
    # Given a SELECT with a comment and a trailing semicolon
    # When it is parsed
    tree = parse("SELECT id FROM orders; -- done")
    # Then the tree is one SELECT_NODE over the BASE_TABLE orders
    (statement,) = tree["statements"]
    assert statement["node"]["type"] == "SELECT_NODE"
    assert statement["node"]["from_table"]["table_name"] == "orders"


def test_parse_reports_duckdbs_syntax_error() -> None:
    # Given SQL with a typo
    # When it is parsed
    with pytest.raises(PreviewError) as info:
        parse("SELEC id FROM orders")
    # Then DuckDB's parser message is shown
    assert str(info.value) == 'SQL syntax error: syntax error at or near "SELEC"'


@pytest.mark.parametrize("sql", ["DELETE FROM orders", "SET threads=1", "PRAGMA version", "EXPLAIN SELECT 1"])
def test_parse_refuses_non_select_statements(sql: str) -> None:
    # Given a statement DuckDB cannot serialise (anything but SELECT)
    # When it is parsed
    with pytest.raises(PreviewError) as info:
        parse(sql)
    # Then it is refused as not a SELECT
    assert str(info.value).startswith("Preview only supports SELECT queries")


def test_parser_connection_is_per_thread() -> None:
    # Given parses running on several threads at once
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                assert parse("SELECT 1 AS one")["statements"][0]["node"]["type"] == "SELECT_NODE"
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    # When they all finish
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then none failed
    assert errors == []


# --- layer 2: functions --------------------------------------------------------------------------------


def test_allow_list_keeps_ordinary_functions() -> None:
    # Given the allow-list built from a fresh DuckDB
    names = allowed_functions()
    # When ordinary functions are looked up
    ordinary = {"lower", "replace", "sum", "count", "count_star", "row_number", "rank", "lag", "first_value",
                "current_date", "now", "date_trunc", "strftime", "list_sum", "concat",
                "unnest", "+", "~~", "regexp_matches", "round", "avg"}  # fmt: skip
    # Then they are all allowed
    assert ordinary <= names


def test_allow_list_drops_settings_catalog_session_and_sql_text_functions() -> None:
    # Given the allow-list
    names = allowed_functions()
    # When risky functions are looked up
    risky = {"current_setting", "getenv", "version", "current_database", "current_catalog", "current_schema",
             "current_schemas", "current_user", "session_user", "getvariable", "nextval", "currval", "setseed",
             "json_serialize_sql", "json_deserialize_sql", "json_serialize_plan", "query", "query_table",
             "write_log", "sleep_ms", "get_block_size", "pg_typeof", "read_csv", "glob", "postgres_query"}  # fmt: skip
    # Then none is allowed, nor anything of the duckdb_/pg_/postgres_ families
    assert not risky & names
    assert not {n for n in names if n.startswith(("duckdb_", "pg_", "postgres_", "pragma_", "read_"))}


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT current_setting('threads')", "Function current_setting is not allowed in a preview"),
        ("SELECT getenv('HOME')", "Function getenv is not allowed"),
        ("SELECT version()", "Function version is not allowed"),
        ("SELECT CURRENT_DATABASE()", "Function current_database is not allowed"),
        ("SELECT current_schemas(true)", "Function current_schemas is not allowed"),
        ("SELECT getvariable('x')", "Function getvariable is not allowed"),
        ("SELECT nextval('seq')", "Function nextval is not allowed"),
        ("SELECT json_serialize_plan('SELECT * FROM secrets')", "Function json_serialize_plan is not allowed"),
        ("SELECT has_table_privilege('secrets', 'select')", "Function has_table_privilege is not allowed"),
        ("SELECT pg_catalog.lower('A')", "Function pg_catalog.lower is not allowed in a preview: call functions by"),
        ("SELECT system.main.lower('A')", "Function system.main.lower is not allowed"),
        ("SELECT lower(name) FROM x.y.z", "it references x.y.z"),
        ("SELECT * FROM read_csv('/etc/passwd')", "Function read_csv is not allowed in a preview: table functions"),
        ("SELECT * FROM \"read_csv\"('/etc/passwd')", "Function read_csv is not allowed"),
        ("SELECT * FROM read_csv/**/('/etc/passwd')", "Function read_csv is not allowed"),
        ("SELECT * FROM query('SELECT 1')", "Function query is not allowed"),
        ("SELECT * FROM query_table('secrets')", "Function query_table is not allowed"),
        (f"SELECT * FROM postgres_query('{ALIAS}', 'select 1')", "Function postgres_query is not allowed"),
        ("SELECT * FROM duckdb_tables()", "Function duckdb_tables is not allowed"),
        ("SELECT * FROM pragma_database_list()", "Function pragma_database_list is not allowed"),
        ("SELECT * FROM range(10)", "Function range is not allowed"),
        ("SELECT 'x'::pg_src_main.public.mood", "Type pg_src_main.public.mood is not allowed"),
        ("SELECT ?", "Parameters ($1, ?) are not supported"),
        ("SELECT $1", "Parameters ($1, ?) are not supported"),
        ("SELECT * FROM (SHOW TABLES)", "SHOW, DESCRIBE and SUMMARIZE are not allowed"),
        (f"SELECT * FROM (DESCRIBE {SOURCE})", "SHOW, DESCRIBE and SUMMARIZE are not allowed"),
        (f"SELECT * FROM (SUMMARIZE {SOURCE})", "SHOW, DESCRIBE and SUMMARIZE are not allowed"),
    ],
)
def test_layer2_denies_functions_types_and_parameters(sql: str, message: str) -> None:
    # Given SQL that layer 1 may not see through (quoting, comments, unlisted names)
    # When layer 2 checks DuckDB's tree
    with pytest.raises(PreviewError) as info:
        check(sql)
    # Then the problem is named
    assert message in str(info.value)


# --- layer 2: tables and scope -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "reference"),
    [
        ("SELECT * FROM secrets", "secrets"),
        ("SELECT * FROM orders", "orders"),
        ("SELECT * FROM public.orders", "public.orders"),
        (f"SELECT * FROM {ALIAS}.public.secrets", f"{ALIAS}.public.secrets"),
        (f"SELECT * FROM {ALIAS}.other.orders", f"{ALIAS}.other.orders"),
        ("SELECT * FROM other.x", "other.x"),
        ("SELECT * FROM information_schema.tables", "information_schema.tables"),
        ("SELECT * FROM pg_catalog.pg_class", "pg_catalog.pg_class"),
        ("SELECT * FROM duckdb_tables", "duckdb_tables"),
        ("SELECT * FROM sqlite_master", "sqlite_master"),
        (f"SELECT * FROM {SOURCE} JOIN secrets USING (id)", "secrets"),
        (f"SELECT * FROM {SOURCE} WHERE id IN (SELECT id FROM secrets)", "secrets"),
        ("WITH secrets AS (SELECT * FROM secrets) SELECT * FROM secrets", "secrets"),
        ("WITH duckdb_tables AS (SELECT * FROM duckdb_tables) SELECT 1 FROM duckdb_tables", "duckdb_tables"),
        ("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", "b"),
        ("SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) t, x", "x"),
        ("WITH RECURSIVE t AS (SELECT * FROM t UNION ALL SELECT 1 FROM t) SELECT * FROM t", "t"),
    ],
)
def test_layer2_denies_every_other_table(sql: str, reference: str) -> None:
    # Given SQL that names a table other than the source table or a CTE in scope
    # When layer 2 checks it
    with pytest.raises(PreviewError) as info:
        check(sql)
    # Then the message names the table and the fix
    assert str(info.value) == (
        f"Preview SQL may only read the table orders; it references {reference}. "
        "Write your query against orders (CTEs defined with WITH are fine)."
    )


@pytest.mark.parametrize(
    "sql",
    ["SELECT * FROM '/etc/passwd'", "SELECT * FROM 'https://example.com/x.csv'", "SELECT * FROM 's3://b/x.parquet'",
     "SELECT * FROM 'data.csv'"],
)  # fmt: skip
def test_layer2_denies_replacement_scans(sql: str) -> None:
    # Given a string literal used as a table (a DuckDB replacement scan)
    # When layer 2 checks it
    with pytest.raises(PreviewError) as info:
        check(sql)
    # Then it is refused as a file or URL
    assert str(info.value).startswith("Preview SQL cannot read files or URLs")


@pytest.mark.parametrize(
    "sql",
    [
        f"SELECT * FROM {SOURCE}",
        f"SELECT * FROM {ALIAS.upper()}.PUBLIC.Orders",
        f"WITH a AS (SELECT * FROM {SOURCE}), b AS (SELECT * FROM a) SELECT * FROM b",
        f"WITH a AS (SELECT 1) SELECT * FROM {SOURCE} WHERE EXISTS (SELECT * FROM a)",
        f"WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT * FROM t, {SOURCE}",
        f"SELECT id, row_number() OVER (PARTITION BY status ORDER BY amount) FROM {SOURCE}",
        f"SELECT status, sum(amount) FILTER (WHERE amount > 0), string_agg(name, ',' ORDER BY id) FROM {SOURCE} "
        "GROUP BY ALL",
        f"SELECT CASE WHEN amount > 1 THEN 'x' END, CAST(id AS VARCHAR), created_at::DATE FROM {SOURCE}",
        f"SELECT unnest([1, 2]), [x * 2 FOR x IN [1, 2]], list_transform([1], lambda x: x + 1) FROM {SOURCE}",
        f"SELECT * FROM (VALUES (1), (2)) v(a) JOIN {SOURCE} o ON o.id = v.a",
        f"SELECT * FROM {SOURCE} PIVOT (sum(amount) FOR status IN ('A', 'B'))",
        f"SELECT now(), current_date, current_timestamp, today() FROM {SOURCE} USING SAMPLE 10%",
        f"SELECT 1 UNION ALL SELECT id FROM {SOURCE} ORDER BY 1 LIMIT 5 OFFSET 1",
    ],
)
def test_layer2_allows_the_source_table_ctes_and_ordinary_sql(sql: str) -> None:
    # Given SQL that reads only the full source table name and CTEs in scope
    # When layer 2 checks it
    check(sql)
    # Then it passes (no exception)


def test_layer2_requires_exactly_one_select() -> None:
    # Given two statements in one text
    # When layer 2 checks it
    with pytest.raises(PreviewError) as info:
        check(f"SELECT * FROM {SOURCE}; SELECT 2")
    # Then it is refused
    assert str(info.value).startswith("Preview SQL must be exactly one SELECT statement; found 2.")


def test_iter_nodes_scopes_follow_duckdb() -> None:
    # Given CTEs a, b (b reads a) and a query reading b
    tree = parse("WITH a AS (SELECT * FROM x), b AS (SELECT * FROM a) SELECT * FROM b")
    # When the tables are listed with the CTE names in scope at each
    seen = {
        node["table_name"]: sorted(scope)
        for node, scope in iter_nodes(tree["statements"][0]["node"])
        if node.get("type") == "BASE_TABLE"
    }
    # Then a's body sees nothing, b's body sees a, and the query sees both
    assert seen == {"x": [], "a": ["a"], "b": ["a", "b"]}


CASE_VARIANTS = TableRef(
    "public", "orders", schema_variants=frozenset({"public", "PUBLIC"}), name_variants=frozenset({"orders", "ORDERS"})
)


@pytest.mark.parametrize(
    ("sql", "allowed"),
    [
        (f"SELECT * FROM {SOURCE}", True),
        (f"SELECT * FROM {ALIAS.upper()}.public.orders", True),
        (f"SELECT * FROM {ALIAS}.public.ORDERS", False),
        (f'SELECT * FROM {ALIAS}.public."ORDERS"', False),
        (f"SELECT * FROM {ALIAS}.public.Orders", False),
        (f"SELECT * FROM {ALIAS}.PUBLIC.orders", False),
        (f"SELECT * FROM {ALIAS}.Public.orders", False),
        (f"SELECT * FROM {SOURCE} WHERE id IN (SELECT id FROM {ALIAS}.public.ORDERS)", False),
    ],
)
def test_layer2_binds_references_to_the_table_itself_not_a_case_variant(sql: str, allowed: bool) -> None:
    # Given a source where orders has case variants: a table ORDERS and a schema PUBLIC
    # When layer 2 checks a reference to the source
    try:
        check_statement(parse(sql), source_alias=ALIAS, table=CASE_VARIANTS)
        passed = True
    except PreviewError as exc:
        passed = False
        assert "may only read the table orders" in str(exc)
    # Then only a name that binds to orders itself passes (exactly, or as its only case variant)
    assert passed is allowed
