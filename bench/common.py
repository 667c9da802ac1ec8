"""What the benchmarks share: a seeded source and config database, worker processes, RSS sampling.

Benchmarks claim Redis databases of the local server as a test run does (``tests/support/redis_slots.py``:
two slots, so a test run beside them keeps its own; flushed before and after) and PostgreSQL
databases named ``rosetta_bench_*`` (the source table is kept between runs: seeding 200,000 rows
takes a while; ``--reseed`` rebuilds it).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import redis

from rosetta_jobs.catalog import config_schema_sql
from rosetta_jobs.crypto import Cipher

ROOT = Path(__file__).resolve().parent.parent
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
PG_ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SOURCE_DB, CONFIG_DB = "rosetta_bench_source", "rosetta_bench_config"
sys.path.insert(0, str(ROOT / "tests" / "support"))
from redis_slots import claim  # noqa: E402

from tables import EVENTS, KEY  # noqa: E402  (KEY: the benchmarks read it from here)

_host, _port = REDIS.removeprefix("redis://").rsplit(":", 1)
_slots = claim(_host, int(_port), count=2)
BROKER_DB, RESULTS_DB, CACHE_DB, CELERY_BROKER_DB, CELERY_RESULTS_DB = (*_slots[0], *_slots[1][:2])


def url(db: int) -> str:
    return f"{REDIS}/{db}"


def flush() -> None:
    for db in (BROKER_DB, RESULTS_DB, CACHE_DB, CELERY_BROKER_DB, CELERY_RESULTS_DB):
        redis.Redis.from_url(url(db)).flushdb()


def _db_url(name: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def seed(rows: int = 200_000, *, reseed: bool = False) -> tuple[str, str, int, int]:
    """(source URL, config URL, source id, destination id); the source table is reused when it fits."""
    source_url, config_url = _db_url(SOURCE_DB), _db_url(CONFIG_DB)
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (SOURCE_DB,)).fetchone()
        if exists and not reseed:
            with psycopg.connect(source_url) as conn:
                count = conn.execute("SELECT count(*) FROM events").fetchone()
            reseed = count is None or count[0] != rows
        if not exists or reseed:
            print(f"seeding {rows:,} rows into {SOURCE_DB}.events ...", flush=True)
            admin.execute(f'DROP DATABASE IF EXISTS "{SOURCE_DB}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{SOURCE_DB}"')
            with psycopg.connect(source_url, autocommit=True) as conn:
                conn.execute(EVENTS.replace("%s", str(int(rows))))
                conn.execute("ANALYZE events")
        admin.execute(f'DROP DATABASE IF EXISTS "{CONFIG_DB}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{CONFIG_DB}"')
    with psycopg.connect(config_url, autocommit=True) as conn:
        conn.execute(config_schema_sql())
        source = conn.execute(
            "INSERT INTO sources (name, pg_host, pg_port, pg_database, pg_username, pg_password)"
            " VALUES ('bench', '127.0.0.1', 5432, %s, 'postgres', %s) RETURNING id",
            (SOURCE_DB, Cipher(KEY).encrypt("unused-with-trust-auth")),
        ).fetchone()
        destination = conn.execute(
            "INSERT INTO destinations (name, type, config) VALUES ('wh', 'POSTGRES', %s) RETURNING id",
            (json.dumps({"host": "127.0.0.1", "port": 5432, "database": SOURCE_DB, "user": "postgres"}),),
        ).fetchone()
    assert source is not None and destination is not None
    return source_url, config_url, int(source[0]), int(destination[0])


class Process:
    """A worker master started for a benchmark, with its log in bench/out/."""

    def __init__(self, args: list[str], env: dict[str, str], name: str, ready: str, count: int = 1) -> None:
        log_dir = ROOT / "bench" / "out"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = log_dir / f"{name}.log"
        self.handle = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=self.handle,
                                     stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while self.log.read_text(errors="replace").count(ready) < count:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        """The master and all its descendants."""
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            try:
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                pass
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.handle.close()


def dramatiq_worker(
    env: dict[str, str],
    name: str = "worker",
    processes: int | None = None,
    *,
    foreground: bool = False,
    threads: int | None = None,
) -> Process:
    """``dramatiq rosetta_jobs.actors``; with ``foreground``, ``rosetta-jobs worker --foreground`` (no master)."""
    master = ["rosetta_jobs.cli", "worker", "--foreground"] if foreground else ["dramatiq"]
    args = [sys.executable, "-m", *master, "rosetta_jobs.actors"]
    count = processes or os.cpu_count() or 1
    if processes:
        args += ["-p", str(processes)]
    if threads:
        args += ["-t", str(threads)]
    base = {"BROKER_URL": url(BROKER_DB), "RESULT_BACKEND_URL": url(RESULTS_DB), "REDIS_URL": url(CACHE_DB),
            "CREDENTIAL_ENCRYPTION_KEY": KEY, "LOG_LEVEL": "INFO"}  # fmt: skip
    return Process(args, {**base, **env}, name, "Worker process is ready for action", count)


class RssSampler:
    """Peak memory of a process tree from /proc: summed RSS every 50 ms, summed PSS every 0.5 s.

    RSS counts a page in every process that maps it: the DuckDB and Arrow libraries of each executor
    process are counted once per executor. PSS (proportional set size) splits a shared page between the
    processes that share it, so the sum is what the tree really holds. A single process has the same both.

    RSS comes from ``statm`` (~15 us a read); PSS needs ``smaps_rollup``, which walks the process's page
    tables (~1 ms a read for an executor): read at 20 Hz for a tree of seven processes, it took ~6 % of this
    2-CPU machine from the runner it measured, and more from the one with more processes. The tree itself
    is walked every 0.5 s too (a ``children`` file per thread): its processes start and stop rarely.
    """

    #: Seconds between two RSS samples, and RSS samples per PSS sample.
    INTERVAL, PSS_EVERY = 0.05, 10

    def __init__(self, process: Process) -> None:
        self.process = process
        self.peak_total = 0
        self.peak_single = 0
        self.peak_pss = 0
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _rss(self, pid: int) -> int:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * self._page

    @staticmethod
    def _pss(pid: int) -> int:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        samples = 0
        pids: list[int] = []
        while not self._stop.wait(self.INTERVAL):
            if samples % self.PSS_EVERY == 0:
                pids = self.process.pids()
            sizes = []
            for pid in pids:
                try:
                    sizes.append(self._rss(pid))
                except (OSError, ValueError, IndexError):
                    continue
            if sizes:
                self.peak_total = max(self.peak_total, sum(sizes))
                self.peak_single = max(self.peak_single, max(sizes))
            samples += 1
            if samples % self.PSS_EVERY == 1:  # the first sample too: a phase shorter than 0.5 s gets one
                total = 0
                for pid in pids:
                    try:
                        total += self._pss(pid)
                    except (OSError, ValueError):
                        continue
                self.peak_pss = max(self.peak_pss, total)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    return (f"p50 {percentile(values, 50) * 1000:7.1f} ms   p99 {percentile(values, 99) * 1000:7.1f} ms   "
            f"mean {statistics.fmean(values) * 1000:7.1f} ms")  # fmt: skip
