"""One table means one table (issue 12, findings 2, 3 and 5): through a real worker, on a real source.

The source holds ``public.orders`` (the previewed table) beside relations that differ from it only in
letter case (``public."ORDERS"``, ``"PUBLIC".orders``), a schema previews may not read (``hidden``, with
a table and a view), a sequence, an allowed view, and the system catalogs every role can read; the
worker runs with ``PREVIEW_SCHEMAS=public``. Each relation that must stay unread holds a marker, and
a live session of the server carries one in ``pg_stat_activity``: no answer may contain any of them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from rosetta_jobs.catalog import config_schema_sql
from rosetta_jobs.client import JobClient
from rosetta_jobs.crypto import Cipher
from rosetta_jobs.preview.messages import MAX_ERROR_CHARS

from .conftest import PG_ADMIN_URL, TEST_KEY, WorkerProcess, create_database, drop_database, launch_worker

ALIAS = "pg_src_main_db"
MARKERS = ("MARKER-CASE-TABLE", "MARKER-CASE-SCHEMA", "MARKER-HIDDEN", "MARKER-ACTIVITY", "SCRAM-SHA-256")
SEED = """
CREATE TABLE public.orders (id int PRIMARY KEY, status text, amount numeric(10, 2));
INSERT INTO public.orders SELECT g, (ARRAY['NEW','PAID'])[1 + g % 2], g * 1.5 FROM generate_series(1, 2000) g;
CREATE TABLE public."ORDERS" (id int, secret text);
INSERT INTO public."ORDERS" VALUES (1, 'MARKER-CASE-TABLE');
CREATE SCHEMA "PUBLIC";
CREATE TABLE "PUBLIC".orders (id int, secret text);
INSERT INTO "PUBLIC".orders VALUES (1, 'MARKER-CASE-SCHEMA');
CREATE SCHEMA hidden;
CREATE TABLE hidden.payroll (id int, secret text);
INSERT INTO hidden.payroll VALUES (1, 'MARKER-HIDDEN');
CREATE VIEW hidden.payroll_view AS SELECT * FROM hidden.payroll;
CREATE VIEW public.paid_orders AS SELECT * FROM public.orders WHERE status = 'PAID';
CREATE SEQUENCE public.order_numbers;
CREATE TABLE public.secrets (id int, secret text);
"""


@dataclass
class Source:
    config_url: str
    source_url: str
    source_id: int
    destination_id: int


@pytest.fixture(scope="module")
def source() -> Iterator[Source]:
    """The source above, a config database pointing at it, a role with a password, a marked live session."""
    source_url, config_url = create_database("rj_src"), create_database("rj_cfg")
    role = f"rj_marker_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(source_url, autocommit=True) as conn:
        conn.execute(SEED)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'MARKER-PASSWORD'")
    with psycopg.connect(config_url, autocommit=True) as conn:
        conn.execute(config_schema_sql())
        row = conn.execute(
            "INSERT INTO sources (name, pg_host, pg_port, pg_database, pg_username, pg_password)"
            " VALUES ('Main DB', '127.0.0.1', 5432, %s, 'postgres', %s) RETURNING id",
            (source_url.rsplit("/", 1)[1], Cipher(TEST_KEY).encrypt("unused-with-trust-auth")),
        ).fetchone()
        destination = conn.execute(
            "INSERT INTO destinations (name, type, config) VALUES ('wh', 'POSTGRES', '{}') RETURNING id"
        ).fetchone()
    assert row is not None and destination is not None
    with psycopg.connect(source_url, autocommit=True, application_name="MARKER-ACTIVITY") as activity:
        activity.execute("SELECT 'MARKER-ACTIVITY'")
        yield Source(config_url, source_url, int(row[0]), int(destination[0]))
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP ROLE {role}")
    drop_database(config_url)
    drop_database(source_url)


@pytest.fixture(scope="module")
def worker(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("identity-worker") / "worker.log"
    process = launch_worker(
        log, threads=2, DATABASE_URL=source.config_url, PREVIEW_CACHE_TTL="0", PREVIEW_SCHEMAS="public",
        DUCKDB_MEMORY_LIMIT="256MB", DUCKDB_MAX_CONCURRENT="2",
    )  # fmt: skip
    yield process
    process.stop()


def preview(
    client: JobClient, source: Source, sql: str | None, table: str = "orders", filter_sql: str | None = None
) -> dict:
    task_id = client.submit_preview(sql, source.source_id, source.destination_id, table, filter_sql)
    result = client.result(task_id).get(timeout=60)
    assert isinstance(result, dict)
    return result


def assert_refused_without_markers(result: dict) -> None:
    assert result["error"], result
    assert result["data"] == [] and result["columns"] == []
    text = json.dumps(result)
    assert not [marker for marker in MARKERS if marker in text], text
    assert ALIAS not in text


@pytest.mark.parametrize(
    "table",
    [
        "pg_catalog.pg_stat_activity",
        "pg_catalog.pg_roles",
        "pg_catalog.pg_authid",
        '"pg_catalog"."pg_shadow"',
        "PG_CATALOG.pg_user",
        "information_schema.columns",
        "information_schema.tables",
        "pg_toast.pg_toast_1260",
        "pg_stat_activity",
    ],
)
def test_system_catalogs_are_not_previewable(
    worker: WorkerProcess, client: JobClient, source: Source, table: str
) -> None:
    # Given table_name naming a system catalog (the backend forwards it from the user)
    # When it is previewed
    result = preview(client, source, None, table)
    # Then it is refused, and nothing of the catalog comes back
    assert_refused_without_markers(result)


@pytest.mark.parametrize(
    ("table", "why"),
    [
        ("Orders", "ambiguous: orders and ORDERS"),
        ('"Orders"', "quoted: exact, and there is no such table"),
        ("PUBLIC.orders", "the case-variant schema is not in PREVIEW_SCHEMAS"),
        ('"PUBLIC"."orders"', "the same, quoted"),
        ("Public.orders", "ambiguous schema: public and PUBLIC"),
        ("hidden.payroll", "a table in a schema previews may not read"),
        ("hidden.payroll_view", "a view in a schema previews may not read"),
        ("public.order_numbers", "a sequence"),
        ("nowhere", "no such table"),
    ],
)
def test_table_name_resolves_to_exactly_one_allowed_relation(
    worker: WorkerProcess, client: JobClient, source: Source, table: str, why: str
) -> None:
    # Given table_name naming a case variant, a relation out of the allowed schemas, or no table or view
    # When it is previewed, without and with custom SQL
    for sql in (None, "SELECT * FROM orders"):
        result = preview(client, source, sql, table)
        # Then it is refused, with no marker in the answer
        assert_refused_without_markers(result)


@pytest.mark.parametrize(
    ("table", "rows"),
    [("orders", 500), ("ORDERS", 1), ("paid_orders", 500), ('"public"."orders"', 500), ("PUBLIC.ORDERS", None)],
)
def test_exact_names_resolve(worker: WorkerProcess, client: JobClient, source: Source, table: str, rows: int) -> None:
    # Given a name spelled exactly as the source spells a table or view of an allowed schema
    # When it is previewed
    result = preview(client, source, None, table)
    # Then that relation is previewed: ORDERS is its own table, the view is allowed ("PUBLIC" is not)
    if rows is None:
        assert_refused_without_markers(result)
    else:
        assert result["error"] is None, result["error"]
        assert len(result["data"]) == rows


@pytest.mark.parametrize(
    "filter_sql",
    [
        f"CAST((SELECT secret FROM {ALIAS}.public.ORDERS LIMIT 1) AS INT) = 1",
        f'CAST((SELECT secret FROM {ALIAS}.public."ORDERS" LIMIT 1) AS INT) = 1',
        f"CAST((SELECT secret FROM {ALIAS}.PUBLIC.orders LIMIT 1) AS INT) = 1",
        f"id IN (SELECT id FROM {ALIAS}.public.ORDERS WHERE secret LIKE 'MARKER%')",
        f"id IN (SELECT id FROM {ALIAS}.hidden.payroll WHERE secret LIKE 'MARKER%')",
        "CAST((SELECT secret FROM ORDERS LIMIT 1) AS INT) = 1",
    ],
    ids=["case-table", "case-table-quoted", "case-schema", "blind-in", "hidden-schema", "bare"],
)
def test_legacy_filter_reads_only_the_previewed_table(
    worker: WorkerProcess, client: JobClient, source: Source, filter_sql: str
) -> None:
    # Given a legacy filter reading another relation (finding 3), When orders is previewed with it
    for sql in (None, "SELECT id FROM orders"):
        result = preview(client, source, sql, "orders", filter_sql)
        # Then it is refused, and no marker comes back in an error either
        assert_refused_without_markers(result)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM ORDERS",
        f"SELECT * FROM {ALIAS}.public.ORDERS",
        f"SELECT * FROM {ALIAS}.PUBLIC.orders",
        "SELECT * FROM orders WHERE id IN (SELECT id FROM PUBLIC.orders)",
        "SELECT (SELECT secret FROM Orders) AS s",
    ],
)
def test_custom_sql_reads_only_the_previewed_table(
    worker: WorkerProcess, client: JobClient, source: Source, sql: str
) -> None:
    # Given custom SQL naming a case variant of the previewed table or schema
    # When orders is previewed with it
    result = preview(client, source, sql)
    # Then it is refused: the reference does not bind to orders itself
    assert_refused_without_markers(result)


def test_a_failing_cast_cannot_return_the_table(worker: WorkerProcess, client: JobClient, source: Source) -> None:
    # Given a legacy filter that aggregates the whole previewed table into a failing cast
    filter_sql = f"CAST((SELECT string_agg(status, ',') FROM {ALIAS}.public.orders) AS INT) = 1"
    # When it is previewed
    result = preview(client, source, None, "orders", filter_sql)
    # Then the error is cut short: the previewed table's 2,000 rows do not come back in it
    assert result["error"] and len(result["error"]) <= MAX_ERROR_CHARS
    assert_refused_without_markers(result)


def test_did_you_mean_names_nothing_outside_the_table(worker: WorkerProcess, client: JobClient, source: Source) -> None:
    # Given a type name close to a table of the source
    # When it is previewed
    result = preview(client, source, "SELECT NULL::secretz AS x FROM orders")
    # Then DuckDB's suggestion of the source's table secrets and the source's alias are gone
    assert "Type with name secretz does not exist" in result["error"]
    assert "secrets" not in result["error"]
    assert_refused_without_markers(result)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("SELECT 1 AS one\x00; SELECT secret FROM hidden.payroll", "orders", None), "sql"),
        ((None, "orders", "id > 0\x00 OR TRUE"), "filter_sql"),
        ((None, "orders\x00junk", None), "table_name"),
    ],
    ids=["sql", "filter", "table"],
)
def test_nul_is_refused(
    worker: WorkerProcess, client: JobClient, source: Source, args: tuple[str | None, str, str | None], field: str
) -> None:
    # Given a NUL in the SQL, the filter or the table name (C code would stop reading there)
    sql, table, filter_sql = args
    # When it is previewed
    result = preview(client, source, sql, table, filter_sql)
    # Then it is refused with a message, not cut and run
    assert result["error"].startswith(f"{field} contains a NUL character")


@pytest.mark.parametrize(
    "sql",
    [
        "FROM orders SELECT id, amount",
        "UNPIVOT (SELECT id, status, CAST(amount AS VARCHAR) AS amount FROM orders) ON status, amount "
        "INTO NAME k VALUE v",
        "/* outer /* inner */ still a comment */ SELECT id FROM orders",
    ],
    ids=["from-first", "unpivot-into-name", "nested-comment"],
)
def test_legitimate_queries_run(worker: WorkerProcess, client: JobClient, source: Source, sql: str) -> None:
    # Given three queries the first sandbox refused (finding 5)
    # When they are previewed
    result = preview(client, source, sql)
    # Then they run
    assert result["error"] is None, result["error"]
    assert result["data"]


def test_nested_data_too_deep_for_arrow_is_a_preview_error(
    worker: WorkerProcess, client: JobClient, source: Source
) -> None:
    # Given a 70-deep nested list, beyond what Arrow converts
    sql = "SELECT " + "[" * 70 + "1" + "]" * 70 + " AS x FROM orders"
    # When it is previewed
    result = preview(client, source, sql)
    # Then it is the preview's error, not a FAILURE
    assert "nested too deeply" in result["error"]
