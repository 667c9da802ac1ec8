"""The Celery ingress: an unchanged Celery producer's ``send_task`` runs on rosetta-jobs workers.

The producer is the real ``celery`` package configured as the backend's ``WorkerClient``
(``../shared/spec/rosetta-worker.md`` 6.1); the workers are real ``dramatiq rosetta_jobs.actors``
processes; Redis, PostgreSQL and DuckDB are the machine's own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.exceptions import NotRegistered, TaskRevokedError

from rosetta_jobs import layout
from rosetta_jobs.store import TaskStore

from .conftest import (
    BROKER_DB,
    REDIS_HOST,
    REDIS_PORT,
    RESULTS_DB,
    ROOT,
    TEST_KEY,
    WorkerProcess,
    create_database,
    drop_database,
    launch_worker,
    redis_url,
    wait_until,
    worker_env,
)
from .support.previewdb import PreviewDatabases, seed

KEYS = layout.Keys()
DRAMATIQ = layout.DramatiqKeys()
KOMBU = layout.KombuKeys(BROKER_DB)


def backend_producer(app: Celery) -> Celery:
    """``app`` configured exactly as the backend's ``WorkerClient`` producer (spec 6.1)."""
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_extended=True,
        task_track_started=True,
        broker_connection_retry_on_startup=False,
        broker_connection_retry=False,
        redis_retry_on_timeout=False,
        result_backend_transport_options={"retry_policy": {"max_retries": 0}},
    )
    return app


@pytest.fixture
def producer(celery_app: Celery) -> Celery:
    return backend_producer(celery_app)


@pytest.fixture
def store(redis_dbs: None) -> TaskStore:
    return TaskStore.from_url(redis_url(RESULTS_DB))


@pytest.fixture
def broker(redis_dbs: None) -> redis.Redis:
    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=BROKER_DB)


@pytest.fixture(scope="module")
def databases() -> Iterator[PreviewDatabases]:
    config_url, source_url = create_database("rj_cfg"), create_database("rj_src")
    yield seed(config_url, source_url, TEST_KEY)
    drop_database(config_url)
    drop_database(source_url)


@pytest.fixture(scope="module")
def worker(databases: PreviewDatabases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker for the module's plain cases: starting one costs seconds."""
    log = tmp_path_factory.mktemp("ingress") / "worker.log"
    process = launch_worker(log, threads=2, DATABASE_URL=databases.config_url)
    yield process
    process.stop()


def test_a_preview_sent_with_positional_args_reaches_success(
    worker: WorkerProcess, producer: Celery, databases: PreviewDatabases, broker: redis.Redis
) -> None:
    # Given a running worker, and the backend's unchanged producer
    sql = "SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY status"
    # When the backend submits a preview as its WorkerClient does: five positional args, queue "preview"
    sent = producer.send_task(
        "worker.preview.execute", args=[sql, databases.source_id, databases.destination_id, "orders", None],
        queue="preview",
    )  # fmt: skip
    # Then AsyncResult.get() returns the preview, under the id the producer made
    result = sent.get(timeout=30)
    assert result["error"] is None, result["error"]
    assert result["columns"] == ["status", "n"]
    assert [row["status"] for row in result["data"]] == ["NEW", "PAID"]
    assert sent.state == "SUCCESS" and sent.name == "worker.preview.execute"
    # And kombu's list is empty: the message was moved, not copied
    assert broker.llen("preview") == 0


def test_a_job_sent_with_kwargs_only_reaches_success(worker: WorkerProcess, producer: Celery) -> None:
    # When a job is sent with keyword arguments only, as the backend sends the linked task
    sent = producer.send_task("worker.test.echo", kwargs={"message": "hi", "steps": 1}, queue="default")
    # Then it runs with its arguments bound in the contract's order, and AsyncResult reads the result
    assert sent.get(timeout=20) == {"message": "hi", "steps": 1}
    assert sent.args == ["hi", 1, 0.0]


def test_an_unknown_task_name_fails_not_registered_and_is_dead_lettered(
    worker: WorkerProcess, producer: Celery, broker: redis.Redis
) -> None:
    # When the producer sends a task name no actor serves
    sent = producer.send_task("worker.flow_task.nope", args=[1, 2], queue="default")
    # Then AsyncResult reads FAILURE NotRegistered, as from a Celery worker
    with pytest.raises(NotRegistered):
        sent.get(timeout=20)
    assert sent.state == "FAILURE"
    # And the message is dead-lettered under its task id, for inspection
    wait_until(lambda: broker.zcard(DRAMATIQ.dead("default")) == 1, 5, "dead letter")
    assert sent.id.encode() in next(iter(broker.hvals(DRAMATIQ.dead_messages("default"))))


def test_an_expired_task_is_revoked_and_never_runs(worker: WorkerProcess, producer: Celery, store: TaskStore) -> None:
    # When a task arrives after its expires
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    sent = producer.send_task("worker.test.echo", args=["late"], queue="default", expires=past)
    # Then it is REVOKED (Celery's state for an expired task), and it never started
    with pytest.raises(TaskRevokedError):
        sent.get(timeout=20)
    assert sent.state == "REVOKED"
    assert store.deliveries(sent.id) == 0


def test_a_countdown_delays_and_an_expiry_is_checked_again_at_start(
    worker: WorkerProcess, producer: Celery, store: TaskStore
) -> None:
    # When one task is sent with a countdown, and another with a countdown past its own expiry
    started = time.monotonic()
    delayed = producer.send_task("worker.test.echo", args=["later"], queue="default", countdown=1)
    expiring = producer.send_task("worker.test.echo", args=["never"], queue="default", countdown=1,
                                  expires=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.5))  # fmt: skip
    # Then the first runs after its countdown, not before
    assert delayed.get(timeout=20) == {"message": "later", "steps": 0}
    assert time.monotonic() - started >= 1.0
    # And the second expired while it waited: REVOKED when its turn came, never run
    with pytest.raises(TaskRevokedError):
        expiring.get(timeout=20)
    assert store.deliveries(expiring.id) == 0


