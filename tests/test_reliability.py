"""Faults: cancel, retries, a worker killed mid-job, a poison message, Redis restarts, SIGTERM.

These tests run their own ``redis-server`` on a free port, so they can kill and restart it
without touching the shared one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from rosetta_jobs.client import JobClient
from rosetta_jobs.layout import Keys

from .conftest import WorkerProcess, wait_until


class PrivateRedis:
    """A redis-server of the test's own, without persistence, on a free port."""

    def __init__(self, directory: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.directory)]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def env(self, **extra: str) -> dict[str, str]:
        return {"BROKER_URL": self.url(1), "RESULT_BACKEND_URL": self.url(2), "REDIS_URL": self.url(0), **extra}


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def pclient(private_redis: PrivateRedis) -> JobClient:
    return JobClient(broker_url=private_redis.url(1), result_backend_url=private_redis.url(2))


def state(client: JobClient, task_id: str) -> str:
    return str(client.get_task_status(task_id)["state"])


# Cancel


def test_cancel_of_a_queued_job_means_it_never_starts(
    private_redis: PrivateRedis, pclient: JobClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given a job queued while no worker runs
    task_id = pclient.send("tests.pid", ())
    # When it is cancelled, and a worker starts afterwards
    answer = pclient.cancel(task_id)
    start_worker(**private_redis.env())
    marker = pclient.send("worker.test.echo", ("after",))
    pclient.result(marker).get(timeout=20)
    # Then it stayed REVOKED and was never started
    assert answer == {"task_id": task_id, "cancelled": True, "state": "REVOKED"}
    assert pclient.get_task_status(task_id)["status"] == "cancelled"
    assert redis.Redis.from_url(private_redis.url(2)).get(Keys("dramatiq").deliveries(task_id)) is None


def test_a_cancelled_job_never_starts_even_after_its_revoked_state_expired(
    private_redis: PrivateRedis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given a client whose task states expire after 1 s, and a job cancelled while no worker runs
    short = JobClient(broker_url=private_redis.url(1), result_backend_url=private_redis.url(2), result_expires=1)
    task_id = short.send("tests.pid", ())
    assert short.cancel(task_id)["cancelled"] is True
    # When the REVOKED state has expired before any worker fetches the message
    wait_until(lambda: short.store.get(task_id) is None, 10, "the REVOKED state to expire")
    start_worker(**private_redis.env())
    marker = short.send("worker.test.echo", ("after",))
    short.result(marker).get(timeout=20)
    # Then the job was still never started, and it reads REVOKED again
    assert redis.Redis.from_url(private_redis.url(2)).get(Keys("dramatiq").deliveries(task_id)) is None
    assert short.get_task_status(task_id)["status"] == "cancelled"
    assert redis.Redis.from_url(private_redis.url(1)).llen("dramatiq:default") == 0


def test_cancel_of_a_running_job_stops_it_within_a_second(
    private_redis: PrivateRedis, pclient: JobClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given a single-threaded worker running a long job
    start_worker(threads=1, **private_redis.env())
    task_id = pclient.send("worker.test.echo", ("long", 200, 0.05))
    wait_until(lambda: state(pclient, task_id) == "PROGRESS", 20, "the job to report progress")
    # When it is cancelled
    started = time.monotonic()
    assert pclient.cancel(task_id)["cancelled"] is True
    # Then the worker's only thread is free again within a second, and the state stays REVOKED
    follow_up = pclient.send("worker.test.echo", ("next",))
    pclient.result(follow_up).get(timeout=20)
    assert time.monotonic() - started < 2.0
    time.sleep(0.5)
    assert state(pclient, task_id) == "REVOKED"


def test_cancel_of_unknown_or_finished_ids_changes_nothing(
    private_redis: PrivateRedis, pclient: JobClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker(**private_redis.env())
    done = pclient.send("worker.test.echo", ("x",))
    pclient.result(done).get(timeout=20)
    unknown = pclient.cancel(str(uuid.uuid4()))
    finished = pclient.cancel(done)
    assert unknown["cancelled"] is False and "no task" in unknown["reason"] and unknown["state"] == "PENDING"
    assert finished == {
        "task_id": done,
        "cancelled": False,
        "state": "SUCCESS",
        "reason": "the task already ended SUCCESS",
    }
    assert pclient.get_task_status(done)["status"] == "completed"


# Retries


def test_transient_errors_retry_with_backoff_then_succeed(
    private_redis: PrivateRedis, pclient: JobClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given fast backoff for the test
    start_worker(**private_redis.env(RETRY_MIN_BACKOFF_MS="100", RETRY_MAX_BACKOFF_MS="300", MAX_RETRIES="3"))
    results = redis.Redis.from_url(private_redis.url(2))
    pubsub = results.pubsub(ignore_subscribe_messages=True)
    task_id = str(uuid.uuid4())
    pubsub.subscribe(f"celery-task-meta-{task_id}")
    # When a job fails twice with a transient error
    pclient.send("tests.flaky", (f"flaky-{task_id}", 2), task_id=task_id)
    # Then the poller sees RETRY twice and then SUCCESS on the third attempt
    assert pclient.result(task_id).get(timeout=30) == 3
    states = []
    while (event := pubsub.get_message(timeout=0.2)) is not None or not states:
        if event is not None:
            states.append(json.loads(event["data"])["status"])
    assert states.count("RETRY") == 2 and states[-1] == "SUCCESS"


def test_retries_are_bounded_and_terminal_errors_are_not_retried(
    private_redis: PrivateRedis, pclient: JobClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker(**private_redis.env(RETRY_MIN_BACKOFF_MS="50", RETRY_MAX_BACKOFF_MS="100", MAX_RETRIES="2"))
    counter = redis.Redis.from_url(private_redis.url(1))
    always = pclient.send("tests.flaky", ("always", 99))
    terminal = pclient.send("tests.terminal", ("terminal",))
    with pytest.raises(Exception, match="went away"):
        pclient.result(always).get(timeout=30)
    with pytest.raises(ValueError, match="bad configuration"):
        pclient.result(terminal).get(timeout=30)
    # Then a transient error ran 1 + MAX_RETRIES times, and a terminal one once
    assert int(counter.get("always") or 0) == 3
    assert int(counter.get("terminal") or 0) == 1


# Crashes


def started_pid(results: redis.Redis, task_id: str, timeout: float = 20) -> int:
    """Wait for the job's STARTED write on its channel and return the worker pid it names."""
    pubsub = results.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"celery-task-meta-{task_id}")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = pubsub.get_message(timeout=0.5)
            if event is not None and json.loads(event["data"])["status"] == "STARTED":
                return int(json.loads(event["data"])["result"]["pid"])
        raise AssertionError(f"task {task_id} did not start within {timeout} s")
    finally:
        pubsub.close()


def test_job_of_a_killed_worker_finishes_on_another_within_30_s(
    private_redis: PrivateRedis, pclient: JobClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given two worker masters with the default heartbeat settings, one thread each
    first = start_worker(threads=1, **private_redis.env())
    second = start_worker(threads=1, **private_redis.env())
    results = redis.Redis.from_url(private_redis.url(2))
    # And a long job running on one of them
    task_id = str(uuid.uuid4())
    with ThreadPoolExecutor(1) as pool:
        pid = pool.submit(started_pid, results, task_id)
        time.sleep(0.2)
        pclient.send("worker.test.echo", ("survivor", 40, 0.1), task_id=task_id)
        worker_pid = pid.result()
    time.sleep(0.5)
    # When its worker process is SIGKILLed mid-job
    os.kill(worker_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    # Then the job runs again on the surviving worker and succeeds within 30 s of the kill
    assert pclient.result(task_id).get(timeout=45) == {"message": "survivor", "steps": 40}
    assert time.monotonic() - killed_at < 30
    assert [w.proc.poll() is None for w in (first, second)].count(True) == 1


def test_poison_message_ends_failure_after_bounded_deliveries(
    private_redis: PrivateRedis, pclient: JobClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given workers that a supervisor restarts whenever one dies (short heartbeat timeout for speed)
    env = private_redis.env(HEARTBEAT_TIMEOUT_MS="2000", MAX_WORKER_LOSSES="2")
    workers = [start_worker(threads=1, **env)]
    # When a job that kills its worker is sent
    task_id = pclient.send("tests.crash", ())
    deadline = time.monotonic() + 90
    while state(pclient, task_id) != "FAILURE" and time.monotonic() < deadline:
        if workers[-1].proc.poll() is not None:
            workers.append(start_worker(threads=1, **env))
        time.sleep(0.2)
    # Then it ends FAILURE (WorkerLost) after 1 + MAX_WORKER_LOSSES deliveries, and stops looping
    status = pclient.get_task_status(task_id)
    assert status["state"] == "FAILURE" and "died 3 times" in status["error"]
    assert len(workers) == 4
    assert redis.Redis.from_url(private_redis.url(1)).zcard("dramatiq:default.XQ") == 1
    time.sleep(3)
    assert workers[-1].proc.poll() is None


# Broker faults


def test_workers_survive_a_redis_restart(
    private_redis: PrivateRedis, pclient: JobClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given a running worker
    worker = start_worker(processes=2, **private_redis.env())
    first = pclient.send("worker.test.echo", ("before",))
    assert pclient.result(first).get(timeout=20)["message"] == "before"
    # When Redis is killed and started again (without persistence)
    private_redis.kill()
    time.sleep(2)
    private_redis.start()
    # Then the worker reconnects by itself and takes jobs enqueued after the restart
    client = JobClient(broker_url=private_redis.url(1), result_backend_url=private_redis.url(2))
    after = client.send("worker.test.echo", ("after",))
    assert client.result(after).get(timeout=30)["message"] == "after"
    assert worker.proc.poll() is None


def test_a_job_finishing_during_a_redis_outage_still_stores_its_result(
    private_redis: PrivateRedis, pclient: JobClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given a job that runs for about 3 s
    worker = start_worker(threads=1, **private_redis.env())
    task_id = pclient.send("worker.test.echo", ("through the outage", 30, 0.1))
    wait_until(lambda: state(pclient, task_id) == "PROGRESS", 20, "the job to start")
    # When Redis goes away while it runs and comes back only after it has finished
    private_redis.kill()
    time.sleep(4)
    private_redis.start()
    # Then the worker stored SUCCESS once Redis answered again, instead of dropping it
    client = JobClient(broker_url=private_redis.url(1), result_backend_url=private_redis.url(2))
    wait_until(
        lambda: state(client, task_id) == "SUCCESS", 30, f"the final state to be stored:\n{worker.output()[-3000:]}"
    )
    assert client.result(task_id).get(timeout=1) == {"message": "through the outage", "steps": 30}


def test_sigterm_finishes_in_flight_jobs_and_requeues_the_rest(
    private_redis: PrivateRedis, pclient: JobClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given one worker thread busy with a 2 s job and more jobs waiting
    worker = start_worker(threads=1, **private_redis.env())
    busy = pclient.send("worker.test.echo", ("busy", 20, 0.1))
    wait_until(lambda: state(pclient, busy) == "PROGRESS", 20, "the busy job to start")
    waiting = [pclient.send("worker.test.echo", (f"w{i}",)) for i in range(5)]
    # When the worker gets SIGTERM
    assert worker.stop(timeout=30) == 0
    # Then the in-flight job finished, and nothing was lost: a new worker completes the rest
    assert state(pclient, busy) == "SUCCESS"
    start_worker(threads=2, **private_redis.env())
    for task_id in waiting:
        assert pclient.result(task_id).get(timeout=30)["steps"] == 0


# Load


def test_every_job_of_a_burst_reaches_one_final_state(
    private_redis: PrivateRedis, pclient: JobClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given 2 worker processes
    start_worker(processes=2, threads=4, **private_redis.env())
    # When 1,000 jobs are enqueued at once
    task_ids = [pclient.send("worker.test.echo", (str(i),)) for i in range(1000)]
    # Then every one reaches SUCCESS with its own result, and nothing is left in any queue
    for i, task_id in enumerate(task_ids):
        assert pclient.result(task_id).get(timeout=120) == {"message": str(i), "steps": 0}
    broker = redis.Redis.from_url(private_redis.url(1))
    assert broker.llen("dramatiq:default") == 0 and broker.zcard("dramatiq:default.XQ") == 0
