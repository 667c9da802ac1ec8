"""Celery-compatible task state, written as a job moves through the worker.

Placed *before* ``Retries`` in the stack: ``after_*`` hooks run in reverse list
order, so by the time this middleware sees a failure, ``Retries`` has already
decided between a retry (RETRY) and the end (FAILURE).
"""

from __future__ import annotations

import os
import socket
from typing import Any

import dramatiq
import redis
from dramatiq.common import q_name
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware, SkipMessage
from loguru import logger

from .. import codec
from ..errors import JobAbandoned, StateRefused, WorkerLost
from ..job import Job, RunningJobs
from ..states import (
    FAILURE,
    FINAL_STATES,
    PROGRESS,
    RETRY,
    REVOKED,
    STARTED,
    SUCCESS,
    build_meta,
    celery_exception,
    encode_exception,
    format_traceback,
    revoked_exception,
    task_meta,
)
from ..store import TaskStore

__all__ = ["TaskState"]

#: Seconds a worker thread keeps retrying to store a final state while Redis is unreachable.
FINAL_WRITE_WAIT = 600.0


class TaskState(Middleware):
    """Writes STARTED, PROGRESS, SUCCESS, RETRY and FAILURE under the message id."""

    def __init__(
        self,
        *,
        store: TaskStore,
        jobs: RunningJobs,
        max_worker_losses: int = 2,
        hostname: str | None = None,
        hash_sql: bool = True,
    ) -> None:
        self.store = store
        #: ``TASK_META_SQL=hash``: the meta outlives the job, so it keeps the SQL's SHA-256, never the SQL.
        self.hash_sql = hash_sql
        self.jobs = jobs
        self.max_worker_losses = max_worker_losses
        self.hostname = hostname or f"rosetta@{socket.gethostname()}"

    def _meta(self, message: dramatiq.MessageProxy, status: str, result: Any = None, **extra: Any) -> dict[str, Any]:
        return task_meta(message.message_id, status, result, actor=message.actor_name, args=message.args,
                         kwargs=message.kwargs, worker=self.hostname, queue=q_name(message.queue_name),
                         hash_sql=self.hash_sql, **extra)  # fmt: skip

    def write(self, message: dramatiq.MessageProxy, status: str, result: Any = None, **extra: Any) -> bool:
        # A final state (or RETRY) waits out a Redis outage; STARTED and PROGRESS are best effort.
        wait = FINAL_WRITE_WAIT if status in FINAL_STATES or status == RETRY else 0.0
        meta = self._meta(message, status, result, **extra)
        if wait:
            try:
                written = self.store.write(meta, wait=wait, context=self._history(message))
            except StateRefused as exc:
                return self._refused(message, status, exc)
        else:
            try:
                written = self.store.write(meta)
            except (redis.RedisError, StateRefused) as exc:  # STARTED/PROGRESS must not fail the job over Redis
                logger.warning("task {}: could not store {} ({})", message.message_id, status, exc)
                return False
        if not written and status != REVOKED:  # the Lua guard: e.g. a re-run elsewhere finished first
            logger.info("task {}: a final state is already stored; this {} is not written", message.message_id, status)
        return written

    def _history(self, message: dramatiq.MessageProxy) -> dict[str, Any]:
        """What the task history records besides the meta: who sent the job, when it was enqueued and started."""
        job = self.jobs.get(message.message_id)
        return {
            "user": message.options.get("user_id"),
            "enqueued_at": message.message_timestamp / 1000,
            "started_at": job.started_at if job is not None else None,
            "args": message.args,
            "kwargs": message.kwargs,
            "worker": f"{socket.gethostname()}:{os.getpid()}",
        }

    def _refused(self, message: dramatiq.MessageProxy, status: str, exc: StateRefused) -> bool:
        """Redis refused a final state (too large, full): store a small FAILURE that says so, once, bounded.

        The poller must see the task end: a refused SUCCESS retried for ever left it PROGRESS for good.
        If even the small FAILURE is refused (Redis is full), the attempt ends there, logged.
        """
        logger.error("task {}: the result backend refused its {} state: {}", message.message_id, status, exc)
        if status not in FINAL_STATES:
            return False  # a RETRY: the next attempt writes its own state
        error = encode_exception(StateRefused(f"the {status} state was refused: {exc}"))
        # Without the arguments: they may be what made the state too large.
        failure = build_meta(message.message_id, FAILURE, error, name=message.actor_name, worker=self.hostname,
                             queue=q_name(message.queue_name))  # fmt: skip
        try:
            return self.store.write(failure, wait=FINAL_WRITE_WAIT, context=self._history(message))
        except (StateRefused, redis.RedisError) as again:
            logger.error("task {}: its FAILURE state was refused too ({}); the task keeps its last state",
                         message.message_id, again)  # fmt: skip
            return False

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        retries = message.options.get("retries", 0)
        started = self._meta(message, STARTED, {"pid": os.getpid(), "hostname": self.hostname}, retries=retries)
        job = self.jobs.get(message.message_id)
        try:
            starts = self.store.start(started, lease=job.lease if job is not None else None)
        except redis.RedisError as exc:  # best effort, as Dramatiq would run the job anyway
            logger.warning("task {}: could not store STARTED ({}); running it anyway", message.message_id, exc)
            return
        if isinstance(starts, str):
            # A redelivery (crash, DQ promotion race) or a cancel: never run it again.
            logger.info("task {} is already {}; skipping it", message.message_id, starts)
            if starts == REVOKED:  # the cancel may have outlived the REVOKED state: show it again
                self.write(message, REVOKED, revoked_exception())
            raise SkipMessage(f"task is already {starts}")
        if job is not None:
            job.deliveries = starts
        losses = starts - 1 - retries
        if losses > self.max_worker_losses:
            # A poison message: it took its worker down every time. Dead-letter it instead of looping.
            message.fail()
            error = WorkerLost(f"the worker running this job died {losses} times; it is not run again")
            self.write(message, FAILURE, encode_exception(error))
            raise SkipMessage(str(error))

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        attempt = max(message.options.get("retries", 1) - 1, 0)
        job = self.jobs.get(message.message_id)
        if isinstance(exception, JobAbandoned):
            return  # the process is exiting unacknowledged: the run elsewhere writes the state
        if job is not None and job.outcome == "cancelled":
            self.write(message, REVOKED, revoked_exception())  # kept if REVOKED is there: shown again if expired
        elif exception is None and job is not None and job.outcome == "deferred":
            # Not over: whoever ends the work writes the final state (``job.Deferred``, ``TaskStore.finish``).
            self.write(message, PROGRESS, result, retries=message.options.get("retries", 0))
        elif exception is None:
            self._succeed(message, result)
        elif message.failed:
            self.write(
                message, FAILURE, encode_exception(exception), traceback=format_traceback(exception), retries=attempt
            )
        else:
            self.write(
                message, RETRY, encode_exception(exception), traceback=format_traceback(exception), retries=attempt
            )

    def _succeed(self, message: dramatiq.MessageProxy, result: Any) -> None:
        try:
            self.write(message, SUCCESS, result, retries=message.options.get("retries", 0))
        except (TypeError, ValueError) as exc:
            error = TypeError(f"the result of {message.actor_name} is not JSON-serialisable: {exc}")
            logger.error("task {}: {}", message.message_id, error)
            self.write(message, FAILURE, encode_exception(error))

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        # Dead-lettered without passing through the actor: unknown actor, age limit.
        exception = getattr(message, "_exception", None)
        if isinstance(exception, ActorNotFound):
            encoded = celery_exception("NotRegistered", message.actor_name)
        elif exception is not None:
            encoded = encode_exception(exception)
        else:
            encoded = {"exc_type": "MessageRejected", "exc_message": ["dead-lettered"], "exc_module": "rosetta_jobs"}
        self.write(message, FAILURE, encoded)

    def write_progress(self, job: Job, meta: dict[str, Any]) -> None:
        """The job context's progress writer: PROGRESS with ``meta``, best effort."""
        codec.dumps(meta)  # fail in the actor, not in the store, on bad meta
        if job.message is not None:
            self.write(job.message, PROGRESS, meta, retries=job.message.options.get("retries", 0))
