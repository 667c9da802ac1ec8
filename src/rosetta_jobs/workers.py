"""Worker processes as their heartbeats describe them: what ``/health``, the dashboard and the CLI read.

Each worker process keeps one hash with a TTL (``Keys.worker``) and its id in a sorted set
(``Keys.workers``), written by ``middleware.heartbeat.Heartbeat``; a SIGKILLed process disappears
after its TTL, a stopped one at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from .layout import Keys

__all__ = ["WorkerInfo", "read_workers"]


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


def read_workers(client: redis.Redis, namespace: str) -> list[WorkerInfo]:
    """The worker processes whose heartbeat has not expired, and forget the others."""
    keys = Keys(namespace)
    index = keys.workers()
    ids = [member.decode() for member in cast("list[bytes]", client.zrange(index, 0, -1))]
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    for worker_id in ids:
        pipe.hgetall(keys.worker(worker_id))
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
