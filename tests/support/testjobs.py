"""Actors that exist only for the tests; loaded next to ``rosetta_jobs.actors`` by the worker under test."""

from __future__ import annotations

import os
import signal
import threading
import time

import dramatiq
import duckdb
import redis

import rosetta_jobs.actors  # noqa: F401  (the broker is declared before these actors)
from rosetta_jobs.actor import job_actor
from rosetta_jobs.contracts import JobContract, Param
from rosetta_jobs.errors import TransientError
from rosetta_jobs.job import Deferred, current_job
from rosetta_jobs.retrying import retry_options


class CustomError(Exception):
    """An exception whose module the reader does not import."""


@dramatiq.actor(actor_name="tests.fail", queue_name="default")
def fail(message: str) -> None:
    raise ValueError(message)


@dramatiq.actor(actor_name="tests.custom_fail", queue_name="default")
def custom_fail(message: str, code: int) -> None:
    raise CustomError(message, code)


@dramatiq.actor(actor_name="tests.pid", queue_name="default")
def pid(seconds: float = 0.0) -> int:
    time.sleep(seconds)
    return os.getpid()


@dramatiq.actor(actor_name="tests.flaky", queue_name="default", **retry_options())
def flaky(key: str, failures: int) -> int:
    """Fail with a transient error ``failures`` times (counted in Redis under ``key``), then succeed."""
    attempt = int(_counter().incr(key))
    if attempt <= failures:
        raise TransientError(f"attempt {attempt}: the database went away")
    return attempt


@dramatiq.actor(actor_name="tests.terminal", queue_name="default", **retry_options())
def terminal(key: str) -> None:
    """A configuration error: counted, and never retried."""
    _counter().incr(key)
    raise ValueError("bad configuration")


@dramatiq.actor(actor_name="tests.crash", queue_name="default")
def crash() -> None:
    """Take the worker process down, as a segfault or an OOM kill would."""
    os.kill(os.getpid(), signal.SIGKILL)


def _counter() -> redis.Redis:
    return redis.Redis.from_url(os.environ["BROKER_URL"])


# --- one actor per kind of work, under the job context (time limits and cancel) -------------------------------
def _started(key: str) -> None:
    _counter().set(key, repr(time.time()), ex=300)


def _contract(name: str, *params: str) -> JobContract:
    return JobContract(name, "default", tuple(Param(p) for p in params))


@job_actor(_contract("tests.busy", "key", "seconds"))
def busy(key: str, seconds: float) -> int:
    """Pure Python that never waits: only an asynchronous exception can stop it."""
    _started(key)
    deadline, spins = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        spins += 1
    return threading.get_ident()


@job_actor(_contract("tests.shell", "key", "seconds"))
def shell(key: str, seconds: float) -> int:
    """A subprocess with a child of its own: the whole process group must go."""
    job = current_job()
    assert job is not None
    _started(key)
    job.run_subprocess(["sh", "-c", f"sleep {seconds} & sleep {seconds}; wait"])
    return threading.get_ident()


@job_actor(_contract("tests.duckdb", "key", "rows"))
def spin_duckdb(key: str, rows: int) -> int:
    """A long DuckDB query: DuckDB must be interrupted from outside."""
    job = current_job()
    assert job is not None
    con = duckdb.connect()
    try:
        _started(key)
        with job.stoppable(lambda reason: con.interrupt()):
            con.execute(f"SELECT count(*) FROM range({int(rows)}) a, range(1000) b WHERE a.range * b.range % 7 = 3")
    finally:
        con.close()
    return threading.get_ident()


@job_actor(_contract("tests.thread", "key"))
def thread_id(key: str) -> int:
    _started(key)
    return threading.get_ident()


@job_actor(_contract("tests.deferred", "key"))
def deferred(key: str) -> Deferred:
    """Ends its job at once, leaving its task's final state to someone else (``job.Deferred``)."""
    _started(key)
    return Deferred({"status": "waiting", "key": key})


@dramatiq.actor(actor_name="tests.plain_busy", queue_name="default")
def plain_busy(key: str, seconds: float) -> None:
    """A plain Dramatiq actor, not declared from a contract: the job context reaches it all the same."""
    _started(key)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


@job_actor(_contract("tests.log", "text"))
def log_lines(text: str) -> str:
    """Log through loguru and through the standard library, as a job's own code and its libraries do."""
    import logging

    from loguru import logger

    logger.info("loguru line: {}", text)
    logging.getLogger("some.library").warning("library line: %s", text)
    return text


@job_actor(_contract("tests.hold_first", "key", "seconds"))
def hold_first(key: str, seconds: float) -> dict[str, int]:
    """A subprocess of ``seconds`` on its first delivery; delivered again (a crash, a partition), done at once."""
    job = current_job()
    assert job is not None
    _started(key)
    if job.deliveries == 1:
        job.run_subprocess(["sleep", str(seconds)])
    return {"pid": os.getpid(), "deliveries": job.deliveries}
