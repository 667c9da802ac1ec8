"""The Celery ingress: an unchanged Celery producer's ``send_task`` runs on rosetta-jobs workers.

The producer is the real ``celery`` package configured as the backend's ``WorkerClient``
(``../shared/spec/rosetta-worker.md`` 6.1); the workers are real ``dramatiq rosetta_jobs.actors``
processes; Redis, PostgreSQL and DuckDB are the machine's own.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from celery.exceptions import NotRegistered, TaskRevokedError

from rosetta_jobs import layout
from rosetta_jobs.store import TaskStore

from .conftest import (
    BROKER_DB,
    CACHE_DB,
    REDIS_HOST,
    REDIS_PORT,
    RESULTS_DB,
    WorkerProcess,
    launch_worker,
    redis_url,
    wait_until,
)
from .support.previewdb import PreviewDatabases

KEYS = layout.Keys()
DRAMATIQ = layout.DramatiqKeys()
KOMBU = layout.KombuKeys(BROKER_DB)


def backend_producer(app: Celery) -> Celery:
    """``app`` configured exactly as the backend's ``WorkerClient`` producer (spec 6.1)."""
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_extended=True,
        task_track_started=True,
        broker_connection_retry_on_startup=False,
        broker_connection_retry=False,
        redis_retry_on_timeout=False,
        result_backend_transport_options={"retry_policy": {"max_retries": 0}},
    )
    return app


@pytest.fixture
def producer(celery_app: Celery) -> Celery:
    return backend_producer(celery_app)


@pytest.fixture
def store(redis_dbs: None) -> TaskStore:
    return TaskStore.from_url(redis_url(RESULTS_DB))


@pytest.fixture
def broker(redis_dbs: None) -> redis.Redis:
    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=BROKER_DB)


