"""The broker and its middleware stack, declared in one place before any actor.

``build_broker`` is what ``rosetta_jobs.actors`` calls; the client builds a bare
producer broker of the same class with no middleware.
"""

from __future__ import annotations

import functools
from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    Retries,
    ShutdownNotifications,
)
from loguru import logger

from .config import Settings, get_settings
from .consumer import WAKE_TOKENS, Consumer, wake_key
from .middleware import Cancellation, Recovery, TaskState
from .middleware.heartbeat import Heartbeat
from .middleware.metrics import Metrics
from .store import TaskStore

__all__ = ["RosettaBroker", "build_broker", "build_middleware"]


class RosettaBroker(RedisBroker):  # type: ignore[misc]
    """Dramatiq's ``RedisBroker``, with consumers that wake on enqueue and survive undecodable payloads."""

    @property
    def consumer_class(self) -> type:
        return Consumer

    @functools.cached_property
    def waiter(self) -> redis.Redis:
        """A client of its own for consumers' blocking waits (each holds a connection while it waits)."""
        return redis.Redis(connection_pool=redis.ConnectionPool(**self.client.connection_pool.connection_kwargs))

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        enqueued = super().enqueue(message, delay=delay)
        if delay is None:
            key = wake_key(self.namespace, message.queue_name)
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(key, 1)
            pipe.ltrim(key, 0, WAKE_TOKENS - 1)
            try:
                pipe.execute()
            except redis.RedisError as exc:  # the job is queued; idle workers still find it by polling
                logger.warning("could not wake the consumers of {}: {}", message.queue_name, exc)
        return enqueued


def build_middleware(settings: Settings) -> list[Middleware]:
    """The worker's middleware, in order. ``TaskState`` must stay before ``Retries``."""
    store = TaskStore.from_url(settings.result_backend_url, expires=settings.result_expires)
    return [
        AgeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        CurrentMessage(),
        # Heartbeat before TaskState: a task's lease exists before its STARTED, and outlives its final state.
        Heartbeat(client=store.client, namespace=settings.broker_namespace),
        # Metrics before Retries, like TaskState, so that it sees the final outcome.
        Metrics(client=store.client, namespace=settings.broker_namespace),
        TaskState(store=store, max_worker_losses=settings.max_worker_losses),
        # After TaskState: a message TaskState skips (already final, e.g. cancelled) never counts as running.
        Cancellation(store=store),
        Recovery(),
        # Retries are off unless an actor opts in (Dramatiq's default is 20 for everything).
        Retries(max_retries=0),
    ]


def build_broker(settings: Settings | None = None, *, middleware: list[Middleware] | None = None) -> RosettaBroker:
    """Build the broker from ``settings``; the global Dramatiq broker is left to the caller."""
    settings = settings or get_settings()
    return RosettaBroker(
        url=settings.broker_url,
        namespace=settings.broker_namespace,
        middleware=build_middleware(settings) if middleware is None else middleware,
        heartbeat_timeout=settings.heartbeat_timeout_ms,
        socket_connect_timeout=5,
        socket_keepalive=True,
    )
