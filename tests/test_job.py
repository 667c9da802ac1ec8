"""The job context: time limits and cancel reach every kind of job, through real worker processes.

One actor per kind of work (``support/testjobs.py``): pure Python that never waits (stopped by an
asynchronous exception), a subprocess with a child of its own (its process group killed) and a long
DuckDB query (interrupted inside DuckDB). Each is stopped within a second of its limit or its cancel,
the worker thread runs the next job, and the real ``celery`` ``AsyncResult`` reads the outcome.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from celery.exceptions import TimeLimitExceeded
from dramatiq import Message
from loguru import logger

from rosetta_jobs.client import JobClient
from rosetta_jobs.errors import JobCancelled, JobTimedOut
from rosetta_jobs.job import Job, RunningJobs

from .conftest import BROKER_DB, REDIS_HOST, REDIS_PORT, WorkerProcess, wait_until

#: Actor, arguments that make it run for about a minute.
KINDS: dict[str, tuple[str, Callable[[str], tuple[Any, ...]]]] = {
    "pure-python": ("tests.busy", lambda key: (key, 60.0)),
    "subprocess": ("tests.shell", lambda key: (key, 60)),
    "duckdb": ("tests.duckdb", lambda key: (key, 10**9)),
}


@pytest.fixture
def worker(start_worker: Callable[..., WorkerProcess], client: JobClient) -> Iterator[WorkerProcess]:
    """One worker process with one thread: the job after a stopped one must run on the same thread."""
    yield start_worker(threads=1)


def _started_at(key: str, timeout: float = 20.0) -> float:
    counter = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=BROKER_DB)
    wait_until(lambda: counter.get(key) is not None, timeout, f"the job behind {key} to start")
    return float(counter.get(key) or 0)


def _done_at(client: JobClient, task_id: str) -> float:
    meta = client.store.get(task_id) or {}
    return dt.datetime.fromisoformat(str(meta["date_done"])).timestamp()


def _next_job_runs_on_the_same_thread(client: JobClient, thread: int | None = None) -> int:
    key = f"k-{uuid.uuid4().hex}"
    ident = client.result(client.send("tests.thread", (key,))).get(timeout=20)
    if thread is not None:
        assert ident == thread
    return int(ident)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_time_limit_stops_every_kind_of_job_within_a_second(
    kind: str, worker: WorkerProcess, client: JobClient, celery_app: Celery
) -> None:
    # Given the one worker thread, known by a first job
    thread = _next_job_runs_on_the_same_thread(client)
    actor, make_args = KINDS[kind]
    key = f"k-{uuid.uuid4().hex}"
    # When a job that would run for a minute is sent with a time limit of 2 s
    task_id = client.send(actor, make_args(key), options={"time_limit": 2000})
    started = _started_at(key)
    # Then the real Celery AsyncResult reads FAILURE as Celery's own TimeLimitExceeded
    with pytest.raises(TimeLimitExceeded, match="time limit of 2 s"):
        celery_app.AsyncResult(task_id).get(timeout=30)
    # And it ended within a second of the limit
    assert _done_at(client, task_id) - started < 2 + 1.0
    # And the same worker thread runs the next job
    _next_job_runs_on_the_same_thread(client, thread)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_cancel_stops_every_kind_of_job_within_a_second(
    kind: str, worker: WorkerProcess, client: JobClient, celery_app: Celery
) -> None:
    # Given a running job of each kind, and the worker thread it runs on
    thread = _next_job_runs_on_the_same_thread(client)
    actor, make_args = KINDS[kind]
    key = f"k-{uuid.uuid4().hex}"
    task_id = client.send(actor, make_args(key))
    _started_at(key)
    # When it is cancelled
    asked = time.time()
    assert client.cancel(task_id)["cancelled"] is True
    # Then it stopped running within a second, and REVOKED stays
    wait_until(lambda: client.store.stopped_at(task_id) is not None, 10, "the job to stop")
    assert (client.store.stopped_at(task_id) or 0) - asked < 1.0
    assert celery_app.AsyncResult(task_id).state == "REVOKED"
    # And a cancel is no failure: nothing dead-lettered, and the thread takes the next job
    _next_job_runs_on_the_same_thread(client, thread)
    assert client.store.get(task_id)["status"] == "REVOKED"  # type: ignore[index]
    assert redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=BROKER_DB).zcard("dramatiq:default.XQ") == 0
    assert "Failed to process message" not in worker.output()


def test_the_subprocess_children_die_with_the_job(worker: WorkerProcess, client: JobClient) -> None:
    # Given a job whose subprocess started a child of its own
    key = f"k-{uuid.uuid4().hex}"
    task_id = client.send("tests.shell", (key, 4242), options={"time_limit": 1500})
    _started_at(key)
    assert "sleep 4242" in _processes()
    # When its time limit stops it
    client.result(task_id).get(timeout=20, propagate=False)
    # Then no process of its group is left
    wait_until(lambda: "sleep 4242" not in _processes(), 5, "the subprocess and its child to be gone")


def _processes() -> str:
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout


# --- the Job object itself, without a worker -------------------------------------------------------------------


def test_a_stop_reaches_a_stopper_registered_later() -> None:
    # Given a job that was stopped before its work registered a stopper
    job = Job(id="t", actor="a", queue="q", time_limit=None, deadline=None)
    assert job.stop(JobCancelled)
    calls: list[type[BaseException]] = []
    # When the work registers it, Then the stopper is called at once with the reason
    with job.stoppable(calls.append):
        assert calls == [JobCancelled]
    # And a second stop is ignored: the first reason wins
    assert not job.stop(JobTimedOut)
    assert job.cancelled and isinstance(job.interrupt(), JobCancelled)


def test_wait_returns_early_and_raises_the_stop() -> None:
    # Given a job waiting for 30 s, When it is stopped for its time limit from another thread
    job = Job(id="t", actor="a", queue="q", time_limit=1.0, deadline=time.monotonic() + 1)
    jobs = RunningJobs()
    jobs.add(job)
    threading.Timer(0.2, job.stop, args=(JobTimedOut,)).start()
    began = time.monotonic()
    # Then the wait ends at once with JobTimedOut, carrying the limit
    with pytest.raises(JobTimedOut, match="time limit of 1 s"):
        job.wait(30)
    assert time.monotonic() - began < 1.0
    # And the registry counts it as processed once it is removed
    assert jobs.remove("t") is job and jobs.processed == 1 and len(jobs) == 0


def test_work_put_off_to_the_end_runs_once_in_order_and_a_failure_does_not_stop_the_rest() -> None:
    # Given a job that put off three pieces of work, the second of which fails
    job = Job(id="t", actor="a", queue="q", time_limit=None, deadline=None)
    done: list[str] = []
    job.after_end(lambda: done.append("first"))
    job.after_end(lambda: 1 / 0)
    job.after_end(lambda: done.append("third"))
    # When nothing has ended it yet, Then none ran
    assert done == []
    # When the job ends (twice: a second end finds nothing left)
    logged: list[str] = []
    sink = logger.add(logged.append, level="ERROR")
    try:
        job.ended()
        job.ended()
    finally:
        logger.remove(sink)
    # Then each ran once, in order, and the failure was logged with the task id
    assert done == ["first", "third"]
    assert len(logged) == 1 and "task t: work after its end failed" in logged[0]


def test_a_plain_dramatiq_actor_is_under_the_job_context_too(worker: WorkerProcess, client: JobClient) -> None:
    # Given an actor declared with @dramatiq.actor, not job_actor
    key = f"k-{uuid.uuid4().hex}"
    # When it is sent with a time limit of 1 s
    task_id = client.send("tests.plain_busy", (key, 60.0), options={"time_limit": 1000})
    started = _started_at(key)
    # Then it is stopped there, as a job_actor is
    meta = _final(client, task_id)
    assert meta["status"] == "FAILURE" and meta["result"]["exc_type"] == "TimeLimitExceeded"
    assert _done_at(client, task_id) - started < 1 + 1.0


def test_a_cancelled_job_does_not_continue_its_pipeline(worker: WorkerProcess, client: JobClient) -> None:
    # Given a job whose success would enqueue the next step of a Dramatiq pipeline
    key, next_key = f"k-{uuid.uuid4().hex}", f"k-{uuid.uuid4().hex}"
    next_step = Message(queue_name="default", actor_name="tests.thread", args=(next_key,), kwargs={}, options={})
    task_id = client.send("tests.busy", (key, 60.0), options={"pipe_target": next_step.asdict()})
    _started_at(key)
    # When it is cancelled
    client.cancel(task_id)
    wait_until(lambda: client.store.stopped_at(task_id) is not None, 10, "the job to stop")
    # Then the next step never runs (the worker is idle and would have taken it at once)
    _next_job_runs_on_the_same_thread(client)
    counter = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=BROKER_DB)
    assert counter.get(next_key) is None and client.store.get(next_step.message_id) is None


def test_a_deferred_job_stays_progress_until_its_final_state_is_written_elsewhere(
    worker: WorkerProcess, client: JobClient
) -> None:
    # Given two jobs that end returning Deferred: their final state is someone else's to write
    keys = [f"k-{uuid.uuid4().hex}" for _ in range(2)]
    finished, cancelled = (client.send("tests.deferred", (key,)) for key in keys)

    def both_progress() -> bool:
        return all((client.store.get(t) or {}).get("status") == "PROGRESS" for t in (finished, cancelled))

    # Then each job ended (the only thread runs the next one) but its task is PROGRESS with the actor's meta
    wait_until(both_progress, 10, "both jobs to end")
    for task_id, key in ((finished, keys[0]), (cancelled, keys[1])):
        meta = client.store.get(task_id) or {}
        assert (meta["status"], meta["result"]) == ("PROGRESS", {"status": "waiting", "key": key})
    _next_job_runs_on_the_same_thread(client)
    # When one is finished by its owner, and the other cancelled, then finished too
    assert client.store.finish(finished, "SUCCESS", {"answer": 42})
    assert client.cancel(cancelled)["cancelled"]
    assert not client.store.finish(cancelled, "SUCCESS", {"answer": 42})
    # Then the first is SUCCESS with the owner's result and the actor's name; the cancel's REVOKED stays
    meta = client.store.get(finished) or {}
    assert (meta["status"], meta["result"], meta["name"]) == ("SUCCESS", {"answer": 42}, "tests.deferred")
    assert client.result(finished).get(timeout=1) == {"answer": 42}
    assert (client.store.get(cancelled) or {})["status"] == "REVOKED"
    assert client.store.cancel_requested([cancelled]) == [cancelled]


def _final(client: JobClient, task_id: str) -> dict[str, Any]:
    meta: dict[str, Any] = {}

    def final() -> bool:
        meta.clear()
        meta.update(client.store.get(task_id) or {})
        return meta.get("status") in ("SUCCESS", "FAILURE", "REVOKED")

    wait_until(final, 20, f"{task_id} to end")
    return meta


def test_a_job_still_running_when_its_worker_stops_is_abandoned_not_recorded(
    worker: WorkerProcess, client: JobClient
) -> None:
    # Given a job whose subprocess would outlive the worker's drain (10 s here)
    key = f"k-{uuid.uuid4().hex}"
    task_id = client.send("tests.shell", (key, 4343))
    _started_at(key)
    # When the worker is stopped (SIGTERM) and the drain ends with the job still running
    assert worker.stop() == 0
    # Then its subprocess group did not outlive the worker
    wait_until(lambda: "sleep 4343" not in _processes(), 5, "the subprocess and its child to be gone")
    # And nothing was recorded for it: the message is left for another worker, which writes its end
    assert client.store.get(task_id)["status"] == "STARTED"  # type: ignore[index]
