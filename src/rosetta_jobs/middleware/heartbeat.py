"""Worker heartbeats: each worker process says, every few seconds, that it is alive and what it runs.

Dramatiq's own broker heartbeats (``__heartbeats__``) are written by producers too and are never
removed on exit, so they cannot tell how many workers are alive. Here each worker process keeps one
hash with a TTL (``Keys.worker``, read by ``rosetta_jobs.workers``): a SIGKILLed process disappears
after ``ttl`` seconds, a stopped one at once. Each running task also holds a *lease* key with the
same TTL, so that the per-user limits can tell a job whose worker died from one that still runs.
What runs comes from the process's ``RunningJobs``, the registry every middleware shares. Each beat Redis
acknowledges renews the process's ``Lease`` (``rosetta_jobs.lease``, read by ``Fence``); after a failed
beat the next one is tried within a second.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

import dramatiq
import redis
from dramatiq.common import q_name
from dramatiq.middleware import Middleware
from loguru import logger

from ..job import RunningJobs
from ..layout import Keys
from ..lease import Lease

__all__ = ["Heartbeat"]


class Heartbeat(Middleware):
    """Writes this process's heartbeat from a thread started in ``after_worker_boot``."""

    def __init__(
        self,
        *,
        client: redis.Redis,
        namespace: str,
        jobs: RunningJobs,
        interval: float = 5.0,
        ttl: float = 20.0,
        hostname: str | None = None,
        lease: Lease | None = None,
    ) -> None:
        self.client = client
        self.lease = lease
        self.keys = Keys(namespace)
        self.jobs = jobs
        self.interval = interval
        self.ttl = max(ttl, interval * 2)
        self.hostname = hostname or socket.gethostname()
        self.worker_id = ""
        self.threads = 0
        self.queues: list[str] = []
        self.state = "running"
        self.started_at = time.time()
        self._beat_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # Before the worker threads start: a job they take before ``after_worker_boot`` beats as this process.
        self.worker_id = f"{self.hostname}:{os.getpid()}"
        self.threads = int(worker.worker_threads)
        wanted = worker.consumer_whitelist or None
        self.queues = sorted({q_name(q) for q in broker.get_declared_queues() if wanted is None or q_name(q) in wanted})
        self.started_at = time.time()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.clear()
        self._safe_beat()  # visible at once, not one interval later
        self._thread = threading.Thread(target=self._loop, name="rosetta-heartbeat", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # Still beating while in-flight jobs finish, but no longer counted as taking work.
        self.state = "stopping"
        self._safe_beat()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.keys.worker(self.worker_id))
            pipe.zrem(self.keys.workers(), self.worker_id)
            pipe.execute()
        except redis.RedisError as exc:
            logger.warning("could not remove the heartbeat of {}: {}", self.worker_id, exc)

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self._safe_beat()  # writes the task's lease, and the busy count is right at once

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._finish(message.message_id)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self._finish(message.message_id)

    def _finish(self, task_id: str) -> None:
        job = self.jobs.get(task_id)
        if job is not None:
            job.finished = True  # a beat of the loop thread must not renew its lease any more
        self._safe_beat(finished=task_id)

    def _loop(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            wait = self.interval if self._safe_beat() else min(self.interval, 1.0)

    def _safe_beat(self, *, finished: str | None = None) -> bool:
        if not self.worker_id:  # not booted (a middleware used outside a worker)
            return False
        try:
            self.beat(finished=finished)
        except redis.RedisError as exc:
            logger.warning("heartbeat of {} failed: {}", self.worker_id, exc)
            return False
        return True

    def beat(self, *, finished: str | None = None) -> None:
        """Write the heartbeat hash and renew the leases of the running tasks, in one transaction.

        ``finished`` is a task whose lease goes in the same transaction. Beats are serialised, so an
        older picture (with that task still running) can never be written after it.
        """
        with self._beat_lock:
            self._beat(finished)

    def _beat(self, finished: str | None) -> None:
        now = time.time()
        jobs = [job for job in self.jobs.snapshot() if job.id != finished and not job.finished]
        running = [{"task_id": j.id, "actor": j.actor, "queue": j.queue, "started_at": j.started_at} for j in jobs]
        ttl_ms = int(self.ttl * 1000)
        key = self.keys.worker(self.worker_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(
            key,
            mapping={
                "id": self.worker_id,
                "hostname": self.hostname,
                "pid": os.getpid(),
                "threads": self.threads,
                "busy": len(running),
                "queues": json.dumps(self.queues),
                "state": self.state,
                "started_at": self.started_at,
                "last_seen": now,
                "processed": self.jobs.processed + (finished is not None),
                "running": json.dumps(running),
            },
        )
        pipe.pexpire(key, ttl_ms)
        pipe.zadd(self.keys.workers(), {self.worker_id: now})
        for job in jobs:
            pipe.set(self.keys.lease(job.id), self.worker_id, px=ttl_ms)
        if finished is not None:
            pipe.delete(self.keys.lease(finished))
        pipe.execute()
        if self.lease is not None and self.lease.renewed():
            logger.warning("heartbeat of {} reaches Redis again: lease regained", self.worker_id)
