"""The producer's broker: Dramatiq's ``RedisBroker`` whose enqueue also wakes idle consumers.

This is all a backend needs to enqueue (``client.JobClient``): it carries no middleware and imports
nothing of the worker's side. The worker's broker, with its consumer and middleware, is built in
``rosetta_jobs.stack``.
"""

from __future__ import annotations

from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker
from loguru import logger

from .layout import Keys

__all__ = ["WAKE_TOKENS", "RosettaBroker"]

#: Wake-up tokens kept per queue: enough to wake every idle consumer of a fleet, bounded so that a
#: queue with no consumer does not grow a list.
WAKE_TOKENS = 64


class RosettaBroker(RedisBroker):
    """Enqueue as Dramatiq does, then push a wake-up token for the queue's idle consumers."""

    def __init__(self, **options: Any) -> None:
        """``RedisBroker``'s keyword options (``url``, ``namespace``, ``middleware``, redis client options)."""
        # RedisBroker.__init__ is unannotated.
        super().__init__(**options)  # type: ignore[no-untyped-call]

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        enqueued = super().enqueue(message, delay=delay)
        if delay is None:
            key = Keys(self.namespace).wake(message.queue_name)
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(key, 1)
            pipe.ltrim(key, 0, WAKE_TOKENS - 1)
            try:
                pipe.execute()
            except redis.RedisError as exc:  # the job is queued; idle workers still find it by polling
                logger.warning("could not wake the consumers of {}: {}", message.queue_name, exc)
        return enqueued
