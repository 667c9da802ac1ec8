"""Cancel: a queued job never starts, a running one is stopped within a second.

``JobClient.cancel`` writes REVOKED (so ``TaskState`` skips the message if it is still queued) and
sets a cancel flag. Each worker process polls the flags of the jobs *it* runs, a few times a second,
and stops those through ``rosetta_jobs.interrupts``. Polling, unlike a pub/sub subscription, cannot
miss a cancel across a Redis reconnect.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import redis
from dramatiq.middleware import Middleware
from loguru import logger

from .. import interrupts
from ..store import TaskStore

__all__ = ["Cancellation"]


class Cancellation(Middleware):
    """Tracks the jobs running in this process and stops the cancelled ones."""

    def __init__(self, *, store: TaskStore, interval: float = 0.2) -> None:
        self.store = store
        self.interval = interval
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._thread = threading.Thread(target=self._poll, name="rosetta-cancel", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stopping.set()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        interrupts.started(message.message_id)

    def after_process_message(self, broker: dramatiq.Broker, message: Any, *, result: Any = None,
                              exception: BaseException | None = None) -> None:  # fmt: skip
        if interrupts.finished(message.message_id):
            try:
                self.store.mark_stopped(message.message_id)  # lets operators (and make chaos) see cancel latency
            except redis.RedisError as exc:
                logger.warning("cannot record the stop of {}: {}", message.message_id, exc)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        interrupts.finished(message.message_id)

    def _poll(self) -> None:
        while not self._stopping.wait(self.interval):
            task_ids = interrupts.running()
            if not task_ids:
                continue
            try:
                flagged = self.store.cancel_requested(task_ids)
            except redis.RedisError as exc:
                logger.warning("cannot read cancel flags: {}", exc)
                continue
            for task_id in flagged:
                if interrupts.stop(task_id):
                    logger.info("task {} cancelled while running; stopping it", task_id)
