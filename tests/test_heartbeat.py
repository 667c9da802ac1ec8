"""Heartbeat: a job's lease is handed to its STARTED write, the process's hash soon after, a busy process's hash
coalesced. Against the real Redis; Dramatiq's worker and messages are the plain objects the hooks read."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from rosetta_jobs.job import Job, RunningJobs
from rosetta_jobs.lease import Lease
from rosetta_jobs.middleware.heartbeat import Heartbeat
from rosetta_jobs.workers import read_workers

from .conftest import wait_until


class CountingHeartbeat(Heartbeat):
    """Counts the hash writes (the test's only seam: Redis and the middleware are the real ones)."""

    writes = 0

    def beat(self) -> None:
        super().beat()
        self.writes += 1


BROKER: Any = SimpleNamespace(get_declared_queues=lambda: {"default"})
WORKER: Any = SimpleNamespace(worker_threads=8, consumer_whitelist=None)


def _booted(client: redis.Redis, **options: Any) -> CountingHeartbeat:
    beat = CountingHeartbeat(client=client, namespace=f"hb-{uuid.uuid4().hex[:8]}", jobs=RunningJobs(),
                             interval=30.0, ttl=60.0, **options)  # fmt: skip
    beat.before_worker_boot(BROKER, WORKER)
    beat.after_worker_boot(BROKER, WORKER)
    return beat


@pytest.fixture
def heartbeat(results_redis: redis.Redis) -> Iterator[CountingHeartbeat]:
    beat = _booted(results_redis)
    yield beat
    beat.after_worker_shutdown(BROKER, WORKER)


def _start(beat: Heartbeat, task_id: str) -> Any:
    beat.jobs.add(Job(id=task_id, actor="tests.echo", queue="default", time_limit=None, deadline=None))
    message: Any = SimpleNamespace(message_id=task_id)
    beat.before_process_message(None, message)  # type: ignore[arg-type]
    return message


def _end(beat: Heartbeat, message: Any) -> None:
    beat.after_process_message(None, message)  # type: ignore[arg-type]
    beat.jobs.remove(message.message_id)  # as JobContext does, after this hook


def _me(beat: Heartbeat, client: redis.Redis) -> Any:
    return next(w for w in read_workers(client, beat.keys.namespace) if w.id == beat.worker_id)


def test_a_job_holds_its_lease_while_it_runs_and_the_hash_follows(
    heartbeat: CountingHeartbeat, results_redis: redis.Redis
) -> None:
    # Given a booted heartbeat
    keys = heartbeat.keys
    # When a job starts
    message = _start(heartbeat, "job-1")
    # Then the hook hands its lease to the job (its STARTED write stores it in the same step: test_store), and
    # the hash shows it running soon after, the beat renewing the lease
    job = heartbeat.jobs.get("job-1")
    assert job is not None and job.lease == (keys.lease("job-1"), heartbeat.worker_id, 60_000)
    wait_until(lambda: _me(heartbeat, results_redis).busy == 1, 2, "the hash to show the job")
    assert [entry["task_id"] for entry in _me(heartbeat, results_redis).running] == ["job-1"]
    assert results_redis.get(keys.lease("job-1")) == heartbeat.worker_id.encode()

    # When it ends
    _end(heartbeat, message)
    # Then its lease is gone at once, and the hash shows it processed
    assert results_redis.exists(keys.lease("job-1")) == 0
    wait_until(lambda: _me(heartbeat, results_redis).busy == 0, 2, "the hash to show the job ended")
    assert _me(heartbeat, results_redis).processed == 1


def test_a_message_without_a_job_gets_its_lease_written_by_the_hook(
    heartbeat: CountingHeartbeat, results_redis: redis.Redis
) -> None:
    # Given a booted heartbeat, and a message no job context registered (a stack without ``JobContext``)
    message: Any = SimpleNamespace(message_id="job-alone")
    # When its processing begins
    heartbeat.before_process_message(None, message)  # type: ignore[arg-type]
    # Then the hook writes its lease itself, before returning
    assert results_redis.get(heartbeat.keys.lease("job-alone")) == heartbeat.worker_id.encode()
    heartbeat.after_process_message(None, message)  # type: ignore[arg-type]
    assert results_redis.exists(heartbeat.keys.lease("job-alone")) == 0


def test_a_busy_process_writes_its_hash_a_few_times_not_twice_per_job(
    heartbeat: CountingHeartbeat, results_redis: redis.Redis
) -> None:
    # Given a booted heartbeat whose first beat is written
    wait_until(lambda: heartbeat.writes >= 1, 2, "the first beat")
    before = heartbeat.writes
    # When 300 jobs start and end back to back
    for i in range(300):
        _end(heartbeat, _start(heartbeat, f"job-{i}"))
    # Then the hash ends right (nothing running, 300 processed), and every lease is gone
    wait_until(lambda: _me(heartbeat, results_redis).processed == 300, 2, "the hash to count 300 jobs")
    assert _me(heartbeat, results_redis).busy == 0
    assert not list(results_redis.scan_iter(heartbeat.keys.lease("*")))
    # And it was written a few times (one per 0.1 s of the burst, at most), not 600
    assert heartbeat.writes - before < 100, heartbeat.writes - before


def test_a_skipped_message_gives_its_lease_back(heartbeat: CountingHeartbeat, results_redis: redis.Redis) -> None:
    # Given a job that started
    message = _start(heartbeat, "job-skipped")
    # When its message is skipped (a cancel found before it ran)
    heartbeat.after_skip_message(None, message)  # type: ignore[arg-type]
    heartbeat.jobs.remove("job-skipped")
    # Then its lease is gone and the hash shows nothing running
    assert results_redis.exists(heartbeat.keys.lease("job-skipped")) == 0
    wait_until(lambda: _me(heartbeat, results_redis).processed == 1, 2, "the hash to count the skipped job")
    assert _me(heartbeat, results_redis).running == []


def test_a_skipped_message_leaves_another_workers_lease_alone(
    heartbeat: CountingHeartbeat, results_redis: redis.Redis
) -> None:
    # Given a task another worker runs under its own lease (its message was requeued while this process was cut off)
    key = heartbeat.keys.lease("job-elsewhere")
    results_redis.set(key, "other-host:1", px=60_000)
    # When this process's stale copy of the message begins, a whole beat is written, and the message is skipped
    message = _start(heartbeat, "job-elsewhere")
    heartbeat.beat()
    heartbeat.after_skip_message(None, message)  # type: ignore[arg-type]
    heartbeat.jobs.remove("job-elsewhere")
    # Then the other worker's lease is still there, neither taken over by the beat nor removed by the skip
    assert results_redis.get(key) == b"other-host:1"
    results_redis.delete(key)


def test_a_job_that_starts_after_a_silence_renews_the_process_lease(results_redis: redis.Redis) -> None:
    # Given a process whose lease was lost (no beat acknowledged for longer than its timeout)
    lease = Lease(0.2)
    beat = _booted(results_redis, lease=lease)
    try:
        time.sleep(0.3)
        assert lease.declare_lost()
        # When a job starts and Redis answers
        _start(beat, "job-after-silence")
        # Then the start beat whole: the lease is regained before the job runs, and the job's lease is written
        assert not lease.lost and lease.silent_for() < 0.2
        assert results_redis.get(beat.keys.lease("job-after-silence")) == beat.worker_id.encode()
    finally:
        beat.after_worker_shutdown(BROKER, WORKER)


def test_shutdown_stops_the_thread_and_removes_the_process_at_once(results_redis: redis.Redis) -> None:
    # Given a booted heartbeat (a 30 s interval) that has just written a change
    beat = _booted(results_redis)
    _end(beat, _start(beat, "job-last"))
    # When the worker shuts down
    started = time.monotonic()
    beat.after_worker_shutdown(BROKER, WORKER)
    # Then the thread ends well within an interval, and the process's hash and index entry are gone
    assert time.monotonic() - started < 2
    assert beat._beats.thread is not None and not beat._beats.thread.is_alive()
    assert read_workers(results_redis, beat.keys.namespace) == []
