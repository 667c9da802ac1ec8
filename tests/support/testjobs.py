"""Actors that exist only for the tests; loaded next to ``rosetta_jobs.actors`` by the worker under test."""

from __future__ import annotations

import os
import signal
import time

import dramatiq
import redis

import rosetta_jobs.actors  # noqa: F401  (the broker is declared before these actors)
from rosetta_jobs.errors import TransientError
from rosetta_jobs.retrying import retry_options


class CustomError(Exception):
    """An exception whose module the reader does not import."""


@dramatiq.actor(actor_name="tests.fail", queue_name="default")
def fail(message: str) -> None:
    raise ValueError(message)


@dramatiq.actor(actor_name="tests.custom_fail", queue_name="default")
def custom_fail(message: str, code: int) -> None:
    raise CustomError(message, code)


@dramatiq.actor(actor_name="tests.pid", queue_name="default")
def pid(seconds: float = 0.0) -> int:
    time.sleep(seconds)
    return os.getpid()


@dramatiq.actor(actor_name="tests.flaky", queue_name="default", **retry_options())
def flaky(key: str, failures: int) -> int:
    """Fail with a transient error ``failures`` times (counted in Redis under ``key``), then succeed."""
    attempt = int(_counter().incr(key))
    if attempt <= failures:
        raise TransientError(f"attempt {attempt}: the database went away")
    return attempt


@dramatiq.actor(actor_name="tests.terminal", queue_name="default", **retry_options())
def terminal(key: str) -> None:
    """A configuration error: counted, and never retried."""
    _counter().incr(key)
    raise ValueError("bad configuration")


@dramatiq.actor(actor_name="tests.crash", queue_name="default")
def crash() -> None:
    """Take the worker process down, as a segfault or an OOM kill would."""
    os.kill(os.getpid(), signal.SIGKILL)


def _counter() -> redis.Redis:
    return redis.Redis.from_url(os.environ["BROKER_URL"])
