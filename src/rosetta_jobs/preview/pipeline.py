"""One preview, start to finish: cache -> configs -> statement -> DuckDB -> JSON -> cache.

Every error the user can act on comes back as a result with ``error`` set (a SUCCESS for the
poller, as with the Celery worker). Infrastructure failures (``TransientError``) and interrupts
(``JobCancelled``) propagate, so the actor's retry policy and the cancel middleware see them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import duckdb

from ..catalog import Catalog
from ..config import Settings
from ..errors import JobInterrupt, JobTimedOut, PreviewError, TransientError
from ..job import Job
from ..redact import redact
from .cache import PreviewCache
from .profile import profile
from .query import build_statement
from .request import PreviewRequest, error_result
from .serialize import serialize
from .session import SessionPool, process_timezone

__all__ = ["PreviewRunner"]


class PreviewRunner:
    """The process-wide resources of the preview: config catalog, DuckDB sessions, cache."""

    def __init__(self, *, catalog: Catalog, sessions: SessionPool, cache: PreviewCache, time_limit: float) -> None:
        self.catalog = catalog
        self.sessions = sessions
        self.cache = cache
        self.time_limit = time_limit

    @classmethod
    def from_settings(cls, settings: Settings) -> PreviewRunner:
        return cls(
            catalog=Catalog.from_settings(settings),
            sessions=SessionPool(
                memory_limit=settings.duckdb_memory_limit_bytes,
                threads=settings.duckdb_threads,
                slots=settings.duckdb_max_concurrent,
                timezone=settings.worker_timezone or process_timezone(),
            ),
            cache=PreviewCache.from_url(settings.redis_url, ttl=settings.preview_cache_ttl),
            time_limit=settings.preview_time_limit,
        )

    def run(self, request: PreviewRequest, *, job: Job | None = None) -> Any:
        """The preview's result dict; under ``job``, its time limit and a cancel reach the running query."""
        cached = self.cache.get(request)
        if cached is not None:
            return cached
        limit = job.time_limit if job is not None and job.time_limit is not None else self.time_limit
        deadline = job.deadline if job is not None and job.deadline is not None else time.monotonic() + limit
        try:
            result = self._execute(request, job, deadline)
        except PreviewError as exc:
            return error_result(str(exc))
        except JobTimedOut:
            return error_result(f"Preview timed out after {limit:g} s")
        self.cache.put(request, result)
        return result

    def _execute(self, request: PreviewRequest, job: Job | None, deadline: float) -> dict[str, Any]:
        source = self.catalog.source(request.source_id)
        self.catalog.destination(request.destination_id)
        statement = build_statement(request, source_alias=source.alias)
        with self.sessions.session(source, wait=_remaining(deadline)) as session:
            cancelled = threading.Event()

            def stop(reason: type[JobInterrupt]) -> None:
                cancelled.set()
                session.stop(reason)

            try:
                with job.stoppable(stop) if job is not None else contextlib.nullcontext():
                    table = session.run(statement, timeout=_remaining(deadline), cancelled=cancelled)
            except duckdb.InterruptException:
                raise
            except (duckdb.ConnectionException, duckdb.IOException) as exc:
                raise TransientError(
                    f"lost the source database: {redact(str(exc), source.password, source.conninfo())}"
                ) from None
            except duckdb.Error as exc:
                raise PreviewError(redact(str(exc), source.password, source.conninfo())) from None
        result: dict[str, Any] = serialize(table)
        if request.include_profiling:
            result["profile"] = profile(table)
        return result

    def close(self) -> None:
        self.sessions.close()
        self.catalog.close()


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise JobTimedOut(0)
    return remaining
