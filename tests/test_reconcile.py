"""Reconciliation (``Sweeper.reconcile``): a task whose final state a failover lost ends FAILURE, visibly.

A Redis failover can drop writes the old master acknowledged but never replicated. If the lost write is a
final state whose message was acknowledged (the message is gone), the task would read STARTED until its
state expires and PENDING after: it must end instead. Everything else STARTED is left alone.
"""

from __future__ import annotations

import json
import uuid

import pytest
import redis

from rosetta_jobs.client import AsyncResult
from rosetta_jobs.config import load_settings
from rosetta_jobs.deployment import Deployment
from rosetta_jobs.errors import TaskFailed
from rosetta_jobs.layout import DramatiqKeys, Keys
from rosetta_jobs.states import FAILURE, PROGRESS, STARTED, SUCCESS, build_meta
from rosetta_jobs.sweeper import Sweeper

from .conftest import BROKER_DB, RESULTS_DB, redis_url


def _started(task_id: str, *, status: str = STARTED, worker: str = "rosetta@host-a") -> bytes:
    meta = build_meta(task_id, status, {"pid": 1}, name="worker.test.echo", args=["x"], kwargs={}, worker=worker,
                      queue="default")  # fmt: skip
    return json.dumps(meta).encode()


def _message(task_id: str) -> bytes:
    return json.dumps({"queue_name": "default", "actor_name": "worker.test.echo", "args": ["x"], "kwargs": {},
                       "options": {}, "message_id": task_id, "message_timestamp": 0}).encode()  # fmt: skip


def test_a_task_left_started_with_no_message_and_no_worker_ends_failure(
    results_redis: redis.Redis, broker_redis: redis.Redis
) -> None:
    # Given a deployment, and task states as a failover may leave them
    namespace = f"rc{uuid.uuid4().hex[:8]}"
    settings = load_settings(broker_url=redis_url(BROKER_DB), result_backend_url=redis_url(RESULTS_DB),
                             broker_namespace=namespace)  # fmt: skip
    deployment = Deployment(settings)
    keys, queues = Keys(namespace), DramatiqKeys(namespace)
    names = ("stranded", "dead_lettered", "queued", "delayed", "running", "celery", "deferred", "done", "fresh")
    ids = {name: f"{name}-{uuid.uuid4().hex}" for name in names}
    old = settings.result_expires - 120  # written two minutes ago
    for name in ("stranded", "dead_lettered", "queued", "delayed", "running"):
        results_redis.set(keys.meta(ids[name]), _started(ids[name]), ex=old)
    results_redis.set(keys.meta(ids["celery"]), _started(ids["celery"], worker="celery@host-b"), ex=old)
    results_redis.set(keys.meta(ids["deferred"]), _started(ids["deferred"], status=PROGRESS), ex=old)
    results_redis.set(keys.meta(ids["done"]), _started(ids["done"], status=SUCCESS), ex=old)
    results_redis.set(keys.meta(ids["fresh"]), _started(ids["fresh"]), ex=settings.result_expires - 5)
    broker_redis.hset(queues.messages("default"), "r1", _message(ids["queued"]))
    broker_redis.hset(queues.delayed_messages("default"), "r2", _message(ids["delayed"]))
    broker_redis.hset(queues.dead_messages("default"), "r3", _message(ids["dead_lettered"]))
    results_redis.set(keys.lease(ids["running"]), "host-a:1", ex=20)
    sweeper = Sweeper(deployment, interval=3600, dead_letter_ttl=86400, result_expires=settings.result_expires,
                      depth_window=3600)  # fmt: skip
    # When the sweeper reconciles
    ended = sweeper.reconcile()
    # Then exactly the tasks whose message is gone (or only dead-lettered) and that no live worker holds end
    assert sorted(ended) == sorted([ids["stranded"], ids["dead_lettered"]])
    # And their poller sees FAILURE, WorkerLost, naming the cause and what to do
    meta = deployment.store.get(ids["stranded"]) or {}
    assert meta["status"] == FAILURE and meta["result"]["exc_type"] == "WorkerLost"
    with pytest.raises(TaskFailed, match=r"WorkerLost: .*final state was lost.*submit it again"):
        AsyncResult(ids["stranded"], client=deployment.client).get(timeout=1)
    # And every other task keeps its state; a second pass ends nothing more
    for name in ("queued", "delayed", "running", "celery", "fresh"):
        assert (deployment.store.get(ids[name]) or {}).get("status") == STARTED, name
    assert (deployment.store.get(ids["deferred"]) or {}).get("status") == PROGRESS
    assert sweeper.reconcile() == []
    assert int(results_redis.hget(keys.sweeper(), "reconciled") or 0) == 2
