"""The producer's broker: a message and its wake-up token in one round trip, on a Redis that may not know the
script yet (a fresh server: its own here, so that flushing its scripts disturbs no other test)."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator

import dramatiq
import pytest
import redis

from rosetta_jobs.broker import RosettaBroker
from rosetta_jobs.layout import Keys

from .support.sentinel import REDIS_SERVER, free_ports


@pytest.fixture
def fresh_redis() -> Iterator[redis.Redis]:
    """A redis-server of this test's own, stopped afterwards."""
    (port,) = free_ports(1)
    proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                             "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    client = redis.Redis("127.0.0.1", port, socket_timeout=5)
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(redis.RedisError):
            if client.ping():
                break
        assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
        time.sleep(0.05)
    yield client
    proc.terminate()
    proc.wait(10)


def test_an_enqueue_stores_the_message_and_its_token_even_where_the_script_is_unknown(
    fresh_redis: redis.Redis,
) -> None:
    # Given a broker on a Redis that has never seen Dramatiq's dispatch script
    broker = RosettaBroker(client=fresh_redis, namespace="dramatiq")
    message = dramatiq.Message(queue_name="default", actor_name="worker.test.echo", args=("a",), kwargs={}, options={})
    # When a message is enqueued, and again after the server forgot its scripts (a restart, a failover)
    first = broker.enqueue(message)
    fresh_redis.script_flush()
    second = broker.enqueue(message.copy(message_id="second"))
    # Then both messages are queued under their own Redis ids, each followed by a wake-up token (a round trip
    # retried for the script pushes its own again: a token without a message only makes a consumer look once)
    ids = [first.options["redis_message_id"], second.options["redis_message_id"]]
    assert [m.decode() for m in fresh_redis.lrange("dramatiq:default", 0, -1)] == ids
    stored = fresh_redis.hmget("dramatiq:default.msgs", ids)
    assert all(stored) and dramatiq.Message.decode(stored[1]).message_id == "second"
    assert fresh_redis.llen(Keys("dramatiq").wake("default")) == 4
