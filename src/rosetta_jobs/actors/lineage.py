"""``worker.lineage.generate``: the column lineage of a table sync's SQL, stored for the UI.

Thin glue over ``rosetta_jobs.lineage``. Like every other failure, a generation that reaches its time
limit marks the row FAILED and answers ``success: false`` (SUCCESS), so the UI never stays on GENERATING.
"""

from __future__ import annotations

from typing import Any

from .. import resources
from ..actor import job_actor
from ..contracts import LINEAGE
from ..job import Job, current_job

__all__ = ["generate"]


def _timed_out(job: Job) -> dict[str, Any]:
    from .. import lineage

    message = job.message
    table_sync_id, _, source_table, _ = LINEAGE.bind(message.args, message.kwargs) if message else (None,) * 4
    error = f"Lineage generation timed out after {job.time_limit or 0:g} s"
    return lineage.failed(resources.catalog(), table_sync_id, str(source_table), error)


@job_actor(LINEAGE, timed_out=_timed_out)
def generate(
    table_sync_id: int, custom_sql: str | None, source_table: str, source_columns: list[str] | None = None
) -> dict[str, Any]:
    """Parse ``custom_sql`` over ``source_table`` and store the lineage on table sync ``table_sync_id``."""
    from .. import (
        lineage,
    )  # sqlglot is ~35 MB: loaded by the process that first generates a lineage, not by every worker

    job = current_job()
    if job is not None:
        job.progress({"status": "parsing", "table_sync_id": table_sync_id})
    return lineage.generate(resources.catalog(), table_sync_id, custom_sql, source_table, source_columns)
