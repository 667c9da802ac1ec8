"""``worker.backend_job.run``: the backend's runner module, run as a real subprocess by a real worker.

The runner is ``tests/support/backend/app/worker_bridge/runner.py``, a stand-in with the backend
runner's argv and stdout protocol; each run appends what it saw (argv, cwd, environment, pids) to a
record file the tests read.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from rosetta_jobs.backend_jobs import KNOWN_JOBS, BackendRunner, parse_result
from rosetta_jobs.client import JobClient
from rosetta_jobs.contracts import BACKEND_JOB
from rosetta_jobs.errors import ConfigError, TaskFailed
from rosetta_jobs.layout import Keys

from .conftest import RESULTS_DB, ROOT, WorkerProcess, launch_worker, redis_url, wait_until

BACKEND_DIR = ROOT / "tests" / "support" / "backend"
#: Short retry delays for the tests (a message's options win over the actor's 10 s).
FAST_RETRY = {"min_backoff": 100, "max_backoff": 200}


@pytest.fixture(scope="module")
def record_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runner") / "runs.jsonl"


@pytest.fixture(scope="module")
def worker(record_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker for the module, logging JSON so that the runner (same environment) does too."""
    log = tmp_path_factory.mktemp("backend-worker") / "worker.log"
    process = launch_worker(
        log, threads=2, BACKEND_DIR=str(BACKEND_DIR), RUNNER_RECORD=str(record_file), LOG_FORMAT="json"
    )
    yield process
    process.stop()


def runs(record_file: Path, token: str) -> list[dict[str, Any]]:
    """The runner's records of the runs whose payload carried ``token``."""
    if not record_file.exists():
        return []
    entries = [json.loads(line) for line in record_file.read_text().splitlines() if line.strip()]
    return [entry for entry in entries if entry["payload"].get("token") == token]


def submit_and_watch(client: JobClient, args: list[Any], **options: Any) -> tuple[str, list[dict[str, Any]]]:
    """Submit a backend job and return its id and every state written for it, up to a final one."""
    task_id = str(uuid.uuid4())
    pubsub = redis.Redis.from_url(redis_url(RESULTS_DB)).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(Keys.meta(task_id))
    client.submit(BACKEND_JOB, args, task_id=task_id, options=options or None)
    states: list[dict[str, Any]] = []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        event = pubsub.get_message(timeout=0.5)
        if event is not None:
            states.append(json.loads(event["data"]))
            if states[-1]["status"] in ("SUCCESS", "FAILURE", "REVOKED"):
                break
    pubsub.close()
    return task_id, states


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not count)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


# --- through a worker ------------------------------------------------------------------------------------------
def test_the_runner_logs_then_prints_its_result_line(worker: WorkerProcess, client: JobClient, record_file: Path):
    # Given a runner that logs JSON lines before and after its result line (LOG_FORMAT=json)
    token = uuid.uuid4().hex
    payload = {"token": token}
    # When the scheduler's job is run
    task_id, states = submit_and_watch(client, ["worker_health_check", payload])
    # Then the result is the runner's result line, not its last (shutdown) log line
    final = states[-1]
    assert final["status"] == "SUCCESS", final
    assert final["result"]["job_name"] == "worker_health_check" and final["result"]["task_id"] == task_id
    assert final["result"]["message"] == "worker_health_check cycle completed"
    assert final["result"]["payload"] == payload
    # And the poller saw the Celery worker's PROGRESS meta
    progress = [s["result"] for s in states if s["status"] == "PROGRESS"]
    assert progress == [{"status": "running", "job_name": "worker_health_check"}]
    # And the runner was started as the contract says: argv, directory, environment, stdin, own session
    (run,) = runs(record_file, token)
    assert run["argv"] == ["worker_health_check", "--payload", json.dumps(payload)]
    assert run["cwd"] == str(BACKEND_DIR) and run["pythonpath"] == str(BACKEND_DIR)
    assert run["unbuffered"] == "1" and run["stdin"] == "/dev/null"
    assert run["sid"] == run["pid"]


