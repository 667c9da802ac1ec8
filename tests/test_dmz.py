"""DMZ workers: a worker with no database URL and no encryption key runs previews through the ops service."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rosetta_jobs.remote_catalog import MAX_CACHE_SECONDS, RemoteCatalog

from .conftest import TEST_KEY, WorkerProcess, flush_redis_dbs, worker_env
from .support.ops_service import ADMIN_KEY, API_KEY, ServiceProcess, start_service
from .support.previewdb import PreviewDatabases

WORKER_KEY = "test-worker-key-5555555555"
AUTH = {"x-api-key": API_KEY}
#: The source's password as the config database holds it (encrypted there); it must reach no log.
PASSWORD = "unused-with-trust-auth"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, databases: PreviewDatabases) -> Iterator[ServiceProcess]:
    """The trusted zone: the ops service with the config database, the key and WORKER_API_KEY."""
    flush_redis_dbs()
    env = worker_env(API_KEY=API_KEY, ADMIN_API_KEY=ADMIN_KEY, WORKER_API_KEY=WORKER_KEY,
                     DATABASE_URL=databases.config_url, CREDENTIAL_ENCRYPTION_KEY=TEST_KEY)  # fmt: skip
    svc = start_service(env, tmp_path_factory.mktemp("dmz") / "service.log")
    yield svc
    svc.stop()
    flush_redis_dbs()


@pytest.fixture
def dmz_worker(tmp_path: Path, service: ServiceProcess) -> Iterator[Callable[[str], WorkerProcess]]:
    """Start a worker whose environment holds no DATABASE_URL and no CREDENTIAL_ENCRYPTION_KEY (run outside the
    checkout, so no .env file can give it one); stopped after the test."""
    started: list[WorkerProcess] = []

    def start(key: str) -> WorkerProcess:
        env = {k: v for k, v in worker_env(WORKER_API_URL=service.url, WORKER_API_KEY=key).items()
               if k not in ("DATABASE_URL", "CREDENTIAL_ENCRYPTION_KEY")}  # fmt: skip
        log = tmp_path / f"dmz-worker-{len(started)}.log"
        args = [sys.executable, "-m", "dramatiq", "rosetta_jobs.actors", "-p", "1", "-t", "2", "-Q", "preview",
                "--worker-shutdown-timeout", "5000"]  # fmt: skip
        with open(log, "wb") as handle:
            proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        worker = WorkerProcess(proc, log, args)
        started.append(worker)
        worker.wait_ready(1)
        return worker

    yield start
    for worker in started:
        worker.stop()


def _preview(
    service: ServiceProcess,
    databases: PreviewDatabases,
    sql: str = "SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY status",
) -> str:
    body = {
        "sql": sql,
        "source_id": databases.source_id,
        "destination_id": databases.destination_id,
        "table_name": "orders",
    }
    response = httpx.post(service.url + "/tasks/preview", json=body, headers=AUTH, timeout=10)  # fmt: skip
    assert response.status_code == 202, response.text
    return str(response.json()["task_id"])


def _final(service: ServiceProcess, task_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = httpx.get(f"{service.url}/tasks/{task_id}/result", headers=AUTH, timeout=5).json()
        if body["ready"]:
            return body
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not finish")


def _environ(pid: int) -> set[str]:
    return {
        entry.split(b"=", 1)[0].decode() for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if entry
    }


def test_a_dmz_worker_runs_a_preview_through_the_ops_service(
    service: ServiceProcess, databases: PreviewDatabases, dmz_worker: Callable[[str], WorkerProcess]
) -> None:
    # Given a worker that holds no database URL and no encryption key, only the ops service's URL and key
    worker = dmz_worker(WORKER_KEY)
    assert not {"DATABASE_URL", "CREDENTIAL_ENCRYPTION_KEY"} & _environ(worker.proc.pid)
    assert not (Path(worker.log).parent / ".env").exists()

    # When a preview is submitted over HTTP
    result = _final(service, _preview(service, databases))

    # Then it succeeds with the source's rows, and the password reached no log
    assert result["successful"], result
    assert result["result"]["data"] == [{"status": "NEW", "n": 250}, {"status": "PAID", "n": 250}]
    assert PASSWORD not in worker.output() and PASSWORD not in service.output()


def test_a_wrong_worker_key_fails_the_job_with_a_clear_error(
    service: ServiceProcess, databases: PreviewDatabases, dmz_worker: Callable[[str], WorkerProcess]
) -> None:
    # Given a DMZ worker with a wrong key
    dmz_worker("not-the-worker-key")

    # When a preview is submitted (one no cache holds: a cached answer needs no config)
    result = _final(service, _preview(service, databases, sql="SELECT count(*) AS n FROM orders"))

    # Then the job fails saying the worker's key was refused, without a stack trace in its error
    assert result["state"] == "FAILURE", result
    assert "refused this worker's API key" in result["error"] and "WORKER_API_KEY" in result["error"]
    assert "Traceback" not in result["error"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        (AUTH, 401),
        ({"x-admin-key": ADMIN_KEY}, 401),
        ({"x-worker-key": API_KEY}, 403),
        ({"x-worker-key": ADMIN_KEY}, 403),
        ({"x-worker-key": "wrong"}, 403),
    ],
    ids=["none", "task-key", "admin-key", "task-key-as-worker-key", "admin-key-as-worker-key", "wrong"],
)
def test_the_config_endpoint_accepts_only_the_worker_key(
    service: ServiceProcess, databases: PreviewDatabases, headers: dict[str, str], status: int
) -> None:
    # Given the service's config endpoint; When it is called with anything but the worker key
    response = httpx.get(f"{service.url}/worker/sources/{databases.source_id}", headers=headers, timeout=5)
    # Then it is refused, and nothing of the config is in the answer
    assert response.status_code == status, response.text
    assert PASSWORD not in response.text


def test_the_worker_key_reads_one_source_and_a_client_keeps_it_a_minute_at_most(
    service: ServiceProcess, databases: PreviewDatabases
) -> None:
    # Given the worker key
    headers = {"x-worker-key": WORKER_KEY}
    # When a source, an unknown source and a destination are read
    found = httpx.get(f"{service.url}/worker/sources/{databases.source_id}", headers=headers, timeout=5)
    missing = httpx.get(f"{service.url}/worker/sources/987654", headers=headers, timeout=5)
    catalog = RemoteCatalog(service.url, api_key=WORKER_KEY, cache_ttl=3600)
    try:
        source = catalog.source(databases.source_id)
        destination = catalog.destination(databases.destination_id)
    finally:
        catalog.close()
    # Then the source comes decrypted and unstored by proxies, an unknown one is the preview's error, and the
    # catalog caps its memory at a minute
    assert found.status_code == 200 and found.json()["password"] == PASSWORD
    assert found.headers["cache-control"] == "no-store"
    assert missing.status_code == 422 and "987654" in missing.json()["detail"]
    assert source.password == PASSWORD and PASSWORD not in repr(source) and destination.type == "POSTGRES"
    assert catalog.cache_ttl == MAX_CACHE_SECONDS == 60
    assert os.environ.get("WORKER_API_KEY") is None
