"""``worker.lineage.generate``: the parser against the spec's worked examples and harder SQL, then the job
through a real worker, writing the real ``pipelines_destination_table_sync`` and ``notification_log``."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis
from celery import Celery

from rosetta_jobs.catalog import config_schema_sql
from rosetta_jobs.client import JobClient
from rosetta_jobs.contracts import LINEAGE
from rosetta_jobs.layout import Keys
from rosetta_jobs.lineage import TRANSFORMS, parse_lineage

from .conftest import RESULTS_DB, WorkerProcess, create_database, drop_database, launch_worker, redis_url

NOW = dt.datetime(2026, 4, 8, 3, 4, 5, tzinfo=dt.UTC)


def lineage(sql: str | None, source_table: str = "orders", columns: list[str] | None = None) -> dict[str, Any]:
    result = parse_lineage(sql, source_table, columns, now=NOW)
    assert result.pop("parsed_at") == "2026-04-08T03:04:05+00:00"
    for column in result["column_lineage"].values():
        assert column["transform"] in TRANSFORMS
    return result


# --- the spec's worked examples (rosetta-tasks.md 8.2) ---------------------------------------------------------
def test_l1_aggregates_and_an_unaliased_expression() -> None:
    sql = (
        "SELECT customer_id, SUM(amount) AS total, COUNT(*) AS n, UPPER(status) FROM orders "
        "GROUP BY customer_id, status"
    )
    assert lineage(sql, "orders", ["id", "customer_id", "amount", "status"]) == {
        "version": 1,
        "source_tables": [{"table": "orders", "type": "source"}],
        "source_columns": ["orders.*", "orders.amount", "orders.customer_id", "orders.status"],
        "output_columns": ["customer_id", "total", "n", "UPPER(status)"],
        "column_lineage": {
            "customer_id": {"sources": ["orders.customer_id"], "transform": "direct"},
            "total": {"sources": ["orders.amount"], "transform": "SUM"},
            "n": {"sources": ["orders.*"], "transform": "COUNT"},
            "UPPER(status)": {"sources": ["orders.status"], "transform": "direct"},
        },
        "referenced_tables": ["orders"],
        "ctes": [],
    }


def test_l2_cte_aliases_and_star_resolved_to_the_tables_read() -> None:
    # The spec's output shows the Celery worker's quirks (F29); each is fixed here, as the spec asks:
    # the CTE "paid" is listed under ctes, not as a table; public.orders is the source table; the aliases
    # p and c are resolved; the star does not replace the explicit p.id.
    sql = (
        "WITH paid AS (SELECT * FROM public.orders WHERE status = 'paid') SELECT p.id, c.name || ' ' || c.region "
        "AS label, CASE WHEN p.amount > 10 THEN 'big' ELSE 'small' END AS size, p.amount * 1.1 + c.discount AS "
        "gross, * FROM paid p JOIN customers c ON c.id = p.customer_id"
    )
    assert lineage(sql, "orders", ["id", "amount"]) == {
        "version": 1,
        "source_tables": [{"table": "customers", "type": "join"}, {"table": "public.orders", "type": "source"}],
        "source_columns": [
            "customers.discount",
            "customers.name",
            "customers.region",
            "public.orders.amount",
            "public.orders.id",
        ],
        "output_columns": ["id", "label", "size", "gross", "amount"],
        "column_lineage": {
            "id": {"sources": ["public.orders.id"], "transform": "direct"},
            "label": {"sources": ["customers.region", "customers.name"], "transform": "CONCAT"},
            "size": {"sources": ["public.orders.amount"], "transform": "CASE"},
            "gross": {"sources": ["customers.discount", "public.orders.amount"], "transform": "expression"},
            "amount": {"sources": ["public.orders.amount"], "transform": "direct"},
        },
        "referenced_tables": ["customers", "public.orders"],
        "ctes": [{"name": "paid", "source_tables": ["public.orders"], "columns": ["id", "amount"]}],
    }


def test_l3_a_parse_error_is_an_error_lineage_without_ansi_codes() -> None:
    assert lineage("SELECT FROM WHERE (", "orders", ["id"]) == {
        "version": 1,
        # sqlglot's message, as the spec shows it, less the ANSI underline around "WHERE" (F29)
        "error": "Expected table name but got <Token token_type: TokenType.WHERE, text: WHERE, line: 1, col: 17, "
        "start: 12, end: 16, comments: []>. Line 1, Col: 17.\n  SELECT FROM WHERE (",
        "source_tables": [{"table": "orders", "type": "source"}],
        "source_columns": [],
        "output_columns": [],
        "column_lineage": {},
        "referenced_tables": ["orders"],
        "ctes": [],
    }


def test_direct_lineage_for_no_sql_or_the_whole_table() -> None:
    expected = {
        "version": 1,
        "source_tables": [{"table": "orders", "type": "source"}],
        "source_columns": ["orders.id", "orders.amount"],
        "output_columns": ["id", "amount"],
        "column_lineage": {
            "id": {"sources": ["orders.id"], "transform": "direct"},
            "amount": {"sources": ["orders.amount"], "transform": "direct"},
        },
        "referenced_tables": ["orders"],
        "ctes": [],
    }
    for sql in ("  select *   from   orders ", None, "", " \n ", "SELECT * FROM orders;"):
        assert lineage(sql, "orders", ["id", "amount"]) == expected, sql


# --- harder SQL ------------------------------------------------------------------------------------------------
def test_a_chain_of_ctes_is_followed_to_the_table_and_keeps_the_aggregate() -> None:
    sql = (
        "WITH totals AS (SELECT customer_id, SUM(amount) AS total FROM orders GROUP BY customer_id), "
        "ranked AS (SELECT t.* FROM totals t WHERE t.total > 100) "
        "SELECT r.customer_id AS who, r.total FROM ranked r"
    )
    result = lineage(sql, "orders", ["id", "customer_id", "amount"])
    assert result["column_lineage"] == {
        "who": {"sources": ["orders.customer_id"], "transform": "direct"},
        "total": {"sources": ["orders.amount"], "transform": "SUM"},  # what the CTE did to it
    }
    assert result["source_tables"] == [{"table": "orders", "type": "source"}]
    assert result["ctes"] == [
        {"name": "totals", "source_tables": ["orders"], "columns": ["customer_id", "total"]},
        {"name": "ranked", "source_tables": ["totals"], "columns": ["customer_id", "total"]},
    ]


def test_joins_resolve_qualified_and_unqualified_columns() -> None:
    sql = (
        "SELECT o.id, amount, c.name AS customer, r.reason FROM sales.orders AS o "
        "LEFT JOIN customers c ON c.id = o.customer_id JOIN (SELECT order_id, note AS reason FROM refunds) r "
        "ON r.order_id = o.id"
    )
    result = lineage(sql, "public.orders", ["id", "amount", "customer_id"])
    # sales.orders is not public.orders (both have a schema)
    assert result["source_tables"] == [
        {"table": "sales.orders", "type": "join"},
        {"table": "customers", "type": "join"},
        {"table": "refunds", "type": "join"},
    ]
    assert result["column_lineage"]["id"]["sources"] == ["sales.orders.id"]
    # amount is nobody's known column here: the first table whose columns are unknown is said to have it
    assert result["column_lineage"]["amount"]["sources"] == ["sales.orders.amount"]
    assert result["column_lineage"]["customer"]["sources"] == ["customers.name"]
    assert result["column_lineage"]["reason"]["sources"] == ["refunds.note"]
    # And with the source table named without a schema, the same orders is the source
    matched = lineage(sql.replace("sales.orders", "public.orders"), "orders", ["id", "amount", "customer_id"])
    assert matched["source_tables"][0] == {"table": "public.orders", "type": "source"}
    assert matched["column_lineage"]["amount"]["sources"] == ["public.orders.amount"]  # a known column of orders
    sql = "SELECT customer_id, name FROM customers JOIN orders ON true"
    resolved = lineage(sql, "orders", ["id", "customer_id"])["column_lineage"]
    assert resolved["customer_id"]["sources"] == ["orders.customer_id"]  # known: orders has it
    assert resolved["name"]["sources"] == ["customers.name"]  # unknown: the table whose columns nobody gave


def test_aggregates_case_and_concat_transforms() -> None:
    sql = (
        "SELECT status, AVG(amount) AS mean, MAX(created_at) AS latest, MIN(amount) AS low, COUNT(DISTINCT id) AS n, "
        "CASE WHEN SUM(amount) > 10 THEN 'big' END AS size, CASE status WHEN 'NEW' THEN 1 ELSE 0 END AS is_new, "
        "CONCAT(status, '-', id) AS tag, amount - discount AS net FROM orders GROUP BY status"
    )
    transforms = {k: v["transform"] for k, v in lineage(sql)["column_lineage"].items()}
    assert transforms == {
        "status": "direct",
        "mean": "AVG",
        "latest": "MAX",
        "low": "MIN",
        "n": "COUNT",
        "size": "SUM",  # the first of the spec's list that matches: SUM before CASE
        "is_new": "CASE",
        "tag": "CONCAT",
        "net": "expression",
    }


def test_window_functions() -> None:
    sql = (
        "SELECT id, SUM(amount) OVER (PARTITION BY customer_id ORDER BY created_at) AS running, "
        "ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY created_at DESC) AS rn FROM orders"
    )
    result = lineage(sql, "orders", ["id"])["column_lineage"]
    assert result["running"] == {  # references in sqlglot's breadth-first order, as the Celery worker listed them
        "sources": ["orders.customer_id", "orders.amount", "orders.created_at"],
        "transform": "SUM",
    }
    # A window function that is not an aggregate computes a value: not a direct copy
    assert result["rn"] == {"sources": ["orders.customer_id", "orders.created_at"], "transform": "expression"}


def test_unions_subqueries_and_star_over_unknown_tables() -> None:
    union = lineage("SELECT id, amount FROM orders UNION ALL SELECT id, total FROM archive_orders")
    assert union["output_columns"] == ["id", "amount"]
    assert union["column_lineage"]["amount"]["sources"] == ["orders.amount", "archive_orders.total"]
    scalar = lineage(
        "SELECT o.id, (SELECT MAX(x.amount) FROM refunds x WHERE x.order_id = o.id) AS refund FROM orders o"
    )
    assert scalar["column_lineage"]["refund"] == {"sources": ["refunds.amount"], "transform": "MAX"}
    # A star over a table whose columns nobody gave names nothing; its columns named later still resolve
    star = lineage("WITH c AS (SELECT * FROM customers) SELECT c.name, * FROM c", "orders", ["id"])
    assert star["output_columns"] == ["name"]
    assert star["column_lineage"]["name"]["sources"] == ["customers.name"]


def test_what_is_not_one_select_is_an_error_lineage() -> None:
    assert lineage("SELECT 1; SELECT 2")["error"] == "Expected one SQL statement, got 2"
    assert lineage("DELETE FROM orders")["error"] == "Expected a SELECT query, got DELETE"
    assert "\x1b" not in lineage("SELECT (((")["error"]


def test_a_parenthesised_query_is_read_and_no_parser_failure_escapes() -> None:
    # Given a query in parentheses, Then its columns are read as without them
    assert lineage("(SELECT id FROM orders)")["output_columns"] == ["id"]
    # And SQL that breaks the parser in an unexpected way (nesting past Python's stack) is an error lineage
    deep = "SELECT " + "(" * 5000 + "1" + ")" * 5000 + " AS x FROM orders"
    assert "error" in lineage(deep)


# --- the job, through a real worker ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def config_url() -> Iterator[str]:
    """A config database with the backend's tables and one pipeline destination to hang table syncs from."""
    url = create_database("rj_lineage")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(config_schema_sql())
        conn.execute("INSERT INTO sources (id, name) VALUES (1, 'src')")
        conn.execute("INSERT INTO destinations (id, name, type) VALUES (1, 'dst', 'POSTGRES')")
        conn.execute("INSERT INTO pipelines (id, name, source_id) VALUES (1, 'p', 1)")
        conn.execute("INSERT INTO pipelines_destination (id, pipeline_id, destination_id) VALUES (1, 1, 1)")
    yield url
    drop_database(url)


