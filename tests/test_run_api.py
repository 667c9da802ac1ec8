"""The run API over real HTTP: submit a preview, follow it by SSE, page through its rows, stream caps per user."""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

from rosetta_jobs.client import JobClient
from rosetta_jobs.contracts import PREVIEW
from rosetta_jobs.job import RunningJobs
from rosetta_jobs.middleware.state import TaskState
from rosetta_jobs.redact import sql_digest, sql_sha256
from rosetta_jobs.store import TaskStore

from .conftest import (
    BROKER_DB,
    CACHE_DB,
    RESULTS_DB,
    WorkerProcess,
    flush_redis_dbs,
    launch_worker,
    redis_url,
    wait_until,
    worker_env,
)
from .support.ops_service import ADMIN_KEY, API_KEY, ServiceProcess, start_service
from .support.previewdb import PreviewDatabases

AUTH = {"x-api-key": API_KEY}
#: The service's and the worker's log files, for the tests that read what was logged.
stack_logs: list[Path] = []


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, databases: PreviewDatabases) -> Iterator[ServiceProcess]:
    """The service (keep-alive 0.5 s) and one preview worker on the seeded config database."""
    flush_redis_dbs()
    logs = tmp_path_factory.mktemp("run-api")
    env = {"API_KEY": API_KEY, "ADMIN_API_KEY": ADMIN_KEY, "ROSETTA_SSE_KEEPALIVE": "0.5",
           "DATABASE_URL": databases.config_url}  # fmt: skip
    svc = start_service(worker_env(**env), logs / "service.log")
    worker: WorkerProcess | None = None
    try:
        worker = launch_worker(logs / "worker.log", threads=2, PREVIEW_CACHE_TTL="300", **env)
        stack_logs.extend([svc.log, worker.log])
        yield svc
    finally:
        if worker is not None:
            worker.stop()
        svc.stop()
        flush_redis_dbs()


def _preview(svc: ServiceProcess, databases: PreviewDatabases, **body: object) -> httpx.Response:
    doc = {"sql": "SELECT * FROM orders ORDER BY id", "source_id": databases.source_id,
           "destination_id": databases.destination_id, "table_name": "orders", **body}  # fmt: skip
    return httpx.post(svc.url + "/tasks/preview", json=doc, headers=AUTH, timeout=10)


def _events(svc: ServiceProcess, task_id: str, timeout: float = 60.0) -> list[str]:
    states = []
    with httpx.stream("GET", f"{svc.url}/tasks/{task_id}/events", headers=AUTH, timeout=timeout) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                states.append(json.loads(line[6:])["state"])
    return states


def test_a_preview_submitted_over_http_is_followed_and_paged(
    stack: ServiceProcess, databases: PreviewDatabases
) -> None:
    # Given a preview of the 500 rows the preview reads, submitted over HTTP
    submitted = _preview(stack, databases)
    assert submitted.status_code == 202, submitted.text
    task_id = submitted.json()["task_id"]

    # When its stream is followed to the end, and its rows are read page by page
    states = _events(stack, task_id)
    pages = {
        page: httpx.get(f"{stack.url}/tasks/{task_id}/result?page={page}", headers=AUTH, timeout=10).json()
        for page in (1, 2, 11)
    }
    big = httpx.get(f"{stack.url}/tasks/{task_id}/result?page=1&page_size=500", headers=AUTH, timeout=10).json()

    # Then the stream ends SUCCESS, and each page has its 50 rows, the past-the-end one none, all with totals
    assert states[-1] == "SUCCESS", states
    first, second, past = pages[1], pages[2], pages[11]
    assert [row["id"] for row in first["rows"]] == list(range(1, 51))
    assert [row["id"] for row in second["rows"]] == list(range(51, 101))
    assert past["rows"] == [] and past["error"] is None
    for page in (first, second, past):
        assert (page["total_rows"], page["pages"], page["page_size"]) == (500, 10, 50)
        assert page["columns"] == ["id", "status", "amount"] and len(page["column_types"]) == 3
    assert len(big["rows"]) == 500 and big["pages"] == 1


@pytest.mark.parametrize("query", ["page=0", "page=abc", "page=51", "page=1&page_size=0", "page=1&page_size=501"])
def test_a_bad_page_is_422(stack: ServiceProcess, query: str) -> None:
    # Given any task id; When a page out of bounds, or junk, is asked for
    response = httpx.get(f"{stack.url}/tasks/{uuid.uuid4()}/result?{query}", headers=AUTH, timeout=10)
    # Then it is 422, not an empty page and never a 500
    assert response.status_code == 422, response.text


