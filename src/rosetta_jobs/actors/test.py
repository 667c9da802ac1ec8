"""``worker.test.echo``: the smallest real job, for smoke tests and health probes."""

from __future__ import annotations

from typing import Any

from ..actor import job_actor
from ..contracts import ECHO
from ..job import current_job

__all__ = ["echo"]


@job_actor(ECHO)
def echo(message: str, steps: int = 0, step_seconds: float = 0.0) -> dict[str, Any]:
    """Return ``message`` after ``steps`` steps of ``step_seconds``, reporting progress after each."""
    job = current_job()
    for step in range(1, steps + 1):
        if job is None:
            continue
        job.wait(step_seconds)
        job.progress({"step": step, "total": steps, "percent": round(100 * step / steps)})
    return {"message": message, "steps": steps}
