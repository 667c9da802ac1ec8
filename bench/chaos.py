"""``make chaos``: load, killed workers, a Redis restart; then count what was lost or done twice.

A private redis-server (its own port, AOF persistence) carries the broker and the task state. Two
worker masters of one process each take 10,000 echo jobs, 500 previews and 25 resource bombs (previews
that run out of memory, time or result size in their executor); meanwhile worker
processes are SIGKILLed at random intervals (a supervisor restarts them, as systemd or Kubernetes
would) and Redis is restarted once. Afterwards: time-limit overshoot and cancel latency probes.

Printed: submitted, completed, lost, duplicated (a task whose final result changed), re-executions
(at-least-once at work), maximum recovery time after a kill, time-limit overshoot, cancel latency.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

import common
from rosetta_jobs.client import JobClient

FINAL = {"SUCCESS", "FAILURE", "REVOKED"}
HEAVY = "SELECT count(*) AS n FROM events a, events b, events c, events d"
#: Previews that would take a worker down without the executors' bounds (issue 12): memory, time, result size.
BOMBS = (
    "SELECT len(list_sort(range(100000000))) AS l",
    "SELECT length(repeat('x', 2000000000)) AS l",
    "SELECT list_reduce(range(30000000), (a, b) -> a + b) AS s",
    "SELECT repeat('ab', 500000) AS s FROM events",
    "SELECT sum(len(range(id * 100000))) AS n FROM events",
)


class PrivateRedis:
    def __init__(self, directory: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180  # after a restart Redis answers only once the AOF is loaded
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def restart(self) -> None:
        """A graceful restart: SHUTDOWN flushes the append-only file, then the server starts again."""
        with contextlib.suppress(redis.RedisError):  # the connection drops as the server exits
            redis.Redis(port=self.port).shutdown(nosave=False)
        assert self.proc is not None
        self.proc.wait(30)
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Fleet:
    """Two worker masters of one process each, restarted by a supervisor thread when they die."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.workers: list[common.Process] = []
        self.lock = threading.Lock()
        self.running = True
        for i in range(2):
            self.workers.append(self._start(i))
        threading.Thread(target=self._supervise, daemon=True).start()

    def _start(self, index: int) -> common.Process:
        return common.dramatiq_worker(self.env, name=f"chaos-worker-{index}", processes=1)

    def _supervise(self) -> None:
        while self.running:
            with self.lock:
                for i, worker in enumerate(self.workers):
                    if worker.proc.poll() is not None and self.running:
                        worker.stop()
                        self.workers[i] = self._start(i)
            time.sleep(0.5)

    def kill_one(self) -> int | None:
        """SIGKILL the worker process (not the master) of a random master; return its pid."""
        with self.lock:
            worker = random.choice(self.workers)
            children = [pid for pid in worker.pids() if pid != worker.proc.pid]
        if not children:
            return None
        pid = children[0]
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return pid

    def stop(self) -> None:
        self.running = False
        with self.lock:
            for worker in self.workers:
                worker.stop()


