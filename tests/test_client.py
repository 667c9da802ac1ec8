"""The backend's client: the status mapping, blocking get, and a producer-only install."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from rosetta_jobs.client import AsyncResult, JobClient
from rosetta_jobs.errors import BrokerUnavailable, TaskFailed, TaskTimeout, UnknownQueue
from rosetta_jobs.states import FAILURE, PROGRESS, RETRY, REVOKED, STARTED, SUCCESS, build_meta, revoked_exception

from .conftest import ROOT


def _store(client: JobClient, task_id: str, status: str, result: object) -> None:
    client.store.write(build_meta(task_id, status, result))


def test_status_mapping_matches_the_backend(client: JobClient) -> None:
    # Given tasks in every state
    _store(client, "s", STARTED, {"pid": 1, "hostname": "h"})
    _store(client, "p", PROGRESS, {"status": "executing", "table_name": "orders"})
    _store(client, "ok", SUCCESS, {"rows": 1})
    _store(client, "f", FAILURE, {"exc_type": "ValueError", "exc_message": ["bad"], "exc_module": "builtins"})
    _store(client, "f2", FAILURE, {"exc_type": "E", "exc_message": ["boom", 42], "exc_module": "x"})
    _store(client, "r", REVOKED, revoked_exception())
    _store(client, "rt", RETRY, {"exc_type": "E", "exc_message": ["again"], "exc_module": "x"})
    # Then get_task_status answers what the backend's WorkerClient answered
    status = client.get_task_status
    assert status("unknown") == {"task_id": "unknown", "state": "PENDING", "status": "queued"}
    assert status("s") == {"task_id": "s", "state": "STARTED", "status": "running", "meta": {"pid": 1, "hostname": "h"}}
    assert status("p")["meta"] == {"status": "executing", "table_name": "orders"}
    assert status("ok") == {"task_id": "ok", "state": "SUCCESS", "status": "completed", "result": {"rows": 1}}
    assert status("f") == {"task_id": "f", "state": "FAILURE", "status": "failed", "error": "bad"}
    assert status("f2")["error"] == "('boom', 42)"
    assert status("r") == {"task_id": "r", "state": "REVOKED", "status": "cancelled"}
    assert status("rt")["status"] == "retry"


def test_get_blocks_until_the_final_state_is_published(client: JobClient) -> None:
    # Given a task that is running
    _store(client, "late", STARTED, {"pid": 1, "hostname": "h"})
    # When SUCCESS is written 0.5 s later from another thread
    timer = threading.Timer(0.5, _store, args=(client, "late", SUCCESS, [1, 2]))
    timer.start()
    started = time.monotonic()
    # Then get() wakes on the channel and returns the value
    assert AsyncResult("late", client=client).get(timeout=10) == [1, 2]
    assert time.monotonic() - started < 5
    timer.join()


def test_get_raises_the_failure(client: JobClient) -> None:
    _store(client, "vf", FAILURE, {"exc_type": "ValueError", "exc_message": ["bad"], "exc_module": "builtins"})
    _store(client, "cf", FAILURE, {"exc_type": "CustomError", "exc_message": ["x"], "exc_module": "jobs"})
    with pytest.raises(ValueError, match="bad"):
        AsyncResult("vf", client=client).get(timeout=1)
    with pytest.raises(TaskFailed, match="CustomError: x"):
        AsyncResult("cf", client=client).get(timeout=1)


def test_get_times_out_on_a_pending_task(client: JobClient) -> None:
    with pytest.raises(TaskTimeout, match="still PENDING"):
        AsyncResult("nobody", client=client).get(timeout=0.3)


def test_async_result_properties(client: JobClient) -> None:
    _store(client, "done", SUCCESS, "v")
    result = AsyncResult("done", client=client)
    assert (result.state, result.result, result.ready(), result.successful(), result.failed()) == (
        SUCCESS, "v", True, True, False,
    )  # fmt: skip
    assert result.date_done is not None and result.date_done.tzinfo is not None
    pending = AsyncResult("nothing", client=client)
    assert (pending.state, pending.info, pending.ready()) == ("PENDING", None, False)


def test_unreachable_redis_is_an_error_that_names_the_url() -> None:
    # Given a client pointed at a port where nothing listens
    client = JobClient(broker_url="redis://:secret@127.0.0.1:1/1", result_backend_url="redis://127.0.0.1:1/2")
    # When a job is sent, Then the error names the URL (without its password) and the fix
    with pytest.raises(BrokerUnavailable) as info:
        client.send("worker.test.echo", ("x",))
    assert "redis://:***@127.0.0.1:1/1" in str(info.value) and "secret" not in str(info.value)
    assert "BROKER_URL" in str(info.value)
    # And a status read says the worker is unavailable instead of raising
    status = client.get_task_status("t")
    assert status["state"] == "UNKNOWN" and "redis://127.0.0.1:1/2" in status["error"]


def test_client_imports_without_worker_dependencies() -> None:
    # Given an interpreter where duckdb, pyarrow, psycopg and sqlparse cannot be imported
    code = (
        "import sys\n"
        "for name in ('duckdb', 'pyarrow', 'psycopg', 'psycopg_pool', 'sqlparse', 'fastapi'):\n"
        "    sys.modules[name] = None\n"
        "from rosetta_jobs.client import JobClient, AsyncResult\n"
        "print('ok')\n"
    )
    # When the client is imported, Then it works
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_the_client_loads_nothing_of_the_worker() -> None:
    # Given a fresh interpreter, When the client is imported and builds a JobClient
    code = (
        "import sys\n"
        "from rosetta_jobs.client import JobClient, AsyncResult\n"
        "JobClient(broker_url='redis://127.0.0.1:1/1', result_backend_url='redis://127.0.0.1:1/2')\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = set(out.stdout.split())
    # Then no worker middleware, consumer, job control, DuckDB or Arrow module was loaded; of the preview, only
    # the request and its cache key, which the door (``door.py``) looks a cached answer up with
    door = {"rosetta_jobs.preview", "rosetta_jobs.preview.request", "rosetta_jobs.preview.cache"}
    worker_side = {m for m in loaded if m.startswith(("rosetta_jobs.middleware", "rosetta_jobs.preview"))} - door
    worker_side |= loaded & {"rosetta_jobs.consumer", "rosetta_jobs.interrupts", "rosetta_jobs.stack",
                             "rosetta_jobs.job", "duckdb", "pyarrow", "psycopg", "prometheus_client"}  # fmt: skip
    assert worker_side == set()
    assert "rosetta_jobs.broker" in loaded  # the producer's broker is what it uses


def test_async_results_share_one_redis_client_per_url() -> None:
    # Given two AsyncResults built without a client (from the settings)
    from rosetta_jobs.client import AsyncResult

    first, second = AsyncResult("a"), AsyncResult("b")
    # Then they share one Redis client, not one each
    assert first.store.client is second.store.client


def test_a_queue_no_contract_declares_is_refused(client: JobClient) -> None:
    # When a job is sent to a queue that no job contract declares
    with pytest.raises(UnknownQueue) as refused:
        client.send("worker.test.echo", ("hi",), queue_name="previews")
    # Then the error names the valid queues, and nothing was enqueued or recorded
    assert "'previews'" in str(refused.value) and "default, orchestration, preview" in str(refused.value)
    assert client.broker.client.keys("*previews*") == [] and client.store.client.dbsize() == 0
