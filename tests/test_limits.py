"""Per-user active-job limits with real workers: refused at the limit, freed by failure, cancel and death."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator

import pytest

from rosetta_jobs.client import JobClient
from rosetta_jobs.errors import UserLimitExceeded

from .conftest import BROKER_DB, RESULTS_DB, WorkerProcess, redis_url, wait_until


@pytest.fixture
def limited(redis_dbs: None) -> Iterator[JobClient]:
    """A client whose users may have two active jobs."""
    client = JobClient(broker_url=redis_url(BROKER_DB), result_backend_url=redis_url(RESULTS_DB), max_active_per_user=2)
    yield client
    client.broker.close()


def _queued(client: JobClient) -> int:
    return int(client.broker.client.llen("dramatiq:default"))


def test_a_user_at_the_limit_is_refused_and_nothing_is_enqueued(limited: JobClient) -> None:
    # Given a user with two queued jobs (no worker runs)
    limited.send("worker.test.echo", ("a",), user_id="alice")
    limited.send("worker.test.echo", ("b",), user_id="alice")

    # When the user submits a third
    with pytest.raises(UserLimitExceeded, match="MAX_ACTIVE_PER_USER"):
        limited.send("worker.test.echo", ("c",), user_id="alice")

    # Then nothing more was enqueued; other users and jobs without a user are not limited
    assert _queued(limited) == 2
    limited.send("worker.test.echo", ("d",), user_id="bob")
    for _ in range(3):
        limited.send("worker.test.echo", ("e",))
    assert limited.limits.active("alice") == 2
    assert _queued(limited) == 6
    # And any user id is its own: one that looks like another's bookkeeping key included
    limited.send("worker.test.echo", ("f",), user_id="alice:where")
    assert limited.limits.active("alice:where") == 1 and limited.limits.active("alice") == 2


def test_queued_jobs_count_while_their_message_is_in_the_broker(limited: JobClient) -> None:
    # Given two queued jobs, and no grace period: only the broker can say they are still queued
    limited.limits.grace = 0.0
    limited.send("worker.test.echo", ("a",), user_id="alice")
    limited.send("worker.test.echo", ("b",), user_id="alice")
    assert limited.limits.active("alice") == 2

    # When their messages leave the broker without ever getting a state (the queue is purged)
    limited.broker.flush("default")

    # Then they no longer count
    assert limited.limits.active("alice") == 0
    limited.send("worker.test.echo", ("c",), user_id="alice")


def test_failed_and_finished_jobs_free_their_slots(
    limited: JobClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given a user at the limit with one job that fails and one that succeeds
    failing = limited.send("tests.fail", ("boom",), user_id="alice")
    passing = limited.send("worker.test.echo", ("ok",), user_id="alice")
    with pytest.raises(UserLimitExceeded):
        limited.send("worker.test.echo", ("refused",), user_id="alice")

    # When a worker runs both
    start_worker()
    wait_until(lambda: limited.store.is_final(failing) and limited.store.is_final(passing))

    # Then both slots are free again
    assert limited.get_task_status(failing)["status"] == "failed"
    assert limited.limits.active("alice") == 0
    limited.send("worker.test.echo", ("one",), user_id="alice")
    limited.send("worker.test.echo", ("two",), user_id="alice")


def test_a_cancelled_job_frees_its_slot(limited: JobClient) -> None:
    # Given a user at the limit with two queued jobs
    first = limited.send("worker.test.echo", ("a",), user_id="alice")
    limited.send("worker.test.echo", ("b",), user_id="alice")

    # When one is cancelled
    assert limited.cancel(first)["cancelled"] is True

    # Then the user may submit again
    assert limited.limits.active("alice") == 1
    limited.send("worker.test.echo", ("c",), user_id="alice")


def test_a_job_whose_worker_died_frees_its_slot(limited: JobClient, start_worker: Callable[..., WorkerProcess]) -> None:
    # Given a user whose two jobs run on a worker with a short heartbeat TTL
    worker = start_worker(threads=2, ROSETTA_HEARTBEAT_INTERVAL="0.5", ROSETTA_HEARTBEAT_TTL="2")
    jobs = [limited.send("tests.pid", (60.0,), user_id="alice") for _ in range(2)]
    wait_until(lambda: all(limited.get_task_status(job)["status"] == "running" for job in jobs))
    with pytest.raises(UserLimitExceeded):
        limited.send("worker.test.echo", ("refused",), user_id="alice")

    # When the worker is killed (its jobs stay STARTED: nobody is left to write a final state)
    os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(5)

    # Then within the heartbeat TTL the user may submit again
    wait_until(lambda: limited.limits.active("alice") == 0, timeout=6)
    assert all(limited.get_task_status(job)["state"] == "STARTED" for job in jobs)
    limited.send("worker.test.echo", ("again",), user_id="alice")


def test_concurrent_submits_never_exceed_the_limit(limited: JobClient) -> None:
    # Given many submits of one user at the same moment
    accepted: list[str] = []
    refused: list[Exception] = []
    barrier = threading.Barrier(8)

    def submit() -> None:
        barrier.wait()
        try:
            accepted.append(limited.send("worker.test.echo", ("x",), user_id="alice"))
        except UserLimitExceeded as exc:
            refused.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then exactly the limit got through
    assert len(accepted) == 2 and len(refused) == 6
    assert _queued(limited) == 2


@pytest.mark.parametrize("spelling", ["Alice", "alice ", " ALICE\t", "\uff41lice", "\uff21\uff2c\uff29\uff23\uff25"])
def test_one_user_is_one_user_however_the_id_is_spelled(limited: JobClient, spelling: str) -> None:
    # Given a user with two queued jobs
    limited.send("worker.test.echo", ("a",), user_id="alice")
    limited.send("worker.test.echo", ("b",), user_id="alice")
    # When the same user submits again, their id in another case, padded, or in fullwidth letters
    with pytest.raises(UserLimitExceeded):
        limited.send("worker.test.echo", ("c",), user_id=spelling)
    # Then it counts against the same limit (NFKC, trimmed, case-folded), and nothing more was enqueued
    assert limited.limits.active("ALICE") == 2
    assert _queued(limited) == 2


def test_a_blank_user_id_is_refused(limited: JobClient) -> None:
    # Given an id that is only white space, When it is used, Then it is refused like an empty one
    with pytest.raises(ValueError, match="user_id must be 1 to 200 characters"):
        limited.send("worker.test.echo", ("a",), user_id="   ")
