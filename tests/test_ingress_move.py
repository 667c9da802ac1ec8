"""The Celery ingress's move, one instant at a time: a real ``CeleryIngress`` and its Lua scripts, driven by
hand against the real Redis, with messages from the real ``celery`` producer. No worker runs here, so each
step can be stopped where a SIGKILL would stop it (``tests/test_ingress.py`` does it with real kills)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from celery import Celery
from dramatiq.brokers.redis import RedisBroker

from rosetta_jobs import layout
from rosetta_jobs.ingress import CeleryIngress
from rosetta_jobs.store import TaskStore

from .conftest import BROKER_DB, REDIS_HOST, REDIS_PORT, RESULTS_DB, WorkerProcess, redis_url, wait_until
from .test_ingress import DRAMATIQ, KEYS, KOMBU, backend_producer


@pytest.fixture
def producer(celery_app: Celery) -> Celery:
    return backend_producer(celery_app)


@pytest.fixture
def broker(redis_dbs: None) -> redis.Redis:
    return redis.Redis.from_url(redis_url(BROKER_DB))


@pytest.fixture
def store(redis_dbs: None) -> TaskStore:
    return TaskStore.from_url(redis_url(RESULTS_DB))


@pytest.fixture
def ingress(redis_dbs: None) -> Iterator[tuple[Any, Any]]:
    """A real ``CeleryIngress`` and a real Redis broker serving ``worker.test.echo``, driven by hand."""
    broker_ = RedisBroker(url=redis_url(BROKER_DB), middleware=[])
    dramatiq.actor(lambda message, steps=0, step_seconds=0.0: None, broker=broker_,
                   actor_name="worker.test.echo", queue_name="default")  # fmt: skip
    mover = CeleryIngress(store=TaskStore.from_url(redis_url(RESULTS_DB)), heartbeat_timeout_ms=2000)
    mover.kombu, mover.owner = KOMBU, "host:first"
    yield mover, broker_
    broker_.close()


def take(mover: Any, broker_: Any, count: int = 10, *, now: float | None = None) -> list[bytes]:
    keys = [mover.inflight("default"), KEYS.celery_owners(), *KOMBU.queues("default")]
    now_ms = int((now if now is not None else time.time()) * 1000)
    return list(layout.script(broker_.client, "celery_take")(keys=keys, args=[count, now_ms, mover.member("default")]))


def test_a_replayed_hand_over_enqueues_nothing_twice(
    ingress: tuple[Any, Any], producer: Celery, broker: redis.Redis
) -> None:
    mover, broker_ = ingress
    # Given a message taken into a process's in-flight list and handed over
    producer.send_task("worker.test.echo", args=["once"], queue="default")
    raws = take(mover, broker_)
    assert mover.hand_over(broker_, "default", raws) == [1]
    # When the same batch is handed over again (a retry after a lost reply)
    again = mover.hand_over(broker_, "default", raws)
    # Then nothing happens: one Dramatiq message, nothing left in flight or in kombu's list
    assert again == [0]
    assert broker.llen(DRAMATIQ.queue("default")) == 1 and broker.hlen(DRAMATIQ.messages("default")) == 1
    assert broker.llen(mover.inflight("default")) == 0 and broker.llen("default") == 0


def test_a_process_dead_after_taking_loses_nothing(
    ingress: tuple[Any, Any], producer: Celery, broker: redis.Redis
) -> None:
    mover, broker_ = ingress
    # Given two messages taken by a process that then dies before handing them over
    first = producer.send_task("worker.test.echo", args=["a"], queue="default")
    second = producer.send_task("worker.test.echo", args=["b"], queue="default")
    raws = take(mover, broker_, now=time.time() - 10)
    assert len(raws) == 2 and broker.llen("default") == 0
    # When a live process looks for owners silent longer than the heartbeat timeout
    give_back = layout.script(broker_.client, "celery_give_back")
    given = give_back(keys=[KEYS.celery_owners()], args=[int(time.time() * 1000), 2000])
    # Then both are back at the consuming end of kombu's list, oldest next
    assert given == 2 and broker.llen(mover.inflight("default")) == 0
    assert first.id.encode() in broker.lindex("default", -1)  # type: ignore[operator]
    # And the live process moves them once; the dead one, should it wake, hands over nothing
    mover_live = type(mover)(store=mover.store, heartbeat_timeout_ms=2000)
    mover_live.kombu, mover_live.owner = KOMBU, "host:second"
    assert mover_live.hand_over(broker_, "default", take(mover_live, broker_)) == [1, 1]
    assert mover.hand_over(broker_, "default", raws) == [0, 0]
    queued = [json.loads(p)["message_id"] for p in broker.hvals(DRAMATIQ.messages("default"))]
    assert sorted(queued) == sorted([first.id, second.id])


def test_a_second_copy_of_a_task_id_is_dropped(ingress: tuple[Any, Any], producer: Celery, broker: redis.Redis) -> None:
    mover, broker_ = ingress
    # Given the same Celery message twice in kombu's list (a producer's retry, a restore by kombu)
    producer.send_task("worker.test.echo", args=["twice"], queue="default")
    broker.rpush("default", broker.lindex("default", 0))  # type: ignore[arg-type]
    # When both are moved
    codes = mover.hand_over(broker_, "default", take(mover, broker_))
    # Then one is enqueued and the other dropped
    assert codes == [1, 2] and broker.llen(DRAMATIQ.queue("default")) == 1


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def in_flight(broker: redis.Redis) -> int:
    """Messages in the in-flight lists of every registered owner (taken off kombu, not yet handed over)."""
    members = [json.loads(m) for m in broker.zrange(KEYS.celery_owners(), 0, -1)]
    pipe = broker.pipeline(transaction=False)
    for inflight, _ in members:
        pipe.llen(inflight)
    return sum(pipe.execute()) if members else 0


class FinalStates:
    """Every final state published on the result backend's meta channels, by task id."""

    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = {}
        results = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=RESULTS_DB)
        self.pubsub = results.pubsub(ignore_subscribe_messages=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def start(self) -> FinalStates:
        self.pubsub.psubscribe(layout.META_PREFIX + "*")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.pubsub.close()

    def _listen(self) -> None:
        while not self._stop.is_set():
            event = self.pubsub.get_message(timeout=0.2)
            if event and event["type"] == "pmessage":
                doc = json.loads(event["data"])
                if doc["status"] in ("SUCCESS", "FAILURE", "REVOKED"):
                    self.seen.setdefault(doc["task_id"], []).append(doc["status"])


def test_sigkill_while_moving_a_burst_loses_and_doubles_nothing(
    start_worker: Callable[..., WorkerProcess], producer: Celery, broker: redis.Redis, store: TaskStore
) -> None:
    # Given a listener that counts the final states published for each task
    finals = FinalStates().start()
    # And 1,000 send_tasks arriving over a few seconds, a backlog building while no worker runs
    ids: list[str] = []

    def send() -> None:
        for i in range(1000):
            ids.append(producer.send_task("worker.test.echo", args=[f"m{i}"], queue="default").id)
            if i % 50 == 49:
                time.sleep(0.2)

    sender = threading.Thread(target=send)
    sender.start()
    # When, round after round, two worker masters start on the backlog and their processes are SIGKILLed
    # the moment a batch is in flight (taken off kombu's list, not yet in Dramatiq's queue)
    env = {"HEARTBEAT_TIMEOUT_MS": "2000"}
    caught, rounds = 0, 0
    while sender.is_alive() or rounds < 3:
        time.sleep(0.3)
        masters = [start_worker(threads=4, wait=False, **env) for _ in range(2)]
        for master in masters:
            master.wait_ready(1)
        deadline = time.monotonic() + 5
        while in_flight(broker) == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        for master in masters:
            for pid in _children(master.proc.pid):
                os.kill(pid, signal.SIGKILL)
        caught += in_flight(broker) > 0
        rounds += 1
        for master in masters:
            master.proc.wait(20)
    sender.join()
    start_worker(threads=4, **env)
    # Then every task reaches exactly one final state, SUCCESS, published once
    wait_until(lambda: all(store.is_final(task_id) for task_id in ids), 60, "every task final")
    time.sleep(1.0)
    finals.stop()
    print(f"{rounds} rounds of SIGKILLs, {caught} of them with a batch in flight")
    assert len(ids) == 1000 and rounds >= 3 and caught >= 1, (rounds, caught)
    assert {task_id: finals.seen.get(task_id) for task_id in ids} == {task_id: ["SUCCESS"] for task_id in ids}
    # And nothing is left in kombu's list or in any in-flight list
    assert broker.llen("default") == 0 and in_flight(broker) == 0
