"""``GET /metrics``: numbers written by several worker processes add up, and survive restarts without going stale."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from rosetta_jobs.client import JobClient
from rosetta_jobs.job import Job, RunningJobs
from rosetta_jobs.middleware.metrics import Metrics, metrics_key, read_recent_failures

from .conftest import WorkerProcess, wait_until, worker_env
from .support.ops_service import ServiceProcess, start_service

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = start_service(worker_env(), tmp_path_factory.mktemp("metrics") / "service.log")
    yield svc
    svc.stop()


def _scrape(service: ServiceProcess) -> Samples:
    response = httpx.get(service.url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


PID = {"actor": "tests.pid", "queue": "default"}
FAIL = {"actor": "tests.fail", "queue": "default"}


def test_metrics_add_up_across_two_worker_processes(
    service: ServiceProcess, start_worker: Callable[..., WorkerProcess], client: JobClient
) -> None:
    # Given a worker with two processes of one thread each
    start_worker(processes=2, threads=1)

    # When six jobs that take a moment and two that fail run on it
    jobs = [client.send("tests.pid", (0.3,)) for _ in range(6)]
    failures = [client.send("tests.fail", ("boom",)) for _ in range(2)]
    wait_until(lambda: all(client.store.is_final(task) for task in jobs + failures))
    # (counts reach Redis within Metrics.coalesce of a job's end)
    wait_until(lambda: _value(_scrape(service), "rosetta_jobs_total", **PID, outcome="success") == 6)
    wait_until(lambda: _value(_scrape(service), "rosetta_jobs_dead_lettered_total", **FAIL) == 2)

    # Then both processes took part
    assert len({client.get_task_status(task)["result"] for task in jobs}) == 2
    # And every job is counted once, whichever process ran it
    samples = _scrape(service)
    assert _value(samples, "rosetta_jobs_total", **PID, outcome="success") == 6
    assert _value(samples, "rosetta_jobs_total", **FAIL, outcome="failure") == 2
    assert _value(samples, "rosetta_jobs_failures_total", **FAIL, error_type="ValueError") == 2
    assert _value(samples, "rosetta_jobs_dead_lettered_total", **FAIL) == 2
    # And the duration histogram saw six runs of at least 0.3 s, all in the buckets from 0.25 s on
    assert _value(samples, "rosetta_jobs_duration_seconds_count", **PID) == 6
    assert _value(samples, "rosetta_jobs_duration_seconds_sum", **PID) >= 1.8
    assert _value(samples, "rosetta_jobs_duration_seconds_bucket", **PID, le="0.25") == 0
    assert _value(samples, "rosetta_jobs_duration_seconds_bucket", **PID, le="900.0") == 6
    assert _value(samples, "rosetta_jobs_duration_seconds_bucket", **PID, le="+Inf") == 6
    assert _value(samples, "rosetta_jobs_queue_wait_seconds_count", **PID) == 6
    # And the gauges show the live state: two processes, nothing running, two dead letters
    assert _value(samples, "rosetta_jobs_workers") == 2
    assert _value(samples, "rosetta_jobs_worker_threads") == 2
    assert _value(samples, "rosetta_jobs_in_progress", **PID) == 0
    assert _value(samples, "rosetta_jobs_queue_messages", queue="default", state="dead_lettered") == 2
    assert _value(samples, "rosetta_jobs_queue_messages", queue="default", state="ready") == 0
    assert _value(samples, "rosetta_jobs_redis_up") == 1
    # And no queue is flagged as unconsumed: the one with messages has live consumers
    assert _value(samples, "rosetta_jobs_queue_unconsumed", queue="default") == 0


def test_a_queue_with_work_and_no_consumer_is_flagged(
    service: ServiceProcess, start_worker: Callable[..., WorkerProcess], client: JobClient
) -> None:
    # Given a worker that consumes default and preview, and a job waiting on orchestration, which no worker consumes
    start_worker()
    client.send("tests.pid", (0.0,), queue_name="orchestration")
    # Then /metrics flags orchestration, and only it
    samples = _scrape(service)
    assert _value(samples, "rosetta_jobs_queue_unconsumed", queue="orchestration") == 1
    assert _value(samples, "rosetta_jobs_queue_messages", queue="orchestration", state="ready") == 1
    assert _value(samples, "rosetta_jobs_queue_unconsumed", queue="default") == 0


def test_metrics_carry_no_stale_values_over_a_crash_and_a_restart(
    service: ServiceProcess, start_worker: Callable[..., WorkerProcess], client: JobClient
) -> None:
    # Given a worker (short heartbeat TTL) running a long job, and one finished job
    worker = start_worker(ROSETTA_HEARTBEAT_INTERVAL="0.5", ROSETTA_HEARTBEAT_TTL="2")
    done = client.send("tests.pid", (0.0,))
    wait_until(lambda: client.store.is_final(done))
    client.send("tests.pid", (60.0,))
    wait_until(lambda: _value(_scrape(service), "rosetta_jobs_in_progress", **PID) == 1)
    assert _value(_scrape(service), "rosetta_jobs_worker_busy_threads") == 1

    # When the worker is killed mid-job
    os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(5)

    # Then its in-progress job and the process disappear from the metrics once the heartbeat expires
    wait_until(lambda: _value(_scrape(service), "rosetta_jobs_workers") == 0, timeout=6)
    samples = _scrape(service)
    assert _value(samples, "rosetta_jobs_in_progress", **PID) == 0
    assert _value(samples, "rosetta_jobs_worker_busy_threads") == 0
    # And the counter keeps its value
    assert _value(samples, "rosetta_jobs_total", **PID, outcome="success") == 1

    # When a new worker runs one more job
    start_worker()
    more = client.send("tests.pid", (0.0,))
    wait_until(lambda: client.store.is_final(more) and client.get_task_status(more)["status"] == "completed")

    # Then the counter goes on from where it was, neither reset nor doubled
    wait_until(lambda: _value(_scrape(service), "rosetta_jobs_total", **PID, outcome="success") >= 2)
    samples = _scrape(service)
    assert _value(samples, "rosetta_jobs_total", **PID, outcome="success") == 2
    assert _value(samples, "rosetta_jobs_workers") == 1


def test_metrics_report_redis_down_instead_of_failing(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Given a service whose Redis does not answer
    env = worker_env(BROKER_URL="redis://127.0.0.1:1/11", RESULT_BACKEND_URL="redis://127.0.0.1:1/12")
    svc = start_service(env, tmp_path_factory.mktemp("down") / "service.log")
    try:
        # When it is scraped
        samples = _scrape(svc)
    finally:
        svc.stop()

    # Then the scrape succeeds and says Redis is down, so an alert can fire on it
    assert _value(samples, "rosetta_jobs_redis_up") == 0


class CountingMetrics(Metrics):
    """Counts the flushes that wrote something (the test's only seam: Redis and the middleware are the real ones)."""

    writes = 0

    def flush(self) -> None:
        pending = bool(self._counts or self._sums or self._failures)
        super().flush()
        self.writes += pending


WORKER: Any = SimpleNamespace(worker_threads=8, consumer_whitelist=None)


@pytest.fixture
def metrics(results_redis: redis.Redis) -> Iterator[CountingMetrics]:
    namespace = f"metrics-{uuid.uuid4().hex[:8]}"
    middleware = CountingMetrics(client=results_redis, namespace=namespace, jobs=RunningJobs(), coalesce=0.2)
    middleware.after_worker_boot(None, WORKER)  # type: ignore[arg-type]
    yield middleware
    middleware.after_worker_shutdown(None, WORKER)  # type: ignore[arg-type]
    keys = results_redis.keys(metrics_key(namespace, "*"))
    if keys:
        results_redis.delete(*keys)


def _run(metrics: Metrics, task_id: str, exception: BaseException | None = None, *, failed: bool = False) -> None:
    """A job's end as the worker reports it: the job in the registry, then the hook."""
    metrics.jobs.add(Job(id=task_id, actor="tests.echo", queue="default", time_limit=None, deadline=None))
    message: Any = SimpleNamespace(message_id=task_id, actor_name="tests.echo", queue_name="default", failed=failed)
    metrics.after_process_message(None, message, exception=exception)  # type: ignore[arg-type]
    metrics.jobs.remove(task_id)


def _count(client: redis.Redis, metrics: Metrics, metric: str, *fields: str) -> float:
    value = client.hget(metrics_key(metrics.namespace, metric), "\t".join(("tests.echo", "default", *fields)))
    return float(value) if value is not None else 0.0


def _observed(client: redis.Redis, metrics: Metrics, metric: str) -> int:
    """How many observations a histogram holds: its bucket counts summed (the sum field left out)."""
    fields = client.hgetall(metrics_key(metrics.namespace, metric))
    return sum(int(v) for k, v in fields.items() if k.rsplit(b"\t", 1)[-1].isdigit())


def test_the_counts_of_a_busy_process_add_up_in_a_few_writes(
    metrics: CountingMetrics, results_redis: redis.Redis
) -> None:
    # Given a booted metrics middleware
    # When 300 jobs end within a moment
    for i in range(300):
        _run(metrics, f"job-{i}")
    # Then all of them are counted soon after, with their durations and waits
    wait_until(lambda: _count(results_redis, metrics, "jobs", "success") == 300, 3, "300 successes")
    assert _observed(results_redis, metrics, "duration") == 300
    assert _observed(results_redis, metrics, "wait") == 300
    assert 0 <= _count(results_redis, metrics, "duration", "sum") < 3
    # And they took a few pipelines, not one per job
    assert metrics.writes <= 5


def test_a_final_failure_is_listed_at_once_newest_first(metrics: CountingMetrics, results_redis: redis.Redis) -> None:
    # Given a booted metrics middleware
    # When two jobs fail for good
    _run(metrics, "first", ValueError("the warehouse is read-only"), failed=True)
    _run(metrics, "second", KeyError("gone"), failed=True)
    # Then both are listed when the hook returns, newest first, and counted by type
    listed = read_recent_failures(results_redis, metrics.namespace)
    assert [(f["task_id"], f["error_type"]) for f in listed] == [("second", "KeyError"), ("first", "ValueError")]
    assert _count(results_redis, metrics, "failures", "ValueError") == 1
    assert _count(results_redis, metrics, "jobs", "failure") == 2


def test_a_shutdown_writes_what_is_pending(results_redis: redis.Redis) -> None:
    # Given a booted metrics middleware that writes at most every 30 s, which has just written
    metrics = CountingMetrics(client=results_redis, namespace=f"metrics-{uuid.uuid4().hex[:8]}", jobs=RunningJobs(),
                              coalesce=30.0)  # fmt: skip
    metrics.after_worker_boot(None, WORKER)  # type: ignore[arg-type]
    try:
        _run(metrics, "first")
        wait_until(lambda: _count(results_redis, metrics, "jobs", "success") == 1, 3, "the first count")
        # When another job ends, and the worker shuts down at once
        _run(metrics, "second")
        time.sleep(0.1)
        assert _count(results_redis, metrics, "jobs", "success") == 1
        started = time.monotonic()
        metrics.after_worker_shutdown(None, WORKER)  # type: ignore[arg-type]
        # Then the pending count is written, without waiting out the 30 s
        assert _count(results_redis, metrics, "jobs", "success") == 2
        assert time.monotonic() - started < 2
    finally:
        results_redis.delete(*results_redis.keys(metrics_key(metrics.namespace, "*")))


def test_a_batch_redis_did_not_take_is_dropped_and_the_next_is_written(
    metrics: CountingMetrics, results_redis: redis.Redis
) -> None:
    # Given a metrics middleware whose Redis cannot be reached for a while
    metrics.client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    # When a job fails then, and another once Redis is back
    _run(metrics, "while-down", ValueError("boom"), failed=True)
    metrics.client = results_redis
    _run(metrics, "after", ValueError("boom again"), failed=True)
    # Then the job hook raised nothing, and the later count is written once: counts are never written twice
    assert _count(results_redis, metrics, "jobs", "failure") == 1
    assert [f["task_id"] for f in read_recent_failures(results_redis, metrics.namespace)] == ["after"]
