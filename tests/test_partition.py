"""A worker cut off from Redis (issue 18, item 3), through a TCP proxy whose link the test cuts and heals.

Worker A reaches Redis only through ``support/tcpproxy.py``; worker B directly. While A runs two jobs, the
link is cut for longer than the lease: A stops the job it still runs (its subprocess is killed), B
recovers both and runs them to their final states; then the link heals and whatever A had in flight
(a SUCCESS write held in a socket buffer, the give-back of the abandoned message) reaches Redis. The
final states stay B's, each task is started exactly twice and published final exactly once, and nothing
goes back to a queue or to the dead letters. The multi-host version with real links is
``make chaos-cluster``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from rosetta_jobs.client import JobClient
from rosetta_jobs.config import load_settings
from rosetta_jobs.layout import DramatiqKeys, script
from rosetta_jobs.lease import Lease
from rosetta_jobs.stack import heartbeat_interval, lease_timeout
from rosetta_jobs.workers import read_workers

from .conftest import BROKER_DB, CACHE_DB, REDIS_HOST, REDIS_PORT, RESULTS_DB, WorkerProcess, wait_until
from .support.tcpproxy import TcpProxy

#: A lease of 2 s: heartbeats every 0.5 s, and a process silent for 2 s is dead.
FAST = {"HEARTBEAT_INTERVAL": "0.5", "HEARTBEAT_TTL": "2", "HEARTBEAT_TIMEOUT_MS": "2000"}


class FinalWatch:
    """Every final state published on the task-state channels, per task, in order."""

    def __init__(self, client: redis.Redis) -> None:
        self.finals: dict[str, list[dict[str, object]]] = {}
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe("celery-task-meta-*")
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            event = self.pubsub.get_message(timeout=0.2)
            if event is not None:
                meta = json.loads(event["data"])
                if meta["status"] in ("SUCCESS", "FAILURE", "REVOKED"):
                    self.finals.setdefault(meta["task_id"], []).append(meta)

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.pubsub.close()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    forwarder = TcpProxy((REDIS_HOST, REDIS_PORT))
    yield forwarder
    forwarder.close()


def sleeping(seconds: str) -> bool:
    """Whether a ``sleep <seconds>`` process exists (the first run's subprocess)."""
    for proc in Path("/proc").iterdir():
        try:
            if (proc / "cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", seconds.encode()]:
                return True
        except OSError:
            continue
    return False


def test_a_partitioned_worker_stops_its_jobs_and_never_overwrites_the_rerun(
    start_worker: Callable[..., WorkerProcess],
    client: JobClient,
    results_redis: redis.Redis,
    broker_redis: redis.Redis,
    proxy: TcpProxy,
) -> None:
    watch = FinalWatch(results_redis)
    try:
        cut_off = start_worker(threads=2, BROKER_URL=proxy.url(BROKER_DB), RESULT_BACKEND_URL=proxy.url(RESULTS_DB),
                               REDIS_URL=proxy.url(CACHE_DB), **FAST)  # fmt: skip
        # A sleep no other process runs, spelled as the job spells it: str() of the float (40.2, never 40.20).
        seconds = str(40 + uuid.uuid4().int % 1000 / 100)
        held = client.send("tests.hold_first", (uuid.uuid4().hex, float(seconds)))
        wait_until(lambda: sleeping(seconds), what="the first run's subprocess")
        quick = client.send("tests.pid", (0.6,))
        wait_until(lambda: client.get_task_status(quick)["state"] == "STARTED", what="the second job on A")
        a_pid = int(client.store.get(held)["result"]["pid"])  # type: ignore[index]

        proxy.cut()
        cut_at = time.monotonic()
        # A's lease (2 s) runs out: the job it still runs is stopped, its subprocess killed with it.
        stopped = wait_until(lambda: not sleeping(seconds), timeout=10, what="A stopping the held job") - cut_at
        assert stopped < 5, stopped
        wait_until(lambda: "lease lost" in cut_off.output(), timeout=5, what="A's lease-lost log line")

        rescuer = start_worker(threads=2, **FAST)
        for task_id in (held, quick):
            wait_until(lambda t=task_id: client.get_task_status(t)["state"] == "SUCCESS", timeout=20,
                       what="B re-running the job")  # fmt: skip
        b_results = {t: client.store.get(t)["result"] for t in (held, quick)}  # type: ignore[index]
        assert b_results[held]["pid"] != a_pid and b_results[held]["deliveries"] == 2
        assert b_results[quick] != a_pid  # A's SUCCESS for it still waits in the cut link

        proxy.heal()
        wait_until(lambda: "lease regained" in cut_off.output(), timeout=15, what="A reaching Redis again")
        namespace = "dramatiq"
        wait_until(
            lambda: any(w.pid == a_pid and w.busy == 0 for w in read_workers(results_redis, namespace)),
            timeout=15,
            what="A finishing what it held",
        )
        wait_until(lambda: "already requeued by another process; left alone" in cut_off.output(), timeout=15,
                   what="A's give-back of the abandoned job, a no-op")  # fmt: skip
        # A's SUCCESS for the quick job, held in the cut link, reached Redis and met the Lua guard
        wait_until(lambda: f"task {quick}: a final state is already stored; this SUCCESS is not written"
                   in cut_off.output(), timeout=10, what="A's late SUCCESS refused")  # fmt: skip
        time.sleep(1.0)  # anything A still had to say has reached Redis

        for task_id in (held, quick):
            assert client.store.get(task_id)["result"] == b_results[task_id]  # type: ignore[index]
            assert len(watch.finals.get(task_id, [])) == 1, watch.finals.get(task_id)
            assert client.store.deliveries(task_id) == 2
        keys = DramatiqKeys(namespace)
        assert broker_redis.llen(keys.queue("default")) == 0  # nothing requeued a second time
        assert broker_redis.zcard(keys.dead("default")) == 0  # nor dead-lettered
        assert rescuer.proc.poll() is None and cut_off.proc.poll() is None
    finally:
        watch.close()


def test_the_lease_is_lost_after_its_timeout_on_the_processs_own_clock_and_regained_by_a_heartbeat() -> None:
    now = [100.0]
    lease = Lease(15.0, clock=lambda: now[0])
    now[0] += 15.0
    assert not lease.declare_lost() and not lease.lost  # not past the timeout yet
    now[0] += 0.1
    assert lease.declare_lost() and lease.lost and not lease.declare_lost()  # declared once
    assert lease.stale(fetched_at=90.0) and lease.stale(fetched_at=116.0)  # nothing runs while it is lost
    now[0] += 5.0
    assert lease.renewed() and not lease.lost and lease.losses == 1
    assert lease.stale(fetched_at=110.0)  # fetched before the loss ended: may have been requeued since
    assert not lease.stale(fetched_at=now[0] + 0.1)  # fetched after: its own
    assert not lease.renewed()  # an ordinary renewal ends no loss


def test_a_give_back_returns_a_message_to_the_head_of_its_queue_only_if_it_is_still_the_processs(
    broker_redis: redis.Redis,
) -> None:
    keys = DramatiqKeys()
    acks, queue, payloads = keys.acks("cut-off", "default"), keys.queue("default"), keys.messages("default")
    give_back = script(broker_redis, "give_back")
    broker_redis.sadd(acks, "held", "recovered")
    broker_redis.hset(payloads, mapping={"held": "{}", "recovered": "{}", "queued": "{}"})
    broker_redis.rpush(queue, "queued")
    broker_redis.srem(acks, "recovered")  # Recovery took it: it deleted this process's in-flight set
    broker_redis.lpush(queue, "recovered")
    assert give_back(keys=[acks, queue, payloads], args=["held", "recovered"]) == 1
    assert broker_redis.lrange(queue, 0, -1) == [b"held", b"recovered", b"queued"]  # once each, at the head
    assert give_back(keys=[acks, queue, payloads], args=["held"]) == 0  # a second give-back is a no-op


def test_a_worker_beats_more_often_than_its_lease_runs_out() -> None:
    # Given a short heartbeat timeout and the default heartbeat interval (5 s)
    settings = load_settings(heartbeat_timeout_ms=2000)
    # Then the process beats at least three times within its lease, so a healthy link never loses it
    assert lease_timeout(settings) == 2.0
    assert heartbeat_interval(settings) <= lease_timeout(settings) / 3
    # And with the defaults, the interval is the one configured
    assert heartbeat_interval(load_settings()) == load_settings().heartbeat_interval
