"""``make chaos-cluster``: rosetta-jobs across hosts, with a Redis failover, a partition and a host kill.

Every host is a network namespace of this machine with one address on a private bridge (as root: ``ip netns``,
veth pairs): a Redis master, its replica, three Sentinels, three worker hosts (``rosetta-jobs worker``, the
supervised worker) and a producer host. The PostgreSQL server of the machine (source and config databases)
is reached through a forwarder on the bridge's address. Every client uses ``sentinel://`` URLs.

The producer submits 5,000 echo jobs and 200 previews at a steady rate, half through the real ``celery``
package's ``send_task`` (the Celery ingress moves them) and half through ``JobClient``. During the load:

1. the Redis master is SIGKILLed in its namespace; the Sentinels promote the replica (the killed server comes
   back as the new master's replica);
2. one worker host's link is cut (``ip link set eth0 down`` inside it) for 60 s, then healed;
3. another worker host is killed: SIGKILL to every process in it.

Printed: submitted, completed, lost, double final (a task with two different final states published, seen
from every Redis node), re-runs, recovery per fault (from the fault to the final state of the last job the
fault interrupted), and the errors the producer saw during the failover. ``--quick`` runs a small load with
shorter faults, to try the rig.

The rig cleans up its namespaces, links and processes on exit, on Ctrl-C, and at the start of the next run
(namespaces ``rjc-<pid>-*`` of a process that no longer exists).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import datetime
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tables import EVENTS, KEY  # bench/ is on sys.path when run as `python bench/chaos_cluster.py`

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = ROOT / "tests" / "support"
OUT = ROOT / "bench" / "out" / "chaos-cluster"
PREFIX = "rjc-"
SUBNET = "10.231.0"
BRIDGE_IP = f"{SUBNET}.1"
MASTER_NAME = "mymaster"
REDIS_PORT, SENTINEL_PORT, PG_PORT = 6379, 26379, 5432
FINAL = {"SUCCESS", "FAILURE", "REVOKED"}
PR_SET_PDEATHSIG = 1
#: Host name -> last octet of its address.
HOSTS = {
    "redis-a": 11,
    "redis-b": 12,
    "sentinel-1": 14,
    "sentinel-2": 15,
    "sentinel-3": 16,
    "worker-1": 21,
    "worker-2": 22,
    "worker-3": 23,
    "producer": 30,
}
WORKERS = ("worker-1", "worker-2", "worker-3")
SOURCE_DB, CONFIG_DB = "rosetta_cluster_source", "rosetta_cluster_config"
PG_ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def ip(host: str) -> str:
    return f"{SUBNET}.{HOSTS[host]}"


def sentinel_url(db: int) -> str:
    return ";".join(f"sentinel://{ip(h)}:{SENTINEL_PORT}/{db}" for h in ("sentinel-1", "sentinel-2", "sentinel-3"))


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check)


# --- the network ----------------------------------------------------------------------------------------------
class Network:
    """One namespace per host on a bridge of the root namespace; everything it made goes in ``teardown``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.bridge = f"rjb{pid}"
        self.made: list[str] = []
        self._torn = False

    def ns(self, host: str) -> str:
        return f"{PREFIX}{self.pid}-{host}"

    @staticmethod
    def clean_stale() -> None:
        """Remove what a rig that died left behind: its namespaces (and their processes) and its bridge."""
        alive = _alive_rigs()
        for line in run("ip", "netns", "list").stdout.splitlines():
            name = line.split()[0] if line.strip() else ""
            match = re.fullmatch(rf"{PREFIX}(\d+)-.+", name)
            if match and int(match.group(1)) not in alive:
                _kill_namespace(name)
        # The bridge, and veths whose namespace end outlived ``ip netns del`` (a namespace the kernel frees late).
        for match in re.finditer(r"^\d+: (rj[bv](\d+)(x\d+)?)[:@]", run("ip", "-o", "link", "show").stdout, re.M):
            if int(match.group(2)) not in alive:
                run("ip", "link", "del", match.group(1), check=False)

    def setup(self) -> None:
        others = _alive_rigs() - {self.pid}
        if others:
            raise SystemExit(f"another chaos-cluster run is active (pid {sorted(others)}); it uses {SUBNET}.0/24")
        run("ip", "link", "add", self.bridge, "type", "bridge")
        self.made.append("bridge")
        run("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for host, octet in HOSTS.items():
            ns, outside, inside = self.ns(host), f"rjv{self.pid}x{octet}", f"rjp{self.pid}x{octet}"
            run("ip", "netns", "add", ns)
            self.made.append(ns)
            run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            run("ip", "link", "set", inside, "netns", ns)
            self.exec_ok(host, "ip", "link", "set", inside, "name", "eth0")
            self.exec_ok(host, "ip", "addr", "add", f"{ip(host)}/24", "dev", "eth0")
            self.exec_ok(host, "ip", "link", "set", "eth0", "up")
            self.exec_ok(host, "ip", "link", "set", "lo", "up")
            run("ip", "link", "set", outside, "master", self.bridge)
            run("ip", "link", "set", outside, "up")

    def exec_ok(self, host: str, *args: str) -> None:
        run("ip", "netns", "exec", self.ns(host), *args)

    def spawn(
        self, host: str, args: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """A process in ``host``'s namespace, in a process group of its own, its output in ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as handle:
            return subprocess.Popen(["ip", "netns", "exec", self.ns(host), *args], cwd=ROOT, env=env,
                                    stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def pids(self, host: str) -> list[int]:
        return [int(p) for p in run("ip", "netns", "pids", self.ns(host), check=False).stdout.split()]

    def cut(self, host: str) -> None:
        self.exec_ok(host, "ip", "link", "set", "eth0", "down")

    def heal(self, host: str) -> None:
        self.exec_ok(host, "ip", "link", "set", "eth0", "up")

    def kill_host(self, host: str) -> int:
        """SIGKILL every process of ``host``; return how many there were."""
        pids = self.pids(host)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def teardown(self) -> None:
        if self._torn:
            return
        self._torn = True
        for name in reversed(self.made):
            if name == "bridge":
                run("ip", "link", "del", self.bridge, check=False)
            else:
                _kill_namespace(name)
        for octet in HOSTS.values():  # gone with their namespaces, unless the kernel frees one late
            if run("ip", "link", "show", f"rjv{self.pid}x{octet}", check=False).returncode == 0:
                run("ip", "link", "del", f"rjv{self.pid}x{octet}", check=False)


def _alive_rigs() -> set[int]:
    """Pids of rigs whose process still runs (by the namespaces and bridges they made)."""
    found = {int(m) for m in re.findall(rf"^{PREFIX}(\d+)-", run("ip", "netns", "list").stdout, re.M)}
    found |= {int(m) for m in re.findall(r"^\d+: rjb(\d+)[:@]", run("ip", "-o", "link", "show").stdout, re.M)}
    alive = set()
    for pid in found:
        try:
            os.kill(pid, 0)
            alive.add(pid)
        except ProcessLookupError:
            continue
        except PermissionError:
            alive.add(pid)
    return alive


def _kill_namespace(name: str) -> None:
    for _ in range(3):
        pids = [int(p) for p in run("ip", "netns", "pids", name, check=False).stdout.split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    run("ip", "netns", "del", name, check=False)


# --- Redis and Sentinel in their namespaces --------------------------------------------------------------------
class RedisHosts:
    """The master, the replica and three Sentinels; knows which server is master now."""

    def __init__(self, net: Network) -> None:
        sys.path.insert(0, str(SUPPORT))
        from sentinel import sentinel_config, server_config

        self.server_config, self.sentinel_config = server_config, sentinel_config
        self.net = net
        self.servers: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, down_after_ms: int) -> None:
        self.start_server("redis-a", replica_of=None)
        self.start_server("redis-b", replica_of="redis-a")
        for host in ("sentinel-1", "sentinel-2", "sentinel-3"):
            directory = OUT / host
            directory.mkdir(parents=True, exist_ok=True)
            conf = directory / "sentinel.conf"
            conf.write_text(self.sentinel_config(host=ip(host), port=SENTINEL_PORT, directory=directory,
                                                 master=(ip("redis-a"), REDIS_PORT), master_name=MASTER_NAME,
                                                 down_after_ms=down_after_ms, failover_timeout_ms=10_000))  # fmt: skip
            self.net.spawn(host, ["redis-server", str(conf), "--sentinel"], directory / "stdout.log")
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                states = [
                    self.sentinel(h).sentinel_master(MASTER_NAME) for h in ("sentinel-1", "sentinel-2", "sentinel-3")
                ]
                if all(s["num-slaves"] >= 1 and s["num-other-sentinels"] >= 2 for s in states):
                    return
            time.sleep(0.3)
        raise RuntimeError("the Sentinels did not see the replica and each other within 40 s")

    def start_server(self, host: str, *, replica_of: str | None) -> None:
        directory = OUT / host
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "redis.conf"
        master = (ip(replica_of), REDIS_PORT) if replica_of else None
        conf.write_text(self.server_config(host=ip(host), port=REDIS_PORT, directory=directory, replica_of=master))
        self.servers[host] = self.net.spawn(host, ["redis-server", str(conf)], directory / "stdout.log")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis(ip(host), REDIS_PORT, socket_timeout=1).ping():
                    return
            time.sleep(0.1)
        raise RuntimeError(f"redis-server on {host} did not start")

    @staticmethod
    def sentinel(host: str) -> redis.Redis:
        return redis.Redis(ip(host), SENTINEL_PORT, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)

    def master(self) -> str:
        """The host the Sentinels name as master (the first that answers)."""
        for host in ("sentinel-1", "sentinel-2", "sentinel-3"):
            with contextlib.suppress(redis.RedisError):
                address, _ = self.sentinel(host).sentinel_get_master_addr_by_name(MASTER_NAME)
                return next(h for h in ("redis-a", "redis-b") if ip(h) == address)
        raise RuntimeError("no Sentinel answers")

    def kill(self, host: str) -> None:
        self.net.kill_host(host)
        proc = self.servers.pop(host, None)
        if proc is not None:
            proc.wait(10)


# --- what every Redis node publishes ---------------------------------------------------------------------------
class Observer:
    """Subscribes to task-state publishes on every Redis node (a replica relays its master's), reconnecting.

    A write is identified by its payload (its ``date_done`` differs from any other write's), so a publish seen
    on the master and on the replica counts once, and two final writes of one task count twice.
    """

    def __init__(self, hosts: list[str]) -> None:
        self.lock = threading.Lock()
        self.starts: dict[str, list[tuple[int, float]]] = {}
        self.finals: dict[str, set[str]] = {}
        self.final_at: dict[str, float] = {}
        self.seen: dict[str, int] = dict.fromkeys(hosts, 0)
        self._payloads: set[bytes] = set()
        self.running = True
        for host in hosts:
            threading.Thread(target=self._follow, args=(host,), daemon=True).start()

    def _follow(self, host: str) -> None:
        while self.running:
            try:
                pubsub = redis.Redis(ip(host), REDIS_PORT, socket_connect_timeout=1).pubsub(
                    ignore_subscribe_messages=True
                )
                pubsub.psubscribe("celery-task-meta-*")
                while self.running:
                    event = pubsub.get_message(timeout=0.5)
                    if event is not None:
                        self._record(host, event["data"])
            except (redis.RedisError, OSError):
                time.sleep(0.3)

    def _record(self, host: str, data: bytes) -> None:
        now = time.monotonic()
        with self.lock:
            self.seen[host] += 1
            if data in self._payloads:
                return
            self._payloads.add(data)
            meta = json.loads(data)
            task_id, status = meta["task_id"], meta["status"]
            if status == "STARTED":
                self.starts.setdefault(task_id, []).append((int(meta["result"]["pid"]), now))
            elif status in FINAL:
                self.finals.setdefault(task_id, set()).add(data.decode())
                self.final_at.setdefault(task_id, now)

    def in_flight(self, pids: set[int] | None = None) -> list[str]:
        """Tasks started (last, by one of ``pids`` if given) and not final yet."""
        with self.lock:
            return [t for t, starts in self.starts.items()
                    if t not in self.final_at and (pids is None or starts[-1][0] in pids)]  # fmt: skip


# --- the producer host --------------------------------------------------------------------------------------
def produce(args: argparse.Namespace) -> int:
    """Run inside the producer's namespace: submit the load at ``--rate`` jobs/s; write ids and errors to ``--out``."""
    from celery import Celery

    from rosetta_jobs.client import JobClient
    from rosetta_jobs.connection import SentinelOptions

    client = JobClient(broker_url=sentinel_url(1), result_backend_url=sentinel_url(2),
                       sentinel=SentinelOptions(master_name=MASTER_NAME))  # fmt: skip
    app = Celery("backend", broker=sentinel_url(1))
    app.conf.update(
        task_serializer="json", accept_content=["json"], broker_transport_options={"master_name": MASTER_NAME}
    )
    total = args.echo + args.previews
    every = max(total // max(args.previews, 1), 1)
    jobs: list[list[Any]] = []
    errors: list[list[Any]] = []
    slow: list[list[Any]] = []
    gave_up = 0
    started = time.monotonic()
    previews = 0
    for i in range(total):
        next_at = started + i / args.rate
        if (delay := next_at - time.monotonic()) > 0:
            time.sleep(delay)
        preview = i % every == every // 2 and previews < args.previews
        previews += preview
        via = "celery" if i % 2 else "native"
        filters = json.dumps({"version": 2, "groups": [{"conditions": [{"column": "id", "operator": ">",
                             "value": (i * 37) % max(args.rows - 1000, 1)}]}]})  # fmt: skip
        first_error = None
        while True:
            call_began = time.monotonic()
            try:
                if preview and via == "native":
                    task_id = client.submit_preview(None, args.source_id, args.destination_id, "events", filters)
                elif preview:
                    call = [None, args.source_id, args.destination_id, "events", filters]
                    task_id = app.send_task("worker.preview.execute", args=call, queue="preview").id
                elif via == "native":
                    task_id = client.send("worker.test.echo", (str(i), 1, args.echo_seconds))
                else:
                    task_id = app.send_task("worker.test.echo", args=[str(i), 1, args.echo_seconds], queue="default").id
                jobs.append([task_id, "preview" if preview else "echo", via, time.time()])
                if (took := time.monotonic() - call_began) > 0.5:  # a call that rode out an outage by itself
                    slow.append([time.time() - took, via, took])
                break
            except Exception as exc:  # what a backend would see: count it, wait a little, send again
                errors.append([time.time(), via, f"{type(exc).__name__}: {str(exc)[:160]}"])
                first_error = first_error or time.monotonic()
                if time.monotonic() - first_error > 120:
                    gave_up += 1
                    break
                time.sleep(0.2)
        if (i + 1) % 1000 == 0:
            print(f"  producer: {i + 1} submitted, {len(errors)} error(s) so far", flush=True)
    Path(args.out).write_text(json.dumps({"jobs": jobs, "errors": errors, "slow": slow, "gave_up": gave_up}))
    return 0


# --- PostgreSQL for the namespaced hosts -----------------------------------------------------------------------
def seed_databases(rows: int) -> tuple[int, int]:
    """The source table (kept between runs) and a fresh config database whose source is reached on the bridge."""
    import psycopg

    from rosetta_jobs.catalog import config_schema_sql
    from rosetta_jobs.crypto import Cipher

    def url(name: str) -> str:
        return PG_ADMIN.rsplit("/", 1)[0] + "/" + name

    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (SOURCE_DB,)).fetchone()
        count = None
        if exists:
            with psycopg.connect(url(SOURCE_DB)) as conn, contextlib.suppress(psycopg.Error):
                count = conn.execute("SELECT count(*) FROM events").fetchone()
        if count is None or count[0] != rows:
            print(f"seeding {rows:,} rows into {SOURCE_DB}.events ...", flush=True)
            admin.execute(f'DROP DATABASE IF EXISTS "{SOURCE_DB}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{SOURCE_DB}"')
            with psycopg.connect(url(SOURCE_DB), autocommit=True) as conn:
                conn.execute(EVENTS.replace("%s", str(int(rows))))
                conn.execute("ANALYZE events")
        admin.execute(f'DROP DATABASE IF EXISTS "{CONFIG_DB}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{CONFIG_DB}"')
    with psycopg.connect(url(CONFIG_DB), autocommit=True) as conn:
        conn.execute(config_schema_sql())
        source = conn.execute(
            "INSERT INTO sources (name, pg_host, pg_port, pg_database, pg_username, pg_password)"
            " VALUES ('cluster', %s, %s, %s, 'postgres', %s) RETURNING id",
            (BRIDGE_IP, PG_PORT, SOURCE_DB, Cipher(KEY).encrypt("unused-with-trust-auth")),
        ).fetchone()
        destination = conn.execute(
            "INSERT INTO destinations (name, type, config) VALUES ('wh', 'POSTGRES', %s) RETURNING id",
            (json.dumps({"host": BRIDGE_IP, "port": PG_PORT, "database": SOURCE_DB, "user": "postgres"}),),
        ).fetchone()
    assert source is not None and destination is not None
    return int(source[0]), int(destination[0])


# --- the run ---------------------------------------------------------------------------------------------------
@dataclass
class Fault:
    name: str
    at: float
    tasks: list[str]
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "BROKER_", "RESULT_", "REDIS_"))}
    env.update(
        BROKER_URL=sentinel_url(1),
        RESULT_BACKEND_URL=sentinel_url(2),
        REDIS_URL=sentinel_url(0),
        SENTINEL_MASTER_NAME=MASTER_NAME,
        DATABASE_URL=f"postgresql://postgres@{BRIDGE_IP}:{PG_PORT}/{CONFIG_DB}",
        CREDENTIAL_ENCRYPTION_KEY=KEY,
        PREVIEW_CACHE_TTL="0",
        DUCKDB_MEMORY_LIMIT="512MB",
        DUCKDB_MAX_CONCURRENT="2",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return env


def start_worker(net: Network, host: str, threads: int) -> subprocess.Popen[bytes]:
    log = OUT / host / "worker.log"
    proc = net.spawn(host, [str(ROOT / ".venv" / "bin" / "rosetta-jobs"), "worker", "-p", "1", "-t", str(threads)],
                     log, env=worker_env())  # fmt: skip
    deadline = time.monotonic() + 90
    while "Worker process is ready for action" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker on {host} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode")
    producer = sub.add_parser("produce", help="(internal) the producer host's load")
    for p in (parser, producer):
        p.add_argument("--echo", type=int, default=5_000)
        p.add_argument("--previews", type=int, default=200)
        p.add_argument("--rate", type=float, default=40.0, help="jobs submitted per second")
        p.add_argument("--echo-seconds", type=float, default=0.2, help="how long an echo job runs")
        p.add_argument("--rows", type=int, default=50_000)
    producer.add_argument("--source-id", type=int, required=True)
    producer.add_argument("--destination-id", type=int, required=True)
    producer.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=8, help="worker threads per worker host")
    parser.add_argument("--partition", type=float, default=60.0, help="seconds a worker host is cut off")
    parser.add_argument("--drain", type=float, default=300.0, help="seconds to wait for the last jobs")
    parser.add_argument("--quick", action="store_true", help="a small load and shorter faults, to try the rig")
    args = parser.parse_args()
    if args.mode == "produce":
        return produce(args)
    if os.geteuid() != 0:
        raise SystemExit("make chaos-cluster needs root: it creates network namespaces (run it as root)")
    if shutil.which("ip") is None or run("ip", "netns", "list", check=False).returncode != 0:
        raise SystemExit("make chaos-cluster needs `ip netns` (iproute2) and the right to create namespaces")
    if shutil.which("redis-server") is None:
        raise SystemExit("make chaos-cluster needs redis-server on PATH")
    if args.quick:
        args.echo, args.previews, args.partition, args.rate = 600, 20, 25.0, 10.0
    return Rig(args).run()


class Rig:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.net = Network(os.getpid())
        self.forwarder: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.faults: list[Fault] = []
        self.back = ""

    def teardown(self) -> None:
        if self.forwarder is not None and self.forwarder.poll() is None:
            self.forwarder.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.forwarder.wait(5)
        self.net.teardown()

    def run(self) -> int:
        atexit.register(self.teardown)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _exit_on_signal)
        try:
            return self._run()
        finally:
            self.teardown()

    def _run(self) -> int:
        args = self.args
        shutil.rmtree(OUT, ignore_errors=True)
        OUT.mkdir(parents=True)
        Network.clean_stale()
        source_id, destination_id = seed_databases(args.rows)
        self.net.setup()
        self.forwarder = subprocess.Popen([sys.executable, str(SUPPORT / "tcpproxy.py"), f"{BRIDGE_IP}:{PG_PORT}",
                                           f"127.0.0.1:{PG_PORT}"], preexec_fn=_die_with_parent)  # fmt: skip
        redis_hosts = RedisHosts(self.net)
        redis_hosts.start(down_after_ms=2000)
        observer = Observer(["redis-a", "redis-b"])
        print(f"hosts up: master {ip('redis-a')}, replica {ip('redis-b')}, Sentinels "
              f"{', '.join(ip(h) for h in ('sentinel-1', 'sentinel-2', 'sentinel-3'))}", flush=True)  # fmt: skip
        for host in WORKERS:
            self.workers[host] = start_worker(self.net, host, args.threads)
        print(f"workers up on {', '.join(ip(h) for h in WORKERS)} (rosetta-jobs worker -p 1 -t {args.threads})")

        out = OUT / "producer.json"
        produce_args = [str(ROOT / ".venv" / "bin" / "python"), str(Path(__file__).resolve()), "produce",
                        "--echo", str(args.echo), "--previews", str(args.previews), "--rate", str(args.rate),
                        "--echo-seconds", str(args.echo_seconds), "--rows", str(args.rows), "--source-id",
                        str(source_id), "--destination-id", str(destination_id), "--out", str(out)]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        producer = self.net.spawn("producer", produce_args, OUT / "producer" / "producer.log", env=env)
        began = time.monotonic()
        load_seconds = (args.echo + args.previews) / args.rate
        print(f"producer on {ip('producer')}: {args.echo} echo + {args.previews} previews at {args.rate:g}/s "
              f"(~{load_seconds:.0f} s), half send_task, half JobClient", flush=True)  # fmt: skip
        scale = load_seconds / 130 if args.quick else 1.0
        partition_at, kill_at = 40 * scale, 40 * scale + args.partition + 15 * scale

        def at(seconds: float) -> None:
            time.sleep(max(began + seconds - time.monotonic(), 0))

        # 1. The master fails: SIGKILL in its namespace; the Sentinels promote the replica.
        at(15 * scale)
        old = redis_hosts.master()
        killed_at = time.monotonic()
        fault = Fault("master failover", killed_at, observer.in_flight())
        redis_hosts.kill(old)
        new = old
        while new == old and time.monotonic() - killed_at < 60:
            time.sleep(0.1)
            with contextlib.suppress(RuntimeError, StopIteration):
                new = redis_hosts.master()
        promoted = time.monotonic() - killed_at
        fault.note = f"{old} SIGKILLed; Sentinels promoted {new} after {promoted:.1f} s"
        fault.extra["wall"] = time.time() - (time.monotonic() - killed_at)
        print(f"  t={killed_at - began:5.1f} s  {fault.note}", flush=True)
        self.faults.append(fault)
        redis_hosts.start_server(old, replica_of=new)  # back, empty, as the new master's replica
        print(f"  t={time.monotonic() - began:5.1f} s  {old} restarted as a replica of {new}", flush=True)

        # 2. A worker host is cut off from everything for args.partition seconds.
        at(partition_at)
        pids = set(self.net.pids("worker-2"))
        cut_at = time.monotonic()
        fault = Fault(f"worker-2 cut off {args.partition:.0f} s", cut_at, observer.in_flight(pids))
        self.net.cut("worker-2")
        print(f"  t={cut_at - began:5.1f} s  worker-2's link is down ({len(fault.tasks)} job(s) running there)")
        self.faults.append(fault)
        time.sleep(max(cut_at + args.partition - time.monotonic(), 0))
        self.net.heal("worker-2")
        healed_at = time.time()
        print(f"  t={time.monotonic() - began:5.1f} s  worker-2's link is up again", flush=True)

        # 3. A worker host dies: every process in it SIGKILLed.
        at(kill_at)
        pids = set(self.net.pids("worker-3"))
        killed_at = time.monotonic()
        fault = Fault("worker-3 killed", killed_at, observer.in_flight(pids))
        count = self.net.kill_host("worker-3")
        print(f"  t={killed_at - began:5.1f} s  worker-3 killed: {count} process(es), "
              f"{len(fault.tasks)} job(s) running there", flush=True)  # fmt: skip
        self.faults.append(fault)

        producer.wait()
        submitted = json.loads(out.read_text())
        print(f"  t={time.monotonic() - began:5.1f} s  producer done: {len(submitted['jobs'])} submitted", flush=True)
        task_ids = [job[0] for job in submitted["jobs"]]
        states = self.drain(task_ids, began)
        elapsed = time.monotonic() - began
        self.back = self.wait_back("worker-2", healed_at, began)
        time.sleep(2.0)  # late writes of the healed host, if any, reach the observer
        observer.running = False
        return self.report(submitted, states, observer, elapsed)

    def wait_back(self, host: str, healed_at: float, began: float, limit: float = 240.0) -> str:
        """Wait until the healed host's heartbeat reaches Redis again (its blocked sockets wait for TCP's retries)."""
        log = OUT / host / "worker.log"
        while time.time() < healed_at + limit:
            for line in log.read_text(errors="replace").splitlines():
                if "lease regained" in line:
                    at = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
                    if at >= healed_at:
                        print(f"  t={time.monotonic() - began:5.1f} s  {host} reaches Redis again", flush=True)
                        time.sleep(10.0)  # what it held reaches Redis: late writes, give-backs
                        return f"back {at - healed_at:.1f} s after the heal"
            time.sleep(1.0)
        return f"not back within {limit:.0f} s of the heal"

    def results(self) -> redis.Redis:
        from rosetta_jobs.connection import SentinelOptions, redis_client

        return redis_client(sentinel_url(2), sentinel=SentinelOptions(master_name=MASTER_NAME))

    def drain(self, task_ids: list[str], began: float) -> dict[str, dict[str, Any] | None]:
        client = self.results()
        deadline = time.monotonic() + self.args.drain
        states: dict[str, dict[str, Any] | None] = dict.fromkeys(task_ids)
        while True:
            pending = [t for t, meta in states.items() if meta is None or meta.get("status") not in FINAL]
            for start in range(0, len(pending), 500):
                chunk = pending[start : start + 500]
                try:
                    raws = client.mget([f"celery-task-meta-{t}" for t in chunk])
                except redis.RedisError:
                    break
                for task_id, raw in zip(chunk, raws, strict=True):
                    states[task_id] = json.loads(raw) if raw else None
            left = sum(1 for meta in states.values() if meta is None or meta.get("status") not in FINAL)
            print(f"  t={time.monotonic() - began:5.1f} s  {left} job(s) not final yet", flush=True)
            if not left or time.monotonic() > deadline:
                return states
            time.sleep(3.0)

    def report(self, submitted: dict[str, Any], states: dict[str, dict[str, Any] | None], observer: Observer,
               elapsed: float) -> int:  # fmt: skip
        jobs = submitted["jobs"]
        kinds = {job[0]: (job[1], job[2]) for job in jobs}
        from rosetta_jobs.layout import Keys

        keys = Keys()
        client = self.results()
        deliveries = {}
        ids = list(states)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            raws = client.mget([keys.deliveries(t) for t in chunk])
            deliveries.update({t: int(r) if r else 0 for t, r in zip(chunk, raws, strict=True)})
        completed = [t for t, m in states.items() if m and m["status"] == "SUCCESS"]
        preview_errors = [t for t in completed if kinds[t][0] == "preview" and (states[t]["result"] or {}).get("error")]  # type: ignore[index]
        other = [t for t, m in states.items() if m and m["status"] in ("FAILURE", "REVOKED")]
        lost = [t for t, m in states.items() if not m or m["status"] not in FINAL]
        double = [t for t, finals in observer.finals.items() if len(finals) > 1]
        reruns = [t for t, n in deliveries.items() if n > 1]
        for task_id in lost[:5]:
            print(f"  lost {task_id} ({'/'.join(kinds[task_id])}): meta={json.dumps(states[task_id])[:160]} "
                  f"starts={observer.starts.get(task_id)}")  # fmt: skip
        for task_id in double[:5]:
            print(f"  double final {task_id}: {sorted(observer.finals[task_id])}")
        for task_id in other[:5]:
            print(f"  {states[task_id]['status']} {task_id}: {str(states[task_id].get('result'))[:160]}")  # type: ignore[index]
        logs = {host: (OUT / host / "worker.log").read_text(errors="replace") for host in WORKERS}

        n_echo = sum(1 for j in jobs if j[1] == "echo")
        n_celery = sum(1 for j in jobs if j[2] == "celery")
        print()
        print(f"submitted        {len(jobs)}  ({n_echo} echo + {len(jobs) - n_echo} previews; {n_celery} by send_task, "
              f"{len(jobs) - n_celery} by JobClient) in {elapsed:.1f} s; {submitted['gave_up']} given up")  # fmt: skip
        print(f"completed        {len(completed)}  ({len(preview_errors)} preview(s) answered with an error)")
        print(f"other final      {len(other)}")
        print(f"lost             {len(lost)}")
        print(f"double final     {len(double)}  (a task with two different final states published)")
        print(f"re-runs          {sum(n - 1 for n in deliveries.values() if n > 1)} over {len(reruns)} task(s)  "
              "(jobs started again after their worker was cut off, killed or lost its lease)")  # fmt: skip
        for fault in self.faults:
            ends = [observer.final_at[t] - fault.at for t in fault.tasks if t in observer.final_at]
            worst = f"{max(ends):.1f} s" if ends else "n/a"
            print(f"recovery         {fault.name:24} {worst:>8}  (fault -> final state of the last of its "
                  f"{len(fault.tasks)} interrupted job(s){'; ' + fault.note if fault.note else ''})")  # fmt: skip
        failover = self.faults[0]
        window = [e for e in submitted["errors"] if failover.extra["wall"] - 1 <= e[0] <= failover.extra["wall"] + 60]
        by_via = {via: sum(1 for e in window if e[1] == via) for via in ("native", "celery")}
        span = (
            f", from {window[0][0] - failover.extra['wall']:+.1f} s to {window[-1][0] - failover.extra['wall']:+.1f} s"
            if window
            else ""
        )
        print(f"producer errors  {len(window)} during the failover (JobClient {by_via['native']}, send_task "
              f"{by_via['celery']}{span}); {len(submitted['errors'])} in all")  # fmt: skip
        for kind in sorted({e[2].split(":")[0] for e in window}):
            print(f"                 {kind}: {sum(1 for e in window if e[2].split(':')[0] == kind)}")
        slow = [c for c in submitted["slow"] if failover.extra["wall"] - 1 <= c[0] <= failover.extra["wall"] + 60]
        for via, name in (("native", "JobClient"), ("celery", "send_task")):
            calls = [c[2] for c in slow if c[1] == via]
            if calls:
                print(f"                 {name}: {len(calls)} call(s) over 0.5 s during the failover, the longest "
                      f"{max(calls):.1f} s (retried inside the client, no error)")  # fmt: skip
        cut = logs["worker-2"]
        given, left = cut.count("given back to its queue"), cut.count("already requeued by another process")
        refused = cut.count("a final state is already stored")
        print(f"cut-off host     lease lost {cut.count('lease lost')}x; gave back {given}, left {left} already "
              f"requeued; {refused} late write(s) refused by the Lua guard; {self.back}")  # fmt: skip
        print(f"events seen      {observer.seen}")
        return 1 if lost or double else 0


def _die_with_parent() -> None:
    """In a child before exec: SIGTERM when the rig dies, even by SIGKILL (the namespaces go at the next start)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    random.seed()
    sys.exit(main())
