"""The preview end to end: a real config database with encrypted passwords, a real PostgreSQL
source holding every type of the spec's matrix, a real worker, and the client."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
import redis

from rosetta_jobs.catalog import config_schema_sql
from rosetta_jobs.client import JobClient
from rosetta_jobs.config import Settings
from rosetta_jobs.crypto import Cipher
from rosetta_jobs.job import Job
from rosetta_jobs.preview import PreviewRequest
from rosetta_jobs.preview.cache import cache_key
from rosetta_jobs.preview.pipeline import PreviewRunner

from .conftest import (
    CACHE_DB,
    CORPUS,
    PG_ADMIN_URL,
    TEST_KEY,
    WorkerProcess,
    create_database,
    drop_database,
    launch_worker,
    redis_url,
    wait_until,
)

NASTY_PASSWORD = "p@ss w:rd/'%\\x"
LEAKY_PASSWORD = "Leaky-Secret-4242"

TYPES_TABLE = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE public.everything (
    id int PRIMARY KEY, small smallint, big bigint, num numeric(18,3), wide numeric(38,10), dbl double precision,
    flag boolean, txt text, js jsonb, uid uuid, d date, t time, ts timestamp, tstz timestamptz, iv interval,
    bin bytea, ints int[], mood mood
);
INSERT INTO public.everything VALUES
 (1, -5, 9007199254740993, 123.456, 12345678901234567890.0123456789, 'NaN', true, 'hello', '{"a": [1, 2]}',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '13:45:01.5', '2024-01-02 03:04:05.123456',
  '2024-01-02 03:04:05+07', '1 day 2 hours', '\\xdead', '{1,2,3}', 'happy'),
 (2, NULL, NULL, NULL, NULL, 'Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"""


@dataclass
class Fixture:
    config_url: str
    source_url: str
    source_id: int
    nasty_source_id: int
    bad_key_source_id: int
    leaky_source_id: int
    destination_id: int


