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

In a worker, the counts are summed in the process and written by a thread soon after a job ends, at
most once per ``coalesce`` seconds: a process running a hundred jobs a second writes ten pipelines, not
a hundred. A final failure is written at once, with whatever is pending (the dashboard lists it), and so
is everything at shutdown. Counts are written at most once, as a job's were before: a batch Redis does
not take is dropped with a warning (a pipeline that fails while reading its replies may have been
applied, and written again it would count twice). While Redis answers, a SIGKILL loses at most the
last ``coalesce`` seconds of counts.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from typing import Any, cast

import dramatiq
import redis
from dramatiq.common import q_name
from dramatiq.middleware import Middleware
from loguru import logger

from ..coalesce import Coalescer
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

    def __init__(self, *, client: redis.Redis, namespace: str, jobs: RunningJobs, coalesce: float = 0.1) -> None:
        self.client = client
        self.namespace = namespace
        self.jobs = jobs
        self._counts: Counter[tuple[str, str]] = Counter()  # (metric, field) -> increment
        self._sums: defaultdict[tuple[str, str], float] = defaultdict(float)
        self._failures: list[str] = []
        self._lock = threading.Lock()
        self._writes = Coalescer(self.flush, coalesce=coalesce, name="rosetta-metrics")

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._writes.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._writes.stop()
        self.flush()

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
        with self._lock:
            self._counts["dead_lettered", self._labels(message)] += 1
        self._written(at_once=False)

    @staticmethod
    def _labels(message: dramatiq.MessageProxy) -> str:
        return _field(message.actor_name, q_name(message.queue_name))

    def _record(
        self, message: dramatiq.MessageProxy, job: Job | None, outcome: str, exception: BaseException | None
    ) -> None:
        labels = self._labels(message)
        counted = outcome in ("success", "failure", "retry", "cancelled", "timeout")
        failure = None
        if exception is not None and outcome in ("failure", "timeout"):  # final: listed on the dashboard
            failure = {
                "task_id": message.message_id,
                "actor": message.actor_name,
                "queue": q_name(message.queue_name),
                "error_type": type(exception).__qualname__,
                "error": str(exception)[:_ERROR_TEXT],
                "at": time.time(),
            }
        with self._lock:
            self._counts["jobs", _field(labels, outcome)] += 1
            if job is not None and counted:
                waited = job.waited
                duration = time.time() - job.started_at
                self._counts["duration", _field(labels, bucket_index(duration, DURATION_BUCKETS))] += 1
                self._sums["duration", _field(labels, "sum")] += duration
                self._counts["wait", _field(labels, bucket_index(waited, WAIT_BUCKETS))] += 1
                self._sums["wait", _field(labels, "sum")] += waited
            if exception is not None and outcome in ("failure", "retry", "timeout"):
                error_type = type(exception).__qualname__
                self._counts["failures", _field(labels, error_type)] += 1
            if failure is not None:
                self._failures.append(json.dumps(failure, default=str))
        self._written(at_once=failure is not None)

    def _written(self, *, at_once: bool) -> None:
        if at_once or not self._writes.running:  # outside a worker (no thread) every count is written at once
            self.flush()
        else:
            self._writes.poke()

    def flush(self) -> None:
        """Write the counts summed since the last flush, in one pipeline (dropped if Redis fails: at most once)."""
        with self._lock:
            counts, sums, failures = self._counts, self._sums, self._failures
            self._counts, self._sums, self._failures = Counter(), defaultdict(float), []
        if not (counts or sums or failures):
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for (metric, field), amount in counts.items():
                pipe.hincrby(metrics_key(self.namespace, metric), field, amount)
            for (metric, field), total in sums.items():
                pipe.hincrbyfloat(metrics_key(self.namespace, metric), field, total)
            if failures:  # one LPUSH of many pushes each in turn: the newest ends up first
                pipe.lpush(metrics_key(self.namespace, "recent_failures"), *failures)
                pipe.ltrim(metrics_key(self.namespace, "recent_failures"), 0, RECENT_FAILURES - 1)
            pipe.execute()
        except redis.RedisError as exc:  # a metric is never worth failing a job for
            ends = sum(n for (metric, _), n in counts.items() if metric == "jobs")
            logger.warning("could not record the metrics of {} job ends: {}", ends, exc)


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
