"""Executor processes, seen from the worker: real child processes running previews of a real PostgreSQL table.

``test_preview_bounds.py`` sends the hostile queries through a whole worker; this module checks the pool's
own promises: sessions reused inside an executor, the memory bound and the watchdog, the stop and the kill
at the deadline, a cancel, a dead executor replaced, no secrets in an executor's environment, and an
executor that never outlives its worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from loguru import logger
from psycopg.conninfo import conninfo_to_dict

from rosetta_jobs.errors import JobCancelled, JobTimedOut, PreviewError
from rosetta_jobs.job import Job
from rosetta_jobs.preview import executor as executor_module
from rosetta_jobs.preview.executor import GRACE, ExecutorConfig, ExecutorPool

MB = 10**6
CONFIG = ExecutorConfig(
    memory_limit=128 * MB,
    threads=1,
    timezone="UTC",
    headroom=384 * MB,
    max_result_bytes=1 * MB,
    max_cell_bytes=64 * 1024,
)
HEAVY = "SELECT count(*) AS n FROM orders a, orders b, orders c, orders d"


@pytest.fixture(scope="module")
def source(pg_database: str) -> dict[str, Any]:
    """The task's ``source`` part for a database with ``public.orders`` (500 rows) and ``hidden.payroll``."""
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.orders (id int, amount numeric)")
        conn.execute("INSERT INTO public.orders SELECT g, g * 1.5 FROM generate_series(1, 500) g")
        conn.execute(
            "CREATE SCHEMA hidden; CREATE TABLE hidden.payroll (id int); INSERT INTO hidden.payroll VALUES (7)"
        )
    parts = conninfo_to_dict(pg_database)
    return {"id": 1, "name": "exec src", "host": str(parts["host"]), "port": int(parts.get("port") or 5432),
            "database": str(parts["dbname"]), "user": str(parts["user"]), "password": ""}  # fmt: skip


@pytest.fixture
def make_pool() -> Iterator[Any]:
    """``make_pool(**config)``: a pool of executors; every pool made is closed (its processes killed) after."""
    pools: list[ExecutorPool] = []

    def make(slots: int = 1, **config: Any) -> ExecutorPool:
        pools.append(ExecutorPool(config=ExecutorConfig(**{**CONFIG.__dict__, **config}), slots=slots))
        return pools[-1]

    yield make
    for pool in pools:
        pool.close()


def task(source: dict[str, Any], sql: str | None, table: str = "orders") -> dict[str, Any]:
    request = {"sql": sql, "source_id": 1, "destination_id": 2, "table_name": table, "filter_sql": None,
               "include_profiling": False, "row_limit": 500, "max_sql_bytes": 100_000}  # fmt: skip
    return {"source": source, "request": request}


def run(pool: ExecutorPool, source: dict[str, Any], sql: str | None, *, seconds: float = 10, **kwargs: Any) -> Any:
    return pool.run(task(source, sql, **kwargs), fingerprint="src", deadline=time.monotonic() + seconds)


def test_an_executor_keeps_its_session_for_the_next_preview(make_pool: Any, source: dict[str, Any]) -> None:
    # Given a pool of one executor
    pool = make_pool()
    # When two previews of the same source run one after the other
    started = time.monotonic()
    first = run(pool, source, "SELECT sum(amount) AS s FROM orders")
    cold = time.monotonic() - started
    started = time.monotonic()
    second = run(pool, source, "SELECT count(*) AS n FROM orders")
    warm = time.monotonic() - started
    # Then both ran in the same process, the second on the session the first attached
    assert first.result["data"] == [{"s": 187875.0}] and second.result["data"] == [{"n": 500}]
    assert len(pool.pids()) == 1
    assert warm < cold and warm < 0.2, (cold, warm)
    assert first.encoded.startswith(b"{")


def test_an_executor_loads_only_what_a_preview_needs(make_pool: Any, source: dict[str, Any]) -> None:
    # Given an executor that ran a preview
    pool = make_pool()
    run(pool, source, "SELECT id, amount FROM orders ORDER BY id LIMIT 3")
    [pid] = pool.pids()
    # When the libraries it mapped are read
    maps = Path(f"/proc/{pid}/maps").read_text()
    # Then DuckDB and Arrow are there, and not pydantic-core (~13 MB; the frames are read with json), nor psycopg
    assert "_duckdb" in maps and "libarrow" in maps
    assert "_pydantic_core" not in maps and "psycopg" not in maps