@pytest.fixture(scope="module")
def databases() -> Iterator[Fixture]:
    """A source database (orders, everything, secrets, schema other) and a config database pointing at it."""
    source_url = create_database("rj_src")
    config_url = create_database("rj_cfg")
    with psycopg.connect(source_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.orders (id int PRIMARY KEY, name text, status text, amount numeric(10,2),"
            " created_at timestamptz)"
        )
        conn.execute(
            "INSERT INTO public.orders SELECT g, 'name ' || g, (ARRAY['NEW','PAID'])[1 + g % 2], g * 1.5,"
            " timestamptz '2026-01-01 00:00+00' + g * interval '1 hour' FROM generate_series(1, 2000) g"
        )
        conn.execute("CREATE TABLE public.secrets (id int, secret text); INSERT INTO public.secrets VALUES (1, 'x')")
        conn.execute("CREATE SCHEMA other; CREATE TABLE other.orders (id int); INSERT INTO other.orders VALUES (1)")
        conn.execute(TYPES_TABLE)
    cipher = Cipher(TEST_KEY)
    database = source_url.rsplit("/", 1)[1]
    with psycopg.connect(config_url, autocommit=True) as conn:
        conn.execute(config_schema_sql())

        def add(name: str, token: str, host: str = "127.0.0.1", port: int = 5432) -> int:
            row = conn.execute(
                "INSERT INTO sources (name, pg_host, pg_port, pg_database, pg_username, pg_password)"
                " VALUES (%s, %s, %s, %s, 'postgres', %s) RETURNING id",
                (name, host, port, database, token),
            ).fetchone()
            assert row is not None
            return int(row[0])

        fixture = Fixture(
            config_url=config_url,
            source_url=source_url,
            source_id=add("Main DB", cipher.encrypt("unused-with-trust-auth")),
            nasty_source_id=add("nasty", cipher.encrypt(NASTY_PASSWORD)),
            bad_key_source_id=add("bad key", Cipher("0123456789abcdef0123456789abcdef").encrypt("x")),
            leaky_source_id=add("leaky", cipher.encrypt(LEAKY_PASSWORD), port=1),
            destination_id=int(
                conn.execute(
                    "INSERT INTO destinations (name, type, config) VALUES ('wh', 'POSTGRES', '{}') RETURNING id"
                ).fetchone()[0]  # type: ignore[index]
            ),
        )
    yield fixture
    drop_database(config_url)
    drop_database(source_url)


@pytest.fixture(scope="module")
def worker(databases: Fixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker for the module: starting one costs seconds, and previews do not change it."""
    log = tmp_path_factory.mktemp("preview-worker") / "worker.log"
    process = launch_worker(log, threads=2, DATABASE_URL=databases.config_url, PREVIEW_CACHE_TTL="300")
    yield process
    process.stop()


def preview(client: JobClient, *args: object, timeout: float = 60, **kwargs: object) -> dict:
    task_id = client.submit_preview(*args, **kwargs)  # type: ignore[arg-type]
    result = client.result(task_id).get(timeout=timeout)
    assert isinstance(result, dict)
    json.dumps(result, allow_nan=False)  # what the backend's FastAPI will do with it
    return result


def test_whole_table_preview(worker: WorkerProcess, client: JobClient, databases: Fixture) -> None:
    # When the backend asks for the table without custom SQL
    result = preview(client, None, databases.source_id, databases.destination_id, "orders")
    # Then it gets the first PREVIEW_ROW_LIMIT rows with typed labels
    assert result["error"] is None
    assert result["columns"] == ["id", "name", "status", "amount", "created_at"]
    assert result["column_types"] == ["number", "text", "text", "number", "date"]
    assert len(result["data"]) == 500
    assert result["data"][0]["created_at"].endswith("+00:00")


def test_custom_sql_with_v2_filter_and_schema_qualified_table(
    worker: WorkerProcess, client: JobClient, databases: Fixture
) -> None:
    flt = json.dumps(
        {"version": 2, "groups": [{"conditions": [{"column": "status", "operator": "=", "value": "PAID"}]}]}
    )
    sql = "SELECT orders.status, count(*) AS n FROM public.orders GROUP BY orders.status -- trailing comment"
    result = preview(client, sql, databases.source_id, databases.destination_id, "public.orders", flt)
    assert result["error"] is None
    assert result["data"] == [{"status": "PAID", "n": 500}]  # the filter applies before the row limit


def test_preview_progress_meta(worker: WorkerProcess, client: JobClient, databases: Fixture) -> None:
    results = client.store.client
    task_id = str(uuid.uuid4())
    pubsub = results.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"celery-task-meta-{task_id}")
    client.send("worker.preview.execute", ("SELECT 1 AS one FROM orders", databases.source_id,
                databases.destination_id, "orders"), queue_name="preview", task_id=task_id)  # fmt: skip
    seen = []
    deadline = time.monotonic() + 30
    while (not seen or seen[-1]["status"] != "SUCCESS") and time.monotonic() < deadline:
        event = pubsub.get_message(timeout=0.5)
        if event is not None:
            seen.append(json.loads(event["data"]))
    pubsub.close()
    assert {"status": "executing", "table_name": "orders"} in [e["result"] for e in seen if e["status"] == "PROGRESS"]


def test_a_fresh_preview_says_progress_while_it_runs_and_is_cached_once_its_job_ended(databases: Fixture) -> None:
    # Given this process's preview runner over the module's databases, and a job that records its PROGRESS
    settings = Settings(_env_file=None, database_url=databases.config_url, credential_encryption_key=TEST_KEY,
                        redis_url=redis_url(CACHE_DB), duckdb_max_concurrent=1)  # fmt: skip
    runner = PreviewRunner.from_settings(settings)
    progress: list[tuple[dict, int]] = []  # each PROGRESS meta, and how many executors ran a preview then

    def write(job: Job, meta: dict) -> None:
        progress.append((meta, runner.executors.busy()))

    job = Job(id=str(uuid.uuid4()), actor="worker.preview.execute", queue="preview", time_limit=30,
              deadline=time.monotonic() + 30, progress_writer=write)  # fmt: skip
    request = PreviewRequest.from_arguments("SELECT id FROM orders ORDER BY id LIMIT 3", databases.source_id,
                                            databases.destination_id, "orders", None, False, row_limit=500)  # fmt: skip
    try:
        # When a preview no cache holds runs under the job
        answer = runner.run(request, job=job)
        # Then its PROGRESS was written once, while the executor had it
        assert progress == [({"status": "executing", "table_name": "orders"}, 1)]
        # And it is cached once the job ended (after its SUCCESS, which the client waits for), not before
        assert runner.cache.get(request) is None
        job.ended()
        cached = runner.cache.get(request)
        assert cached is not None and cached.data == answer.data and cached["data"] == [{"id": 1}, {"id": 2}, {"id": 3}]
    finally:
        runner.cache.client.delete(cache_key(request))  # type: ignore[union-attr]
        runner.close()


@pytest.mark.parametrize("case", [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()],
                         ids=lambda case: case["why"])  # fmt: skip
def test_corpus_case(worker: WorkerProcess, client: JobClient, databases: Fixture, case: dict) -> None:
    # Given a case of the shared corpus, When it is previewed on the table orders
    result = preview(client, case["sql"], databases.source_id, databases.destination_id, "orders")
    # Then allow cases return rows and deny cases come back as an error with nothing read
    if case["expect"] == "allow":
        assert result["error"] is None, result["error"]
        assert result["columns"]
    else:
        assert result["error"], f"{case['sql']!r} was not denied"
        assert result["data"] == [] and result["columns"] == []


def test_every_type_serialises_to_strict_json(worker: WorkerProcess, client: JobClient, databases: Fixture) -> None:
    result = preview(client, "SELECT * FROM everything ORDER BY id", databases.source_id, databases.destination_id,
                     "everything")  # fmt: skip
    assert result["error"] is None, result["error"]
    labels = dict(zip(result["columns"], result["column_types"], strict=True))
    first, second = result["data"]
    assert labels["big"] == "number" and labels["flag"] == "boolean" and labels["d"] == "date"
    assert labels["ts"] == "date" and labels["txt"] == "text"
    assert str(first["big"]) == "9007199254740993"  # beyond 2^53: never a rounded float
    assert first["num"] == pytest.approx(123.456)
    assert first["dbl"] is None and second["dbl"] is None  # NaN and Infinity
    assert first["d"] == "2024-02-29" and first["t"] == "13:45:01.500000"
    assert first["ts"] == "2024-01-02T03:04:05.123456"
    assert first["tstz"] == "2024-01-01T20:04:05+00:00"
    assert first["bin"] == "3q0="
    assert first["ints"] == [1, 2, 3] and first["mood"] == "happy"
    assert first["uid"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert all(value is None for key, value in second.items() if key not in ("id", "dbl"))
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in first.values())


def test_cache_hit_returns_the_same_json(worker: WorkerProcess, client: JobClient, databases: Fixture) -> None:
    cache = redis.Redis.from_url(redis_url(CACHE_DB))
    args = ("SELECT id, amount FROM orders WHERE id < 4 ORDER BY id", databases.source_id, databases.destination_id,
            "orders")  # fmt: skip
    fresh = preview(client, *args)
    wait_until(lambda: cache.keys("preview:*"), 5, "the answer cached (right after its SUCCESS)")
    keys = cache.keys("preview:*")
    again = preview(client, *args)
    profiled = preview(client, *args, include_profiling=True)
    assert fresh == again and fresh["error"] is None
    assert len(keys) == 1 and 0 < cache.ttl(keys[0]) <= 300
    assert "profile" in profiled and "profile" not in fresh  # profiling is part of the key
    wait_until(lambda: len(cache.keys("preview:*")) == 2, 5, "the profiled answer cached apart")


def test_errors_come_back_as_results(worker: WorkerProcess, client: JobClient, databases: Fixture) -> None:
    cases = {
        (None, 999_999, databases.destination_id, "orders"): "Source 999999 not found",
        (None, databases.source_id, 999_999, "orders"): "Destination 999999 not found",
        (None, databases.bad_key_source_id, databases.destination_id, "orders"): "Decryption failed",
        ("SELECT nope FROM orders", databases.source_id, databases.destination_id, "orders"): "nope",
    }
    for args, message in cases.items():
        result = preview(client, *args)
        assert result == {"columns": [], "column_types": [], "data": [], "error": result["error"]}
        assert message in result["error"], result["error"]


def test_password_with_special_characters_attaches(
    worker: WorkerProcess, client: JobClient, databases: Fixture
) -> None:
    # Trust auth ignores the password's value, but the ATTACH string must still parse with it.
    result = preview(client, None, databases.nasty_source_id, databases.destination_id, "orders")
    assert result["error"] is None and len(result["data"]) == 500


def test_password_never_leaks(worker: WorkerProcess, client: JobClient, databases: Fixture) -> None:
    result = preview(client, None, databases.leaky_source_id, databases.destination_id, "orders")
    assert result["error"].startswith("Could not connect to source database")
    assert LEAKY_PASSWORD not in json.dumps(result)
    assert LEAKY_PASSWORD not in worker.output()


def test_time_limit_interrupts_the_query(worker: WorkerProcess, client: JobClient, databases: Fixture) -> None:
    # Given a query that would run for minutes
    sql = "SELECT count(*) AS n FROM orders a, orders b, orders c, orders d"
    started = time.monotonic()
    # When it is sent with a 1 s limit
    result = preview(client, sql, databases.source_id, databases.destination_id, "orders", time_limit=1)
    # Then DuckDB is interrupted and the preview answers the timeout within about a second
    assert result["error"] == "Preview timed out after 1 s"
    assert time.monotonic() - started < 4
    assert preview(client, None, databases.source_id, databases.destination_id, "orders")["error"] is None


def test_cancel_interrupts_a_running_preview(worker: WorkerProcess, client: JobClient, databases: Fixture) -> None:
    sql = "SELECT count(*) AS n FROM orders a, orders b, orders c, orders d"
    task_id = client.submit_preview(sql, databases.source_id, databases.destination_id, "orders")
    deadline = time.monotonic() + 20
    while client.get_task_status(task_id)["state"] != "PROGRESS" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert client.cancel(task_id)["cancelled"] is True
    started = time.monotonic()
    # Then both worker threads are free again quickly (the interrupted query released its thread)
    follow_ups = [client.submit_preview(None, databases.source_id, databases.destination_id, "orders")
                  for _ in range(2)]  # fmt: skip
    for follow_up in follow_ups:
        client.result(follow_up).get(timeout=20)
    assert time.monotonic() - started < 3
    time.sleep(0.5)
    assert client.get_task_status(task_id)["state"] == "REVOKED"
    assert PG_ADMIN_URL  # the shared server still answers (the interrupted scan was released)
