"""Cache hits answered at the door: the submitter writes a cached preview's SUCCESS; nothing is queued."""

from __future__ import annotations

import json

import redis
from celery.result import AsyncResult as CeleryResult

from rosetta_jobs import codec, layout
from rosetta_jobs.client import JobClient
from rosetta_jobs.preview.cache import PreviewCache
from rosetta_jobs.preview.request import PreviewRequest

from .conftest import BROKER_DB, CACHE_DB, RESULTS_DB, redis_url

SQL = "SELECT status, count(*) AS n FROM orders GROUP BY status"
ARGS = (SQL, 7, 8, "orders", None, False)
ANSWER = {"columns": ["status", "n"], "column_types": ["text", "number"], "data": [{"status": "NEW", "n": 2}],
          "error": None}  # fmt: skip


def _door_client() -> JobClient:
    return JobClient(broker_url=redis_url(BROKER_DB), result_backend_url=redis_url(RESULTS_DB),
                     preview_cache_url=redis_url(CACHE_DB), preview_row_limit=500)  # fmt: skip


def _cache(args: tuple[object, ...] = ARGS) -> None:
    """The answer of ``args`` as a worker cached it."""
    cache = PreviewCache(redis.Redis.from_url(redis_url(CACHE_DB)), ttl=60)
    cache.put(PreviewRequest.from_arguments(*args, row_limit=500), codec.dumps(ANSWER))


def test_a_cached_preview_is_answered_without_a_worker(redis_dbs: None, celery_app: object) -> None:
    # Given a preview whose answer a worker cached, and no worker running
    _cache()
    client = _door_client()
    # When the backend submits it again
    task_id = client.submit_preview(*ARGS, user_id="u1")
    # Then its SUCCESS is there at once, as the worker writes it, for our client and Celery's
    assert client.result(task_id).get(timeout=1) == ANSWER
    assert CeleryResult(task_id, app=celery_app).get(timeout=1) == ANSWER
    meta = client.store.get(task_id) or {}
    assert meta["status"] == "SUCCESS" and meta["name"] == "worker.preview.execute" and meta["queue"] == "preview"
    assert meta["args"][0].startswith("sha256:") and SQL not in json.dumps(meta) and meta["sql_sha256"]
    # And nothing was queued, and the task history has it, with its user
    broker = redis.Redis.from_url(redis_url(BROKER_DB))
    assert broker.llen(layout.DramatiqKeys().queue("preview")) == 0
    history = client.store.client.zrange(client.store.keys.history(), 0, -1)
    assert task_id.encode() in history


def test_a_miss_and_arguments_the_door_cannot_read_go_to_the_queue(redis_dbs: None) -> None:
    # Given one cached preview
    _cache()
    client = _door_client()
    # When another preview, and one whose source id is no number, are submitted
    other = client.submit_preview(SQL, 7, 8, "customers")
    odd = client.send("worker.preview.execute", (SQL, "seven", 8, "orders"), queue_name="preview")
    # Then both wait in the queue for a worker (which answers the second with its error, as before)
    broker = redis.Redis.from_url(redis_url(BROKER_DB))
    assert broker.llen(layout.DramatiqKeys().queue("preview")) == 2
    assert client.get_task_status(other)["state"] == "PENDING"
    assert client.get_task_status(odd)["state"] == "PENDING"


def test_without_a_cache_url_the_client_never_answers(redis_dbs: None) -> None:
    # Given a cached preview, and a client configured without the workers' REDIS_URL
    _cache()
    client = JobClient(broker_url=redis_url(BROKER_DB), result_backend_url=redis_url(RESULTS_DB))
    # When it submits the preview, Then the job is queued as before
    task_id = client.submit_preview(*ARGS)
    assert client.get_task_status(task_id)["state"] == "PENDING"