def test_a_runner_that_exits_non_zero_is_retried_once_then_fails_with_its_stderr(
    worker: WorkerProcess, client: JobClient, record_file: Path
) -> None:
    # Given a job whose handler raises (the runner prints a traceback on stderr and exits 1)
    token = uuid.uuid4().hex
    # When it is run
    _, states = submit_and_watch(client, ["notification_sender", {"token": token, "behaviour": "fail"}], **FAST_RETRY)
    # Then it is retried once (RETRY), then ends FAILURE with the tail of the runner's stderr
    assert [s["status"] for s in states if s["status"] in ("RETRY", "FAILURE")] == ["RETRY", "FAILURE"]
    error = states[-1]["result"]
    assert error["exc_type"] == "BackendJobFailed"
    message = error["exc_message"][0]
    assert "notification_sender exited with status 1" in message
    assert "RuntimeError: the notification_sender handler failed" in message
    assert len(message.splitlines()) <= 21
    assert len(runs(record_file, token)) == 2


def test_a_runner_past_its_time_limit_is_killed_with_its_children(
    worker: WorkerProcess, client: JobClient, record_file: Path
) -> None:
    # Given a runner that starts a child and then hangs
    token = uuid.uuid4().hex
    started = time.monotonic()
    # When its job has a 3 s time limit
    _, states = submit_and_watch(client, ["wal_monitor", {"token": token, "behaviour": "hang"}], time_limit=3000)
    # Then it ends FAILURE with Celery's TimeLimitExceeded soon after the limit, and is not retried
    assert states[-1]["status"] == "FAILURE"
    assert states[-1]["result"]["exc_type"] == "TimeLimitExceeded"
    assert "RETRY" not in [s["status"] for s in states]
    assert time.monotonic() - started < 10
    # And neither the runner nor its child is left
    (run,) = runs(record_file, token)
    wait_until(lambda: not alive(run["pid"]) and not alive(run["child"]), timeout=5, what="runner and child gone")


def test_a_cancelled_job_kills_its_runner(worker: WorkerProcess, client: JobClient, record_file: Path) -> None:
    # Given a hanging runner
    token = uuid.uuid4().hex
    task_id = client.submit(BACKEND_JOB, ["schema_monitor", {"token": token, "behaviour": "hang"}])
    wait_until(lambda: runs(record_file, token), timeout=20, what="runner started")
    # When the job is cancelled
    assert client.cancel(task_id)["cancelled"] is True
    # Then it is REVOKED and the runner and its child are gone
    wait_until(lambda: client.get_task_status(task_id)["state"] == "REVOKED", timeout=10, what="REVOKED")
    (run,) = runs(record_file, token)
    wait_until(lambda: not alive(run["pid"]) and not alive(run["child"]), timeout=5, what="runner and child gone")


def test_an_unknown_job_name_is_refused_before_a_runner_starts(
    worker: WorkerProcess, client: JobClient, record_file: Path
) -> None:
    # When the backend asks for a job its runner does not have
    token = uuid.uuid4().hex
    _, states = submit_and_watch(client, ["no_such_job", {"token": token}], **FAST_RETRY)
    # Then it fails at once with the runner's own message, without a retry
    assert [s["status"] for s in states if s["status"] in ("RETRY", "FAILURE")] == ["FAILURE"]
    assert states[-1]["result"]["exc_type"] == "ValueError"
    assert states[-1]["result"]["exc_message"][0].startswith("Unsupported backend bridge job: no_such_job")
    # And no runner was started
    assert runs(record_file, token) == []
    with pytest.raises(ValueError, match="Unsupported backend bridge job"):
        client.result(states[-1]["task_id"]).get(timeout=1)


