"""Actors that exist only for the tests; loaded next to ``rosetta_jobs.actors`` by the worker under test."""

from __future__ import annotations

import os
import time

import dramatiq

import rosetta_jobs.actors  # noqa: F401  (the broker is declared before these actors)


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
