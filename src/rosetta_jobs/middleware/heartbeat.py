"""Worker heartbeats: each worker process says, every few seconds, that it is alive and what it runs.

Dramatiq's own broker heartbeats (``__heartbeats__``) are written by producers too and are
never removed on exit, so they cannot tell how many workers are alive. Here each worker
process keeps one hash with a TTL (``ops_key(ns, "worker", <id>)``): a SIGKILLed process
disappears after ``ttl`` seconds, a stopped one at once. Each running task also holds a
*lease* key with the same TTL, so that the per-user limits can tell a job whose worker died
from one that still runs.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, cast

import dramatiq
import redis
from dramatiq.common import q_name
from dramatiq.middleware import Middleware
from loguru import logger

from ..queues import ops_key

__all__ = [
    "HEARTBEAT_INTERVAL",
    "HEARTBEAT_TTL",
    "Heartbeat",
    "WorkerInfo",
    "lease_key",
    "read_workers",
]

#: Seconds between two heartbeats of a worker process.
HEARTBEAT_INTERVAL = float(os.getenv("ROSETTA_HEARTBEAT_INTERVAL", "5"))
#: Seconds after the last heartbeat when a worker process (and its task leases) count as dead.
HEARTBEAT_TTL = float(os.getenv("ROSETTA_HEARTBEAT_TTL", "20"))


def lease_key(namespace: str, task_id: str) -> str:
    """The key that exists while a live worker runs ``task_id``."""
    return ops_key(namespace, "lease", task_id)


def _index_key(namespace: str) -> str:
    return ops_key(namespace, "workers")


def _worker_key(namespace: str, worker_id: str) -> str:
    return ops_key(namespace, "worker", worker_id)


@dataclass
class WorkerInfo:
    """What one worker process last said about itself."""

    id: str
    hostname: str
    pid: int
    threads: int
    busy: int
    queues: list[str]
    state: str
    started_at: float
    last_seen: float
    processed: int
    running: list[dict[str, Any]] = field(default_factory=list)

    def asdict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Heartbeat(Middleware):
    """Writes this process's heartbeat from a thread started in ``after_worker_boot``."""

    def __init__(
        self,
        *,
        client: redis.Redis,
        namespace: str,
        interval: float = HEARTBEAT_INTERVAL,
        ttl: float = HEARTBEAT_TTL,
        hostname: str | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.interval = interval
        self.ttl = max(ttl, interval * 2)
        self.hostname = hostname or socket.gethostname()
        self.worker_id = ""
        self.threads = 0
        self.queues: list[str] = []
        self.state = "running"
        self.started_at = time.time()
        self.processed = 0
        self._running: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._beat_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.worker_id = f"{self.hostname}:{os.getpid()}"
        self.threads = int(worker.worker_threads)
        wanted = worker.consumer_whitelist or None
        self.queues = sorted({q_name(q) for q in broker.get_declared_queues() if wanted is None or q_name(q) in wanted})
        self.started_at = time.time()
        self._stop.clear()
        self.beat()  # visible at once, not one interval later
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
            pipe.delete(_worker_key(self.namespace, self.worker_id))
            pipe.zrem(_index_key(self.namespace), self.worker_id)
            pipe.execute()
        except redis.RedisError as exc:
            logger.warning("could not remove the heartbeat of {}: {}", self.worker_id, exc)

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        entry = {
            "task_id": message.message_id,
            "actor": message.actor_name,
            "queue": q_name(message.queue_name),
            "started_at": time.time(),
        }
        with self._lock:
            self._running[message.message_id] = entry
        self._safe_beat()  # writes the task's lease, and the busy count is right at once

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        self._finish(message)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._finish(message)

    def _finish(self, message: Any) -> None:
        with self._lock:
            known = self._running.pop(message.message_id, None)
            if known is not None:
                self.processed += 1
        if known is not None:
            self._safe_beat(finished=message.message_id)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._safe_beat()

    def _safe_beat(self, *, finished: str | None = None) -> None:
        try:
            self.beat(finished=finished)
        except redis.RedisError as exc:
            logger.warning("heartbeat of {} failed: {}", self.worker_id, exc)

    def beat(self, *, finished: str | None = None) -> None:
        """Write the heartbeat hash and renew the leases of the running tasks, in one transaction.

        ``finished`` is a task whose lease goes in the same transaction. Beats are serialised,
        so an older picture (with that task still running) can never be written after it.
        """
        with self._beat_lock:
            self._beat(finished)

    def _beat(self, finished: str | None) -> None:
        now = time.time()
        with self._lock:
            running = list(self._running.values())
            processed = self.processed
        ttl_ms = int(self.ttl * 1000)
        key = _worker_key(self.namespace, self.worker_id)
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
                "processed": processed,
                "running": json.dumps(running),
            },
        )
        pipe.pexpire(key, ttl_ms)
        pipe.zadd(_index_key(self.namespace), {self.worker_id: now})
        for entry in running:
            pipe.set(lease_key(self.namespace, entry["task_id"]), self.worker_id, px=ttl_ms)
        if finished is not None:
            pipe.delete(lease_key(self.namespace, finished))
        pipe.execute()


def read_workers(client: redis.Redis, namespace: str) -> list[WorkerInfo]:
    """The worker processes whose heartbeat has not expired, and forget the others."""
    index = _index_key(namespace)
    ids = [member.decode() for member in cast("list[bytes]", client.zrange(index, 0, -1))]
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    for worker_id in ids:
        pipe.hgetall(_worker_key(namespace, worker_id))
    records = pipe.execute()
    workers, gone = [], []
    for worker_id, record in zip(ids, records, strict=True):
        if not record:
            gone.append(worker_id)
            continue
        doc = {k.decode(): v.decode() for k, v in record.items()}
        workers.append(
            WorkerInfo(
                id=doc.get("id", worker_id),
                hostname=doc.get("hostname", "?"),
                pid=int(doc.get("pid", 0)),
                threads=int(doc.get("threads", 0)),
                busy=int(doc.get("busy", 0)),
                queues=list(json.loads(doc.get("queues", "[]"))),
                state=doc.get("state", "running"),
                started_at=float(doc.get("started_at", 0)),
                last_seen=float(doc.get("last_seen", 0)),
                processed=int(doc.get("processed", 0)),
                running=list(json.loads(doc.get("running", "[]"))),
            )
        )
    if gone:
        client.zrem(index, *gone)
    return sorted(workers, key=lambda w: w.id)
