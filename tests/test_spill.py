"""DuckDB's temporary directory (``DUCKDB_TEMP_DIRECTORY``): a preview that spills uses it, and a directory the
worker cannot use is reported as what it is, never as "lost the source database" and never retried."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from rosetta_jobs.client import JobClient

from .conftest import WorkerProcess
from .support.previewdb import PreviewDatabases

#: 500 x 500 rows grouped by 250,000 distinct keys: more than a 16 MB session holds, so DuckDB spills.
SPILL = (
    "SELECT count(*) AS groups FROM (SELECT a.id * 10000 + b.id AS k, md5(a.status || b.id::varchar) AS m, "
    "count(*) AS n FROM orders a, orders b GROUP BY 1, 2) t"
)


def _worker(start_worker: Callable[..., WorkerProcess], databases: PreviewDatabases, spill: Path) -> WorkerProcess:
    return start_worker(DATABASE_URL=databases.config_url, DUCKDB_MEMORY_LIMIT="16MB", DUCKDB_MAX_CONCURRENT="1",
                        DUCKDB_TEMP_DIRECTORY=str(spill), PREVIEW_CACHE_TTL="0", MAX_RETRIES="3")  # fmt: skip


def test_a_preview_that_spills_uses_the_temp_directory(
    start_worker: Callable[..., WorkerProcess], client: JobClient, databases: PreviewDatabases, tmp_path: Path
) -> None:
    # Given a worker whose DuckDB sessions have 16 MB, spilling to a directory of the test's own
    spill = tmp_path / "spill"
    _worker(start_worker, databases, spill)
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.002):
            if spill.is_dir():
                seen.update(path.name for path in spill.rglob("*"))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        # When a preview needs more than that
        task = client.submit_preview(SPILL, databases.source_id, databases.destination_id, "orders")
        result = client.result(task).get(timeout=60)
    finally:
        done.set()
        watcher.join()

    # Then it succeeds, having written its temporary files there (and nowhere in the working directory)
    assert result["error"] is None and result["data"] == [{"groups": 250_000}]
    assert any(name.startswith("duckdb_temp") for name in seen), seen
    assert not (Path.cwd() / ".tmp").exists()


def test_an_unusable_temp_directory_is_reported_as_such_and_not_retried(
    start_worker: Callable[..., WorkerProcess], client: JobClient, databases: PreviewDatabases, tmp_path: Path
) -> None:
    # Given a worker whose temp directory became unusable after it started (a file in its place)
    spill = tmp_path / "spill"
    _worker(start_worker, databases, spill)
    first = client.submit_preview("SELECT count(*) AS n FROM orders", databases.source_id, databases.destination_id,
                                  "orders")  # fmt: skip
    assert client.result(first).get(timeout=60)["data"] == [{"n": 500}]
    shutil.rmtree(spill)
    spill.write_text("not a directory")

    # When a preview needs to spill
    task = client.submit_preview(SPILL, databases.source_id, databases.destination_id, "orders")
    client.result(task).get(timeout=60, propagate=False)

    # Then it fails once, saying which directory and why, not "lost the source database"
    meta = client.store.get(task)
    assert meta is not None and meta["status"] == "FAILURE"
    assert meta["result"]["exc_type"] == "TempStorageError"
    error = meta["result"]["exc_message"][0]
    assert str(spill) in error and "DUCKDB_TEMP_DIRECTORY" in error and "not a directory" in error
    assert "lost the source database" not in error
    assert client.store.deliveries(task) == 1 and meta["retries"] == 0


def test_a_temp_directory_that_cannot_be_created_stops_the_first_preview(
    start_worker: Callable[..., WorkerProcess], client: JobClient, databases: PreviewDatabases, tmp_path: Path
) -> None:
    # Given DUCKDB_TEMP_DIRECTORY under a regular file (as root, a read-only directory would not stop us)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _worker(start_worker, databases, blocker / "spill")

    # When a preview runs, Then it fails with the setting named, not retried
    task = client.submit_preview("SELECT 1 AS one FROM orders", databases.source_id, databases.destination_id, "orders")
    client.result(task).get(timeout=60, propagate=False)
    meta = client.store.get(task)
    assert meta is not None and meta["status"] == "FAILURE" and meta["result"]["exc_type"] == "ConfigError"
    assert f"DUCKDB_TEMP_DIRECTORY {blocker / 'spill'} cannot be created" in meta["result"]["exc_message"][0]
    assert client.store.deliveries(task) == 1
