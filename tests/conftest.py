"""Shared fixtures. Every test talks to the real Redis and PostgreSQL of this machine.

Redis: a test run claims three databases of its own (broker, task state, preview cache) through
``support/redis_slots.py``, so that two runs on one machine never flush each other's data; they are
flushed before and after each test that asks for them. PostgreSQL: each test
module that needs a database gets its own, dropped afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import psycopg
import pytest
import redis

if TYPE_CHECKING:
    from .support.flowdb import FlowDatabases

from .support.previewdb import PreviewDatabases, seed
from .support.redis_slots import SLOTS, claim

ROOT = Path(__file__).resolve().parent.parent
REDIS_HOST = os.environ.get("TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("TEST_REDIS_PORT", "6379"))
PG_ADMIN_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

try:
    BROKER_DB, RESULTS_DB, CACHE_DB = claim(REDIS_HOST, REDIS_PORT)[0]
except redis.RedisError:  # pytest_sessionstart says how to start Redis
    BROKER_DB, RESULTS_DB, CACHE_DB = SLOTS[-1]
#: The shared preview-SQL corpus (``../shared`` beside the checkout), or the copy in tests/data.
CORPUS = next(
    path
    for path in (
        ROOT.parent / "shared" / "preview-sql" / "corpus.jsonl",
        ROOT / "tests" / "data" / "preview-corpus.jsonl",
    )
    if path.is_file()
)
#: Base64 of bytes 00..1f: the key of the spec's first encryption vector.
TEST_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

HOW_TO_START = {
    "redis": "start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no",
    "postgres": "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
}


def wait_until(check: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> float:
    """Poll ``check`` until it is true; return the seconds it took, or fail naming ``what``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what}: not met within {timeout} s")


def redis_url(db: int) -> str:
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


def pytest_sessionstart(session: pytest.Session) -> None:
    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.exit(f"Redis at {REDIS_HOST}:{REDIS_PORT} is not reachable ({exc}); {HOW_TO_START['redis']}", 3)
    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.exit(f"PostgreSQL at {PG_ADMIN_URL} is not reachable ({exc}); {HOW_TO_START['postgres']}", 3)


def flush_redis_dbs() -> None:
    """Empty the three test databases."""
    for db in (BROKER_DB, RESULTS_DB, CACHE_DB):
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db).flushdb()


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB session like the preview's: UTC, with an ENUM type to select."""
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    connection.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
    yield connection
    connection.close()


@pytest.fixture
def redis_dbs() -> Iterator[None]:
    """The three test databases, empty before the test and emptied after it."""
    flush_redis_dbs()
    yield
    flush_redis_dbs()


@pytest.fixture
def results_redis(redis_dbs: None) -> redis.Redis:
    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=RESULTS_DB)


@pytest.fixture
def broker_redis(redis_dbs: None) -> redis.Redis:
    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=BROKER_DB)


def create_database(prefix: str = "rj_test") -> str:
    """Create an empty PostgreSQL database and return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """An empty database of this test module's own, dropped at the end of the module."""
    url = create_database()
    yield url
    drop_database(url)


@pytest.fixture(scope="module")
def databases() -> Iterator[PreviewDatabases]:
    """A config database with an encrypted source row, and its seeded source database, for one test module."""
    config_url, source_url = create_database("rj_cfg"), create_database("rj_src")
    yield seed(config_url, source_url, TEST_KEY)
    drop_database(config_url)
    drop_database(source_url)


@pytest.fixture(scope="module")
def flow_dbs() -> Iterator[FlowDatabases]:
    """The flow engine's source, destination and config databases, for one test module."""
    from .support.flowdb import create_flow_databases  # it builds on this module's helpers

    databases = create_flow_databases()
    yield databases
    databases.drop()


@pytest.fixture(scope="module")
def flow_worker(flow_dbs: FlowDatabases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker with two small executors, for one flow test module."""
    log = tmp_path_factory.mktemp("flows") / "worker.log"
    process = launch_worker(log, threads=2, DATABASE_URL=flow_dbs.config_url, DUCKDB_MAX_CONCURRENT="2",
                            DUCKDB_MEMORY_LIMIT="256MB", PREVIEW_MEMORY_HEADROOM="256MB")  # fmt: skip
    yield process
    process.stop()


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "BROKER_", "RESULT_"))}
    env.update(
        BROKER_URL=redis_url(BROKER_DB),
        RESULT_BACKEND_URL=redis_url(RESULTS_DB),
        REDIS_URL=redis_url(CACHE_DB),
        CREDENTIAL_ENCRYPTION_KEY=TEST_KEY,
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class WorkerProcess:
    """A real ``dramatiq rosetta_jobs.actors`` master with its worker processes."""

    proc: subprocess.Popen[bytes]
    log: Path
    args: list[str] = field(default_factory=list)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, processes: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.output().count("Worker process is ready for action") >= processes:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready after {timeout} s:\n{self.output()}")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def launch_worker(
    log: Path,
    *,
    processes: int = 1,
    threads: int = 2,
    modules: tuple[str, ...] = ("testjobs",),
    wait: bool = True,
    supervised: bool = False,
    foreground: bool = False,
    queues: tuple[str, ...] = (),
    **env: str,
) -> WorkerProcess:
    """Start ``dramatiq rosetta_jobs.actors`` (plus the test actors) as its own process group.

    ``supervised``: under ``rosetta-jobs worker`` (the image's command), which replaces a process that dies;
    ``foreground``: ``rosetta-jobs worker --foreground``, one worker process and no master.
    """
    master = ["rosetta_jobs.cli", "worker"] if supervised or foreground else ["dramatiq"]
    args = [
        sys.executable, "-m", *master, "rosetta_jobs.actors", *modules,
        "-p", str(processes), "-t", str(threads), "--worker-shutdown-timeout", "10000",
        *(["-Q", *queues] if queues else []),
        "--path", str(ROOT / "tests" / "support"), *(["--foreground"] if foreground else []),
    ]  # fmt: skip
    handle = open(log, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(args, cwd=ROOT, env=worker_env(**env), stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    worker = WorkerProcess(proc, log, args)
    if wait:
        worker.wait_ready(processes)
    return worker


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker masters; each is stopped (SIGTERM, then SIGKILL) after the test."""
    started: list[WorkerProcess] = []

    def start(**kwargs: Any) -> WorkerProcess:
        worker = launch_worker(tmp_path / f"worker-{len(started)}.log", **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def client(redis_dbs: None):  # type: ignore[no-untyped-def]
    from rosetta_jobs.client import JobClient

    return JobClient(broker_url=redis_url(BROKER_DB), result_backend_url=redis_url(RESULTS_DB))


@pytest.fixture
def celery_app(redis_dbs: None):  # type: ignore[no-untyped-def]
    """The real ``celery`` package, configured the way the backend reads results."""
    from celery import Celery

    app = Celery("backend-under-test", backend=redis_url(RESULTS_DB), broker=redis_url(BROKER_DB))
    app.conf.result_extended = True
    yield app
    app.close()