# --- the runner's contract, without a worker ------------------------------------------------------------------
def test_the_result_is_the_last_json_object_that_is_not_a_log_record() -> None:
    # Given the runner's stdout with JSON logs around its result, and a stray JSON list
    stdout = "\n".join(
        [
            '{"asctime": "2026-04-08 10:00:00", "name": "app", "levelname": "INFO", "message": "booted"}',
            '{"message": "WAL monitoring cycle completed"}',
            "[1, 2]",
            '{"asctime": "2026-04-08 10:00:01", "name": "app", "levelname": "INFO", "message": "pool closed"}',
            '{"event": "bye", "level": "info", "timestamp": "2026-04-08T10:00:01Z"}',
            '{"timestamp": "2026-04-08T10:00:01Z", "level": "INFO", "logger": "db", "message": "pool closed"}',
            '{"text": "closed\\n", "record": {"level": {"name": "INFO"}}}',
            "",
        ]
    )
    # Then the result line is found, and a runner that printed nothing still answers
    assert parse_result(stdout, "wal_monitor") == {"message": "WAL monitoring cycle completed"}
    assert parse_result("plain log line\n", "wal_monitor") == {"message": "Backend bridge job completed: wal_monitor"}


def test_the_runner_command_follows_the_contract(tmp_path: Path) -> None:
    # Given a backend directory with its own virtualenv
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    runner = BackendRunner(backend_dir=str(tmp_path))
    # When the command of a job is built
    argv, cwd, env = runner.command("pipeline.refresh", {"pipeline_id": 7})
    # Then it is the backend's interpreter running the runner module there, with PYTHONPATH set
    assert argv == [
        str(python),
        "-m",
        "app.worker_bridge.runner",
        "pipeline.refresh",
        "--payload",
        '{"pipeline_id": 7}',
    ]
    assert cwd == tmp_path and env["PYTHONPATH"] == str(tmp_path) and env["PYTHONUNBUFFERED"] == "1"
    # And without a virtualenv the worker's own interpreter runs it; BACKEND_PYTHON wins over both
    assert BackendRunner(backend_dir=str(ROOT)).command("wal_monitor", None)[0][0] == sys.executable
    assert BackendRunner(backend_dir=str(tmp_path), python="/opt/py").command("wal_monitor", {})[0][0] == "/opt/py"
    assert runner.command("wal_monitor", None)[0][-1] == "{}"


def test_the_runner_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BACKEND_DIR is not set"):
        BackendRunner(backend_dir=None).command("wal_monitor", None)
    with pytest.raises(FileNotFoundError, match=r"Backend directory not found: .*nowhere"):
        BackendRunner(backend_dir=str(tmp_path / "nowhere")).command("wal_monitor", None)
    with pytest.raises(TypeError, match="must be a JSON object"):
        BackendRunner(backend_dir=str(tmp_path)).command("wal_monitor", [1])  # type: ignore[arg-type]
    # A newer backend's job is accepted once it is named in BACKEND_EXTRA_JOBS
    with pytest.raises(ValueError, match=r"Unsupported backend bridge job: new\.job"):
        BackendRunner(backend_dir=str(tmp_path)).command("new.job", None)
    assert BackendRunner(backend_dir=str(tmp_path), extra_jobs=frozenset({"new.job"})).command("new.job", None)
    assert len(KNOWN_JOBS) == 14


# --- through the Celery ingress ------------------------------------------------------------------------------
def test_the_backends_send_task_reaches_success(worker: WorkerProcess, celery_app: Celery) -> None:
    # When the backend's WorkerClient.submit_backend_job sends the scheduler's job as it does
    sent = celery_app.send_task("worker.backend_job.run", args=["pipeline_refresh_check", {}], queue="default")
    # Then an unchanged AsyncResult reads SUCCESS with the runner's result
    result = sent.get(timeout=30)
    assert sent.state == "SUCCESS"
    assert result["job_name"] == "pipeline_refresh_check" and result["task_id"] == sent.id
    assert result["message"] == "pipeline_refresh_check cycle completed"


def test_failed_jobs_raise_for_the_client(worker: WorkerProcess, client: JobClient) -> None:
    # A FAILURE of a type the reader does not import is raised as TaskFailed with the message
    task_id = client.submit(BACKEND_JOB, ["credit_monitor", {"behaviour": "fail"}], options=FAST_RETRY)
    with pytest.raises(TaskFailed, match="credit_monitor exited with status 1"):
        client.result(task_id).get(timeout=30)
