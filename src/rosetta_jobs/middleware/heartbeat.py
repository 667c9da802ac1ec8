"""Worker heartbeats: each worker process says, every few seconds, that it is alive and what it runs.

Dramatiq's own broker heartbeats (``__heartbeats__``) are written by producers too and are never
removed on exit, so they cannot tell how many workers are alive. Here each worker process keeps one
hash with a TTL (``Keys.worker``, read by ``rosetta_jobs.workers``): a SIGKILLed process disappears
after ``ttl`` seconds, a stopped one at once. Each running task also holds a *lease* key with the
same TTL, so that the per-user limits can tell a job whose worker died from one that still runs.
What runs comes from the process's ``RunningJobs``, the registry every middleware shares. Each beat Redis
acknowledges renews the process's ``Lease`` (``rosetta_jobs.lease``, read by ``Fence``); after a failed
beat the next one is tried within a second.

A job's start and end write only its lease (one command each, on the job's thread; at the start it is handed to
the job, whose STARTED write stores it in the same step). The hash, with the busy count and what runs, is
written by the heartbeat thread: every ``interval``, and soon after a job starts or ends, at most once per
``coalesce`` seconds, so a process running a hundred jobs a second writes it ten times a second, not two
hundred. Only a whole beat renews the ``Lease``: a job that starts when none has reached Redis for an
``interval`` beats whole, on its own thread. A beat and a job's end never touch a lease another worker
holds (``lua/lease_renew.lua``, ``lua/lease_release.lua``): a message this process fetched before it was
cut off may have been requeued, and be running there.
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

from ..coalesce import Coalescer
from ..job import RunningJobs
from ..layout import Keys, script
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
        coalesce: float = 0.1,
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
        self._renew = script(client, "lease_renew")
        self._release = script(client, "lease_release")
        self._beats = Coalescer(self._beat_soon, coalesce=coalesce, name="rosetta-heartbeat")

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # Before the worker threads start: a job they take before ``after_worker_boot`` beats as this process.
        self.worker_id = f"{self.hostname}:{os.getpid()}"
        self.threads = int(worker.worker_threads)
        wanted = worker.consumer_whitelist or None
        self.queues = sorted({q_name(q) for q in broker.get_declared_queues() if wanted is None or q_name(q) in wanted})
        self.started_at = time.time()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._safe_beat()  # visible at once, not one interval later
        self._beats.start(wait=self.interval)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # Still beating while in-flight jobs finish, but no longer counted as taking work.
        self.state = "stopping"
        self._safe_beat()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._beats.stop()
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.keys.worker(self.worker_id))
            pipe.zrem(self.keys.workers(), self.worker_id)
            pipe.execute()
        except redis.RedisError as exc:
            logger.warning("could not remove the heartbeat of {}: {}", self.worker_id, exc)

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if not self.worker_id:  # not booted (a middleware used outside a worker)
            return
        if self.lease is not None and (self.lease.lost or self.lease.silent_for() > self.interval):
            # Redis has not taken a beat lately: a whole one (this job's lease in it), so that Fence, next,
            # sees the process's lease renewed if Redis answers now.
            self._safe_beat()
        else:
            lease = (self.keys.lease(message.message_id), self.worker_id, int(self.ttl * 1000))
            job = self.jobs.get(message.message_id)
            if job is not None:
                job.lease = lease  # written with its STARTED (``TaskState``): one round trip fewer per job
            else:
                try:
                    self._renew(keys=[lease[0]], args=[lease[1], lease[2]])
                except redis.RedisError as exc:  # the next beat writes it, if Redis answers by then
                    logger.warning("could not write the lease of {}: {}", message.message_id, exc)
        self._beats.poke()

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
        if not self.worker_id:
            return
        with self._beat_lock:  # a beat under way finishes first; the next one no longer renews this lease
            job = self.jobs.get(task_id)
            if job is not None:
                job.finished = True
            try:  # only if ours: a message Fence skipped may be running on another worker, under its lease
                self._release(keys=[self.keys.lease(task_id)], args=[self.worker_id])
            except redis.RedisError as exc:  # it expires with its TTL
                logger.warning("could not remove the lease of {}: {}", task_id, exc)
        self._beats.poke()

    def _beat_soon(self) -> float:
        """The thread's beat; the seconds to the next one without a change (sooner after a failed one)."""
        try:
            beaten = self._safe_beat()
        except Exception:  # a bug must not end the beats: the process would look dead within the TTL
            logger.exception("heartbeat of {} failed", self.worker_id)
            beaten = False
        return self.interval if beaten else min(self.interval, 1.0)

    def _safe_beat(self) -> bool:
        if not self.worker_id:  # not booted (a middleware used outside a worker)
            return False
        try:
            self.beat()
        except redis.RedisError as exc:
            logger.warning("heartbeat of {} failed: {}", self.worker_id, exc)
            return False
        return True

    def beat(self) -> None:
        """Write the heartbeat hash and renew the leases of the running tasks, in one transaction.

        Serialised with a job's end (``_finish``), so a picture with a finished job still running, and its
        renewed lease, can never be written after the lease was removed.
        """
        with self._beat_lock:
            self._beat()

    def _beat(self) -> None:
        now = time.time()
        everything, processed = self.jobs.census()
        jobs = [job for job in everything if not job.finished]
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
                # A finished job leaves the registry after this hook, and counts as processed then.
                "processed": processed + len(everything) - len(jobs),
                "running": json.dumps(running),
            },
        )
        pipe.pexpire(key, ttl_ms)
        pipe.zadd(self.keys.workers(), {self.worker_id: now})
        if jobs:  # never over another worker's lease (``lua/lease_renew.lua``)
            self._renew(keys=[self.keys.lease(job.id) for job in jobs], args=[self.worker_id, ttl_ms], client=pipe)
        pipe.execute()
        if self.lease is not None and self.lease.renewed():
            logger.warning("heartbeat of {} reaches Redis again: lease regained", self.worker_id)
