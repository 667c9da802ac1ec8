"""Celery's remote control against rosetta-jobs: ``control.revoke`` and ``inspect``, from the real ``celery``
package configured as the backend's producer, to real worker processes and the real ops service."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis
from celery import Celery
from celery.exceptions import TaskRevokedError

from rosetta_jobs.store import TaskStore

from .conftest import (
    BROKER_DB,
    REDIS_HOST,
    REDIS_PORT,
    RESULTS_DB,
    WorkerProcess,
    redis_url,
    wait_until,
    worker_env,
)
from .support.ops_service import ServiceProcess, start_service
from .support.previewdb import PreviewDatabases
from .test_ingress import backend_producer

#: A preview that runs for minutes unless it is stopped (500^4 rows counted).
ENDLESS_SQL = "SELECT count(*) AS n FROM orders a, orders b, orders c, orders d"


@pytest.fixture
def producer(celery_app: Celery) -> Celery:
    return backend_producer(celery_app)


@pytest.fixture
def store(redis_dbs: None) -> TaskStore:
    return TaskStore.from_url(redis_url(RESULTS_DB))


def wait_state(sent: object, state: str, timeout: float = 20.0) -> float:
    return wait_until(lambda: sent.state == state, timeout, f"state {state}")  # type: ignore[attr-defined]


def test_revoke_with_terminate_stops_a_running_preview_within_a_second(
    start_worker: Callable[..., WorkerProcess], producer: Celery, databases: PreviewDatabases, store: TaskStore
) -> None:
    # Given a worker with one thread, running a preview that would take minutes
    start_worker(threads=1, DATABASE_URL=databases.config_url)
    args = [ENDLESS_SQL, databases.source_id, databases.destination_id, "orders", None]
    sent = producer.send_task("worker.preview.execute", args=args, queue="preview")
    wait_state(sent, "PROGRESS")
    time.sleep(0.3)  # inside DuckDB
    # When the backend cancels it as its WorkerClient does
    revoked_at = time.time()
    producer.control.revoke(sent.id, terminate=True, signal="SIGTERM")
    # Then its state is REVOKED within a second, and stays so
    assert wait_state(sent, "REVOKED", timeout=1.0) < 1.0
    # And the DuckDB query was stopped within a second: the job ended, and the only thread runs the next one
    wait_until(lambda: store.stopped_at(sent.id) is not None, 2.0, "the job stopped")
    assert store.stopped_at(sent.id) - revoked_at < 1.0  # type: ignore[operator]
    follow_up = producer.send_task("worker.preview.execute", args=[None, *args[1:]], queue="preview")
    assert follow_up.get(timeout=10)["error"] is None
    with pytest.raises(TaskRevokedError):
        sent.get(timeout=1)


def test_revoke_of_a_queued_task_means_it_never_runs_even_without_terminate(
    start_worker: Callable[..., WorkerProcess], producer: Celery, store: TaskStore
) -> None:
    # Given a worker whose only thread is busy, and a task queued behind it
    start_worker(threads=1)
    busy = producer.send_task("worker.test.echo", args=["busy", 10, 0.1], queue="default")
    wait_state(busy, "PROGRESS")
    queued = producer.send_task("worker.test.echo", args=["queued"], queue="default")
    wait_until(lambda: store.is_submitted(queued.id), 5, "the task reached the Dramatiq queue")
    # When it is revoked without terminate
    producer.control.revoke(queued.id)
    # Then it is REVOKED at once, and never runs, also after the thread is free
    wait_state(queued, "REVOKED", timeout=1.0)
    assert busy.get(timeout=20)["message"] == "busy"
    time.sleep(0.5)
    assert queued.state == "REVOKED" and store.deliveries(queued.id) == 0


def test_revoke_without_terminate_lets_a_running_task_finish(
    start_worker: Callable[..., WorkerProcess], producer: Celery
) -> None:
    # Given a running job
    start_worker(threads=1)
    sent = producer.send_task("worker.test.echo", args=["run on", 5, 0.1], queue="default")
    wait_state(sent, "PROGRESS")
    # When it is revoked without terminate (Celery's default)
    producer.control.revoke(sent.id)
    # Then it runs to its end, as under Celery
    assert sent.get(timeout=20) == {"message": "run on", "steps": 5}


def test_revoke_of_a_finished_or_an_unknown_id_changes_nothing(
    start_worker: Callable[..., WorkerProcess], producer: Celery, store: TaskStore
) -> None:
    # Given a finished task and an id nobody sent
    start_worker(threads=1)
    done = producer.send_task("worker.test.echo", args=["done"], queue="default")
    done.get(timeout=20)
    unknown = "0b5a0b7e-0000-4000-8000-000000000000"
    # When both are revoked with terminate
    producer.control.revoke([done.id, unknown], terminate=True, signal="SIGTERM")
    time.sleep(0.5)
    # Then the finished one keeps its result, and the unknown one has no state
    assert producer.AsyncResult(done.id).state == "SUCCESS"
    assert store.get(unknown) is None and producer.AsyncResult(unknown).state == "PENDING"


def test_inspect_ping_active_and_reserved_answer_from_each_worker_process(
    start_worker: Callable[..., WorkerProcess], producer: Celery
) -> None:
    # Given a worker with two processes, one of them running a job
    start_worker(processes=2, threads=1)
    sent = producer.send_task("worker.test.echo", args=["watched", 30, 0.1], queue="default")
    wait_state(sent, "PROGRESS")
    inspect = producer.control.inspect(timeout=1.0)
    # When a script pings and inspects, as the Celery server's /health did
    pongs = inspect.ping()
    active = inspect.active()
    reserved = inspect.reserved()
    # Then each worker process answers as a node of its own
    assert pongs is not None and len(pongs) == 2
    assert all(node.startswith("rosetta.") and reply == {"ok": "pong"} for node, reply in pongs.items())
    # And the running job is listed by exactly one node, under its task id
    assert active is not None and set(active) == set(pongs)
    running = [task for tasks in active.values() for task in tasks]
    assert [(task["id"], task["name"]) for task in running] == [(sent.id, "worker.test.echo")]
    assert reserved is not None and set(reserved) == set(pongs)
    producer.control.revoke(sent.id, terminate=True)


@pytest.fixture
def service(redis_dbs: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = start_service(worker_env(), tmp_path_factory.mktemp("ops") / "service.log")
    yield svc
    svc.stop()


def test_the_ops_service_catches_a_revoke_sent_while_no_worker_runs(
    service: ServiceProcess, start_worker: Callable[..., WorkerProcess], producer: Celery, store: TaskStore
) -> None:
    # Given a task sent while no worker runs: it waits in kombu's list
    sent = producer.send_task("worker.test.echo", args=["too late"], queue="default")
    broker = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=BROKER_DB)
    assert broker.llen("default") == 1
    time.sleep(0.5)  # the service's subscription is in place well before
    # When the backend revokes it, with only the ops service listening
    producer.control.revoke(sent.id, terminate=True, signal="SIGTERM")
    # Then the service writes REVOKED at once
    wait_state(sent, "REVOKED", timeout=2.0)
    # And when a worker starts, the message is taken and never run
    start_worker(threads=1)
    wait_until(lambda: broker.llen("default") == 0, 10, "the kombu list drained")
    time.sleep(0.5)
    assert sent.state == "REVOKED" and store.deliveries(sent.id) == 0


def test_post_schema_answers_the_celery_servers_error_shape(service: ServiceProcess) -> None:
    # When the backend asks the service pointed at by WORKER_HEALTH_URL for a node's schema
    answer = httpx.post(service.url + "/schema", json={"node_id": "n1", "nodes": [], "edges": []}, timeout=5)
    # Then it gets the Celery server's answer for "no schema", not a 404, and the log says why
    assert answer.status_code == 200 and answer.json() == {"columns": []}
    wait_until(lambda: 'POST /schema (node n1): answering {"columns": []}' in service.output(), 5, "log line")
