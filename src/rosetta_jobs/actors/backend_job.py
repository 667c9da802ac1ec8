"""``worker.backend_job.run``: one of the backend's periodic or one-shot jobs, in the backend's runner.

Thin glue over ``rosetta_jobs.backend_jobs``. The runner is killed with its children at the time
limit (``BACKEND_JOB_TIME_LIMIT``) or on cancel; a runner that exits non-zero is retried once, at least
10 s later (the Celery worker's policy), then ends FAILURE with its stderr.
"""

from __future__ import annotations

import threading
from typing import Any

from ..actor import job_actor
from ..backend_jobs import BackendRunner
from ..config import get_settings
from ..contracts import BACKEND_JOB
from ..job import current_job
from ..retrying import retry_options

__all__ = ["MAX_RETRIES", "RETRY_COUNTDOWN_MS", "run", "runner"]

#: The Celery task's ``max_retries`` and ``countdown``.
MAX_RETRIES = 1
RETRY_COUNTDOWN_MS = 10_000

_runner: BackendRunner | None = None
_runner_lock = threading.Lock()


def runner() -> BackendRunner:
    """The process's backend runner, built from the settings on first use."""
    global _runner
    with _runner_lock:
        if _runner is None:
            _runner = BackendRunner.from_settings(get_settings())
        return _runner


@job_actor(BACKEND_JOB, **retry_options(max_retries=MAX_RETRIES, min_backoff_ms=RETRY_COUNTDOWN_MS))
def run(job_name: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the backend's job ``job_name`` with ``payload``."""
    job = current_job()
    if job is not None:
        job.progress({"status": "running", "job_name": job_name})
    return runner().run(job_name, payload, task_id=job.id if job is not None else None, job=job)
