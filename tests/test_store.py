"""Task state in Redis: Celery's layout, SETEX + PUBLISH, and final states that stay final."""

from __future__ import annotations

import json

import redis

from rosetta_jobs.states import FAILURE, REVOKED, STARTED, SUCCESS, build_meta, revoked_exception
from rosetta_jobs.store import TaskStore

from .conftest import RESULTS_DB, redis_url


def test_meta_uses_celery_key_order_and_ttl(results_redis: redis.Redis) -> None:
    # Given a store with Celery's 600 s expiry
    store = TaskStore.from_url(redis_url(RESULTS_DB), expires=600)
    # When a SUCCESS is written
    store.write(build_meta("t1", SUCCESS, {"a": 1}, name="x", args=[1], kwargs={}, worker="w", queue="default"))
    # Then the stored JSON has Celery's key order, a date_done, and the TTL
    raw = results_redis.get("celery-task-meta-t1")
    assert raw is not None
    doc = json.loads(raw)
    assert list(doc) == [
        "status", "result", "traceback", "children", "date_done",
        "name", "args", "kwargs", "worker", "retries", "queue", "task_id",
    ]  # fmt: skip
    assert doc["date_done"].endswith("+00:00")
    assert 590 <= results_redis.ttl("celery-task-meta-t1") <= 600


def test_every_write_is_published_on_the_key(results_redis: redis.Redis) -> None:
    store = TaskStore.from_url(redis_url(RESULTS_DB))
    pubsub = results_redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("celery-task-meta-t2")
    store.write(build_meta("t2", STARTED, {"pid": 1, "hostname": "h"}))
    event = None
    for _ in range(20):  # the first reads may return the subscribe confirmation as None
        event = event or pubsub.get_message(timeout=0.2)
    assert event is not None and json.loads(event["data"])["status"] == STARTED
    pubsub.close()


def test_final_states_are_never_overwritten(results_redis: redis.Redis) -> None:
    store = TaskStore.from_url(redis_url(RESULTS_DB))
    for final, meta in ((SUCCESS, 42), (FAILURE, {"exc_type": "ValueError"}), (REVOKED, revoked_exception())):
        task_id = f"final-{final}"
        # Given a task in a final state
        assert store.write(build_meta(task_id, final, meta))
        # When a late STARTED (a redelivery) and a late SUCCESS arrive
        assert not store.write(build_meta(task_id, STARTED, {"pid": 2}))
        assert not store.write(build_meta(task_id, SUCCESS, "late"))
        # Then the final state stands
        stored = store.get(task_id)
        assert stored is not None and stored["status"] == final and stored["result"] == meta


def test_unknown_task_has_no_meta(results_redis: redis.Redis) -> None:
    assert TaskStore.from_url(redis_url(RESULTS_DB)).get("never-submitted") is None


def test_a_start_writes_the_jobs_lease_in_the_same_step_unless_the_task_is_over(results_redis: redis.Redis) -> None:
    store = TaskStore.from_url(redis_url(RESULTS_DB))
    lease = ("lease-test:running", "host:1", 20_000)
    # Given a task nobody has started
    # When it starts, its lease handed to the start
    assert store.start(build_meta("lease-1", STARTED, {"pid": 1}), lease=lease) == 1
    # Then STARTED and the lease are both stored, the lease with its TTL
    stored = store.get("lease-1")
    assert stored is not None and stored["status"] == STARTED
    assert results_redis.get(lease[0]) == b"host:1" and 0 < results_redis.pttl(lease[0]) <= 20_000

    # Given a task that is over (cancelled while it waited)
    store.write(build_meta("lease-2", REVOKED, revoked_exception()))
    over = ("lease-test:over", "host:1", 20_000)
    # When its message starts all the same (a redelivery), with a lease
    assert store.start(build_meta("lease-2", STARTED, {"pid": 1}), lease=over) == REVOKED
    # Then no lease is written: the job will not run
    assert results_redis.exists(over[0]) == 0