def test_a_page_of_an_unfinished_task_says_it_is_not_ready(stack: ServiceProcess) -> None:
    # Given a task id nobody submitted; When its first page is read
    body = httpx.get(f"{stack.url}/tasks/{uuid.uuid4()}/result?page=1", headers=AUTH, timeout=10).json()
    # Then it is an empty page of a PENDING task
    assert (body["state"], body["ready"], body["rows"], body["total_rows"]) == ("PENDING", False, [], 0)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"source_id": None}, "source_id"),
        ({"source_id": "1"}, "source_id"),
        ({"table_name": ""}, "table_name"),
        ({"include_profiling": "yes"}, "include_profiling"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_malformed_body_is_422_naming_the_field(
    stack: ServiceProcess, databases: PreviewDatabases, change: dict[str, object], field: str
) -> None:
    # Given a preview body with one field wrong; When it is submitted
    response = _preview(stack, databases, **change)
    # Then it is refused with 422, and the error names the field
    assert response.status_code == 422, response.text
    assert any(field in detail["loc"] for detail in response.json()["detail"]), response.text


def test_an_unknown_source_is_the_previews_own_error(stack: ServiceProcess, databases: PreviewDatabases) -> None:
    # Given a preview of a source that does not exist
    submitted = _preview(stack, databases, source_id=987654)
    assert submitted.status_code == 202, submitted.text
    task_id = submitted.json()["task_id"]

    # When it has run
    states = _events(stack, task_id)
    result = httpx.get(f"{stack.url}/tasks/{task_id}/result", headers=AUTH, timeout=10).json()

    # Then the task carries the preview's error about the source, and the service never failed
    assert states[-1] in ("SUCCESS", "FAILURE")
    message = json.dumps(result)
    assert "987654" in message or "source" in message.lower(), result


def test_submits_count_against_the_x_user_id(stack: ServiceProcess, databases: PreviewDatabases) -> None:
    # Given a user id in the x-user-id header
    headers = {**AUTH, "x-user-id": "Run-User"}
    # When a preview is submitted with it
    response = httpx.post(stack.url + "/tasks/preview", headers=headers, timeout=10, json={
        "sql": None, "source_id": databases.source_id, "destination_id": databases.destination_id,
        "table_name": "orders"})  # fmt: skip
    # Then it is accepted and runs to its end
    assert response.status_code == 202, response.text
    _events(stack, response.json()["task_id"])


@contextlib.contextmanager
def _open_stream(svc: ServiceProcess, user: str) -> Iterator[httpx.Response]:
    """An SSE stream of a task that never ends (an unknown id stays PENDING), kept open until the block ends."""
    with httpx.Client(timeout=10) as http:
        headers = {**AUTH, "x-user-id": user}
        with http.stream("GET", f"{svc.url}/tasks/{uuid.uuid4()}/events", headers=headers) as response:
            yield response


def test_a_user_gets_at_most_five_streams(stack: ServiceProcess) -> None:
    with contextlib.ExitStack() as held:
        # Given five open streams of one user
        streams = [held.enter_context(_open_stream(stack, "stream-user")) for _ in range(5)]
        assert [s.status_code for s in streams] == [200] * 5

        # When a sixth is opened by the same user (spelled otherwise), and one by another user
        with _open_stream(stack, "STREAM-USER") as sixth, _open_stream(stack, "other-user") as other:
            # Then the sixth is refused naming the limit, the other user's is served
            assert sixth.status_code == 429
            assert "MAX_STREAMS_PER_USER" in sixth.read().decode()
            assert other.status_code == 200

        # When one of the five is closed
        streams[0].close()

        # Then the next stream of that user gets in at once
        def admitted() -> bool:
            with _open_stream(stack, "stream-user") as again:
                return again.status_code == 200

        assert wait_until(admitted, timeout=3, what="a freed stream slot") < 3


def test_no_input_to_the_run_api_makes_it_fail(stack: ServiceProcess) -> None:
    # Given the run API's operations in the service's schema
    schema = schemathesis.openapi.from_url(stack.url + "/openapi.json").include(
        path_regex=r"/tasks/(preview|\{task_id\}/result)$"
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 2
    headers = {**AUTH, "x-user-id": "property-user"}

    # When each gets generated requests
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck), database=None)  # fmt: skip
        def call(case: schemathesis.Case) -> None:
            # Then none is answered with a server error
            case.call_and_validate(base_url=stack.url, headers=headers, checks=[not_a_server_error], timeout=10)

        call()


