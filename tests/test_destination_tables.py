"""``worker.destination_table_list.fetch``: a real destination database (tables, a view, other schemas), the
real config tables, a real worker, and the backend's cache key in the cache Redis."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import redis
from celery import Celery

from rosetta_jobs.catalog import config_schema_sql
from rosetta_jobs.client import JobClient
from rosetta_jobs.contracts import DESTINATION_TABLE_LIST
from rosetta_jobs.crypto import Cipher
from rosetta_jobs.layout import BackendKeys, DramatiqKeys, Keys
from rosetta_jobs.retrying import retry_options

from .conftest import (
    CACHE_DB,
    RESULTS_DB,
    TEST_KEY,
    WorkerProcess,
    create_database,
    drop_database,
    launch_worker,
    redis_url,
    wait_until,
)

#: Short retry delays for the tests (a message's options win over the actor's 10 s).
FAST_RETRY = {"min_backoff": 100, "max_backoff": 200}
PASSWORD = "tr0ub4dor&3 'x'"


@dataclass
class Destinations:
    config_url: str
    postgres: int
    sales: int
    unreachable: int
    no_database: int
    bad_key: int
    snowflake: int
    kafka: int


@pytest.fixture(scope="module")
def destinations() -> Iterator[Destinations]:
    """A destination database and a config database whose destinations point at it in every way."""
    target_url = create_database("rj_dest")
    config_url = create_database("rj_cfg")
    with psycopg.connect(target_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.orders (id int); CREATE TABLE public.customers (id int)")
        conn.execute("CREATE VIEW public.v_orders AS SELECT * FROM public.orders")
        conn.execute("CREATE MATERIALIZED VIEW public.mv_orders AS SELECT * FROM public.orders")
        conn.execute("CREATE SCHEMA sales; CREATE TABLE sales.invoices (id int); CREATE TABLE sales.refunds (id int)")
        conn.execute("CREATE VIEW sales.v_invoices AS SELECT * FROM sales.invoices")
    cipher = Cipher(TEST_KEY)
    database = target_url.rsplit("/", 1)[1]
    with psycopg.connect(config_url, autocommit=True) as conn:
        conn.execute(config_schema_sql())

        def add(kind: str, token: str | None = None, **config: Any) -> int:
            settings = {"host": "127.0.0.1", "port": 5432, "database": database, "user": "postgres", **config}
            settings["password"] = token if token is not None else cipher.encrypt(PASSWORD)
            row = conn.execute(
                "INSERT INTO destinations (name, type, config, list_tables, total_tables)"
                " VALUES (%s, %s, %s, '[\"old\"]', 1) RETURNING id",
                (f"{kind.lower()}-{uuid.uuid4().hex[:6]}", kind, json.dumps(settings)),
            ).fetchone()
            assert row is not None
            return int(row[0])

        fixture = Destinations(
            config_url=config_url,
            postgres=add("POSTGRES"),
            sales=add("postgresql", schema="sales"),
            unreachable=add("POSTGRES", port=1),
            no_database=add("POSTGRES", database="rj_no_such_database"),
            bad_key=add("POSTGRES", token=Cipher("0123456789abcdef0123456789abcdef").encrypt("x")),
            snowflake=add("SNOWFLAKE", account="acme", warehouse="wh"),
            kafka=add("KAFKA"),
        )
    yield fixture
    drop_database(config_url)
    drop_database(target_url)


@pytest.fixture(scope="module")
def worker(destinations: Destinations, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("tables-worker") / "worker.log"
    process = launch_worker(log, threads=2, DATABASE_URL=destinations.config_url)
    yield process
    process.stop()


@pytest.fixture
def cache(redis_dbs: None) -> redis.Redis:
    """The backend's cache Redis (``REDIS_URL`` of the worker), emptied around each test."""
    return redis.Redis.from_url(redis_url(CACHE_DB))


def stored(config_url: str, destination_id: int) -> tuple[Any, ...]:
    with psycopg.connect(config_url) as conn:
        row = conn.execute(
            "SELECT list_tables, total_tables, last_table_check_at FROM destinations WHERE id = %s", (destination_id,)
        ).fetchone()
    assert row is not None
    return tuple(row)


def notifications(config_url: str, destination_id: int) -> list[tuple[Any, ...]]:
    with psycopg.connect(config_url) as conn:
        return conn.execute(
            "SELECT title, message, iteration_check FROM notification_log WHERE key_notification = %s",
            (f"destination_table_list_error_{destination_id}",),
        ).fetchall()


