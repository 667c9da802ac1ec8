"""One deployment seen from outside its workers: its queues, live workers, tasks and history, read from Redis.

What the ops service (``api.context.Ops``) and the operators' commands (``commands.py``) both read, so that
``/admin``, ``/metrics`` and ``rosetta-jobs queues`` can never disagree. Light install only: no FastAPI here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis

from .client import JobClient
from .config import Settings
from .history import TaskHistory
from .queues import QueueDepth, QueueInspector, unconsumed
from .workers import WorkerInfo, read_workers

__all__ = ["Deployment", "Snapshot"]


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

    @property
    def consumed(self) -> frozenset[str]:
        """The queues some live worker process (not stopping) takes work from."""
        return frozenset(q for w in self.running_workers for q in w.queues)

    @property
    def unconsumed(self) -> list[str]:
        """Queues holding work (ready or delayed) that no live worker consumes: jobs stranded until one starts."""
        return unconsumed(self.queues, self.consumed)

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


class Deployment:
    """The clients of one deployment (its Redis databases and ``BROKER_NAMESPACE``); thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.namespace = settings.broker_namespace
        self.client = JobClient.from_settings(settings)
        self.store = self.client.store
        self.results: redis.Redis = self.store.client
        self.broker: redis.Redis = self.client.broker.client
        self.inspector = QueueInspector(client=self.broker, namespace=self.namespace, store=self.store)
        self.history = TaskHistory(client=self.results, namespace=self.namespace)

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
