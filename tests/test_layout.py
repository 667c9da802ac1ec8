"""The Redis layout: Dramatiq's keys as the adapter spells them, and the final states shared with Lua.

If Dramatiq changes where it keeps queues, payloads, acks, dead letters or heartbeats, these tests
fail before recovery, the dashboard or the per-user limits silently read the wrong keys.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from celery.states import READY_STATES
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from rosetta_jobs import layout
from rosetta_jobs.layout import DRAMATIQ_LAYOUT_VERSION, DramatiqKeys, Keys, script
from rosetta_jobs.middleware.recovery import requeue_dead_workers
from rosetta_jobs.states import FINAL_STATES, PENDING, PROGRESS, RETRY, STARTED

from .conftest import BROKER_DB, redis_url


def test_the_adapter_names_the_dramatiq_it_was_written_against() -> None:
    # Given the installed Dramatiq, Then it is the release the adapter's layout was taken from
    assert dramatiq.__version__.startswith(DRAMATIQ_LAYOUT_VERSION + ".")


@pytest.fixture
def dramatiq_broker(broker_redis: redis.Redis) -> Iterator[tuple[RedisBroker, DramatiqKeys]]:
    """Dramatiq's own Redis broker, with queue ``q``, in a namespace of this test (removed after it)."""
    namespace = f"layout-{uuid.uuid4().hex[:8]}"
    broker = RedisBroker(url=redis_url(BROKER_DB), namespace=namespace, middleware=[])
    broker.declare_queue("q")
    yield broker, DramatiqKeys(namespace)
    broker.close()
    for key in broker_redis.scan_iter(match=f"{namespace}:*"):
        broker_redis.delete(key)


def test_dramatiq_keeps_its_messages_where_the_adapter_looks(
    broker_redis: redis.Redis, dramatiq_broker: tuple[RedisBroker, DramatiqKeys]
) -> None:
    # Given Dramatiq's own Redis broker
    broker, keys = dramatiq_broker
    # When it enqueues a message, a delayed one, and fetches and rejects the first
    ready = broker.enqueue(Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))
    broker.enqueue(Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}), delay=60_000)
    ready_id = ready.options["redis_message_id"]
    # Then the ready id and its payload are where the adapter looks
    assert broker_redis.lrange(keys.queue("q"), 0, -1) == [ready_id.encode()]
    assert json.loads(broker_redis.hget(keys.messages("q"), ready_id))["message_id"] == ready.message_id
    assert broker_redis.llen(keys.delayed("q")) == 1 and broker_redis.hlen(keys.delayed_messages("q")) == 1
    consumer = broker.consume("q", prefetch=1, timeout=1000)
    fetched = next(consumer)
    assert fetched is not None and fetched.message_id == ready.message_id
    # And a fetched message is in this broker's acks set, and the broker in Dramatiq's heartbeats
    assert broker_redis.sismember(keys.acks(broker.broker_id, "q"), ready_id)
    assert keys.acks(broker.broker_id, "q").startswith(keys.acks_prefix())
    assert broker_redis.zscore(keys.heartbeats(), broker.broker_id) is not None
    # And a rejected message is a dead letter where the adapter looks
    fetched.fail()
    consumer.nack(fetched)
    assert broker_redis.zscore(keys.dead("q"), ready_id) is not None
    assert broker_redis.hexists(keys.dead_messages("q"), ready_id)
    consumer.close()


def test_recovery_finds_a_dead_workers_messages_in_dramatiqs_keys(
    broker_redis: redis.Redis, dramatiq_broker: tuple[RedisBroker, DramatiqKeys]
) -> None:
    # Given a message that Dramatiq's own broker fetched (so it sits in that broker's acks set)
    broker, keys = dramatiq_broker
    sent = broker.enqueue(Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))
    consumer = broker.consume("q", prefetch=1, timeout=1000)
    assert next(consumer) is not None
    assert broker_redis.llen(keys.queue("q")) == 0
    # When that broker falls silent past the timeout and recovery runs
    broker_redis.zadd(keys.heartbeats(), {broker.broker_id: 0})
    requeued = requeue_dead_workers(script(broker_redis, "requeue_dead_workers"), keys, 1000, ["q"])
    # Then the message is back at the head of its queue, and the dead broker's acks are gone
    assert requeued == 1
    assert broker_redis.lrange(keys.queue("q"), 0, -1) == [sent.options["redis_message_id"].encode()]
    assert not broker_redis.exists(keys.acks(broker.broker_id, "q"))
    consumer.close()


def test_every_lua_script_knows_celerys_final_states(results_redis: redis.Redis) -> None:
    # Given Celery's own ready states, the ones after which AsyncResult stops waiting
    assert frozenset(READY_STATES) == FINAL_STATES
    # Given a task meta in each state
    assert layout.lua_source("task_write").startswith(layout._header())
    check = results_redis.register_script(layout._header() + "return final_status(KEYS[1])")
    for state in [*FINAL_STATES, PENDING, STARTED, PROGRESS, RETRY]:
        key = Keys.meta(f"layout-{uuid.uuid4().hex}")
        results_redis.set(key, json.dumps({"status": state}), ex=60)
        # When Lua asks whether it is final, Then it answers as states.FINAL_STATES does
        answer = check(keys=[key])
        assert (answer.decode() if answer else None) == (state if state in FINAL_STATES else None)


def test_our_keys_live_under_one_prefix_per_deployment() -> None:
    # Given two deployments' key sets, Then none of their keys is the other's, and all are ours
    first, second = Keys("one"), Keys("two")
    names = ["cancel", "submitted", "deliveries", "stopped", "lease"]
    for name in names:
        assert getattr(first, name)("t") != getattr(second, name)("t")
        assert getattr(first, name)("t").startswith("rosetta-jobs:one:")
    assert first.wake("preview").startswith("rosetta-jobs:one:") and not first.wake("preview").startswith("one:")
    # And the task meta keeps Celery's name, which the backend reads
    assert Keys.meta("t") == "celery-task-meta-t"
