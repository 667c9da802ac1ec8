"""``worker.test.echo``: the smallest real job, for smoke tests and health probes."""

from __future__ import annotations

import time
from typing import Any

import dramatiq

from ..middleware import report_progress

__all__ = ["echo"]


@dramatiq.actor(actor_name="worker.test.echo", queue_name="default")
def echo(message: str, steps: int = 0, step_seconds: float = 0.0) -> dict[str, Any]:
    """Return ``message`` after ``steps`` steps of ``step_seconds``, reporting progress after each."""
    for step in range(1, steps + 1):
        time.sleep(step_seconds)
        report_progress({"step": step, "total": steps, "percent": round(100 * step / steps)})
    return {"message": message, "steps": steps}
