"""Real ``dramatiq rosetta_jobs.actors`` processes, read by the real ``celery`` package."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import redis
from celery import Celery
from celery.result import AsyncResult as CeleryResult
from dramatiq import Message

from rosetta_jobs.client import JobClient

from .conftest import BROKER_DB, REDIS_HOST, REDIS_PORT, WorkerProcess


def _states_seen(result: CeleryResult, timeout: float = 20.0) -> list[str]:
    """Poll the way the backend does, recording each distinct state until a final one."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = result.state
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in ("SUCCESS", "FAILURE", "REVOKED"):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"no final state after {timeout} s: {seen}")


def test_celery_reads_every_state_of_an_echo_job(
    start_worker: Callable[..., WorkerProcess], client: JobClient, celery_app: Celery
) -> None:
    # Given a worker and an echo job with steps
    start_worker()
    task_id = str(uuid.uuid4())
    result = CeleryResult(task_id, app=celery_app)
    assert result.state == "PENDING"  # the backend may poll before the job is even sent
    client.send("worker.test.echo", ("hello", 4, 0.3), task_id=task_id)
    # When the backend polls with Celery's AsyncResult
    seen = _states_seen(result)
    # Then it reads STARTED or PROGRESS, then SUCCESS, with the value and extended fields
    assert seen[-1] == "SUCCESS"
    assert "PROGRESS" in seen
    assert result.get(timeout=5) == {"message": "hello", "steps": 4}
    assert result.name == "worker.test.echo" and result.args == ["hello", 4, 0.3] and result.queue == "default"
    assert result.date_done is not None


def test_progress_meta_and_started_meta(
    start_worker: Callable[..., WorkerProcess], client: JobClient, results_redis: redis.Redis
) -> None:
    # Given a subscriber on the task's channel
    start_worker()
    task_id = str(uuid.uuid4())
    pubsub = results_redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"celery-task-meta-{task_id}")
    # When an echo job with 2 steps runs
    client.send("worker.test.echo", ("m", 2, 0.05), task_id=task_id)
    events: list[dict] = []
    deadline = time.monotonic() + 20
    while (not events or events[-1]["status"] != "SUCCESS") and time.monotonic() < deadline:
        event = pubsub.get_message(timeout=1)  # None for the subscribe confirmation and on timeout
        if event is not None:
            events.append(json.loads(event["data"]))
    pubsub.close()
    # Then STARTED carries pid and hostname, and PROGRESS carries step, total and percent
    assert events[0]["status"] == "STARTED" and set(events[0]["result"]) == {"pid", "hostname"}
    progress = [e["result"] for e in events if e["status"] == "PROGRESS"]
    assert progress == [{"step": 1, "total": 2, "percent": 50}, {"step": 2, "total": 2, "percent": 100}]


def test_failure_keeps_type_and_message(
    start_worker: Callable[..., WorkerProcess], client: JobClient, celery_app: Celery
) -> None:
    # Given a worker with actors that raise
    start_worker()
    builtin = CeleryResult(client.send("tests.fail", ("bad value",)), app=celery_app)
    custom = CeleryResult(client.send("tests.custom_fail", ("boom", 42)), app=celery_app)
    # When the backend polls, Then both end FAILURE with the exception intact
    assert _states_seen(builtin)[-1] == "FAILURE"
    assert isinstance(builtin.result, ValueError) and builtin.result.args == ("bad value",)
    assert "raise ValueError(message)" in builtin.traceback
    assert _states_seen(custom)[-1] == "FAILURE"
    assert type(custom.result).__name__ == "CustomError" and custom.result.args == ("boom", 42)
    status = client.get_task_status(custom.id)
    assert status["status"] == "failed" and status["error"] == "('boom', 42)"


def test_wrong_arity_fails_and_the_worker_keeps_running(
    start_worker: Callable[..., WorkerProcess], client: JobClient, celery_app: Celery
) -> None:
    start_worker(threads=1)
    # When a job is sent with too many arguments
    bad = CeleryResult(client.send("worker.test.echo", ("a", 1, 0.0, "extra", "more")), app=celery_app)
    assert _states_seen(bad)[-1] == "FAILURE"
    assert isinstance(bad.result, TypeError)
    # Then the same single worker thread still takes the next job
    good = client.result(client.send("worker.test.echo", ("after",)))
    assert good.get(timeout=15) == {"message": "after", "steps": 0}


