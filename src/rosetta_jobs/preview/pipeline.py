"""One preview, start to finish: cache -> configs -> statement -> DuckDB -> JSON -> cache.

Every error the user can act on comes back as a result with ``error`` set (a SUCCESS for the
poller, as with the Celery worker). Infrastructure failures (``TransientError``) and interrupts
(``JobCancelled``) propagate, so the actor's retry policy and the cancel middleware see them.
"""

from __future__ import annotations

import threading
from typing import Any

import duckdb

from ..catalog import Catalog
from ..config import Settings
from ..errors import JobTimedOut, PreviewError, TransientError
from .cache import PreviewCache
from .profile import profile
from .query import build_statement
from .request import PreviewRequest, error_result
from .serialize import serialize
from .session import Session, SessionPool, scrub

__all__ = ["PreviewRunner"]


class PreviewRunner:
    """The process-wide resources of the preview: config catalog, DuckDB sessions, cache."""

    def __init__(self, *, catalog: Catalog, sessions: SessionPool, cache: PreviewCache, time_limit: float) -> None:
        self.catalog = catalog
        self.sessions = sessions
        self.cache = cache
        self.time_limit = time_limit
        self._running: dict[str, Session] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> PreviewRunner:
        return cls(
            catalog=Catalog.from_settings(settings),
            sessions=SessionPool(
                memory_limit=settings.duckdb_memory_limit_bytes,
                threads=settings.duckdb_threads,
                slots=settings.duckdb_max_concurrent,
            ),
            cache=PreviewCache.from_url(settings.redis_url, ttl=settings.preview_cache_ttl),
            time_limit=settings.preview_time_limit,
        )

    def run(self, request: PreviewRequest, *, task_id: str | None = None, time_limit: float | None = None) -> Any:
        """The preview's result dict; ``task_id`` lets ``stop`` reach its running query."""
        cached = self.cache.get(request)
        if cached is not None:
            return cached
        limit = time_limit or self.time_limit
        try:
            result = self._execute(request, task_id, limit)
        except PreviewError as exc:
            return error_result(str(exc))
        except JobTimedOut:
            return error_result(f"Preview timed out after {limit:g} s")
        self.cache.put(request, result)
        return result

    def _execute(self, request: PreviewRequest, task_id: str | None, limit: float) -> dict[str, Any]:
        source = self.catalog.source(request.source_id)
        self.catalog.destination(request.destination_id)
        statement = build_statement(request, source_alias=source.alias)
        with self.sessions.session(source, wait=limit) as session:
            self._track(task_id, session)
            try:
                table = session.run(statement, timeout=limit)
            except duckdb.InterruptException:
                raise
            except (duckdb.ConnectionException, duckdb.IOException) as exc:
                raise TransientError(f"lost the source database: {scrub(str(exc), source.password)}") from None
            except duckdb.Error as exc:
                raise PreviewError(scrub(str(exc), source.password)) from None
            finally:
                self._track(task_id, None)
        result: dict[str, Any] = serialize(table)
        if request.include_profiling:
            result["profile"] = profile(table)
        return result

    def _track(self, task_id: str | None, session: Session | None) -> None:
        if task_id is None:
            return
        with self._lock:
            if session is None:
                self._running.pop(task_id, None)
            else:
                self._running[task_id] = session

    def stop(self, task_id: str) -> bool:
        """Interrupt the query of ``task_id`` if this process runs it (used by cancel)."""
        with self._lock:
            session = self._running.get(task_id)
        return session.stop() if session is not None else False

    def close(self) -> None:
        self.sessions.close()
        self.catalog.close()
