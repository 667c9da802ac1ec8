"""The consumer: enqueues wake idle workers, and the wake-up list stays bounded."""

from __future__ import annotations

from collections.abc import Callable

import redis

from rosetta_jobs.broker import WAKE_TOKENS
from rosetta_jobs.client import JobClient
from rosetta_jobs.layout import Keys

from .conftest import WorkerProcess, wait_until


def test_each_enqueue_leaves_a_bounded_wake_up_token(client: JobClient, broker_redis: redis.Redis) -> None:
    # Given no worker running, When many jobs are enqueued
    for i in range(WAKE_TOKENS + 20):
        client.send("worker.test.echo", (str(i),))
    # Then the queue holds them all, and the wake-up list holds at most WAKE_TOKENS tokens
    assert broker_redis.llen("dramatiq:default") == WAKE_TOKENS + 20
    assert broker_redis.llen(Keys("dramatiq").wake("default")) == WAKE_TOKENS
    # And the wake-up list is not mistaken for a queue by prefix scans of the namespace
    assert not Keys("dramatiq").wake("default").startswith("dramatiq:")


def test_an_idle_worker_takes_the_wake_up_and_the_job(
    start_worker: Callable[..., WorkerProcess], client: JobClient, broker_redis: redis.Redis
) -> None:
    # Given a worker that has been idle long enough to back off
    start_worker()
    first = client.send("worker.test.echo", ("first",))
    assert client.result(first).get(timeout=15)["message"] == "first"
    wait_until(lambda: broker_redis.llen(Keys("dramatiq").wake("default")) == 0, 10, "the first token to be taken")
    # When a job is enqueued, Then the worker consumes its wake-up token and runs it
    task_id = client.send("worker.test.echo", ("woken",))
    assert client.result(task_id).get(timeout=15)["message"] == "woken"
    wait_until(lambda: broker_redis.llen(Keys("dramatiq").wake("default")) == 0, 10, "the token to be taken")