@pytest.fixture(scope="module")
def worker(config_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("lineage-worker") / "worker.log"
    process = launch_worker(log, threads=2, DATABASE_URL=config_url)
    yield process
    process.stop()


@pytest.fixture
def table_sync(config_url: str) -> Iterator[int]:
    """A table sync the backend has just marked GENERATING; removed with its notifications afterwards."""
    with psycopg.connect(config_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO pipelines_destination_table_sync (pipeline_destination_id, table_name, table_name_target,"
            " lineage_status) VALUES (1, 'orders', 'orders_copy', 'GENERATING') RETURNING id"
        ).fetchone()
        assert row is not None
        sync_id = int(row[0])
    yield sync_id
    with psycopg.connect(config_url, autocommit=True) as conn:
        conn.execute("DELETE FROM pipelines_destination_table_sync WHERE id = %s", (sync_id,))
        conn.execute("DELETE FROM notification_log WHERE key_notification = %s", (f"lineage_error_sync_{sync_id}",))


def row(config_url: str, sync_id: int) -> dict[str, Any]:
    """The table sync as the UI reads it."""
    with psycopg.connect(config_url) as conn:
        found = conn.execute(
            "SELECT lineage_status, lineage_error, lineage_metadata, lineage_generated_at, updated_at"
            " FROM pipelines_destination_table_sync WHERE id = %s",
            (sync_id,),
        ).fetchone()
    assert found is not None
    return dict(zip(("status", "error", "metadata", "generated_at", "updated_at"), found, strict=True))


def notifications(config_url: str, key: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(config_url) as conn:
        return conn.execute(
            "SELECT title, message, type, iteration_check, is_read, is_sent FROM notification_log"
            " WHERE key_notification = %s ORDER BY id",
            (key,),
        ).fetchall()


def run(client: JobClient, *args: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the job; its result and every state the poller could see."""
    task_id = str(uuid.uuid4())
    pubsub = redis.Redis.from_url(redis_url(RESULTS_DB)).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(Keys.meta(task_id))
    client.submit(LINEAGE, args, task_id=task_id)
    result = client.result(task_id).get(timeout=30)
    states: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (states and states[-1]["status"] == "SUCCESS"):
        event = pubsub.get_message(timeout=0.2)
        if event is not None:
            states.append(json.loads(event["data"]))
    pubsub.close()
    return result, states


def test_a_lineage_is_stored_as_the_backend_reads_it(
    worker: WorkerProcess, client: JobClient, config_url: str, table_sync: int
) -> None:
    # Given a table sync the backend marked GENERATING
    sql = "SELECT customer_id, SUM(amount) AS total FROM orders GROUP BY customer_id"
    before = time.time()
    # When the worker generates its lineage
    result, states = run(client, table_sync, sql, "orders", ["id", "customer_id", "amount"])
    # Then the answer is the Celery worker's, and the poller saw its PROGRESS meta
    assert result["success"] is True and result["table_sync_id"] == table_sync
    assert result["lineage"]["output_columns"] == ["customer_id", "total"]
    assert [s["result"] for s in states if s["status"] == "PROGRESS"] == [
        {"status": "parsing", "table_sync_id": table_sync}
    ]
    # And the row holds it: COMPLETED, no error, the dict as JSON, a generation time
    stored = row(config_url, table_sync)
    assert stored["status"] == "COMPLETED" and stored["error"] is None
    assert stored["metadata"] == result["lineage"]
    assert stored["generated_at"].timestamp() >= before - 1
    assert dt.datetime.fromisoformat(stored["metadata"]["parsed_at"]).utcoffset() == dt.timedelta(0)


def test_sql_that_does_not_parse_is_a_completed_lineage_with_its_error(
    worker: WorkerProcess, client: JobClient, config_url: str, table_sync: int
) -> None:
    result, _ = run(client, table_sync, "SELECT FROM WHERE (", "orders", ["id"])
    assert result["success"] is True and result["lineage"]["error"].startswith("Expected table name")
    stored = row(config_url, table_sync)
    assert stored["status"] == "COMPLETED" and stored["metadata"]["error"] == result["lineage"]["error"]
    assert notifications(config_url, f"lineage_error_sync_{table_sync}") == []


def test_a_failure_marks_the_row_failed_and_notifies_as_the_backend_counts(
    worker: WorkerProcess, client: JobClient, config_url: str, table_sync: int
) -> None:
    # Given a lineage the config database refuses to store (jsonb has no \u0000)
    key = f"lineage_error_sync_{table_sync}"
    # When it is generated
    result, states = run(client, table_sync, None, "orders", ["bad\x00column"])
    # Then the job answers success false, as a SUCCESS, and the row is FAILED with the error
    assert states[-1]["status"] == "SUCCESS"
    assert result["success"] is False and result["table_sync_id"] == table_sync
    assert "refused: unsupported Unicode escape sequence" in result["error"]
    stored = row(config_url, table_sync)
    assert stored["status"] == "FAILED" and stored["error"] == result["error"][:1000]
    assert stored["generated_at"] is None
    # And the notification is the Celery worker's: key, title, message, ERROR, unread, unsent
    ((title, message, kind, iteration, is_read, is_sent),) = notifications(config_url, key)
    assert title == "Lineage Generation Failed — orders"
    assert message.startswith(f"Table sync ID {table_sync} (table: orders) lineage generation failed in the worker.")
    assert (kind, iteration, is_read, is_sent) == ("ERROR", 1, False, False)
    # When it fails three more times, Then one row counts to NOTIFICATION_ITERATION_DEFAULT (3), then a new one starts
    for _ in range(3):
        run(client, table_sync, None, "orders", ["bad\x00column"])
    assert [n[3] for n in notifications(config_url, key)] == [3, 1]


def test_a_missing_table_sync_answers_success_false(worker: WorkerProcess, client: JobClient, config_url: str) -> None:
    missing = 987_654
    try:
        result, _ = run(client, missing, "SELECT id FROM orders", "orders", ["id"])
        assert result == {"success": False, "table_sync_id": missing, "error": f"Table sync {missing} not found"}
    finally:
        with psycopg.connect(config_url, autocommit=True) as conn:
            conn.execute("DELETE FROM notification_log WHERE key_notification = %s", (f"lineage_error_sync_{missing}",))


# --- through the Celery ingress ------------------------------------------------------------------------------
def test_the_backends_send_task_reaches_success(
    worker: WorkerProcess, celery_app: Celery, config_url: str, table_sync: int
) -> None:
    # When the backend's WorkerClient.submit_lineage_task sends its four positional args
    sent = celery_app.send_task(
        "worker.lineage.generate",
        args=[table_sync, "SELECT id, amount FROM orders", "orders", ["id", "amount", "status"]],
        queue="default",
    )
    # Then an unchanged AsyncResult reads SUCCESS, and the row is COMPLETED
    result = sent.get(timeout=30)
    assert sent.state == "SUCCESS" and result["success"] is True
    assert row(config_url, table_sync)["metadata"]["output_columns"] == ["id", "amount"]
