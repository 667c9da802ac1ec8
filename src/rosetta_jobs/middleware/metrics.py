"""Job metrics, counted in Redis by every worker process and rendered by the ops service.

Dramatiq's ``Prometheus`` middleware keeps its numbers in a multiprocess directory that
is not wiped on start and goes stale when PIDs repeat (``dramatiq-celery.md`` A12).
Here each finished job is a handful of ``HINCRBY`` on shared hashes, so the numbers add
up across processes and hosts and survive restarts as Prometheus counters should; jobs in
progress come from the live heartbeats (``middleware.heartbeat``), so a dead process
leaves nothing behind. ``GET /metrics`` of ``rosetta-jobs serve`` renders them. Start time
and queue wait come from the job context (``RunningJobs``), like everything a job knows.

Placed *before* ``Retries`` (like ``TaskState``): ``after_*`` hooks run in reverse
order, so the outcome is known (``message.failed`` set by ``Retries``) when this runs.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

import dramatiq
import redis
from dramatiq.common import q_name
from dramatiq.middleware import Middleware
from loguru import logger

from ..errors import JobAbandoned, JobCancelled, JobTimedOut
from ..job import Job, RunningJobs
from ..layout import Keys

__all__ = [
    "DURATION_BUCKETS",
    "FIELD_SEPARATOR",
    "RECENT_FAILURES",
    "WAIT_BUCKETS",
    "Metrics",
    "bucket_index",
    "metrics_key",
    "read_recent_failures",
]

#: Upper bounds (seconds) of the job-duration histogram: up to the 15-minute queries of a flow.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0)
#: Upper bounds (seconds) of the queue-wait histogram: from instant pickup to an hour of backlog.
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)
#: How many recent failures the dashboard can show.
RECENT_FAILURES = 200
#: Separates label values in hash fields; it cannot occur in actor, queue or exception names.
FIELD_SEPARATOR = "\t"
_ERROR_TEXT = 500


def metrics_key(namespace: str, name: str) -> str:
    """The hash of one metric family: ``jobs``, ``failures``, ``dead_lettered``, ``duration``, ``wait``."""
    return Keys(namespace).metrics(name)


def bucket_index(value: float, buckets: tuple[float, ...]) -> int:
    """Index of the first bucket that holds ``value``; ``len(buckets)`` is +Inf."""
    for index, bound in enumerate(buckets):
        if value <= bound:
            return index
    return len(buckets)


def _field(*parts: object) -> str:
    return FIELD_SEPARATOR.join(str(part) for part in parts)


def _outcome(message: dramatiq.MessageProxy, job: Job | None, exception: BaseException | None) -> str:
    if isinstance(exception, JobCancelled) or (job is not None and job.outcome == "cancelled"):
        return "cancelled"
    if isinstance(exception, JobTimedOut):
        return "timeout"
    if isinstance(exception, JobAbandoned):
        return "abandoned"
    if exception is None:
        return "rejected" if message.failed else "success"
    return "failure" if message.failed else "retry"


class Metrics(Middleware):
    """Counts jobs by actor, queue and outcome, and observes duration and queue wait."""

    def __init__(self, *, client: redis.Redis, namespace: str, jobs: RunningJobs) -> None:
        self.client = client
        self.namespace = namespace
        self.jobs = jobs

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        job = self.jobs.get(message.message_id)
        self._record(message, job, _outcome(message, job, exception), exception)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self._record(message, None, "rejected" if message.failed else "skipped", None)

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self._write(lambda pipe: pipe.hincrby(self._key("dead_lettered"), self._labels(message), 1))

    def _key(self, name: str) -> str:
        return metrics_key(self.namespace, name)

    @staticmethod
    def _labels(message: dramatiq.MessageProxy) -> str:
        return _field(message.actor_name, q_name(message.queue_name))

    def _record(
        self, message: dramatiq.MessageProxy, job: Job | None, outcome: str, exception: BaseException | None
    ) -> None:
        labels = self._labels(message)
        counted = outcome in ("success", "failure", "retry", "cancelled", "timeout")

        def write(pipe: Any) -> None:
            pipe.hincrby(self._key("jobs"), _field(labels, outcome), 1)
            if job is not None and counted:
                waited = job.waited
                duration = time.time() - job.started_at
                pipe.hincrby(self._key("duration"), _field(labels, bucket_index(duration, DURATION_BUCKETS)), 1)
                pipe.hincrbyfloat(self._key("duration"), _field(labels, "sum"), duration)
                pipe.hincrby(self._key("wait"), _field(labels, bucket_index(waited, WAIT_BUCKETS)), 1)
                pipe.hincrbyfloat(self._key("wait"), _field(labels, "sum"), waited)
            if exception is not None and outcome in ("failure", "retry", "timeout"):
                error_type = type(exception).__qualname__
                pipe.hincrby(self._key("failures"), _field(labels, error_type), 1)
                if outcome != "retry":
                    failure = {
                        "task_id": message.message_id,
                        "actor": message.actor_name,
                        "queue": q_name(message.queue_name),
                        "error_type": error_type,
                        "error": str(exception)[:_ERROR_TEXT],
                        "at": time.time(),
                    }
                    pipe.lpush(self._key("recent_failures"), json.dumps(failure, default=str))
                    pipe.ltrim(self._key("recent_failures"), 0, RECENT_FAILURES - 1)

        self._write(write)

    def _write(self, fill: Any) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            fill(pipe)
            pipe.execute()
        except redis.RedisError as exc:  # a metric is never worth failing a job for
            logger.warning("could not record metrics: {}", exc)


def read_recent_failures(client: redis.Redis, namespace: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """The newest failures (final ones, not retried attempts), newest first."""
    raw = cast("list[bytes]", client.lrange(metrics_key(namespace, "recent_failures"), 0, max(limit, 1) - 1))
    failures = []
    for item in raw:
        try:
            doc = json.loads(item)
        except ValueError:
            continue
        if isinstance(doc, dict):
            failures.append(doc)
    return failures
