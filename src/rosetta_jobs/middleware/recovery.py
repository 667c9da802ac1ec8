"""Crash recovery: the in-flight messages of a dead worker process go back to their queues.

Stock Dramatiq requeues them only when a random maintenance roll (0.1 % of broker calls) happens
after the heartbeat timeout, and only for the queue of that call: minutes on an idle fleet. Here
every worker process checks every ``interval`` seconds, for all queues at once, so a job whose worker
was SIGKILLed runs again on a live one within ``heartbeat_timeout + interval``.

Recovered messages go to the *head* of their queue: they were fetched before anything still queued,
so a backlog does not delay them again (Dramatiq's own maintenance appends them to the tail).

After Redis was unreachable, every process looks dead for a moment: recovery waits ``OUTAGE_GRACE``
seconds after reconnecting (Dramatiq restarts a consumer 3 s after a connection error and its next
fetch is a heartbeat), so live workers heartbeat again before anyone judges them.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import dramatiq
import redis
from dramatiq.middleware import Middleware
from loguru import logger

from ..layout import DramatiqKeys, script

if TYPE_CHECKING:
    from redis.commands.core import Script

__all__ = ["Recovery", "requeue_dead_workers"]

#: Seconds to wait after Redis answers again before judging any worker dead.
OUTAGE_GRACE = 8.0


def requeue_dead_workers(script: Script, keys: DramatiqKeys, timeout_ms: int, queues: list[str]) -> int:
    """Requeue, at the head of their queues, what the workers silent for ``timeout_ms`` had fetched."""
    args: list[str | int] = [
        int(time.time() * 1000),
        timeout_ms,
        keys.acks_prefix(),
        keys.queue(""),
        keys.MESSAGES_SUFFIX,
        *queues,
    ]
    return int(script(keys=[keys.heartbeats()], args=args))


class Recovery(Middleware):
    """Requeues what dead worker processes had fetched but not acknowledged."""

    def __init__(self, *, interval: float = 2.0) -> None:
        self.interval = interval
        self._stopping = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        threading.Thread(target=self._run, args=(broker,), name="rosetta-recovery", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stopping.set()

    def _run(self, broker: Any) -> None:
        requeue = script(broker.client, "requeue_dead_workers")
        keys = DramatiqKeys(broker.namespace)
        grace = min(OUTAGE_GRACE, broker.heartbeat_timeout / 1000)
        not_before = 0.0  # live processes heartbeat every second; only an outage calls for a grace period
        while not self._stopping.wait(self.interval):
            if time.monotonic() < not_before:
                continue
            queues = sorted(broker.get_declared_queues() | broker.get_declared_delay_queues())
            try:
                requeued = requeue_dead_workers(requeue, keys, broker.heartbeat_timeout, queues)
            except redis.RedisError as exc:
                logger.warning("recovery check failed; will wait {} s after Redis answers again: {}", grace, exc)
                not_before = time.monotonic() + grace
                continue
            if requeued:
                logger.warning("requeued {} message(s) of dead worker processes", requeued)
