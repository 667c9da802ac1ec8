"""``worker.preview.execute``: the Celery worker's SQL preview, as a Dramatiq actor.

Thin glue: report progress, run the pipeline under the job's control, return its dict. A preview
that reaches its time limit is still an answer (SUCCESS with ``error``), as the contract says.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import TYPE_CHECKING, Any

from loguru import logger

from .. import codec
from ..actor import job_actor
from ..config import get_settings, parse_size
from ..contracts import PREVIEW
from ..job import Job, current_job
from ..preview import PreviewRequest, error_result
from ..preview.executor import Answer
from ..redact import sql_digest

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
    settings = get_settings()
    request = PreviewRequest.from_arguments(
        sql, source_id, destination_id, table_name, filter_sql, include_profiling,
        row_limit=settings.preview_row_limit, max_sql_bytes=parse_size(settings.preview_max_sql_bytes),
    )  # fmt: skip
    started = time.monotonic()
    stages: dict[str, float] = {}
    result = runner().run(request, job=job, stages=stages)
    log = functools.partial(_log, request, result, time.monotonic() - started, stages)
    if job is None:
        log()
    else:  # ~0.2 ms of formatting and writing the client need not wait for: after the SUCCESS write
        job.after_end(log)
    return result


def _log(request: PreviewRequest, result: Any, took: float, stages: dict[str, float]) -> None:
    """One INFO line per preview, the SQL as its digest only: it may hold data the user typed in.

    A result passed on as stored (``codec.Raw``) is not decoded to count its rows; ``stages`` says where
    the time went (ms), ``cache`` alone for a hit.
    """
    sql = f"sql sha256:{sql_digest(request.sql)}" if request.sql else "no sql"
    where = f"{request.table_name} of source {request.source_id} ({sql})"
    breakdown = " ".join(f"{stage}={ms:g}" for stage, ms in stages.items())
    if isinstance(result, Answer):
        logger.info("preview of {}: {} rows in {:.4f} s [{}]", where, result.rows, took, breakdown)
    elif isinstance(result, codec.Raw):
        logger.info("preview of {}: cached in {:.4f} s [{}]", where, took, breakdown)
    else:  # the runner's third answer: ``error_result``
        logger.info("preview of {} answered an error to the user in {:.4f} s [{}]", where, took, breakdown)
