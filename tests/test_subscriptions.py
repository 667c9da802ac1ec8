"""Waits on task channels reuse their connection, hear only their own channel, and survive a dropped one."""

from __future__ import annotations

import threading
import uuid

import redis

from rosetta_jobs.subscriptions import Channel, Subscriptions

from .conftest import wait_until


def _channel() -> str:
    return f"test-subscriptions-{uuid.uuid4()}"


def _subscribed(client: redis.Redis) -> set[str]:
    """Ids of the connections subscribed to something, on this client's database."""
    db = str(client.connection_pool.connection_kwargs.get("db", 0))
    return {c["id"] for c in client.client_list() if int(c.get("sub", 0)) > 0 and str(c.get("db")) == db}


def _drop(client: redis.Redis, channel: Channel) -> None:
    """Have Redis close the channel's connection, and no other (a test run beside this one has its own)."""
    host, port = channel.pubsub.connection._sock.getsockname()[:2]  # type: ignore[union-attr]
    assert client.client_kill_filter(addr=f"{host}:{port}") == 1


def _publish(client: redis.Redis, name: str, data: bytes) -> None:
    """Publish once Redis has the subscription (a SUBSCRIBE and a PUBLISH on two connections may cross)."""
    wait_until(lambda: client.pubsub_numsub(name)[0][1] >= 1, timeout=5, what=f"a subscriber of {name}")
    client.publish(name, data)


def test_a_second_wait_reuses_the_first_ones_connection(results_redis: redis.Redis) -> None:
    # Given subscriptions of one client, and a wait that heard its message
    subscriptions = Subscriptions(results_redis)
    first, second = _channel(), _channel()
    with subscriptions.channel(first) as channel:
        _publish(results_redis, first, b"one")
        assert channel.get(timeout=5) == b"one"
        before = _subscribed(results_redis)
    # When the next wait runs
    with subscriptions.channel(second) as channel:
        _publish(results_redis, second, b"two")
        heard = channel.get(timeout=5)
        during = _subscribed(results_redis)
    # Then it heard its message on the connection the first one opened (no new connection)
    assert heard == b"two"
    assert len(before) == 1 and during == before


def test_a_wait_does_not_hear_the_channel_an_earlier_wait_left(results_redis: redis.Redis) -> None:
    # Given a wait on one channel that ended while messages of it were still on their way
    subscriptions = Subscriptions(results_redis)
    old, new = _channel(), _channel()
    with subscriptions.channel(old):
        _publish(results_redis, old, b"late-1")
        results_redis.publish(old, b"late-2")
    # When the reused connection waits on another channel
    with subscriptions.channel(new) as channel:
        _publish(results_redis, new, b"mine")
        heard = channel.get(timeout=5)
    # Then only the new channel's message comes out
    assert heard == b"mine"


def test_a_connection_redis_closed_is_replaced_at_the_next_wait(results_redis: redis.Redis) -> None:
    # Given an idle kept subscription whose connection Redis has closed
    subscriptions = Subscriptions(results_redis)
    with subscriptions.channel(_channel()) as kept:
        pass
    _drop(results_redis, kept)
    # When the next wait subscribes
    name = _channel()
    with subscriptions.channel(name) as channel:
        threading.Thread(target=_publish, args=(results_redis, name, b"after")).start()
        heard = channel.get(timeout=5)
    # Then it works on a new connection
    assert heard == b"after"


def test_a_connection_closed_during_a_wait_is_replaced(results_redis: redis.Redis) -> None:
    # Given a wait subscribed on a kept connection
    subscriptions = Subscriptions(results_redis)
    with subscriptions.channel(_channel()):
        pass
    name = _channel()
    with subscriptions.channel(name) as channel:
        # When Redis closes the connection under it (a restart, an idle timeout)
        _drop(results_redis, channel)
        threading.Thread(target=_publish, args=(results_redis, name, b"later")).start()
        # Then the wait goes on hearing the channel, on a new connection
        heard = [channel.get(timeout=1) for _ in range(5)]
        assert b"later" in heard
