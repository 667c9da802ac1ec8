"""Every component keeps working across a Redis Sentinel failover, without a restart (issue 18).

One real topology for the module (``support/sentinel.py``: a master, a replica, three Sentinels on
private ports, failover within seconds). Forced failovers (``SENTINEL FAILOVER``: the old master lives
on, demoted, and answers READONLY) where the kill is not the point; one real SIGKILL of the master
under a running worker, a ``JobClient`` and an unchanged Celery producer.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from dramatiq import Message

from rosetta_jobs.api.context import Ops
from rosetta_jobs.broker import RosettaBroker
from rosetta_jobs.client import AsyncResult, JobClient
from rosetta_jobs.config import Settings, load_settings
from rosetta_jobs.connection import ReplicaWait
from rosetta_jobs.states import STARTED, SUCCESS, build_meta
from rosetta_jobs.store import TaskStore

from .conftest import WorkerProcess, launch_worker, wait_until
from .support.sentinel import SentinelTopology

BROKER, RESULTS, CACHE = 1, 2, 0


@pytest.fixture(scope="module")
def topology() -> Iterator[SentinelTopology]:
    """Started once for the module; its processes and directory are removed even when a test fails."""
    topo = SentinelTopology.start()
    try:
        yield topo
    finally:
        topo.stop()


def _settings(topology: SentinelTopology, **extra: object) -> Settings:
    """The deployment's settings on the topology's Sentinel URLs, in a namespace of its own."""
    urls = {"broker_url": topology.url(BROKER), "result_backend_url": topology.url(RESULTS),
            "redis_url": topology.url(CACHE)}  # fmt: skip
    return load_settings(**urls, broker_namespace=f"ns{uuid.uuid4().hex[:8]}", **extra)


def _task(status: str, task_id: str) -> dict[str, object]:
    return build_meta(task_id, status, {"n": 1} if status == SUCCESS else None, name="worker.test.echo")


def test_store_writes_and_lua_scripts_follow_a_failover(topology: SentinelTopology) -> None:
    # Given the result backend's store on the Sentinel URL (WAIT for one replica: the default with Sentinel; 5 s
    # for it, not 500 ms: a replica just re-synced after the failover may answer late on a loaded 2-CPU machine)
    store = JobClient.from_settings(_settings(topology, redis_wait_timeout_ms=5000)).store
    assert store.replica_wait is not None and store.replica_wait.replicas == 1
    before = f"before-{uuid.uuid4().hex}"
    assert store.start(_task(STARTED, before)) == 1 and store.write(_task(SUCCESS, before))
    old = topology.master_port()
    # When the Sentinels fail the master over to the replica (the old master lives on, demoted)
    new = topology.failover()
    sha = store._write.sha
    assert new != old and not topology.server(new).script_exists(sha)[0]  # a replica has no script cache
    # Then what was written before the failover is on the new master (it waited for the replica)
    promoted = topology.server(new, RESULTS)
    assert promoted.get(store.key(before)) is not None
    # And the first write after it, a final state with WAIT, lands there: the demoted master answers READONLY,
    # the client asks the Sentinels again, and the script is loaded again on the new master (NOSCRIPT)
    after, other = f"after-{uuid.uuid4().hex}", f"other-{uuid.uuid4().hex}"
    assert store.write(_task(SUCCESS, after))
    assert not store.write(_task(STARTED, after))  # and a final state stays final
    assert store.start(_task(STARTED, other)) == 1
    assert promoted.get(store.key(after)) is not None and promoted.get(store.key(other)) is not None
    assert topology.server(new).script_exists(sha)[0]
    assert store.get(before)["status"] == SUCCESS  # type: ignore[index]
    assert store.replica_wait.shortfalls == 0


def test_the_ops_service_follows_a_failover(topology: SentinelTopology) -> None:
    # Given the ops service's view of a deployment on Sentinel URLs: its sync clients and its asyncio client
    ops = Ops(_settings(topology))
    key = f"ops-{uuid.uuid4().hex}"

    async def scenario() -> list[bytes | None]:
        client = ops.async_results
        await client.set(key, b"1")
        seen = [await client.get(key)]
        # When the master fails over while the service runs
        await asyncio.to_thread(topology.failover)
        # Then the same asyncio client reads and writes on the new master
        await client.set(key, b"2")
        seen.append(await client.get(key))
        await ops.aclose()
        return seen

    assert asyncio.run(scenario()) == [b"1", b"2"]
    # And so do the sync clients behind /health and /admin
    ops.ping()
    assert ops.snapshot().workers == []


def test_a_write_refused_as_read_only_is_retried_as_an_outage(topology: SentinelTopology) -> None:
    # Given a store pointed straight at a replica (as a plain URL to a demoted master would be)
    store = TaskStore(redis.Redis(topology.host, topology.replica_port()))
    # When a final state is written with a short wait
    started = time.monotonic()
    with pytest.raises(redis.ReadOnlyError):
        store.write(_task(SUCCESS, f"ro-{uuid.uuid4().hex}"), wait=1.0)
    # Then it was retried for the whole wait (an outage that a failover ends), not refused at once
    assert time.monotonic() - started >= 1.0


def test_wait_for_a_replica_that_lags_never_fails_the_write(topology: SentinelTopology) -> None:
    # Given a store that waits for one replica, 600 ms at most, and a replica that answers nothing
    wait = ReplicaWait(replicas=1, timeout_ms=600, quiet=30.0, what="final task states")
    store = TaskStore(redis.Redis(topology.host, topology.master_port()), replica_wait=wait)
    replica = topology.replica_port()
    topology.pause(replica)
    try:
        # When a final state is written
        started = time.monotonic()
        assert store.write(_task(SUCCESS, f"lag-{uuid.uuid4().hex}"))
        first = time.monotonic() - started
        # Then it is written after the timeout, and the shortfall is counted
        assert 0.6 <= first < 3.0 and wait.shortfalls == 1
        # And the next writes do not wait while the replica is known to lag
        started = time.monotonic()
        assert store.write(_task(SUCCESS, f"lag-{uuid.uuid4().hex}"))
        assert time.monotonic() - started < 0.4 and wait.shortfalls == 1
        # And an enqueue that waits for the replica is enqueued after the timeout too, its shortfall counted
        enqueue_wait = ReplicaWait(replicas=1, timeout_ms=600, what="enqueued messages")
        broker = RosettaBroker(client=redis.Redis(topology.host, topology.master_port()), replica_wait=enqueue_wait,
                               namespace=f"lag{uuid.uuid4().hex[:8]}", middleware=[])  # fmt: skip
        started = time.monotonic()
        broker.enqueue(Message(queue_name="default", actor_name="worker.test.echo", args=("x",), kwargs={}, options={}))
        assert 0.6 <= time.monotonic() - started < 3.0 and enqueue_wait.shortfalls == 1
        assert broker.client.hlen(f"{broker.namespace}:default.msgs") == 1
    finally:
        topology.resume(replica)
    topology.wait_replicated()


@pytest.fixture(scope="module")
def sentinel_worker(topology: SentinelTopology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    log: Path = tmp_path_factory.mktemp("sentinel-worker") / "worker.log"
    worker = launch_worker(log, threads=2, BROKER_URL=topology.url(BROKER), RESULT_BACKEND_URL=topology.url(RESULTS),
                           REDIS_URL=topology.url(CACHE), HEARTBEAT_TIMEOUT_MS="5000")  # fmt: skip
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def producer(topology: SentinelTopology) -> Iterator[Celery]:
    """The backend's unchanged producer, configured for Sentinel the way Celery documents it."""
    app = Celery("backend-on-sentinel", broker=topology.url(BROKER), backend=topology.url(RESULTS))
    app.conf.broker_transport_options = {"master_name": topology.master_name}
    app.conf.result_backend_transport_options = {"master_name": topology.master_name}
    yield app
    # Celery's AsyncResults unsubscribe when collected: while the topology still answers, not during a
    # later test, where each would retry the stopped Sentinels for two minutes.
    gc.collect()
    app.close()


