"""Honest logs: JSON from every process, a job's lines carry its task id, no WARNING on success, SQL as its digest."""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from dramatiq import Message

from rosetta_jobs.client import JobClient
from rosetta_jobs.logs import configure_logging
from rosetta_jobs.redact import sql_digest

from .conftest import WorkerProcess, wait_until
from .support.previewdb import PreviewDatabases


def lines(worker: WorkerProcess) -> list[dict[str, Any]]:
    """Every line the worker wrote, each parsed as JSON (a line that is not JSON fails the test)."""
    parsed = []
    for number, line in enumerate(worker.output().splitlines(), start=1):
        if line.strip():
            try:
                parsed.append(json.loads(line))
            except ValueError:
                pytest.fail(f"line {number} of the worker's output is not JSON: {line!r}")
    return parsed


def test_every_line_is_json_and_a_jobs_lines_carry_its_task_id(
    start_worker: Callable[..., WorkerProcess], client: JobClient, databases: PreviewDatabases
) -> None:
    # Given `rosetta-jobs worker -p 2` (the image's command) under LOG_FORMAT=json
    worker = start_worker(supervised=True, processes=2, LOG_FORMAT="json", DATABASE_URL=databases.config_url)

    # When it runs a preview whose SQL holds a literal, a job that logs, and a job that returns a value
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    sql = f"SELECT status, '{marker}' AS tag, count(*) AS n FROM orders GROUP BY status ORDER BY status"
    preview = client.submit_preview(sql, databases.source_id, databases.destination_id, "orders")
    logged = client.send("tests.log", ("hello from the job",))
    echoed = client.send("worker.test.echo", ("hi",))
    assert client.result(preview).get(timeout=60)["data"][0]["tag"] == marker
    assert client.result(logged).get(timeout=10) == "hello from the job"
    assert client.result(echoed).get(timeout=10)["message"] == "hi"
    # And is stopped, so that the master's shutdown lines are written too
    assert worker.stop() == 0

    # Then every line, the master's and the processes', is one JSON object
    records = lines(worker)
    processes = {r["process"] for r in records}
    assert len(processes) == 3  # the master and its two worker processes
    assert any(r["logger"] == "rosetta_jobs.supervisor" for r in records)
    assert all({"time", "level", "message", "logger"} <= r.keys() for r in records)
    # And the job's own lines, through loguru and through the standard library, carry its id, actor and queue
    job_lines = [r for r in records if "hello from the job" in r["message"]]
    assert len(job_lines) == 2
    for record in job_lines:
        assert (record["task_id"], record["actor"], record["queue"]) == (logged, "tests.log", "default")
    # And the preview's line names its SQL by digest only
    (preview_line,) = [r for r in records if r.get("task_id") == preview and r["message"].startswith("preview of")]
    assert f"sql sha256:{sql_digest(sql)}" in preview_line["message"]
    assert marker not in worker.output()
    # And no successful job logged a WARNING (Dramatiq's "you haven't added the Results middleware")
    assert [r["message"] for r in records if r["level"] in ("WARNING", "ERROR") and r.get("task_id") != logged] == []


def test_a_cancelled_job_logs_at_info_only(start_worker: Callable[..., WorkerProcess], client: JobClient) -> None:
    # Given a worker, a running job and a job cancelled while it waits for its eta
    worker = start_worker(supervised=True, processes=1, LOG_FORMAT="json")
    running = client.send("worker.test.echo", ("long",), {"steps": 50, "step_seconds": 0.1})
    wait_until(lambda: client.get_task_status(running)["state"] in ("STARTED", "PROGRESS"), 10, "started")
    waiting: Message[Any] = Message(queue_name="default", actor_name="worker.test.echo", args=("later",), kwargs={},
                                    options={})  # fmt: skip
    client.store.mark_submitted(waiting.message_id, "default")
    client.broker.enqueue(waiting, delay=1500)

    # When both are cancelled
    assert client.cancel(running)["cancelled"] and client.cancel(waiting.message_id)["cancelled"]
    wait_until(lambda: "cancelled while running" in worker.output(), 10, "the running job's cancel")
    wait_until(lambda: f"task {waiting.message_id} is already REVOKED" in worker.output(), 10, "the skip")
    time.sleep(0.3)

    # Then their lines are INFO: a cancel is not a problem
    mine = [r for r in lines(worker) if {running, waiting.message_id} & {r.get("task_id"), *r["message"].split()}]
    assert mine and {r["level"] for r in mine} == {"INFO"}


def test_dramatiq_lines_show_a_jobs_sql_as_its_digest(capfd: pytest.CaptureFixture[str]) -> None:
    # Given the logging of a worker process, and a failed preview's message as Dramatiq logs it
    out = io.StringIO()
    configure_logging("INFO", "json", sink=out)
    sql = "SELECT * FROM orders WHERE email = 'someone@example.com'"
    message: Message[Any] = Message(queue_name="preview", actor_name="worker.preview.execute",
                                    args=(sql, 1, 1, "orders", None, False), kwargs={}, options={})  # fmt: skip
    try:
        # When Dramatiq logs its failure (its own format string, the message as the argument)
        logging.getLogger("dramatiq.worker.WorkerThread").error(
            "Failed to process message %s with unhandled exception.", message
        )
        # And the Results warning it writes after every job that returns a value
        logging.getLogger("dramatiq.worker.WorkerThread").warning(
            "Actor 'worker.test.echo' returned a value that is not None, and you haven't added the Results "
            "middleware to the broker, so the value has been discarded."
        )
    finally:
        configure_logging()

    # Then the SQL shows only as its digest, the other arguments as they are, and the warning not at all
    (record,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert "someone@example.com" not in out.getvalue()
    assert f"'sha256:{sql_digest(sql)}', 1, 1, 'orders'" in record["message"]
    assert message.message_id in record["message"] and record["level"] == "ERROR"
