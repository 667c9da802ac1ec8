"""The broker and its middleware stack, declared in one place before any actor.

``build_broker`` is what ``rosetta_jobs.actors`` calls; the client builds a bare
producer broker of the same class with no middleware.
"""

from __future__ import annotations

import json
from typing import Any

from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import DecodeError
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
from .middleware import Cancellation, Recovery, TaskState
from .middleware.heartbeat import Heartbeat
from .middleware.metrics import Metrics
from .store import TaskStore

__all__ = ["RosettaBroker", "build_broker", "build_middleware"]


class _DeadLetteringConsumer(_RedisConsumer):  # type: ignore[misc]
    """A consumer that dead-letters an undecodable payload instead of crashing on it.

    Stock Dramatiq raises on such a payload, restarts the consumer and meets it again
    after the next requeue, forever (dramatiq#375).
    """

    def __next__(self) -> Any:
        while True:
            try:
                return super().__next__()
            except DecodeError as exc:
                data = exc.data if isinstance(exc.data, bytes) else b""
                logger.error(
                    "undecodable message on queue {}: {}; moving it to the dead-letter queue",
                    self.queue_name,
                    exc.error,
                )
                self._dead_letter(data)

    def _dead_letter(self, data: bytes) -> None:
        broker = self.broker
        message_id = _redis_message_id(data)
        if message_id is None:
            # Find the id by its payload among this process's in-flight ids: a small set.
            acks = f"{broker.namespace}:__acks__.{broker.broker_id}.{self.queue_name}"
            members = list(broker.client.smembers(acks))
            payloads = broker.client.hmget(f"{broker.namespace}:{self.queue_name}.msgs", members) if members else []
            message_id = next((m.decode() for m, p in zip(members, payloads, strict=True) if p == data), None)
        if message_id is None:
            logger.error("could not find the undecodable message's id on queue {}", self.queue_name)
            return
        broker.do_nack(self.queue_name, message_id)


def _redis_message_id(data: bytes) -> str | None:
    try:
        value = json.loads(data)["options"]["redis_message_id"]
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


class RosettaBroker(RedisBroker):  # type: ignore[misc]
    """Dramatiq's ``RedisBroker`` with a consumer that survives undecodable payloads."""

    @property
    def consumer_class(self) -> type:
        return _DeadLetteringConsumer

    def ping(self) -> None:
        """Raise ``redis.ConnectionError`` when the broker's Redis does not answer."""
        self.client.ping()


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