def test_worker_client_and_celery_producer_survive_a_master_kill(
    topology: SentinelTopology, sentinel_worker: WorkerProcess, producer: Celery
) -> None:
    # Given a worker, a JobClient and a Celery producer, all on the Sentinel URLs, that work
    client = JobClient(broker_url=topology.url(BROKER), result_backend_url=topology.url(RESULTS))
    first = client.send("worker.test.echo", ("before",), queue_name="default")
    assert AsyncResult(first, client=client).get(timeout=20) == {"message": "before", "steps": 0}
    assert producer.send_task("worker.test.echo", args=["celery before"], queue="default").get(timeout=20) == {
        "message": "celery before",
        "steps": 0,
    }
    # When the master is killed (SIGKILL) and the Sentinels promote the replica
    _, promoted_after = topology.kill_master()
    assert promoted_after < 15
    # Then the same client enqueues on the new master and the same worker process runs the job
    second = client.send("worker.test.echo", ("after",), queue_name="default")
    assert AsyncResult(second, client=client).get(timeout=30) == {"message": "after", "steps": 0}
    # And the Celery ingress moves a send_task made through kombu's Sentinel transport, read back by Celery
    sent = producer.send_task("worker.test.echo", args=["celery after"], queue="default")
    assert sent.get(timeout=30) == {"message": "celery after", "steps": 0}
    # And Celery's revoke broadcast still reaches the worker's pidbox listener, which stops the running job
    long = producer.send_task("worker.test.echo", kwargs={"message": "long", "steps": 100, "step_seconds": 0.1},
                              queue="default")  # fmt: skip
    wait_until(lambda: long.state == "PROGRESS", timeout=20, what="the long job runs")
    producer.control.revoke(long.id, terminate=True, signal="SIGTERM")
    wait_until(lambda: long.state == "REVOKED", timeout=20, what="the revoke lands")
    # And nothing restarted: the worker process that was ready before is the one that ran them
    assert sentinel_worker.proc.poll() is None
    assert sentinel_worker.output().count("Worker process is ready for action") == 1
