"""``GET /health`` of the real service: from the workers' own heartbeats, 200 only when healthy."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from rosetta_jobs.client import JobClient

from .conftest import WorkerProcess, wait_until, worker_env
from .support.ops_service import API_KEY, ServiceProcess, start_service

KEYS = {"status", "healthy", "active_workers", "active_tasks", "reserved_tasks", "timestamp", "queues"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = start_service(worker_env(API_KEY=API_KEY), tmp_path_factory.mktemp("health") / "service.log")
    yield svc
    svc.stop()


def _health(service: ServiceProcess) -> httpx.Response:
    return httpx.get(service.url + "/health", timeout=5)


def test_health_is_503_without_a_worker(service: ServiceProcess, redis_dbs: None) -> None:
    # Given no worker at all
    # When the health check is read
    response = _health(service)

    # Then it is unhealthy, with the Celery worker's keys and an explanation
    assert response.status_code == 503
    body = response.json()
    assert set(body) >= KEYS
    assert body["healthy"] is False and body["status"] == "unhealthy"
    assert body["active_workers"] == 0
    assert "No worker" in body["error"]


def test_health_follows_a_worker_from_start_to_stop(
    service: ServiceProcess, start_worker: Callable[..., WorkerProcess], client: JobClient
) -> None:
    # Given a worker with two threads
    worker = start_worker(threads=2)

    # When the health check is read
    response = _health(service)

    # Then it is healthy, counting one worker process and its queues
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["healthy"] is True and body["status"] == "healthy"
    assert body["active_workers"] == 1 and body["active_tasks"] == 0
    assert body["queues"]["default"] == {"ready": 0, "delayed": 0, "dead_lettered": 0, "in_progress": 0}
    assert body["timestamp"].endswith("+00:00")

    # When a job runs
    client.send("tests.pid", (3.0,))
    wait_until(lambda: _health(service).json()["active_tasks"] == 1)

    # Then it is counted as active and as in progress on its queue
    assert _health(service).json()["queues"]["default"]["in_progress"] == 1

    # When the worker stops (it finishes the job first)
    worker.stop()

    # Then the service is unhealthy at once: a stopped worker removes its heartbeat
    response = _health(service)
    assert response.status_code == 503
    assert response.json()["active_workers"] == 0


def test_a_killed_worker_disappears_after_its_heartbeat_ttl(
    service: ServiceProcess, start_worker: Callable[..., WorkerProcess], redis_dbs: None
) -> None:
    # Given a worker with a short heartbeat TTL, seen as healthy
    worker = start_worker(ROSETTA_HEARTBEAT_INTERVAL="0.5", ROSETTA_HEARTBEAT_TTL="2")
    assert _health(service).status_code == 200

    # When it is killed without a chance to clean up
    os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(5)

    # Then the health check turns 503 once the heartbeat expires
    started = time.monotonic()
    wait_until(lambda: _health(service).status_code == 503, timeout=6)
    assert time.monotonic() - started < 4


def test_health_is_503_when_redis_is_unreachable(tmp_path: Path) -> None:
    # Given a service whose Redis does not answer (nothing listens on port 1)
    env = worker_env(API_KEY=API_KEY, BROKER_URL="redis://127.0.0.1:1/11", RESULT_BACKEND_URL="redis://127.0.0.1:1/12")
    svc = start_service(env, tmp_path / "service.log")
    try:
        # When the health check is read
        response = httpx.get(svc.url + "/health", timeout=10)
    finally:
        svc.stop()

    # Then it is 503 and says why
    assert response.status_code == 503
    body = response.json()
    assert body["healthy"] is False
    assert "Redis unreachable" in body["error"]