def fetch(client: JobClient, destination_id: int, **options: Any) -> list[dict[str, Any]]:
    """Run the job and return every state written for it, up to the final one."""
    task_id = str(uuid.uuid4())
    pubsub = redis.Redis.from_url(redis_url(RESULTS_DB)).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(Keys.meta(task_id))
    client.submit(DESTINATION_TABLE_LIST, [destination_id], task_id=task_id, options=options or None)
    states: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (states and states[-1]["status"] in ("SUCCESS", "FAILURE")):
        event = pubsub.get_message(timeout=0.5)
        if event is not None:
            states.append(json.loads(event["data"]))
    pubsub.close()
    return states


def statuses(states: list[dict[str, Any]]) -> list[str]:
    return [s["status"] for s in states if s["status"] in ("RETRY", "SUCCESS", "FAILURE")]


def test_a_postgres_destination_is_listed_stored_and_cached(
    worker: WorkerProcess, client: JobClient, destinations: Destinations, cache: redis.Redis
) -> None:
    # Given a destination whose database has tables, views, a materialized view and another schema
    before = dt.datetime.now(dt.UTC)
    # When its table list is fetched
    states = fetch(client, destinations.postgres)
    # Then the base tables of public are the answer, after the Celery worker's PROGRESS meta
    assert states[-1]["status"] == "SUCCESS"
    assert states[-1]["result"] == {
        "destination_id": destinations.postgres,
        "total_tables": 2,
        "tables": ["customers", "orders"],
        "error": None,
    }
    assert [s["result"] for s in states if s["status"] == "PROGRESS"] == [
        {"status": "fetching", "destination_id": destinations.postgres}
    ]
    # And the destination row holds them, with the time of the check
    tables, total, checked = stored(destinations.config_url, destinations.postgres)
    assert (tables, total) == (["customers", "orders"], 2)
    assert checked >= before - dt.timedelta(seconds=1)
    # And the backend's cache key holds the JSON list for 600 s
    key = BackendKeys.destination_tables(destinations.postgres)
    assert key == f"destination:{destinations.postgres}:tables"
    assert json.loads(cache.get(key) or b"null") == ["customers", "orders"]
    assert 590 <= cache.ttl(key) <= 600


def test_the_configured_schema_of_a_postgresql_destination_is_listed(
    worker: WorkerProcess, client: JobClient, destinations: Destinations, cache: redis.Redis
) -> None:
    # Given a destination of type "postgresql" configured with schema "sales" (the Celery worker saw only public)
    states = fetch(client, destinations.sales)
    # Then the tables of sales are listed, and its view is not
    assert states[-1]["result"]["tables"] == ["invoices", "refunds"]
    assert stored(destinations.config_url, destinations.sales)[:2] == (["invoices", "refunds"], 2)


def test_a_missing_destination_is_retried_then_fails(
    worker: WorkerProcess, client: JobClient, destinations: Destinations
) -> None:
    # When a destination that does not exist is asked for
    states = fetch(client, 424_242, **FAST_RETRY)
    # Then the poller sees RETRY twice (the Celery worker's max_retries), then FAILURE with its message
    assert statuses(states) == ["RETRY", "RETRY", "FAILURE"]
    assert states[-1]["result"]["exc_type"] == "DestinationNotFound"
    assert states[-1]["result"]["exc_message"] == ["Destination 424242 not found"]


def test_an_unreachable_destination_is_retried_then_answers_its_error(
    worker: WorkerProcess, client: JobClient, destinations: Destinations, cache: redis.Redis
) -> None:
    # Given a destination nothing listens for (port 1)
    try:
        # When its table list is fetched
        states = fetch(client, destinations.unreachable, **FAST_RETRY)
        # Then it is retried twice, and the last attempt answers the error as the Celery worker did (SUCCESS)
        assert statuses(states) == ["RETRY", "RETRY", "SUCCESS"]
        result = states[-1]["result"]
        assert (result["total_tables"], result["tables"]) == (0, [])
        assert result["error"].startswith(f"Could not reach destination {destinations.unreachable}")
        assert PASSWORD not in json.dumps(states)
        # And the old list is kept, the check is recorded, nothing is cached, and the UI is told
        tables, total, checked = stored(destinations.config_url, destinations.unreachable)
        assert (tables, total) == (["old"], 1) and checked is not None
        assert cache.exists(BackendKeys.destination_tables(destinations.unreachable)) == 0
        ((title, message, iteration),) = notifications(destinations.config_url, destinations.unreachable)
        assert title.startswith("Destination Table List Failed — postgres-") and iteration == 1
        assert "Could not reach" in message
    finally:
        with psycopg.connect(destinations.config_url, autocommit=True) as conn:
            conn.execute("DELETE FROM notification_log")


