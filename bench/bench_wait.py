"""What WAIT for one replica costs (``REDIS_WAIT_REPLICAS``): figures only, no assertions.

A master and a replica of its own on private ports (``tests/support/sentinel.py``'s config writer), then:
the final-state write (``TaskStore.write``, Lua) and the enqueue (``RosettaBroker.enqueue``) timed without
WAIT and with WAIT 1, one client thread and eight; and what a write pays when the replica stops answering
(the first write waits ``REDIS_WAIT_TIMEOUT_MS``, the next ones skip WAIT for 30 s).

    .venv/bin/python bench/bench_wait.py [--writes 2000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis
from dramatiq import Message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
from sentinel import REDIS_SERVER, free_ports, server_config  # noqa: E402

from rosetta_jobs.broker import RosettaBroker  # noqa: E402
from rosetta_jobs.connection import ReplicaWait  # noqa: E402
from rosetta_jobs.states import SUCCESS, build_meta  # noqa: E402
from rosetta_jobs.store import TaskStore  # noqa: E402

HOST = "127.0.0.1"


def start_pair(root: Path) -> tuple[list[subprocess.Popen[bytes]], int, int]:
    master, replica = free_ports(2)
    procs = []
    for port, of in ((master, None), (replica, (HOST, master))):
        directory = root / str(port)
        directory.mkdir()
        (directory / "redis.conf").write_text(server_config(host=HOST, port=port, directory=directory, replica_of=of))
        procs.append(subprocess.Popen([REDIS_SERVER, str(directory / "redis.conf")]))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            info = redis.Redis(HOST, master).info("replication")
            if info.get("slave0", {}).get("state") == "online":
                return procs, master, replica
        except redis.RedisError:
            pass
        time.sleep(0.05)
    raise SystemExit("the replica did not come online")


def timed(count: int, threads: int, op: Callable[[], object]) -> tuple[list[float], float]:
    """Latencies (ms) of ``count`` calls spread over ``threads``, and the calls per second."""
    latencies: list[float] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        mine = []
        for _ in range(n):
            started = time.perf_counter()
            op()
            mine.append((time.perf_counter() - started) * 1000)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=run, args=(count // threads,)) for _ in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return latencies, len(latencies) / (time.perf_counter() - started)


def line(name: str, latencies: list[float], rate: float) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"  {name:<34} p50 {statistics.median(ordered):6.3f} ms  p99 {p99:6.3f} ms  "
            f"mean {statistics.fmean(ordered):6.3f} ms  {rate:8.0f}/s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-wait-") as tmp:
        procs, master, _ = start_pair(Path(tmp))
        try:
            run(master, args.writes, procs[1])
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


def run(master: int, writes: int, replica_proc: subprocess.Popen[bytes]) -> None:
    url = f"redis://{HOST}:{master}/0"
    print(f"master 127.0.0.1:{master} with one replica, {writes} operations per line (redis-server, same host)")
    for label, replicas in (("no WAIT", 0), ("WAIT 1 replica", 1)):
        wait = ReplicaWait(replicas=replicas, timeout_ms=500) if replicas else None
        store = TaskStore(redis.Redis.from_url(url), replica_wait=wait, history_max=0)
        broker = RosettaBroker(client=redis.Redis.from_url(url), replica_wait=wait, namespace="bench-wait",
                               middleware=[])  # fmt: skip

        def write(store: TaskStore = store) -> object:
            return store.write(build_meta(uuid.uuid4().hex, SUCCESS, {"rows": 500}, name="worker.test.echo"))

        def enqueue(broker: RosettaBroker = broker) -> object:
            message: Message[object] = Message(queue_name="default", actor_name="worker.test.echo", args=("x",),
                                               kwargs={}, options={})  # fmt: skip
            return broker.enqueue(message)

        print(f"{label}:")
        for threads in (1, 8):
            print(line(f"final-state write, {threads} thread(s)", *timed(writes, threads, write)))
            print(line(f"enqueue, {threads} thread(s)", *timed(writes, threads, enqueue)))
        if wait is not None:
            assert wait.shortfalls == 0, "the replica lagged during the run"
    # A replica that stops answering: the first write waits out the timeout, the next ones skip WAIT.
    wait = ReplicaWait(replicas=1, timeout_ms=500)
    store = TaskStore(redis.Redis.from_url(url), replica_wait=wait, history_max=0)
    replica_proc.send_signal(19)  # SIGSTOP
    try:
        lat, _ = timed(50, 1, lambda: store.write(build_meta(uuid.uuid4().hex, SUCCESS, 1)))
    finally:
        replica_proc.send_signal(18)  # SIGCONT
    print("replica stopped (SIGSTOP), WAIT 1 with REDIS_WAIT_TIMEOUT_MS=500:")
    print(f"  first write {lat[0]:.1f} ms, the next 49: median {statistics.median(lat[1:]):.3f} ms "
          f"(WAIT skipped for 30 s after a shortfall; shortfalls counted: {wait.shortfalls})")  # fmt: skip


if __name__ == "__main__":
    main()
