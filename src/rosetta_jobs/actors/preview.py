"""``worker.preview.execute``: the Celery worker's SQL preview, as a Dramatiq actor.

Thin glue: decode the positional arguments, report progress, run the pipeline, return its dict.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from ..config import get_settings
from ..middleware import report_progress
from ..preview import PreviewRequest
from ..retrying import retry_options

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


@dramatiq.actor(actor_name="worker.preview.execute", queue_name="preview", **retry_options())
def execute(
    sql: str | None,
    source_id: int,
    destination_id: int,
    table_name: str,
    filter_sql: str | None = None,
    include_profiling: bool = False,
) -> Any:
    """Preview ``table_name`` of source ``source_id``, optionally through the user's ``sql``."""
    report_progress({"status": "executing", "table_name": table_name})
    settings = get_settings()
    request = PreviewRequest(
        sql=sql,
        source_id=int(source_id),
        destination_id=int(destination_id),
        table_name=str(table_name),
        filter_sql=filter_sql,
        include_profiling=bool(include_profiling),
        row_limit=settings.preview_row_limit,
    )
    message = CurrentMessage.get_current_message()
    time_limit = message.options.get("time_limit") if message is not None else None
    return runner().run(
        request,
        task_id=message.message_id if message is not None else None,
        time_limit=time_limit / 1000 if time_limit else None,
    )
