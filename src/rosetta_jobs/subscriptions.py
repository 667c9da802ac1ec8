"""Subscriptions to task channels that keep their connection for the next wait.

redis-py's ``PubSub.close`` disconnects, so a wait that subscribes and closes opens a new connection to
Redis every time (connect, ``SELECT``, ``CLIENT SETINFO``: round trips before the ``SUBSCRIBE``, and the
next ordinary command of the pool reconnects too). Here a finished wait unsubscribes and keeps its
``PubSub`` for the next one: one set per Redis client, per process.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

__all__ = ["Channel", "Subscriptions", "subscriptions"]

#: Idle subscriptions kept per client: as many as threads wait at once in a busy backend.
KEEP = 16


class Channel:
    """One channel subscribed on a reused connection: only its own messages come out of ``get``."""

    def __init__(self, client: redis.Redis, pubsub: redis.client.PubSub, name: str) -> None:
        self.pubsub = pubsub
        self._client = client
        self._channel = name
        self._name = name.encode()
        #: The connection dropped and was replaced: a message may have been missed, so the caller reads again.
        self.lost = False

    def get(self, timeout: float) -> bytes | None:
        """The next message published on the channel within ``timeout`` seconds, else ``None``.

        A message of a channel an earlier wait left may still be in the connection's buffer: skipped. A
        connection Redis closed (a restart, an idle timeout) is replaced at once, ``lost`` set, ``None``
        returned; if Redis does not answer, the error is the caller's.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                # None also for a (subscribe or unsubscribe) confirmation: redis-py returns instead of waiting on
                event: dict[str, Any] | None = self.pubsub.get_message(timeout=max(deadline - time.monotonic(), 0.0))
            except redis.ConnectionError:
                self.renew()
                self.lost = True
                return None
            if event is not None and event.get("channel") == self._name and event.get("type") == "message":
                return bytes(event["data"])
            if time.monotonic() >= deadline:
                return None

    def renew(self) -> None:
        """Subscribe again on a new connection, the current one closed (Redis dropped it)."""
        self.pubsub.close()
        self.pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(self._channel)


class Subscriptions:
    """Idle ``PubSub`` objects of one client, handed out one wait at a time (thread-safe)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._idle: list[redis.client.PubSub] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    @contextmanager
    def channel(self, name: str) -> Iterator[Channel]:
        """``name`` subscribed for the ``with`` block (on a kept connection, or a new one if it has gone)."""
        pubsub, reused = self._take()
        channel = Channel(self.client, pubsub, name)
        try:
            pubsub.subscribe(name)
        except redis.ConnectionError:
            if not reused:
                pubsub.close()
                raise
            channel.renew()  # Redis closed the idle one: start over
        clean = False
        try:
            yield channel
            channel.pubsub.unsubscribe(name)
            clean = True
        finally:
            self._give_back(channel.pubsub, clean)

    def _take(self) -> tuple[redis.client.PubSub, bool]:
        """An idle subscription (``True``: reused) or a new one."""
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's sockets are not ours to use
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop(), True
        return self.client.pubsub(ignore_subscribe_messages=True), False

    def _give_back(self, pubsub: redis.client.PubSub, clean: bool) -> None:
        if clean:
            with self._lock:
                if len(self._idle) < KEEP and self._pid == os.getpid():
                    self._idle.append(pubsub)
                    return
        pubsub.close()


@functools.lru_cache(maxsize=32)
def subscriptions(client: redis.Redis) -> Subscriptions:
    """The subscriptions of ``client`` (clients are shared per URL: ``connection.redis_client``)."""
    return Subscriptions(client)