def test_unknown_actor_fails_as_not_registered(
    start_worker: Callable[..., WorkerProcess], client: JobClient, celery_app: Celery
) -> None:
    start_worker()
    result = CeleryResult(client.send("worker.nope", (1,)), app=celery_app)
    assert _states_seen(result)[-1] == "FAILURE"
    assert type(result.result).__name__ == "NotRegistered"


def test_redelivery_after_success_leaves_success(
    start_worker: Callable[..., WorkerProcess], client: JobClient, broker_redis: redis.Redis
) -> None:
    # Given a job that completed
    start_worker()
    task_id = client.send("tests.pid", ())
    first = client.result(task_id).get(timeout=15)
    done = client.store.get(task_id)
    # When the same message is delivered again (a crash before ack, a delayed-queue race)
    client.send("tests.pid", (), task_id=task_id)
    marker = client.send("worker.test.echo", ("marker",))
    client.result(marker).get(timeout=15)
    time.sleep(0.3)
    # Then the SUCCESS stays exactly as it was, and no second STARTED was written
    assert client.store.get(task_id) == done
    assert client.result(task_id).get(timeout=1) == first


def test_undecodable_message_is_dead_lettered_and_consumer_continues(
    start_worker: Callable[..., WorkerProcess], client: JobClient, broker_redis: redis.Redis
) -> None:
    # Given garbage in the default queue, the way a foreign producer might write it
    start_worker()
    broker_redis.hset("dramatiq:default.msgs", "garbage-1", b"\x00not json{")
    broker_redis.rpush("dramatiq:default", "garbage-1")
    # When a valid job follows it
    task_id = client.send("worker.test.echo", ("still here",))
    # Then the valid job completes, and the garbage sits in the dead-letter queue
    assert client.result(task_id).get(timeout=20) == {"message": "still here", "steps": 0}
    deadline = time.monotonic() + 5
    while broker_redis.zscore("dramatiq:default.XQ", "garbage-1") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert broker_redis.zscore("dramatiq:default.XQ", "garbage-1") is not None
    assert broker_redis.hget("dramatiq:default.XQ.msgs", "garbage-1") == b"\x00not json{"


def test_worker_waits_for_an_unreachable_redis(start_worker: Callable[..., WorkerProcess]) -> None:
    # Given a worker whose broker is a port where nothing listens
    worker = start_worker(wait=False, BROKER_URL="redis://127.0.0.1:1/1")
    # When it has had time to try
    deadline = time.monotonic() + 20
    while "connection error" not in worker.output().lower() and time.monotonic() < deadline:
        time.sleep(0.2)
    # Then it logs the problem and keeps running instead of exiting
    assert "connection error" in worker.output().lower()
    assert worker.proc.poll() is None


def test_message_enqueued_by_the_client_has_the_task_id(client: JobClient, broker_redis: redis.Redis) -> None:
    # When the client sends a job, Then the Dramatiq message id is the task id the backend stores
    task_id = client.send("worker.test.echo", ("x",), queue_name="default")
    payloads = broker_redis.hvals("dramatiq:default.msgs")
    assert [Message.decode(p).message_id for p in payloads] == [task_id]
    assert redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=BROKER_DB).llen("dramatiq:default") == 1


def test_celery_reads_retry_and_revoked(
    start_worker: Callable[..., WorkerProcess], client: JobClient, celery_app: Celery
) -> None:
    # Given a job that fails once with a transient error and retries after a 2 s backoff
    start_worker(RETRY_MIN_BACKOFF_MS="2000", RETRY_MAX_BACKOFF_MS="2500")
    retried = CeleryResult(client.send("tests.flaky", (f"retry-{uuid.uuid4()}", 1)), app=celery_app)
    # When the backend polls, Then it reads RETRY with the encoded error, and later SUCCESS
    seen = _states_seen(retried)
    assert "RETRY" in seen and seen[-1] == "SUCCESS"
    assert retried.get(timeout=5) == 2
    # Given a job cancelled while it waits in the queue (orchestration: declared, but no worker here consumes it)
    queued = client.send("tests.pid", (), queue_name="orchestration")
    assert client.cancel(queued)["cancelled"] is True
    # Then Celery reads REVOKED, with Celery's own exception type
    revoked = CeleryResult(queued, app=celery_app)
    assert revoked.state == "REVOKED" and type(revoked.result).__name__ == "TaskRevokedError"
    assert client.get_task_status(queued)["status"] == "cancelled"
