"""A preview cannot be turned against its worker (issue 12, findings 1 and 4): through a real worker.

Every query of the hostile-user report, and one of each class it stands for (list builders, string
builders, lambdas over large ranges, result size, huge SQL), is sent to one real ``dramatiq`` worker
with small limits. Each must end with an error result within the time limit + 1 s; meanwhile the RSS
of the worker's whole process tree (master, worker process, executors), sampled from /proc every
50 ms, must stay under ``DUCKDB_MEMORY_LIMIT`` x slots + the overhead stated below; and a normal
preview sent right after each one must succeed on the same worker process, which never restarts.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rosetta_jobs.client import JobClient
from rosetta_jobs.preview.executor import WATCHDOG_SLACK

from .conftest import (
    RESULTS_DB,
    WorkerProcess,
    launch_worker,
    redis_url,
)
from .support.previewdb import PreviewDatabases

MB = 10**6
TIME_LIMIT = 3
MEMORY_LIMIT = 256 * MB
HEADROOM = 256 * MB
SLOTS = 2
MAX_RESULT = 1 * MB
#: Stated overhead of the tree beyond DuckDB's memory: the master and the worker process (Python,
#: Dramatiq, psycopg, ~250 MB together, measured), and per executor its headroom and the watchdog's slack.
OVERHEAD = 400 * MB + SLOTS * (HEADROOM + WATCHDOG_SLACK)
TREE_BOUND = MEMORY_LIMIT * SLOTS + OVERHEAD

BOMBS = [
    # finding 1, as reported
    pytest.param("SELECT sum(len(range(id * 100000))) AS n FROM orders", id="report-range-per-row"),
    pytest.param("SELECT len(list_sort(range(100000000))) AS l", id="report-list-sort"),
    pytest.param("SELECT length(repeat('x', 2000000000)) AS l", id="report-repeat"),
    pytest.param("SELECT list_reduce(range(30000000), (a, b) -> a + b) AS s", id="report-list-reduce"),
    pytest.param("SELECT repeat('ab', 500000) AS s FROM orders", id="report-result-size"),
    # their classes
    pytest.param("SELECT len([x * 2 FOR x IN range(200000000)]) AS n", id="list-comprehension"),
    pytest.param("SELECT len(list_concat(range(60000000), range(60000000))) AS n", id="list-concat"),
    pytest.param("SELECT length(string_agg(repeat('x', 1000000), '')) AS n FROM orders", id="string-agg"),
    pytest.param("SELECT length(lpad('x', 1500000000, 'y')) AS n", id="lpad"),
    pytest.param("SELECT len(list_filter(range(300000000), x -> x % 2 = 0)) AS n", id="lambda-filter"),
    pytest.param(
        "SELECT list_reduce(list_transform(range(20000000), x -> x + 1), (a, b) -> a + b) AS s",
        id="lambda-transform-reduce",
    ),
    pytest.param("SELECT repeat('x', 60000) AS a, repeat('y', 60000) AS b FROM orders", id="result-many-cells"),
    pytest.param("SELECT range(50000) AS l FROM orders", id="result-big-lists"),
    pytest.param("SELECT count(*) AS n FROM orders a, orders b, orders c, orders d", id="cross-join"),
    # finding 4: a statement too large to read
    pytest.param("SELECT " + "1+" * 650_000 + "1 AS x FROM orders", id="sql-1.3MB"),
]
#: Just under the 100 KB cap, and ~0.4 s to read, check and rewrite (3,000 SELECTs).
COSTLY_SQL = " UNION ALL ".join(["SELECT id, amount FROM orders"] * 3_000)[:99_000].rsplit(" UNION", 1)[0]


@pytest.fixture(scope="module")
def worker(databases: PreviewDatabases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker process with two executor slots, small limits, no cache."""
    log = tmp_path_factory.mktemp("bounds-worker") / "worker.log"
    process = launch_worker(
        log,
        processes=1,
        threads=2,
        DATABASE_URL=databases.config_url,
        PREVIEW_CACHE_TTL="0",
        PREVIEW_TIME_LIMIT=str(TIME_LIMIT),
        DUCKDB_MEMORY_LIMIT="256MB",
        DUCKDB_MAX_CONCURRENT=str(SLOTS),
        DUCKDB_THREADS="2",
        PREVIEW_MEMORY_HEADROOM="256MB",
        PREVIEW_MAX_RESULT_BYTES="1MB",
        PREVIEW_MAX_CELL_BYTES="64KB",
    )
    yield process
    process.stop()


