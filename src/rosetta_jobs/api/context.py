"""What every route of the ops service reads: the client, the broker's queues, the workers' heartbeats.

One ``Ops`` per app, built from the settings; its Redis clients are thread-safe and the
sync routes run in FastAPI's thread pool.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis

from ..client import JobClient
from ..config import Settings
from ..queues import QueueDepth, QueueInspector
from ..workers import WorkerInfo, read_workers

__all__ = ["Ops", "Snapshot", "utc_now", "worker_dict"]


def utc_now() -> str:
    """UTC ISO time with ``+00:00``, as the Celery worker's ``/health`` wrote it."""
    return dt.datetime.now(dt.UTC).isoformat()


@dataclass
class Snapshot:
    """Workers and queues read at one moment."""

    workers: list[WorkerInfo]
    queues: list[QueueDepth]
    taken_at: float = field(default_factory=time.time)

    @property
    def running_workers(self) -> list[WorkerInfo]:
        return [w for w in self.workers if w.state == "running"]

    @property
    def active_tasks(self) -> int:
        return sum(w.busy for w in self.workers)

    @property
    def reserved_tasks(self) -> int:
        """Fetched by a worker but not running yet: Celery's "reserved"."""
        return max(sum(q.in_progress for q in self.queues) - self.active_tasks, 0)

    def queues_dict(self) -> dict[str, dict[str, int]]:
        return {
            q.name: {
                "ready": q.ready,
                "delayed": q.delayed,
                "dead_lettered": q.dead_lettered,
                "in_progress": q.in_progress,
            }
            for q in self.queues
        }


class Ops:
    """The service's view of one rosetta-jobs deployment."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.namespace = settings.broker_namespace
        self.client = JobClient.from_settings(settings)
        self.store = self.client.store
        self.results: redis.Redis = self.store.client
        self.broker: redis.Redis = self.client.broker.client
        self.inspector = QueueInspector(client=self.broker, namespace=self.namespace, store=self.store)
        self._async_results: aioredis.Redis | None = None

    @property
    def async_results(self) -> aioredis.Redis:
        """An asyncio client of the result backend, for the SSE streams (created in the event loop)."""
        if self._async_results is None:
            self._async_results = aioredis.Redis.from_url(
                self.settings.result_backend_url, socket_connect_timeout=5, socket_keepalive=True
            )
        return self._async_results

    async def aclose(self) -> None:
        if self._async_results is not None:
            await self._async_results.aclose()
            self._async_results = None

    def workers(self) -> list[WorkerInfo]:
        return read_workers(self.results, self.namespace)

    def snapshot(self) -> Snapshot:
        """Live workers and the depth of every queue they listen to or that holds messages.

        Raises ``redis.RedisError`` when either Redis does not answer.
        """
        workers = self.workers()
        known = sorted({q for w in workers for q in w.queues})
        names = self.inspector.queue_names(known)
        return Snapshot(workers=workers, queues=self.inspector.depths(names))

    def ping(self) -> None:
        self.broker.ping()
        self.results.ping()


def worker_dict(worker: WorkerInfo, *, now: float | None = None) -> dict[str, Any]:
    """A worker as the dashboard shows it, with the age of its last heartbeat."""
    doc = worker.asdict()
    doc["age_seconds"] = round((now or time.time()) - worker.last_seen, 1)
    return doc