def _dump(db: int) -> str:
    """Every key of a Redis database and every value in it, as one text to search."""
    client = redis.Redis.from_url(redis_url(db))
    parts: list[str] = []
    readers = {"string": "get", "hash": "hgetall", "list": "lrange", "set": "smembers", "zset": "zrange"}
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        reader = getattr(client, readers.get(kind, "type"))
        value = reader(key, 0, -1) if kind in ("list", "zset") else reader(key)
        parts.append(f"{key!r} {value!r}")
    client.close()
    return "\n".join(parts)


def test_the_sql_is_kept_as_its_sha256(stack: ServiceProcess, databases: PreviewDatabases) -> None:
    # Given a preview whose SQL carries a marker, run over HTTP, and one that ends dead-lettered (a bad call)
    marker = f"MARKER-{uuid.uuid4().hex[:10]}"
    sql = f"SELECT id, status FROM orders WHERE status <> '{marker}' ORDER BY id"
    task_id = _preview(stack, databases, sql=sql).json()["task_id"]
    assert _events(stack, task_id)[-1] == "SUCCESS"
    client = JobClient(broker_url=redis_url(BROKER_DB), result_backend_url=redis_url(RESULTS_DB))
    dead_id = client.send("worker.preview.execute", (sql, 1, 1, "orders", None, False, "one too many"),
                          queue_name="preview")  # fmt: skip
    admin = {"x-admin-key": ADMIN_KEY}
    wait_until(lambda: httpx.get(f"{stack.url}/admin/api/queues/preview/dead-letters", headers=admin).json(),
               what="the dead letter")  # fmt: skip

    # When the task state, the cache, the dead-letter listing, /metrics and the logs are read
    meta = json.loads(redis.Redis.from_url(redis_url(RESULTS_DB)).get(f"celery-task-meta-{task_id}") or b"{}")
    letters = httpx.get(f"{stack.url}/admin/api/queues/preview/dead-letters", headers=admin, timeout=10)
    overview = httpx.get(f"{stack.url}/admin/api/overview", headers=admin, timeout=10)
    metrics = httpx.get(f"{stack.url}/metrics", timeout=10)
    stored = _dump(RESULTS_DB) + _dump(CACHE_DB)

    # Then the marker is nowhere, and the SQL's SHA-256 stands where the SQL was
    digest = hashlib.sha256(sql.encode()).hexdigest()
    assert meta["sql_sha256"] == digest and meta["args"][0] == f"sha256:{digest[:12]}", meta
    assert [letter["task_id"] for letter in letters.json()] == [dead_id]
    assert letters.json()[0]["sql_sha256"] == digest
    for text in (stored, letters.text, overview.text, metrics.text, *(log.read_text() for log in stack_logs)):
        assert marker not in text

    # And an operator can reveal the dead letter's SQL through the admin API, which logs it (without the SQL)
    redis_id = letters.json()[0]["redis_id"]
    revealed = httpx.get(f"{stack.url}/admin/api/queues/preview/dead-letters/{redis_id}/sql", headers=admin)
    assert revealed.json()["sql"]["sql"] == sql
    wait_until(lambda: "revealed" in stack_logs[0].read_text(), what="the reveal logged")
    assert marker not in stack_logs[0].read_text()
    httpx.delete(f"{stack.url}/admin/api/queues/preview/dead-letters/{redis_id}", headers=admin)


@pytest.mark.parametrize("hash_sql", [True, False], ids=["hash", "clear"])
def test_task_meta_sql_keeps_the_hash_or_the_celery_workers_args(results_redis: redis.Redis, hash_sql: bool) -> None:
    # Given a preview message, and the task state written the default way or with TASK_META_SQL=clear
    sql = "SELECT 1 AS secret_literal"
    message = dramatiq.MessageProxy(dramatiq.Message(queue_name="preview", actor_name=PREVIEW.name,
                                    args=(sql, 1, 2, "orders"), kwargs={"filter_sql": "id > 3"}, options={},
                                    message_id=str(uuid.uuid4())))  # fmt: skip
    state = TaskState(store=TaskStore(results_redis), jobs=RunningJobs(), hash_sql=hash_sql)

    # When its SUCCESS is stored
    state.write(message, "SUCCESS", {"data": []})
    meta = TaskStore(results_redis).get(message.message_id) or {}

    # Then hashed: the SQL arguments are digests, with the whole SHA-256 beside; clear: args as Celery kept them
    if hash_sql:
        assert meta["args"][0] == f"sha256:{sql_digest(sql)}" and meta["sql_sha256"] == sql_sha256(sql)
        assert meta["kwargs"] == {"filter_sql": f"sha256:{sql_digest('id > 3')}"}
        assert sql not in json.dumps(meta)
    else:
        assert meta["args"][0] == sql and meta["kwargs"] == {"filter_sql": "id > 3"} and "sql_sha256" not in meta
