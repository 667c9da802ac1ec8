"""``worker.preview.execute``: the Celery worker's SQL preview, as a Dramatiq actor.

Thin glue: report progress, run the pipeline under the job's control, return its dict. A preview
that reaches its time limit is still an answer (SUCCESS with ``error``), as the contract says.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..actor import job_actor
from ..config import get_settings, parse_size
from ..contracts import PREVIEW
from ..job import Job, current_job
from ..preview import PreviewRequest, error_result

if TYPE_CHECKING:
    from ..preview.pipeline import PreviewRunner

__all__ = ["execute", "runner"]

_runner: PreviewRunner | None = None
_runner_lock = threading.Lock()


def runner() -> PreviewRunner:
    """The process's preview runner, built on first use (after the worker process has forked)."""
    global _runner
    with _runner_lock:
        if _runner is None:
            from ..preview.pipeline import PreviewRunner

            _runner = PreviewRunner.from_settings(get_settings())
        return _runner


def _timed_out(job: Job) -> dict[str, Any]:
    return error_result(f"Preview timed out after {job.time_limit or 0:g} s")


@job_actor(PREVIEW, timed_out=_timed_out)
def execute(
    sql: str | None,
    source_id: int,
    destination_id: int,
    table_name: str,
    filter_sql: str | None = None,
    include_profiling: bool = False,
) -> Any:
    """Preview ``table_name`` of source ``source_id``, optionally through the user's ``sql``."""
    job = current_job()
    if job is not None:
        job.progress({"status": "executing", "table_name": table_name})
    settings = get_settings()
    request = PreviewRequest(
        sql=sql,
        source_id=int(source_id),
        destination_id=int(destination_id),
        table_name=str(table_name),
        filter_sql=filter_sql,
        include_profiling=bool(include_profiling),
        row_limit=settings.preview_row_limit,
        max_sql_bytes=parse_size(settings.preview_max_sql_bytes),
    )
    return runner().run(request, job=job)