def test_a_destination_that_refuses_is_answered_at_once(
    worker: WorkerProcess, client: JobClient, destinations: Destinations
) -> None:
    try:
        # When the destination's database does not exist, or its password does not decrypt
        missing_db = fetch(client, destinations.no_database, **FAST_RETRY)
        bad_key = fetch(client, destinations.bad_key, **FAST_RETRY)
        # Then each answers its error at once: no retry can help
        assert statuses(missing_db) == ["SUCCESS"] and statuses(bad_key) == ["SUCCESS"]
        assert "rj_no_such_database" in missing_db[-1]["result"]["error"]
        assert bad_key[-1]["result"]["error"] == "Decryption failed: "
        assert len(notifications(destinations.config_url, destinations.no_database)) == 1
    finally:
        with psycopg.connect(destinations.config_url, autocommit=True) as conn:
            conn.execute("DELETE FROM notification_log")


def test_snowflake_and_other_types_answer_an_error_and_keep_the_old_list(
    worker: WorkerProcess, client: JobClient, destinations: Destinations, cache: redis.Redis
) -> None:
    # When a Snowflake and a Kafka destination are refreshed
    snowflake = fetch(client, destinations.snowflake)[-1]
    kafka = fetch(client, destinations.kafka)[-1]
    assert snowflake["status"] == kafka["status"] == "SUCCESS"
    assert snowflake["result"]["error"].startswith("Snowflake destinations are not supported by this worker yet")
    assert kafka["result"] == {
        "destination_id": destinations.kafka,
        "total_tables": 0,
        "tables": [],
        "error": "Unsupported destination type: KAFKA",
    }
    # Then both keep their old list and cache nothing
    for destination_id in (destinations.snowflake, destinations.kafka):
        assert stored(destinations.config_url, destination_id)[:2] == (["old"], 1)
        assert cache.exists(BackendKeys.destination_tables(destination_id)) == 0
    # And Snowflake's gap is visible where people look (nobody reads the result): a check time and a notification
    assert stored(destinations.config_url, destinations.snowflake)[2] is not None
    assert len(notifications(destinations.config_url, destinations.snowflake)) == 1
    assert notifications(destinations.config_url, destinations.kafka) == []
    with psycopg.connect(destinations.config_url, autocommit=True) as conn:
        conn.execute("DELETE FROM notification_log")


def test_a_retry_waits_at_least_the_celery_countdown(
    worker: WorkerProcess, client: JobClient, broker_redis: redis.Redis
) -> None:
    # Given the actor's own retry options (no shortening in the message)
    assert retry_options(max_retries=2, min_backoff_ms=10_000) | {"retry_when": None} == {
        "retry_when": None,
        "min_backoff": 10_000,
        "max_backoff": 20_000,
    }
    task_id = client.submit(DESTINATION_TABLE_LIST, [515_151])
    try:
        # When its first attempt fails
        wait_until(lambda: client.get_task_status(task_id)["state"] == "RETRY", timeout=20, what="RETRY")
        # Then the message waits in the delay queue for 10 to 20 s, as Celery's countdown of 10 s
        delayed = DramatiqKeys().delayed_messages("default")
        messages = [json.loads(raw) for raw in broker_redis.hvals(delayed)]
        (message,) = [m for m in messages if m["message_id"] == task_id]
        delay = message["options"]["eta"] - time.time() * 1000
        assert 8_000 <= delay <= 20_000, delay
    finally:
        client.cancel(task_id)


# --- through the Celery ingress ------------------------------------------------------------------------------
def test_the_backends_send_task_reaches_success(
    worker: WorkerProcess, celery_app: Celery, destinations: Destinations, cache: redis.Redis
) -> None:
    # When the backend's refresh button sends its one positional arg
    sent = celery_app.send_task("worker.destination_table_list.fetch", args=[destinations.postgres], queue="default")
    # Then an unchanged AsyncResult reads SUCCESS, and the backend's cache key is there
    assert sent.get(timeout=30)["tables"] == ["customers", "orders"]
    assert sent.state == "SUCCESS"
    assert cache.exists(BackendKeys.destination_tables(destinations.postgres)) == 1