class TreeSampler:
    """The RSS of a process and all its descendants, from /proc, every 50 ms; the peak is kept."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, tree_rss(self.root))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def tree_rss(root: int) -> int:
    total = 0
    for pid in descendants(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return total


def worker_processes(worker: WorkerProcess) -> set[int]:
    """The dramatiq worker processes (the master's children), not their executors."""
    return {pid for pid in descendants(worker.proc.pid) if pid != worker.proc.pid and _parent(pid) == worker.proc.pid}


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def preview(client: JobClient, databases: PreviewDatabases, sql: str | None, **kwargs: object) -> tuple[str, dict]:
    task_id = client.submit_preview(sql, databases.source_id, databases.destination_id, "orders", **kwargs)  # type: ignore[arg-type]
    result = client.result(task_id).get(timeout=60)
    assert isinstance(result, dict)
    return task_id, result


@pytest.mark.parametrize("sql", BOMBS)
def test_a_bomb_ends_in_an_error_and_the_worker_goes_on(
    worker: WorkerProcess, client: JobClient, databases: PreviewDatabases, sql: str
) -> None:
    # Given the worker, warm, and its process tree watched
    assert preview(client, databases, "SELECT 1 AS one FROM orders")[1]["error"] is None
    before = worker_processes(worker)
    sampler = TreeSampler(worker.proc.pid)
    # When the hostile query is previewed
    started = time.monotonic()
    task_id, result = preview(client, databases, sql)
    elapsed = time.monotonic() - started
    # Then it ends with an error result, within the time limit + 1 s, and was never redelivered
    assert result["error"], f"{sql[:80]!r} returned rows"
    assert result["data"] == [] and result["columns"] == []
    assert elapsed < TIME_LIMIT + 1, f"{elapsed:.2f} s: {result['error']}"
    assert client.store.deliveries(task_id) == 1
    # And a normal preview right after succeeds, on the same worker process
    _, normal = preview(client, databases, "SELECT id, amount FROM orders WHERE id <= 3 ORDER BY id")
    peak = sampler.stop()
    assert normal["error"] is None and len(normal["data"]) == 3
    assert worker_processes(worker) == before
    assert worker.output().count("Worker process is ready for action") == 1
    # And the whole tree stayed under DUCKDB_MEMORY_LIMIT x slots + the stated overhead
    assert peak < TREE_BOUND, f"tree peaked at {peak / MB:.0f} MB (bound {TREE_BOUND / MB:.0f} MB)"


def test_two_bombs_at_once_leave_the_tree_bounded(
    worker: WorkerProcess, client: JobClient, databases: PreviewDatabases
) -> None:
    # Given both executor slots taken by memory bombs at the same time
    sampler = TreeSampler(worker.proc.pid)
    started = time.monotonic()
    tasks = [
        client.submit_preview(sql, databases.source_id, databases.destination_id, "orders")
        for sql in ("SELECT len([x FOR x IN range(300000000)]) AS n", "SELECT length(repeat('x', 1900000000)) AS l")
    ]
    # When they end
    results = [client.result(task_id).get(timeout=60) for task_id in tasks]
    peak = sampler.stop()
    # Then both are errors within the limit, and the tree stayed under the bound with both slots full
    assert all(r["error"] for r in results), results
    assert time.monotonic() - started < TIME_LIMIT + 1
    assert peak < TREE_BOUND, f"tree peaked at {peak / MB:.0f} MB (bound {TREE_BOUND / MB:.0f} MB)"


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT len(list_sort(range(100000000))) AS l", "used more than 256 MB of memory"),
        ("SELECT list_reduce(range(30000000), (a, b) -> a + b) AS s", f"Preview timed out after {TIME_LIMIT} s"),
        ("SELECT repeat('ab', 50000) AS s FROM orders WHERE id <= 3", "PREVIEW_MAX_CELL_BYTES"),
        ("SELECT [repeat('ab', 50000)] AS l FROM orders WHERE id <= 3", "PREVIEW_MAX_CELL_BYTES"),
        ("SELECT repeat('x', 60000) AS a, repeat('y', 60000) AS b FROM orders", "PREVIEW_MAX_RESULT_BYTES"),
        ("SELECT " + "1+" * 650_000 + "1 AS x FROM orders", "PREVIEW_MAX_SQL_BYTES"),
    ],
    ids=["memory", "time", "cell", "nested-cell", "result", "sql-size"],
)
def test_each_bound_names_its_limit(
    worker: WorkerProcess, client: JobClient, databases: PreviewDatabases, sql: str, message: str
) -> None:
    # Given a query over one bound; When it is previewed
    _, result = preview(client, databases, sql)
    # Then the error says which bound, in words an operator can act on
    assert message in result["error"], result["error"]


def test_nothing_large_reaches_redis(worker: WorkerProcess, client: JobClient, databases: PreviewDatabases) -> None:
    # Given previews whose results would be hundreds of MB
    for sql in ("SELECT repeat('ab', 500000) AS s FROM orders", "SELECT range(50000) AS l FROM orders"):
        preview(client, databases, sql)
    # When the result backend is inspected
    results = redis.Redis.from_url(redis_url(RESULTS_DB))
    sizes = [int(results.memory_usage(key) or 0) for key in results.scan_iter(count=1000)]
    # Then no key holds more than a small error state
    assert max(sizes) < 64 * 1024, max(sizes)


def test_building_the_statement_is_inside_the_time_limit(
    worker: WorkerProcess, client: JobClient, databases: PreviewDatabases
) -> None:
    # Given SQL just under the size cap that takes longer to read and check than its time limit
    started = time.monotonic()
    # When it is previewed with a 0.2 s limit
    _, result = preview(client, databases, COSTLY_SQL, time_limit=0.2)
    # Then the limit holds while the statement is still being built (in the executor, which is stopped)
    assert result["error"] == "Preview timed out after 0.2 s"
    assert time.monotonic() - started < 0.2 + 1
    assert preview(client, databases, COSTLY_SQL)[1]["error"] is None  # with the default limit it runs


def test_a_large_filter_is_refused_before_parsing(
    worker: WorkerProcess, client: JobClient, databases: PreviewDatabases
) -> None:
    # Given a 5.9 MB legacy filter
    filter_sql = "id > 0 AND " * 540_000 + "TRUE"
    started = time.monotonic()
    # When it is previewed
    _, result = preview(client, databases, None, filter_sql=filter_sql)
    # Then it is refused at once, naming the cap
    assert "filter_sql is" in result["error"] and "PREVIEW_MAX_SQL_BYTES" in result["error"]
    assert time.monotonic() - started < 2
    assert json.dumps(result)
