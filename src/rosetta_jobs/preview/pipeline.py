"""One preview, start to finish: cache -> configs -> an executor process (statement, DuckDB, JSON) -> cache.

Every error the user can act on comes back as a result with ``error`` set (a SUCCESS for the
poller, as with the Celery worker). Infrastructure failures (``TransientError``) and interrupts
(``JobCancelled``) propagate, so the actor's retry policy and the cancel middleware see them.

The worker process itself never reads the user's SQL with a parser nor runs DuckDB: it checks the
request's size and characters, looks up the connection config, and hands the rest to an executor
process (``executor``), which is bounded in memory and killed at the deadline.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

from ..catalog import Catalog
from ..config import Settings, parse_size
from ..errors import JobTimedOut, PreviewError
from ..job import Job
from ..remote_catalog import RemoteCatalog, open_catalog
from .cache import PreviewCache
from .executor import Answer, ExecutorConfig, ExecutorPool
from .host import prepare_temp_directory, process_timezone
from .request import PreviewRequest, error_result
from .stages import Stages

__all__ = ["PreviewRunner"]


class PreviewRunner:
    """The process-wide resources of the preview: config catalog, executor processes, cache."""

    def __init__(
        self, *, catalog: Catalog | RemoteCatalog, executors: ExecutorPool, cache: PreviewCache, time_limit: float
    ) -> None:
        self.catalog = catalog
        self.executors = executors
        self.cache = cache
        self.time_limit = time_limit

    @classmethod
    def from_settings(cls, settings: Settings) -> PreviewRunner:
        config = ExecutorConfig(
            memory_limit=settings.duckdb_memory_limit_bytes,
            threads=settings.duckdb_threads,
            timezone=settings.worker_timezone or process_timezone(),
            headroom=parse_size(settings.preview_memory_headroom),
            max_result_bytes=parse_size(settings.preview_max_result_bytes),
            max_cell_bytes=parse_size(settings.preview_max_cell_bytes),
            schemas=settings.preview_schema_names,
            max_age=settings.preview_session_max_age,
            temp_directory=prepare_temp_directory(settings.duckdb_temp_path),
        )
        return cls(
            catalog=open_catalog(settings),
            executors=ExecutorPool(config=config, slots=settings.duckdb_max_concurrent),
            cache=PreviewCache.from_url(settings.redis_url, ttl=settings.preview_cache_ttl, sentinel=settings.sentinel),
            time_limit=settings.preview_time_limit,
        )

    def run(self, request: PreviewRequest, *, job: Job | None = None, stages: dict[str, float] | None = None) -> Any:
        """The preview's result; under ``job``, its time limit and a cancel reach the running query.

        A result comes back as the JSON it was stored as (``codec.Raw``: from the cache, or as the executor
        encoded it), never decoded here. ``stages`` receives the milliseconds of each stage.
        """
        limit = job.time_limit if job is not None and job.time_limit is not None else self.time_limit
        deadline = job.deadline if job is not None and job.deadline is not None else time.monotonic() + limit
        took = Stages(stages)
        try:
            request.check_input()
        except PreviewError as exc:
            return error_result(str(exc))
        cached = self.cache.get(request)
        took.mark("cache")
        if cached is not None:
            return cached
        try:
            answer = self._execute(request, job, deadline, took)
        except PreviewError as exc:
            return error_result(str(exc))
        except JobTimedOut:
            return error_result(f"Preview timed out after {limit:g} s")
        if job is None:
            self.cache.put(request, answer.data)
        else:  # after the SUCCESS write: the client waits for that one, not for this one
            job.after_end(functools.partial(self.cache.put, request, answer.data))
        return answer

    def _execute(self, request: PreviewRequest, job: Job | None, deadline: float, took: Stages) -> Answer:
        source = self.catalog.source(request.source_id)
        self.catalog.destination(request.destination_id)
        took.mark("catalog")
        # Every field of both, whatever they hold: the executor rebuilds the same two objects.
        task = {"source": dataclasses.asdict(source), "request": dataclasses.asdict(request)}
        # PROGRESS once an executor has the preview, while it runs (a cache hit never gets here)
        executing = {"status": "executing", "table_name": request.table_name}
        progress = None if job is None else functools.partial(job.progress, executing)
        answer = self.executors.run(task, fingerprint=source.fingerprint(), deadline=deadline, job=job, sent=progress)
        took.mark("executor")
        took.split("executor", answer.stages)
        return answer

    def close(self) -> None:
        self.executors.close()
        self.catalog.close()
