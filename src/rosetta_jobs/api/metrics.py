"""``GET /metrics``: the workers' counters from Redis, rendered in Prometheus' text format at scrape time.

A custom collector reads the hashes ``middleware.metrics`` writes, the live heartbeats
(jobs in progress, workers) and the broker's keys (queue depth). Nothing is cached in
this process, so any number of service replicas give the same answer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import redis
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..middleware.metrics import DURATION_BUCKETS, FIELD_SEPARATOR, WAIT_BUCKETS, metrics_key
from ..sweeper import read_sweeper
from .context import Ops

__all__ = ["RedisCollector", "render", "router"]

router = APIRouter(tags=["ops"])

_Labels = tuple[str, ...]


def _counts(raw: dict[bytes, bytes]) -> dict[_Labels, float]:
    return {tuple(k.decode().split(FIELD_SEPARATOR)): float(v) for k, v in raw.items()}


def _histogram(
    name: str, documentation: str, raw: dict[bytes, bytes], buckets: tuple[float, ...]
) -> HistogramMetricFamily:
    """Turn per-bucket counts (``actor, queue, index``) and sums into a cumulative histogram."""
    family = HistogramMetricFamily(name, documentation, labels=["actor", "queue"])
    per_bucket: dict[_Labels, list[float]] = defaultdict(lambda: [0.0] * (len(buckets) + 1))
    sums: dict[_Labels, float] = defaultdict(float)
    for labels, value in _counts(raw).items():
        series, slot = labels[:-1], labels[-1]
        if slot == "sum":
            sums[series] = value
        elif slot.isdigit() and int(slot) <= len(buckets):
            per_bucket[series][int(slot)] = value
    for labels in sorted(per_bucket):
        counts, running, cumulative = per_bucket[labels], 0.0, []
        for bound, count in zip([*(str(b) for b in buckets), "+Inf"], counts, strict=True):
            running += count
            cumulative.append((bound, running))
        family.add_metric(list(labels), cumulative, sum_value=sums.get(labels, 0.0))
    return family


class RedisCollector(Collector):
    """Collects every rosetta-jobs metric from Redis on each scrape."""

    def __init__(self, ops: Ops) -> None:
        self.ops = ops

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("rosetta_jobs_redis_up", "1 when the broker's and the result backend's Redis answer")
        try:
            families = list(self._collect())
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _collect(self) -> Iterator[Metric]:
        ns = self.ops.namespace
        pipe = self.ops.results.pipeline(transaction=False)
        for name in ("jobs", "failures", "dead_lettered", "duration", "wait"):
            pipe.hgetall(metrics_key(ns, name))
        jobs, failures, dead, duration, wait = pipe.execute()
        snapshot = self.ops.snapshot()

        total = CounterMetricFamily("rosetta_jobs", "Jobs finished, by outcome", labels=["actor", "queue", "outcome"])
        for labels, value in sorted(_counts(jobs).items()):
            total.add_metric(list(labels), value)
        yield total

        errors = CounterMetricFamily(
            "rosetta_jobs_failures", "Failed attempts, by exception type", labels=["actor", "queue", "error_type"]
        )
        for labels, value in sorted(_counts(failures).items()):
            errors.add_metric(list(labels), value)
        yield errors

        dead_total = CounterMetricFamily(
            "rosetta_jobs_dead_lettered", "Messages moved to the dead-letter queue", labels=["actor", "queue"]
        )
        for labels, value in sorted(_counts(dead).items()):
            dead_total.add_metric(list(labels), value)
        yield dead_total

        yield _histogram("rosetta_jobs_duration_seconds", "Time a job ran", duration, DURATION_BUCKETS)
        yield _histogram("rosetta_jobs_queue_wait_seconds", "Time from enqueue (or eta) to start", wait, WAIT_BUCKETS)

        running: dict[_Labels, int] = {labels[:2]: 0 for labels in _counts(jobs)}
        for worker in snapshot.workers:
            for entry in worker.running:
                pair: _Labels = (str(entry.get("actor")), str(entry.get("queue")))
                running[pair] = running.get(pair, 0) + 1
        in_progress = GaugeMetricFamily("rosetta_jobs_in_progress", "Jobs running now", labels=["actor", "queue"])
        for series, count in sorted(running.items()):
            in_progress.add_metric(list(series), count)
        yield in_progress

        depth = GaugeMetricFamily(
            "rosetta_jobs_queue_messages",
            "Messages in a queue: ready, delayed, dead_lettered, in_progress (fetched, not acked)",
            labels=["queue", "state"],
        )
        for queue in snapshot.queues:
            for state in ("ready", "delayed", "dead_lettered", "in_progress"):
                depth.add_metric([queue.name, state], getattr(queue, state))
        yield depth

        stranded = set(snapshot.unconsumed)
        unconsumed = GaugeMetricFamily(
            "rosetta_jobs_queue_unconsumed",
            "1 when a queue holds ready or delayed messages and no live worker process consumes it",
            labels=["queue"],
        )
        for queue in snapshot.queues:
            unconsumed.add_metric([queue.name], int(queue.name in stranded))
        yield unconsumed

        sweeper = read_sweeper(self.ops.results, ns)
        yield CounterMetricFamily(
            "rosetta_jobs_sweeper_runs", "Runs of the sweeper (housekeeping)", value=sweeper["runs"]
        )
        swept = CounterMetricFamily(
            "rosetta_jobs_sweeper_removed", "Items the sweeper removed, by kind", labels=["kind"]
        )
        for kind, count in sweeper["removed"].items():
            swept.add_metric([kind], count)
        yield swept
        if sweeper["last_run_at"] is not None:
            yield GaugeMetricFamily(
                "rosetta_jobs_sweeper_last_run_timestamp_seconds",
                "When the sweeper last ran",
                value=sweeper["last_run_at"],
            )
            yield GaugeMetricFamily(
                "rosetta_jobs_sweeper_last_duration_seconds",
                "How long its last run took",
                value=sweeper["last_duration"],
            )

        live = snapshot.running_workers
        yield GaugeMetricFamily("rosetta_jobs_workers", "Worker processes with a live heartbeat", value=len(live))
        yield GaugeMetricFamily(
            "rosetta_jobs_worker_threads", "Worker threads of the live processes", value=sum(w.threads for w in live)
        )
        yield GaugeMetricFamily(
            "rosetta_jobs_worker_busy_threads", "Worker threads running a job", value=snapshot.active_tasks
        )


def render(ops: Ops) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(ops))
    return generate_latest(registry)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    """Prometheus metrics of every worker process (see docs/metrics.md)."""
    return Response(render(request.app.state.ops), media_type=CONTENT_TYPE_LATEST)
