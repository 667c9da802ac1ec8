"""The sweeper in two real services at once: what it removes, each item once, and the lease held by one process."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rosetta_jobs.layout import DramatiqKeys, Keys
from rosetta_jobs.sweeper import KINDS, read_sweeper

from .conftest import wait_until, worker_env
from .support.ops_service import ServiceProcess, start_service

KEYS = Keys("dramatiq")
QUEUES = DramatiqKeys("dramatiq")
DAY = 86400.0


@pytest.fixture
def services(tmp_path: Path, redis_dbs: None) -> Iterator[list[ServiceProcess]]:
    """Two replicas of the ops service on one deployment, sweeping every 2 s (the depth sampler quiet)."""
    env = worker_env(SWEEP_INTERVAL="2", DEPTH_SAMPLE_SECONDS="3600")
    started: list[ServiceProcess] = []
    try:
        for name in ("a", "b"):
            started.append(start_service(env, tmp_path / f"service-{name}.log"))
        yield started
    finally:
        for svc in started:
            svc.stop()


def _meta(task_id: str, done: float, status: str = "SUCCESS") -> bytes:
    date = dt.datetime.fromtimestamp(done, dt.UTC).isoformat()
    return json.dumps({"status": status, "result": None, "date_done": date, "task_id": task_id}).encode()


def _plant(results: redis.Redis, broker: redis.Redis, now: float) -> dict[str, list[str]]:
    """One leftover of each kind the sweeper removes, and a fresh one of each that it must keep."""
    old, fresh = f"old-{uuid.uuid4()}", f"fresh-{uuid.uuid4()}"
    results.set(KEYS.meta(old), _meta(old, now - 2 * DAY))  # final, old, no expiry
    results.set(KEYS.meta(fresh), _meta(fresh, now))  # final but fresh
    results.set(KEYS.cancel("gone-task"), b"1")  # no expiry, the task gone
    results.set(KEYS.cancel(fresh), b"1")  # its task still has state
    results.set(KEYS.meta("done-task"), _meta("done-task", now), ex=600)
    results.zadd(KEYS.user("u1"), {"done-task": now * 1000})
    results.hset(KEYS.user_where("u1"), "done-task", "preview 1-0")  # a finished job's location, no expiry
    broker.zadd(QUEUES.dead("preview"), {"old-letter": (now - 8 * DAY) * 1000, "new-letter": now * 1000})
    broker.hset(QUEUES.dead_messages("preview"), mapping={"old-letter": b"{}", "new-letter": b"{}"})
    results.zadd(KEYS.workers(), {"dead-worker": now - DAY})  # its heartbeat hash expired with it
    results.zadd(KEYS.depth_history(), {json.dumps({"t": now - 7200}): now - 7200, json.dumps({"t": now}): now})
    return {"kept": [KEYS.meta(fresh), KEYS.cancel(fresh)]}


def test_two_services_sweep_each_leftover_once(
    services: list[ServiceProcess], results_redis: redis.Redis, broker_redis: redis.Redis
) -> None:
    # Given two services, one of which has run a first sweep of the empty deployment
    wait_until(lambda: read_sweeper(results_redis, "dramatiq")["runs"] >= 1, what="the first sweep")
    before = read_sweeper(results_redis, "dramatiq")

    # When leftovers of every kind are left behind, and two more runs are due
    now = time.time()
    planted = _plant(results_redis, broker_redis, now)
    wait_until(lambda: read_sweeper(results_redis, "dramatiq")["runs"] >= before["runs"] + 2, what="two sweeps")
    after = read_sweeper(results_redis, "dramatiq")

    # Then each leftover was removed, and counted, exactly once; the fresh ones are kept
    removed = {kind: after["removed"][kind] - before["removed"][kind] for kind in KINDS}
    assert removed == {kind: 1 for kind in KINDS}, removed
    assert all(results_redis.exists(key) for key in planted["kept"])
    assert broker_redis.zrange(QUEUES.dead("preview"), 0, -1) == [b"new-letter"]
    assert broker_redis.hkeys(QUEUES.dead_messages("preview")) == [b"new-letter"]
    assert not results_redis.exists(KEYS.user_where("u1"))
    assert results_redis.zcount(KEYS.depth_history(), 0, now - 3600) == 0 < results_redis.zcard(KEYS.depth_history())

    # And one process held the lease and did every run; the other never swept
    holder = after["lease_holder"]
    assert holder is not None and holder == after["last_holder"]
    pids = {svc.proc.pid: svc for svc in services}
    sweeping = [svc for svc in services if "sweeper: run by" in svc.output()]
    assert len(sweeping) == 1 and int(holder.split(":")[1]) == sweeping[0].proc.pid in pids

    # When the holder stops cleanly
    sweeping[0].stop()
    other = next(svc for svc in services if svc is not sweeping[0])

    # Then the other takes the lease over at its next tick
    def taken_over() -> bool:
        lease = results_redis.get(KEYS.sweeper_lease())
        return lease is not None and int(lease.decode().split(":")[1]) == other.proc.pid

    wait_until(taken_over, timeout=10, what="the lease taken over")