def test_an_executor_runs_under_its_memory_bound_without_secrets(
    make_pool: Any, source: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker whose environment holds the credential key and database URLs
    monkeypatch.setenv("CREDENTIAL_ENCRYPTION_KEY", "the-key-of-every-source")
    monkeypatch.setenv("DATABASE_URL", "postgresql://worker:pw@db/rosetta")
    pool = make_pool()
    run(pool, source, None)
    [pid] = pool.pids()
    # When its executor's limits and environment are read
    limits = Path(f"/proc/{pid}/limits").read_text()
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    # Then its data segment is bounded by DUCKDB_MEMORY_LIMIT + headroom, and it has none of the secrets
    data = next(line for line in limits.splitlines() if line.startswith("Max data size"))
    assert data.split()[3] == str(CONFIG.memory_bound)
    assert not [v for v in environ if v.startswith((b"CREDENTIAL_ENCRYPTION_KEY=", b"DATABASE_URL="))]
    assert b"ARROW_DEFAULT_MEMORY_POOL=system" in environ


def test_an_allocation_past_the_bound_is_a_memory_error_and_a_fresh_executor(
    make_pool: Any, source: dict[str, Any]
) -> None:
    # Given a warm executor
    pool = make_pool()
    run(pool, source, None)
    [before] = pool.pids()
    # When a preview builds a list far larger than the bound
    with pytest.raises(PreviewError) as info:
        run(pool, source, "SELECT len(list_sort(range(200000000))) AS n")
    # Then it is a preview error naming the limit, and the next preview runs in a new executor
    assert "used more than 128 MB of memory" in str(info.value)
    assert run(pool, source, "SELECT 1 AS one FROM orders LIMIT 1").result["data"] == [{"one": 1}]
    assert pool.pids() and before not in pool.pids()


def test_the_watchdog_kills_what_the_rlimit_lets_through(
    make_pool: Any, source: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a watchdog bound far below the rlimit (as if memory grew where RLIMIT_DATA does not look)
    monkeypatch.setattr(executor_module, "WATCHDOG_SLACK", 200 * MB - CONFIG.memory_bound)
    pool = make_pool()
    run(pool, source, None)
    kills: list[str] = []
    sink = logger.add(lambda message: kills.append(str(message)), filter=lambda r: "killed" in r["message"])
    # When a preview's RSS grows past it
    started = time.monotonic()
    try:
        with pytest.raises(PreviewError) as info:
            run(pool, source, "SELECT max(len(x)) AS n FROM (SELECT range(10000000) AS x FROM orders WHERE id <= 3)")
    finally:
        logger.remove(sink)
    # Then the watchdog killed the executor within a few samples, and the answer is the memory error
    assert "used more than" in str(info.value)
    assert kills and "bound 200 MB" in kills[0], kills
    assert time.monotonic() - started < 5


def test_the_deadline_stops_a_query_that_ignores_interrupts(make_pool: Any, source: dict[str, Any]) -> None:
    # Given a lambda over a huge list, which DuckDB does not interrupt inside
    pool = make_pool()
    run(pool, source, None)
    [before] = pool.pids()
    started = time.monotonic()
    # When it runs with a one-second deadline
    with pytest.raises(JobTimedOut):
        run(pool, source, "SELECT list_reduce(range(30000000), (a, b) -> a + b) AS s", seconds=1)
    # Then the executor is killed GRACE after the deadline, and replaced
    assert time.monotonic() - started < 1 + GRACE + 0.5
    assert run(pool, source, None).result["error"] is None
    assert before not in pool.pids()


def test_an_interruptible_query_keeps_its_executor(make_pool: Any, source: dict[str, Any]) -> None:
    # Given a cross join DuckDB interrupts between chunks
    pool = make_pool()
    run(pool, source, None)
    [before] = pool.pids()
    # When it reaches its deadline
    with pytest.raises(JobTimedOut):
        run(pool, source, HEAVY, seconds=1)
    # Then the interrupt was enough: the same executor, with its session, serves the next preview
    assert run(pool, source, None).result["error"] is None
    assert pool.pids() == [before]


def test_a_cancel_reaches_the_executor(make_pool: Any, source: dict[str, Any]) -> None:
    # Given a long preview running under a job
    pool = make_pool()
    run(pool, source, None)
    job = Job(id="cancel-me", actor="worker.preview.execute", queue="preview", time_limit=60,
              deadline=time.monotonic() + 60)  # fmt: skip
    outcome: list[BaseException] = []

    def preview() -> None:
        try:
            pool.run(task(source, HEAVY), fingerprint="src", deadline=time.monotonic() + 60, job=job)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=preview)
    thread.start()
    time.sleep(0.5)
    # When the job is cancelled
    started = time.monotonic()
    job.stop(JobCancelled)
    thread.join(5)
    # Then the preview ends at once with the cancel
    assert outcome and isinstance(outcome[0], JobCancelled)
    assert time.monotonic() - started < GRACE + 0.5


def test_sent_runs_while_the_executor_has_the_preview_and_a_stop_there_still_ends_it(
    make_pool: Any, source: dict[str, Any]
) -> None:
    # Given a pool whose executor is started, and a long preview under a job
    pool = make_pool()
    run(pool, source, None)
    [pid] = pool.pids()
    job = Job(id="stop-at-sent", actor="worker.preview.execute", queue="preview", time_limit=60,
              deadline=time.monotonic() + 60)  # fmt: skip
    seen: list[bool] = []

    def sent() -> None:  # as a PROGRESS write does when the job was cancelled meanwhile
        seen.append(pool.busy() == 1)
        job.stop(JobCancelled)
        job.check()

    # When the job is cancelled while `sent` runs, and `sent` raises the cancel
    with pytest.raises(JobCancelled):
        pool.run(task(source, HEAVY), fingerprint="src", deadline=time.monotonic() + 60, job=job, sent=sent)
    # Then `sent` ran once, with the preview in the executor; the cancel reached the query; the executor is kept
    assert seen == [True]
    assert pool.pids() == [pid]
    assert run(pool, source, None).result["error"] is None


def test_a_dead_idle_executor_is_replaced(make_pool: Any, source: dict[str, Any]) -> None:
    # Given an idle executor that died (killed from outside)
    pool = make_pool()
    run(pool, source, None)
    [pid] = pool.pids()
    os.kill(pid, 9)
    time.sleep(0.2)
    # When the next preview comes
    result = run(pool, source, None)
    # Then a new executor runs it
    assert result.result["error"] is None
    assert pid not in pool.pids()


@pytest.mark.parametrize(("schemas", "allowed"), [((), True), (("public",), False)])
def test_preview_schemas_narrows_the_previewable_schemas(
    make_pool: Any, source: dict[str, Any], schemas: tuple[str, ...], allowed: bool
) -> None:
    # Given PREVIEW_SCHEMAS unset, then set to public
    pool = make_pool(schemas=schemas)
    # When a table of the schema hidden is previewed
    try:
        answer = run(pool, source, None, table="hidden.payroll").result["data"]
    except PreviewError as exc:
        answer = str(exc)
    # Then any non-system schema is previewable by default, and only the listed ones when set
    assert (answer == [{"id": 7}]) is allowed, answer


def test_an_executor_dies_with_its_worker(tmp_path: Path, source: dict[str, Any]) -> None:
    # Given a process that started an executor
    script = tmp_path / "parent.py"
    script.write_text(
        "import time\n"
        "from rosetta_jobs.preview.executor import ExecutorConfig, ExecutorPool\n"
        f"pool = ExecutorPool(config=ExecutorConfig(**{CONFIG.__dict__!r}), slots=1)\n"
        "while not pool.pids(): time.sleep(0.05)\n"
        "print(pool.pids()[0], flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert Path(f"/proc/{child}").exists()
    # When the parent is SIGKILLed (as the OOM killer or a crash would)
    parent.kill()
    parent.wait(5)
    # Then the executor goes too
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and _state(child) != "Z" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or _state(child) == "Z"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
