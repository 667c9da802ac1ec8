"""A final state Redis refuses becomes a FAILURE the poller can read; its retries are bounded and logged.

Each test runs a ``redis-server`` of its own on a free port, with the limits under test:
``proto-max-bulk-len`` (Redis closes the connection on a value larger than that) and ``maxmemory``
(Redis answers OOM to writes).
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dramatiq
import pytest
import redis
from loguru import logger

from rosetta_jobs import store as store_module
from rosetta_jobs.errors import StateRefused
from rosetta_jobs.job import RunningJobs
from rosetta_jobs.middleware.state import TaskState
from rosetta_jobs.states import FAILURE, SUCCESS, build_meta
from rosetta_jobs.store import TaskStore


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., redis.Redis]]:
    """``private_redis(*args)``: a redis-server on a free port with ``args``; each is killed after the test."""
    servers: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> redis.Redis:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--dir", str(tmp_path), *args]  # fmt: skip
        servers.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        client = redis.Redis(port=port, socket_connect_timeout=2)
        for _ in range(100):
            try:
                client.ping()
                return client
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    yield start
    for server in servers:
        server.kill()
        server.wait(10)


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="WARNING")
    yield lines
    logger.remove(sink)


def full_redis(private_redis: Callable[..., redis.Redis]) -> redis.Redis:
    """A server holding more than its ``maxmemory`` (noeviction): it answers OOM to every write."""
    client = private_redis("--maxmemory-policy", "noeviction")
    for index in range(20):
        client.set(f"filler-{index}", b"y" * 200_000)
    client.config_set("maxmemory", "2mb")
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("probe", b"z")
    return client


def message(task_id: str = "big-result") -> dramatiq.MessageProxy:
    return dramatiq.MessageProxy(
        dramatiq.Message(
            queue_name="default", actor_name="tests.big", args=("x",), kwargs={}, options={}, message_id=task_id
        )
    )


def test_a_state_too_large_for_redis_becomes_a_readable_failure(
    private_redis: Callable[..., redis.Redis], warnings: list[str]
) -> None:
    # Given a result backend that refuses values over 1 MB (it closes the connection on them)
    client = private_redis("--proto-max-bulk-len", "1mb")
    state = TaskState(store=TaskStore(client), jobs=RunningJobs())
    started = time.monotonic()
    # When a job's SUCCESS of 1.5 MB is stored
    state.write(message(), SUCCESS, "x" * 1_500_000)
    # Then without waiting out the 600 s outage budget (redis-py's own retries of the closed connection
    # take a few seconds, with jitter), a FAILURE saying why is there instead
    assert time.monotonic() - started < 15
    stored = TaskStore(client).get("big-result")
    assert stored is not None and stored["status"] == FAILURE
    assert stored["result"]["exc_type"] == "StateRefused" and "refused" in stored["result"]["exc_message"][0]
    assert any("refused its SUCCESS state" in line for line in warnings)


def test_a_state_over_the_store_cap_is_refused_without_sending_it(
    private_redis: Callable[..., redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a 100 KB cap on stored states
    monkeypatch.setattr(store_module, "MAX_STATE_BYTES", 100_000)
    client = private_redis()
    store = TaskStore(client)
    # When a larger state is written, Then it is refused before it reaches Redis
    with pytest.raises(StateRefused, match="at most 100,000 are stored"):
        store.write(build_meta("t1", SUCCESS, "x" * 200_000), wait=600)
    assert store.get("t1") is None


def test_a_full_redis_is_retried_for_a_bounded_time_with_each_retry_logged(
    private_redis: Callable[..., redis.Redis], monkeypatch: pytest.MonkeyPatch, warnings: list[str]
) -> None:
    # Given a result backend at its maxmemory (noeviction: it answers OOM to every write)
    monkeypatch.setattr(store_module, "FULL_WAIT", 1.5)
    client = full_redis(private_redis)
    state = TaskState(store=TaskStore(client), jobs=RunningJobs())
    started = time.monotonic()
    # When a job's final state is stored
    written = state.write(message("full"), SUCCESS, {"rows": 1})
    # Then the attempt ends after the bounded wait (for the SUCCESS, then for the FAILURE), logged each time
    elapsed = time.monotonic() - started
    assert written is False and elapsed < 2 * 1.5 + 2, elapsed
    assert sum("Redis is full" in line for line in warnings) >= 2
    assert any("its FAILURE state was refused too" in line for line in warnings)


def test_a_full_redis_that_frees_room_gets_the_state(
    private_redis: Callable[..., redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a full result backend whose filler expires half a second later
    monkeypatch.setattr(store_module, "FULL_WAIT", 5.0)
    client = full_redis(private_redis)
    threading.Timer(0.5, client.flushdb).start()
    state = TaskState(store=TaskStore(client), jobs=RunningJobs())
    # When a job's final state is stored
    assert state.write(message("freed"), SUCCESS, {"rows": 1}) is True
    # Then the retries reach it: the SUCCESS itself is stored
    stored = TaskStore(client).get("freed")
    assert stored is not None and stored["status"] == SUCCESS