class Observer:
    """Follows every task-state write: which pid started what, and every final payload per task."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.started_by: dict[str, int] = {}
        self.starts: dict[str, list[int]] = {}
        self.finals: dict[str, set[str]] = {}
        self.final_at: dict[str, float] = {}
        self.lock = threading.Lock()
        self.running = True
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while self.running:
            try:
                pubsub = redis.Redis.from_url(self.url).pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe("celery-task-meta-*")
                while self.running:
                    event = pubsub.get_message(timeout=0.5)
                    if event is not None:
                        self._record(event["data"])
            except redis.RedisError:
                time.sleep(0.2)

    def _record(self, data: bytes) -> None:
        meta = json.loads(data)
        task_id, status = meta["task_id"], meta["status"]
        with self.lock:
            if status == "STARTED":
                self.started_by[task_id] = int(meta["result"]["pid"])
                self.starts.setdefault(task_id, []).append(int(meta["result"]["pid"]))
            elif status in FINAL:
                self.finals.setdefault(task_id, set()).add(json.dumps([status, meta["result"]], sort_keys=True))
                self.final_at.setdefault(task_id, time.monotonic())

    def running_on(self, pid: int) -> list[str]:
        with self.lock:
            return [t for t, p in self.started_by.items() if p == pid and t not in self.final_at]


def final_state(client: JobClient, task_id: str) -> str | None:
    for _ in range(360):
        try:
            meta = client.store.get(task_id)
        except Exception:  # Redis may be restarting or loading: a failed read is not a lost job
            time.sleep(0.5)
            continue
        return meta["status"] if meta and meta["status"] in FINAL else None
    raise RuntimeError(f"cannot read the state of {task_id}")


def probe_time_limit(client: JobClient, source_id: int, destination_id: int, count: int) -> list[float]:
    overshoots = []
    for _ in range(count):
        task_id = client.submit_preview(HEAVY, source_id, destination_id, "events", time_limit=1)
        while client.get_task_status(task_id)["state"] not in ("STARTED", "PROGRESS", "SUCCESS"):
            time.sleep(0.005)
        started = time.monotonic()
        result = client.result(task_id).get(timeout=60)
        assert result["error"] == "Preview timed out after 1 s", result
        overshoots.append(time.monotonic() - started - 1.0)
    return overshoots


def probe_cancel(client: JobClient, source_id: int, destination_id: int, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        task_id = client.submit_preview(HEAVY, source_id, destination_id, "events")
        while client.get_task_status(task_id)["state"] != "PROGRESS":
            time.sleep(0.01)
        time.sleep(0.3)
        asked = time.time()
        assert client.cancel(task_id)["cancelled"]
        deadline = time.monotonic() + 30
        while (stopped := client.store.stopped_at(task_id)) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stopped is not None, f"cancelled preview {task_id} did not stop"
        latencies.append(stopped - asked)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--echo", type=int, default=10_000)
    parser.add_argument("--previews", type=int, default=500)
    parser.add_argument("--bombs", type=int, default=25, help="resource-bomb previews among the load")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--kill-every", type=float, nargs=2, default=(6.0, 12.0), metavar=("MIN", "MAX"))
    parser.add_argument("--drain", type=float, default=180.0, help="seconds to wait for the last jobs")
    args = parser.parse_args()

    _, config_url, source_id, destination_id = common.seed(args.rows)
    server = PrivateRedis(common.ROOT / "bench" / "out" / "chaos-redis")
    server.start()
    env = {"BROKER_URL": server.url(1), "RESULT_BACKEND_URL": server.url(2), "REDIS_URL": server.url(0),
           "DATABASE_URL": config_url, "PREVIEW_CACHE_TTL": "0", "DUCKDB_MEMORY_LIMIT": "512MB",
           "DUCKDB_MAX_CONCURRENT": "2", "PREVIEW_TIME_LIMIT": "5"}  # fmt: skip
    fleet = Fleet(env)
    observer = Observer(server.url(2))
    client = JobClient(broker_url=server.url(1), result_backend_url=server.url(2))
    kills: list[tuple[float, int, list[str]]] = []
    outages: list[tuple[float, float]] = []
    done = threading.Event()

    def chaos() -> None:
        restarted = False
        while not done.wait(random.uniform(*args.kill_every)):
            if not restarted and len(kills) >= 2:
                print("  restarting Redis", flush=True)
                began = time.monotonic()
                server.restart()
                outages.append((began, time.monotonic()))
                print(f"  Redis answers again after {time.monotonic() - began:.1f} s", flush=True)
                restarted = True
                continue
            pid = fleet.kill_one()
            if pid is not None:
                kills.append((time.monotonic(), pid, observer.running_on(pid)))
                print(f"  killed worker process {pid} ({len(kills[-1][2])} job(s) in flight)", flush=True)

    try:
        started = time.monotonic()
        threading.Thread(target=chaos, daemon=True).start()
        task_ids = submit_load(client, args, source_id, destination_id)
        print(f"submitted {len(task_ids)} jobs in {time.monotonic() - started:.1f} s", flush=True)
        drain(client, task_ids, args.drain)
        done.set()
        elapsed = time.monotonic() - started
        overshoot = probe_time_limit(client, source_id, destination_id, 5)
        cancel = probe_cancel(client, source_id, destination_id, 5)
    finally:
        done.set()
        fleet.stop()
        observer.running = False
    try:
        return report(client, observer, args, task_ids, kills, outages, elapsed, overshoot, cancel)
    finally:
        server.stop()


BOMB_IDS: set[str] = set()


def submit_load(client: JobClient, args: argparse.Namespace, source_id: int, destination_id: int) -> list[str]:
    """Echo jobs with previews and bombs spread among them; a send refused while Redis restarts is sent again."""
    task_ids: list[str] = []
    filters = [json.dumps({"version": 2, "groups": [{"conditions": [{"column": "id", "operator": ">",
               "value": i * 300}]}]}) for i in range(args.previews)]  # fmt: skip
    bombs = [BOMBS[i % len(BOMBS)] for i in range(args.bombs)]
    every = args.echo // max(args.previews, 1) + 1
    bomb_every = args.echo // max(args.bombs, 1) + 1
    for i in range(args.echo + args.previews + args.bombs):
        while True:
            try:
                if i % bomb_every == bomb_every // 2 and bombs:
                    task_ids.append(client.submit_preview(bombs.pop(), source_id, destination_id, "events"))
                    BOMB_IDS.add(task_ids[-1])
                elif i % every == 0 and filters:
                    task_ids.append(client.submit_preview(None, source_id, destination_id, "events", filters.pop()))
                else:
                    task_ids.append(client.send("worker.test.echo", (str(i), 1, 0.002)))
                break
            except Exception:  # Redis restarting: the producer retries, as a backend would
                time.sleep(0.2)
    return task_ids


def drain(client: JobClient, task_ids: list[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    pending = list(task_ids)
    while pending and time.monotonic() < deadline:
        pending = [t for t in pending if final_state(client, t) is None]
        print(f"  {len(pending)} job(s) not final yet", flush=True)
        time.sleep(2.0)


def report(
    client: JobClient,
    observer: Observer,
    args: argparse.Namespace,
    task_ids: list[str],
    kills: list[tuple[float, int, list[str]]],
    outages: list[tuple[float, float]],
    elapsed: float,
    overshoot: list[float],
    cancel: list[float],
) -> int:
    states = {t: final_state(client, t) for t in task_ids}
    completed = sum(1 for s in states.values() if s == "SUCCESS")
    lost = [t for t, s in states.items() if s is None]
    duplicated = [t for t, finals in observer.finals.items() if len(finals) > 1]
    executions = [client.store.deliveries(t) or 1 for t in task_ids]
    # Recovery: for each job that was started again by another process, from the kill of its first
    # process to its final state; kills whose recovery window saw Redis down are reported apart.
    killed_at = {pid: at for at, pid, _ in kills}
    recoveries: list[float] = []
    during_outage: list[float] = []
    for task_id, pids in observer.starts.items():
        if len(set(pids)) > 1 and pids[0] in killed_at and task_id in observer.final_at:
            start, end = killed_at[pids[0]], observer.final_at[task_id]
            overlaps = any(down < end and up > start for down, up in outages)
            (during_outage if overlaps else recoveries).append(end - start)
    others = [t for t, s in states.items() if s in ("FAILURE", "REVOKED")]
    for task_id in others[:5]:
        print(f"  {states[task_id]} {task_id}: {client.get_task_status(task_id).get('error')}")
    for task_id in lost[:5]:
        raw = client.store.client.get(f"celery-task-meta-{task_id}")
        print(f"  lost {task_id}: meta={raw[:200] if raw else None!r} finals={observer.finals.get(task_id)}")

    print()
    bombs = [client.store.get(t) for t in BOMB_IDS]
    answered = sum(
        1 for meta in bombs if meta and meta.get("status") == "SUCCESS" and (meta.get("result") or {}).get("error")
    )
    print(f"submitted        {len(task_ids)}  ({args.echo} echo + {args.previews} previews + {len(BOMB_IDS)} bombs) "
          f"in {elapsed:.1f} s")  # fmt: skip
    print(f"bombs            {answered} of {len(BOMB_IDS)} answered with a preview error")
    print(f"completed        {completed}")
    print(f"other final      {sum(1 for s in states.values() if s in ('FAILURE', 'REVOKED'))}")
    print(f"lost             {len(lost)}{'  e.g. ' + lost[0] if lost else ''}")
    print(f"duplicated       {len(duplicated)}  (a task whose final result changed)")
    print(f"re-executions    {sum(e - 1 for e in executions)}  (jobs started again after their worker died)")
    print(f"kills            {len(kills)}; Redis restarts 1")
    recovery = f"{max(recoveries):.1f} s" if recoveries else "n/a (no re-run job)"
    print(f"max recovery     {recovery}  (kill -> final state, over {len(recoveries)} re-run job(s))")
    if during_outage:
        print(
            f"                 {max(during_outage):.1f} s for {len(during_outage)} job(s) whose recovery"
            " overlapped the Redis restart"
        )
    print(f"time-limit       overshoot max {max(overshoot) * 1000:.0f} ms, mean {sum(overshoot) / 5 * 1000:.0f} ms")
    print(f"cancel latency   max {max(cancel) * 1000:.0f} ms, mean {sum(cancel) / 5 * 1000:.0f} ms")
    return 1 if lost or duplicated else 0


if __name__ == "__main__":
    sys.exit(main())
