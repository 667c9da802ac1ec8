"""Cancel: a queued job never starts, a running one is stopped within a second.

``TaskStore.cancel`` writes REVOKED (so ``TaskState`` skips the message if it is still queued) and sets
a cancel flag. Each worker process polls the flags of the jobs *it* runs, a few times a second, and
stops those through their job context (``Job.stop``). Polling, unlike a pub/sub subscription, cannot
miss a cancel across a Redis reconnect.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import redis
from dramatiq.middleware import Middleware
from loguru import logger

from ..errors import JobCancelled
from ..job import RunningJobs
from ..store import TaskStore

__all__ = ["Cancellation"]


class Cancellation(Middleware):
    """Stops the cancelled jobs among those running in this process."""

    def __init__(self, *, store: TaskStore, jobs: RunningJobs, interval: float = 0.2) -> None:
        self.store = store
        self.jobs = jobs
        self.interval = interval
        self._stopping = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        threading.Thread(target=self._poll, name="rosetta-cancel", daemon=True).start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # Not before: the jobs still running while the worker drains stay under control until they end.
        self._stopping.set()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        job = self.jobs.get(message.message_id)
        if job is not None and job.cancelled:
            try:
                self.store.mark_stopped(message.message_id)  # lets operators (and make chaos) see cancel latency
            except redis.RedisError as exc:
                logger.warning("cannot record the stop of {}: {}", message.message_id, exc)

    def _poll(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self._check()
            except Exception:  # one bad pass must not end cancels for the process
                logger.exception("cancel check failed")

    def _check(self) -> None:
        """Stop the running jobs of this process whose cancel flag is set."""
        running = {job.id: job for job in self.jobs.snapshot() if not job.stopped}
        if not running:
            return
        try:
            flagged = self.store.cancel_requested(list(running))
        except redis.RedisError as exc:
            logger.warning("cannot read cancel flags: {}", exc)
            return
        for task_id in flagged:
            if running[task_id].stop(JobCancelled):
                logger.info("task {} cancelled while running; stopping it", task_id)