def test_a_malformed_message_is_dead_lettered_and_the_ingress_keeps_going(
    worker: WorkerProcess, producer: Celery, broker: redis.Redis
) -> None:
    # Given a list element that is no Celery message, ahead of a good one
    broker.lpush("default", b"\x00 not a kombu envelope")
    # When the producer sends after it
    sent = producer.send_task("worker.test.echo", args=["after"], queue="default")
    # Then the good one runs, the bad one is dead-lettered, and the log says why
    assert sent.get(timeout=20) == {"message": "after", "steps": 0}
    assert broker.hvals(DRAMATIQ.dead_messages("default")) == [b"\x00 not a kombu envelope"]
    wait_until(lambda: "undecodable Celery message on kombu list default" in worker.output(), 5, "log line")


def test_priority_lists_are_consumed(worker: WorkerProcess, producer: Celery) -> None:
    # When the producer sends with a priority (kombu's sub-list "default\x06\x166")
    sent = producer.send_task("worker.test.echo", args=["prio"], queue="default", priority=6)
    # Then it runs too
    assert sent.get(timeout=20) == {"message": "prio", "steps": 0}


# --- nothing lost, nothing doubled: each instant of the move, step by step ---------------------------


@pytest.fixture
def ingress(redis_dbs: None) -> Iterator[tuple[Any, Any]]:
    """A real ``CeleryIngress`` and a real Redis broker serving ``worker.test.echo``, driven by hand."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    from rosetta_jobs.ingress import CeleryIngress

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


# --- a Celery worker beside rosetta-jobs ------------------------------------------------------------


def start_celery_worker(queue: str, log: Path) -> subprocess.Popen[bytes]:
    """``celery -A celery_legacy worker --pool=threads -Q <queue>`` as a real process, ready to consume."""
    env = worker_env(CELERY_BROKER_URL=redis_url(BROKER_DB), CELERY_RESULT_BACKEND=redis_url(RESULTS_DB))
    args = [sys.executable, "-m", "celery", "-A", "celery_legacy", "--workdir", str(ROOT / "tests" / "support"),
            "worker", "--pool=threads", "-c", "2", "-Q", queue, "--loglevel=INFO", "--without-gossip",
            "--without-mingle", "--without-heartbeat", "-n", "legacy@%h"]  # fmt: skip
    handle = open(log, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    wait_until(lambda: " ready." in log.read_text(errors="replace") or proc.poll() is not None, 60, "celery ready")
    assert proc.poll() is None, log.read_text(errors="replace")
    return proc


def test_a_celery_worker_beside_rosetta_jobs_serves_the_names_rosetta_jobs_does_not(
    start_worker: Callable[..., WorkerProcess], producer: Celery, tmp_path: Path
) -> None:
    # Given rosetta-jobs with the fallback option, and a Celery worker consuming the fallback list
    start_worker(threads=2, CELERY_FALLBACK_QUEUE="{queue}-celery")
    celery_worker = start_celery_worker("default-celery", tmp_path / "celery.log")
    try:
        # When the unchanged producer sends both kinds of task to the same queue
        legacy = producer.send_task("legacy.add", args=[2, 3], queue="default")
        ported = producer.send_task("worker.test.echo", args=["ours"], queue="default")
        # Then each worker runs its own names, and AsyncResult reads both
        assert legacy.get(timeout=30) == 5
        assert ported.get(timeout=30) == {"message": "ours", "steps": 0}
        assert str(legacy.worker).startswith("legacy@")
        assert str(ported.worker).startswith("rosetta@")
    finally:
        celery_worker.send_signal(signal.SIGTERM)
        try:
            celery_worker.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(celery_worker.pid, signal.SIGKILL)
            celery_worker.wait(5)


# --- SIGKILL while moving -------------------------------------------------------------------------------


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
