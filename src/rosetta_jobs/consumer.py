"""How a worker takes messages off a Redis queue: Dramatiq's consumer with two changes.

- **Wake-ups instead of idle polling.** Dramatiq polls an empty queue with a backoff that grows to
  ``worker_timeout`` (1 s), so the first job after a quiet spell waits up to a second; Celery's
  ``BRPOP`` answers at once. Every enqueue also pushes a token on ``Keys.wake(queue)``, and an idle
  consumer waits on it with ``BLPOP`` for as long as it would have slept: a new job is picked up in
  milliseconds, and an idle worker sends no more commands than before.
- **Undecodable payloads are dead-lettered**, not raised: stock Dramatiq restarts the consumer and
  meets the same payload again after the next requeue, forever (dramatiq#375).
- **Cut off from Redis, it fetches nothing** while the process's lease is lost (``rosetta_jobs.lease``), and
  each message carries the time its fetch went out (``FETCHED_AT``), so that ``Fence`` can tell a message
  fetched before a loss. A message whose job was abandoned (``GIVE_BACK``: the lease was lost, or the
  process stops) is neither acknowledged nor dead-lettered: it goes back to the head of its queue if it is
  still this process's, and is left alone if ``Recovery`` already requeued it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.message import Message
from loguru import logger

from .layout import DramatiqKeys, Keys, script
from .lease import FETCHED_AT, GIVE_BACK, Lease

__all__ = ["Consumer"]


class Consumer(_RedisConsumer):
    """One queue of one worker process: fetch, decode, and wait for work without polling."""

    def __init__(self, broker: Any, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        # Delayed queues are promoted by their own consumer's clock: nothing to wake them for.
        self.wake = None if queue_name.endswith(".DQ") else Keys(broker.namespace).wake(queue_name)
        self.lease: Lease | None = getattr(broker, "lease", None)
        self.fetch_sent = 0.0

    def __next__(self) -> Any:
        try:
            while True:
                if self.message_cache:
                    message = self._decode(self.message_cache.pop(0))
                    if message is not None:
                        return message
                    continue
                if self.outstanding_message_count < self.prefetch and not (self.lease and self.lease.lost):
                    wanted = self.prefetch - self.outstanding_message_count
                    self.fetch_sent = self.lease.clock() if self.lease else time.monotonic()
                    self.message_cache = self.broker.do_fetch(self.queue_name, wanted)
                    if self.message_cache:
                        continue
                self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                self._idle(backoff_ms / 1000)
                return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None

    def _decode(self, data: bytes | None) -> MessageProxy | None:
        if data is None:  # a payload deleted between fetch and read
            return None
        self.misses = 0
        try:
            message = Message.decode(data)
        except DecodeError as exc:
            logger.error("undecodable message on queue {}: {}; moving it to the dead-letter queue",
                         self.queue_name, exc.error)  # fmt: skip
            self._dead_letter(data)
            return None
        self.queued_message_ids.add(message.message_id)
        proxy = MessageProxy(message)
        setattr(proxy, FETCHED_AT, self.fetch_sent)
        return proxy

    def ack(self, message: MessageProxy) -> None:
        if not getattr(message, GIVE_BACK, False):
            super().ack(message)  # type: ignore[no-untyped-call]
            return
        keys = DramatiqKeys(self.broker.namespace)
        give_back = script(self.broker.client, "give_back")
        try:
            acks = keys.acks(self.broker.broker_id, self.queue_name)
            given = give_back(keys=[acks, keys.queue(self.queue_name), keys.messages(self.queue_name)],
                              args=[message.options["redis_message_id"]])  # fmt: skip
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None
        finally:
            self.queued_message_ids.discard(message.message_id)
        outcome = "given back to its queue" if given else "already requeued by another process; left alone"
        logger.info("task {}: abandoned here, {}", message.message_id, outcome)

    def _idle(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a job is enqueued meanwhile and this consumer could take it."""
        if self.wake is None or self.outstanding_message_count >= self.prefetch or (self.lease and self.lease.lost):
            time.sleep(seconds)
        elif self.broker.waiter.blpop([self.wake], timeout=max(seconds, 0.01)) is not None:
            self.misses = 0

    def _dead_letter(self, data: bytes) -> None:
        broker = self.broker
        message_id = _redis_message_id(data)
        if message_id is None:
            # Find the id by its payload among this process's in-flight ids: a small set.
            keys = DramatiqKeys(broker.namespace)
            members = list(broker.client.smembers(keys.acks(broker.broker_id, self.queue_name)))
            payloads = broker.client.hmget(keys.messages(self.queue_name), members) if members else []
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