@pytest.fixture(scope="module")
def worker(databases: PreviewDatabases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker for the module's plain cases: starting one costs seconds."""
    log = tmp_path_factory.mktemp("ingress") / "worker.log"
    process = launch_worker(log, threads=2, DATABASE_URL=databases.config_url)
    yield process
    process.stop()


def test_a_preview_sent_with_positional_args_reaches_success(
    worker: WorkerProcess, producer: Celery, databases: PreviewDatabases, broker: redis.Redis
) -> None:
    # Given a running worker, and the backend's unchanged producer
    sql = "SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY status"
    # When the backend submits a preview as its WorkerClient does: five positional args, queue "preview"
    sent = producer.send_task(
        "worker.preview.execute", args=[sql, databases.source_id, databases.destination_id, "orders", None],
        queue="preview",
    )  # fmt: skip
    # Then AsyncResult.get() returns the preview, under the id the producer made
    result = sent.get(timeout=30)
    assert result["error"] is None, result["error"]
    assert result["columns"] == ["status", "n"]
    assert [row["status"] for row in result["data"]] == ["NEW", "PAID"]
    assert sent.state == "SUCCESS" and sent.name == "worker.preview.execute"
    # And kombu's list is empty: the message was moved, not copied
    assert broker.llen("preview") == 0


def test_a_cached_preview_sent_again_is_answered_at_the_door(
    worker: WorkerProcess, producer: Celery, databases: PreviewDatabases, store: TaskStore
) -> None:
    # Given a preview the worker ran (and cached)
    args = ["SELECT status FROM orders ORDER BY status", databases.source_id, databases.destination_id, "orders", None]
    first = producer.send_task("worker.preview.execute", args=args, queue="preview")
    answer = first.get(timeout=30)
    cache = redis.Redis.from_url(redis_url(CACHE_DB))
    wait_until(lambda: cache.keys("preview:*"), 5, "the answer cached (right after its SUCCESS)")
    cache.close()
    # When the backend sends it again
    again = producer.send_task("worker.preview.execute", args=args, queue="preview")
    # Then the ingress answers it from the cache: the same result, written by the door, not by an actor
    assert again.get(timeout=10) == answer and answer["error"] is None
    assert (store.get(first.id) or {})["worker"].startswith("rosetta@")
    assert (store.get(again.id) or {})["worker"].startswith("rosetta-door@")


def test_a_job_sent_with_kwargs_only_reaches_success(worker: WorkerProcess, producer: Celery) -> None:
    # When a job is sent with keyword arguments only, as the backend sends the linked task
    sent = producer.send_task("worker.test.echo", kwargs={"message": "hi", "steps": 1}, queue="default")
    # Then it runs with its arguments bound in the contract's order, and AsyncResult reads the result
    assert sent.get(timeout=20) == {"message": "hi", "steps": 1}
    assert sent.args == ["hi", 1, 0.0]


def test_an_unknown_task_name_fails_not_registered_and_is_dead_lettered(
    worker: WorkerProcess, producer: Celery, broker: redis.Redis
) -> None:
    # When the producer sends a task name no actor serves
    sent = producer.send_task("worker.flow_task.nope", args=[1, 2], queue="default")
    # Then AsyncResult reads FAILURE NotRegistered, as from a Celery worker
    with pytest.raises(NotRegistered):
        sent.get(timeout=20)
    assert sent.state == "FAILURE"
    # And the message is dead-lettered under its task id, for inspection
    wait_until(lambda: broker.zcard(DRAMATIQ.dead("default")) == 1, 5, "dead letter")
    assert sent.id.encode() in next(iter(broker.hvals(DRAMATIQ.dead_messages("default"))))


def test_an_expired_task_is_revoked_and_never_runs(worker: WorkerProcess, producer: Celery, store: TaskStore) -> None:
    # When a task arrives after its expires
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    sent = producer.send_task("worker.test.echo", args=["late"], queue="default", expires=past)
    # Then it is REVOKED (Celery's state for an expired task), and it never started
    with pytest.raises(TaskRevokedError):
        sent.get(timeout=20)
    assert sent.state == "REVOKED"
    assert store.deliveries(sent.id) == 0


def test_a_countdown_delays_and_an_expiry_is_checked_again_at_start(
    worker: WorkerProcess, producer: Celery, store: TaskStore
) -> None:
    # When one task is sent with a countdown, and another with a countdown past its own expiry
    started = time.monotonic()
    delayed = producer.send_task("worker.test.echo", args=["later"], queue="default", countdown=1)
    expiring = producer.send_task("worker.test.echo", args=["never"], queue="default", countdown=1,
                                  expires=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.5))  # fmt: skip
    # Then the first runs after its countdown, not before
    assert delayed.get(timeout=20) == {"message": "later", "steps": 0}
    assert time.monotonic() - started >= 1.0
    # And the second expired while it waited: REVOKED when its turn came, never run
    with pytest.raises(TaskRevokedError):
        expiring.get(timeout=20)
    assert store.deliveries(expiring.id) == 0


def test_a_malformed_message_is_dead_lettered_and_the_ingress_keeps_going(
    worker: WorkerProcess, producer: Celery, broker: redis.Redis
) -> None:
    # Given a list element that is no Celery message, ahead of a good one
    broker.lpush("default", b"\x00 not a kombu envelope")
    # When the producer sends after it
    sent = producer.send_task("worker.test.echo", args=["after"], queue="default")
    # Then the good one runs, the bad one is dead-lettered, and the log says why
    assert sent.get(timeout=20) == {"message": "after", "steps": 0}
    assert broker.hvals(DRAMATIQ.dead_messages("default")) == [b"\x00 not a kombu envelope"]
    wait_until(lambda: "undecodable Celery message on kombu list default" in worker.output(), 5, "log line")


def test_priority_lists_are_consumed(worker: WorkerProcess, producer: Celery) -> None:
    # When the producer sends with a priority (kombu's sub-list "default\x06\x166")
    sent = producer.send_task("worker.test.echo", args=["prio"], queue="default", priority=6)
    # Then it runs too
    assert sent.get(timeout=20) == {"message": "prio", "steps": 0}
