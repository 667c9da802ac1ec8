"""What every route of the ops service reads: the client, the broker's queues, the workers' heartbeats.

One ``Ops`` per app, built from the settings (a ``deployment.Deployment``, which the ``rosetta-jobs``
commands read too); its Redis clients are thread-safe and the sync routes run in FastAPI's thread pool.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import redis.asyncio as aioredis

from ..config import Settings
from ..connection import async_redis_client
from ..deployment import Deployment, Snapshot
from ..workers import WorkerInfo

__all__ = ["Ops", "Snapshot", "utc_now", "worker_dict"]


def utc_now() -> str:
    """UTC ISO time with ``+00:00``, as the Celery worker's ``/health`` wrote it."""
    return dt.datetime.now(dt.UTC).isoformat()


class Ops(Deployment):
    """The service's view of one rosetta-jobs deployment: a ``Deployment`` plus the SSE streams' client."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._async_results: aioredis.Redis | None = None

    @property
    def async_results(self) -> aioredis.Redis:
        """An asyncio client of the result backend, for the SSE streams (created in the event loop)."""
        if self._async_results is None:
            self._async_results = async_redis_client(self.settings.result_backend_url, sentinel=self.settings.sentinel)
        return self._async_results

    async def aclose(self) -> None:
        if self._async_results is not None:
            await self._async_results.aclose()
            self._async_results = None


def worker_dict(worker: WorkerInfo, *, now: float | None = None) -> dict[str, Any]:
    """A worker as the dashboard shows it, with the age of its last heartbeat."""
    doc = worker.asdict()
    doc["age_seconds"] = round((now or time.time()) - worker.last_seen, 1)
    return doc
