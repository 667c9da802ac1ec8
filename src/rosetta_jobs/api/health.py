"""``GET /health``: healthy only when a worker process has sent a heartbeat and Redis answers.

The Celery worker's ``/health`` always answered 200 and counted any worker on the broker
(``rosetta-worker.md`` 5.1). The keys stay the same, so the backend's
``worker_health_status`` rows keep their meaning; the HTTP status now tells the truth,
which is what the Docker health check reads.
"""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from .context import Ops, utc_now

__all__ = ["Health", "health_report", "router"]

router = APIRouter(tags=["ops"])


class QueueCounts(BaseModel):
    ready: int
    delayed: int
    dead_lettered: int
    in_progress: int


class Health(BaseModel):
    status: str = Field(description="healthy or unhealthy")
    healthy: bool
    active_workers: int = Field(description="worker processes with a live heartbeat, not shutting down")
    active_tasks: int = Field(description="jobs running now")
    reserved_tasks: int = Field(description="jobs fetched by a worker that have not started yet")
    timestamp: str
    queues: dict[str, QueueCounts] = Field(default_factory=dict)
    error: str | None = None


def health_report(ops: Ops) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body of ``/health``."""
    base: dict[str, Any] = {
        "status": "unhealthy",
        "healthy": False,
        "active_workers": 0,
        "active_tasks": 0,
        "reserved_tasks": 0,
        "timestamp": utc_now(),
        "queues": {},
    }
    try:
        ops.ping()
        snapshot = ops.snapshot()
    except redis.RedisError as exc:
        return 503, {**base, "error": f"Redis unreachable: {exc}"}
    body = {
        **base,
        "active_workers": len(snapshot.running_workers),
        "active_tasks": snapshot.active_tasks,
        "reserved_tasks": snapshot.reserved_tasks,
        "queues": snapshot.queues_dict(),
    }
    if not snapshot.running_workers:
        return 503, {**body, "error": "No worker heartbeat: no worker process is alive"}
    return 200, {**body, "status": "healthy", "healthy": True}


@router.get(
    "/health",
    response_model=Health,
    response_model_exclude_none=True,
    responses={503: {"model": Health, "description": "no live worker, or Redis unreachable"}},
)
def health(request: Request) -> JSONResponse:
    """Whether workers are alive and Redis answers; 200 only when healthy."""
    code, body = health_report(request.app.state.ops)
    return JSONResponse(Health.model_validate(body).model_dump(exclude_none=True), status_code=code)
