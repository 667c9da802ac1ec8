"""The ops HTTP service (``rosetta-jobs serve``): health, metrics, the task API and the queue dashboard.

It never imports the preview pipeline: it reads Redis and uses ``JobClient``, so it
runs with the ``api`` extra only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .. import __version__
from ..celery_wire import ControlMessage
from ..config import Settings
from ..errors import BrokerUnavailable
from ..pidbox import PidboxListener, revoke, waiting_in_kombu
from ..sweeper import Sweeper, run_sweeper
from . import admin, health, metrics, schema, tasks, worker
from .context import Ops
from .history import HISTORY_SECONDS, run_sampler

__all__ = ["create_app", "serve"]


def create_app(settings: Settings, *, sample_depths: bool = True) -> FastAPI:
    """The FastAPI app for ``settings``; ``sample_depths`` runs the dashboard's queue-depth sampler."""
    ops = Ops(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sampler = asyncio.create_task(run_sampler(ops)) if sample_depths else None
        sweeper = asyncio.create_task(run_sweeper(_sweeper(ops)))
        # Celery revokes sent while no worker listens (all down, or restarting) still land.
        listener = _revoke_listener(ops) if settings.celery_control else None
        try:
            yield
        finally:
            if listener is not None:
                listener.stop()
            if sampler is not None:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await ops.aclose()

    app = FastAPI(
        title="rosetta-jobs",
        version=__version__,
        description="Health, Prometheus metrics, task status with Server-Sent Events, and the queue dashboard.",
        lifespan=lifespan,
    )
    app.state.ops = ops

    @app.exception_handler(redis.RedisError)
    @app.exception_handler(BrokerUnavailable)
    async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"Redis unreachable: {exc}"}, status_code=503)

    app.include_router(health.router)
    app.include_router(schema.router)
    app.include_router(metrics.router)
    app.include_router(tasks.router)
    app.include_router(worker.router)
    app.include_router(admin.api)
    app.include_router(admin.pages)
    return app


def _sweeper(ops: Ops) -> Sweeper:
    """The housekeeping every replica of the service offers; the lease lets one of them run it at a time."""
    settings = ops.settings
    return Sweeper(ops, interval=settings.sweep_interval, dead_letter_ttl=settings.dead_letter_ttl,
                   result_expires=settings.result_expires, depth_window=HISTORY_SECONDS)  # fmt: skip


def _revoke_listener(ops: Ops) -> PidboxListener:
    """The pidbox listener of the ops service: revokes only (it runs no tasks, so it answers no inspection)."""

    def queued(task_id: str) -> bool:
        return waiting_in_kombu(ops.broker, ops.settings.celery_queue_names, task_id)

    def handle(message: ControlMessage) -> None:
        if message.method != "revoke":
            return
        ids = message.arguments.get("task_id")
        terminate = bool(message.arguments.get("terminate"))
        for task_id in ids if isinstance(ids, list) else [ids]:
            if isinstance(task_id, str) and task_id:
                revoke(ops.store, task_id, terminate=terminate, queued=queued)

    return PidboxListener(client=ops.broker, handler=handle, name="pidbox-ops").start()


def serve(settings: Settings, *, host: str, port: int) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    from ..logs import configure_logging

    configure_logging()
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,  # uvicorn's records go through loguru like everything else
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,  # SSE streams would hold a shutdown forever
    )
