"""``GET /metrics``: numbers written by several worker processes add up, and survive restarts without going stale."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rosetta_jobs.client import JobClient

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
