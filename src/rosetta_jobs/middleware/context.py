"""The job context and time limits, for every actor.

``JobContext`` is first in the stack: its ``before_process_message`` runs before any other middleware's
and its ``after_*`` hooks after all of them, so every middleware and the actor see the same ``Job``
for the whole life of a message.

``TimeLimit`` replaces Dramatiq's (which only raises an asynchronous exception, and so cannot stop
DuckDB or a subprocess): one watchdog thread per process stops each job at its deadline through
``Job.stop``, and escalates to an asynchronous exception what a stop did not end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import dramatiq
from dramatiq.common import q_name
from dramatiq.middleware import Middleware
from loguru import logger

from ..actor import run_as_job
from ..errors import JobAbandoned, JobTimedOut
from ..job import Job, ProgressWriter, RunningJobs, set_current_job

__all__ = ["DEFAULT_TIME_LIMIT_MS", "JobContext", "TimeLimit"]

#: Dramatiq's own default: ten minutes.
DEFAULT_TIME_LIMIT_MS = 600_000


class JobContext(Middleware):
    """Creates the ``Job`` of each message and keeps the process's registry of running jobs."""

    actor_options = {"time_limit", "timed_out"}

    def __init__(
        self,
        *,
        jobs: RunningJobs,
        time_limits: Mapping[str, int] | None = None,
        default_time_limit: int = DEFAULT_TIME_LIMIT_MS,
        progress_writer: ProgressWriter | None = None,
    ) -> None:
        self.jobs = jobs
        self.time_limits = dict(time_limits or {})
        self.default_time_limit = default_time_limit
        self.progress_writer = progress_writer

    def before_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        # Every actor runs under its job, a plain @dramatiq.actor too (rosetta_jobs.actor).
        actor.fn = run_as_job(actor.fn, timed_out=actor.options.get("timed_out"))

    def time_limit_ms(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> int | None:
        """The message's ``time_limit`` option, else the settings' (``time_limits``), else the actor's, else 10 min."""
        limit = message.options.get("time_limit") or self.time_limits.get(message.actor_name)
        if limit is None:
            actor = broker.actors.get(message.actor_name)
            limit = actor.options.get("time_limit") if actor is not None else None
        limit = self.default_time_limit if limit is None else limit
        return None if limit == float("inf") else int(limit)

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        now = time.time()
        limit_ms = self.time_limit_ms(broker, message)
        # A delayed or retried message waits from its eta, not from its first enqueue.
        ready_ms = max(int(message.message_timestamp), int(message.options.get("eta") or 0))
        job = Job(
            id=message.message_id,
            actor=message.actor_name,
            queue=q_name(message.queue_name),
            time_limit=None if limit_ms is None else limit_ms / 1000,
            deadline=None if limit_ms is None else time.monotonic() + limit_ms / 1000,
            started_at=now,
            waited=max(now - ready_ms / 1000, 0.0),
            progress_writer=self.progress_writer,
            message=message,
        )
        self.jobs.add(job)
        set_current_job(job)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        job = self.jobs.remove(message.message_id)
        try:
            if job is not None:
                job.ended()  # still the current job: what it logs names the task
        finally:
            set_current_job(None)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self.jobs.remove(message.message_id)
        set_current_job(None)


class TimeLimit(Middleware):
    """Stops every job at its deadline, whatever it runs (see ``rosetta_jobs.job``)."""

    def __init__(self, *, jobs: RunningJobs, interval: float = 0.1) -> None:
        self.jobs = jobs
        self.interval = interval
        self._stopping = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        threading.Thread(target=self._watch, name="rosetta-time-limit", daemon=True).start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # Not before: the jobs still running while the worker drains stay under control until they end.
        self._stopping.set()
        # Past the drain, the process exits with these jobs unfinished: their messages stay unacknowledged
        # and run again elsewhere (Recovery), so what they started (a subprocess group) must not run on.
        for job in self.jobs.snapshot():
            if job.stop(JobAbandoned):
                logger.warning("task {} ({}) abandoned at shutdown; it runs again on another worker", job.id, job.actor)

    def _watch(self) -> None:
        while not self._stopping.wait(self.interval):
            now = time.monotonic()
            for job in self.jobs.snapshot():
                try:
                    self.check(job, now)
                except Exception:  # one job's trouble must not end time limits for the process
                    logger.exception("time-limit check of task {} failed", job.id)

    @staticmethod
    def check(job: Job, now: float) -> None:
        if job.deadline is not None and now >= job.deadline and job.stop(JobTimedOut):
            logger.info("task {} ({}) reached its time limit of {:g} s; stopping it", job.id, job.actor, job.time_limit)
        elif job.escalate(now):
            logger.warning("task {} ({}) did not stop; raising the stop in its thread", job.id, job.actor)
