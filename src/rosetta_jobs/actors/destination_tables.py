"""``worker.destination_table_list.fetch``: a destination's table list, stored and cached for the backend.

Thin glue over ``rosetta_jobs.destinations``. Retries are the Celery worker's: two, at least 10 s apart
(jitter up to 20 s), for a destination that does not exist, one that cannot be reached and a config
database that fails; an unreachable destination's last attempt is answered with ``error``.
"""

from __future__ import annotations

from typing import Any

from .. import resources
from ..actor import job_actor
from ..contracts import DESTINATION_TABLE_LIST
from ..destinations import fetch_table_list
from ..job import current_job
from ..retrying import retries_left, retry_options

__all__ = ["MAX_RETRIES", "RETRY_COUNTDOWN_MS", "fetch"]

#: The Celery task's ``max_retries`` and ``default_retry_delay``.
MAX_RETRIES = 2
RETRY_COUNTDOWN_MS = 10_000


@job_actor(DESTINATION_TABLE_LIST, **retry_options(max_retries=MAX_RETRIES, min_backoff_ms=RETRY_COUNTDOWN_MS))
def fetch(destination_id: int) -> dict[str, Any]:
    """List, store and cache the tables of destination ``destination_id``."""
    job = current_job()
    retries = 0
    if job is not None:
        job.progress({"status": "fetching", "destination_id": destination_id})
        retries = job.message.options.get("retries", 0) if job.message is not None else 0
    return fetch_table_list(
        destination_id,
        catalog=resources.catalog(),
        cache=resources.cache(),
        last_attempt=retries_left(retries, limit=MAX_RETRIES) == 0,
        job=job,
    )
