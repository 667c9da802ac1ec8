"""The operators' commands, run as an operator runs them (``rosetta-jobs ...``), against real workers and Redis.

Each command is checked in both forms: the table for people and ``--json`` for scripts, with its exit code.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rosetta_jobs.client import JobClient
from rosetta_jobs.redact import sql_digest

from .conftest import ROOT, WorkerProcess, wait_until, worker_env

SQL = "SELECT status, count(*) FROM orders WHERE customer = 'Ada Lovelace' GROUP BY status"


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def cli(*args: str, stdin: str | None = None, **env: str) -> Ran:
    """``rosetta-jobs <args>``, as a subprocess with the test's Redis."""
    done = subprocess.run([sys.executable, "-m", "rosetta_jobs.cli", *args], cwd=ROOT, env=worker_env(**env),
                          capture_output=True, text=True, timeout=60, input=stdin)  # fmt: skip
    return Ran(done.returncode, done.stdout, done.stderr)


def preview(client: JobClient, user: str | None = None) -> str:
    """A preview that waits: no worker of these tests consumes the preview queue."""
    return client.submit_preview(SQL, 1, 1, "orders", user_id=user)


def test_queues_workers_and_waiting_jobs(start_worker: Callable[..., WorkerProcess], client: JobClient) -> None:
    # Given a worker that consumes only `default`, and two previews waiting on `preview`
    worker = start_worker(queues=("default",))
    waiting = [preview(client, user="u7"), preview(client)]

    # When the queues are listed, Then `preview` is flagged as holding work no live worker consumes (exit 4)
    table = cli("queues")
    assert table.code == 4
    row = next(line for line in table.out.splitlines() if line.split()[:1] == ["preview"])
    assert row.split() == ["preview", "2", "0", "0", "0", "0", "NO", "CONSUMER"]
    assert "queue 'preview' holds work but no live worker consumes it" in table.err
    data = cli("queues", "--json")
    assert data.code == 4 and data.json()["unconsumed"] == ["preview"]
    depth = {q["name"]: q for q in data.json()["queues"]}
    assert depth["preview"]["ready"] == 2 and depth["default"]["consumers"] == 1

    # When the workers are listed, Then the live process is there with its queue and threads
    (pid,) = {int(w.split(":")[1]) for w in _worker_ids(client)}
    table = cli("workers")
    assert table.code == 0 and f":{pid}" in table.out and "default" in table.out
    (listed,) = cli("workers", "--json").json()["workers"]
    assert listed["pid"] == pid and listed["queues"] == ["default"] and listed["threads"] == 2

    # When the waiting jobs are listed, Then they come in order, the SQL as its digest unless asked for
    table = cli("jobs", "preview")
    assert table.code == 0 and table.out.index(waiting[0]) < table.out.index(waiting[1])
    assert f"sha256:{sql_digest(SQL)}" in table.out and "Ada Lovelace" not in table.out and "u7" in table.out
    jobs = cli("jobs", "preview", "--json").json()["jobs"]
    assert [j["task_id"] for j in jobs] == waiting and jobs[0]["args"][0] == f"sha256:{sql_digest(SQL)}"
    assert cli("jobs", "preview", "--json", "--show-sql").json()["jobs"][0]["args"][0] == SQL
    assert cli("jobs", "not a queue").code == 2
    worker.stop()


def test_purge_asks_first_and_leaves_pollers_reading_revoked(client: JobClient) -> None:
    # Given three previews waiting in the queue
    waiting = [preview(client) for _ in range(3)]

    # When purge runs without --yes from a script (no terminal), Then nothing is purged (exit 1)
    declined = cli("purge", "preview")
    assert declined.code == 1 and "pass --yes" in declined.err
    assert client.broker.client.llen("dramatiq:preview") == 3

    # When it runs with --yes
    table = cli("purge", "preview", "--yes")

    # Then every job is gone from the queue, and every poller reads REVOKED at once
    assert table.code == 0 and "purged 3 job(s) from preview" in table.out
    assert [client.result(task).get(timeout=2, propagate=False)["exc_type"] for task in waiting] == [
        "TaskRevokedError"
    ] * 3
    assert [client.get_task_status(task)["status"] for task in waiting] == ["cancelled"] * 3
    assert cli("jobs", "preview", "--json").json()["jobs"] == []
    # And the history records them, REVOKED by a purge, with their SQL's digest
    history = cli("history", "--json", "--state", "revoked").json()["tasks"]
    assert {t["task_id"] for t in history} == set(waiting)
    assert {(t["reason"], t["sql_digest"], t["actor"]) for t in history} == {
        ("purged", sql_digest(SQL), "worker.preview.execute")
    }
    # And a second purge, in JSON, finds nothing to purge
    again = cli("purge", "preview", "--yes", "--json")
    assert again.code == 0 and again.json() == {"queue": "preview", "purged": 0, "task_ids": []}


def test_inspect_cancel_and_history(start_worker: Callable[..., WorkerProcess], client: JobClient) -> None:
    # Given a job that succeeded for user u1, one that failed, and a preview waiting
    start_worker(queues=("default",))
    done = client.send("worker.test.echo", ("hi",), user_id="u1")
    failed = client.send("tests.fail", ("the disk is full",))
    wait_until(lambda: client.store.is_final(done) and client.store.is_final(failed), 15, "both final")
    queued = preview(client)

    # When a finished task is inspected, Then state, actor, queue, user, worker and timings are shown
    table = cli("inspect", done)
    assert table.code == 0
    fields = {k: v.strip() for k, v in (line.split(None, 1) for line in table.out.splitlines() if line.strip())}
    assert (fields["state"], fields["actor"], fields["queue"], fields["user"]) == (
        "SUCCESS", "worker.test.echo", "default", "u1"
    )  # fmt: skip
    assert fields["worker"].startswith(tuple(_worker_ids(client))) and "started" in fields and "ran" in fields
    data = cli("inspect", done, "--json").json()
    assert data["result"] == {"message": "hi", "steps": 0} and data["deliveries"] == 1
    assert data["finished_at"] >= data["started_at"] >= data["enqueued_at"] > time.time() - 60
    # And a failed one shows its error, and the waiting preview its SQL as a digest
    assert "ValueError: the disk is full" in cli("inspect", failed).out
    assert cli("inspect", failed, "--json").json()["error_type"] == "ValueError"
    pending = cli("inspect", queued, "--json").json()
    assert pending["state"] == "PENDING" and pending["queue"] == "preview"
    # And an unknown id is not found (exit 1)
    unknown = cli("inspect", "no-such-task", "--json")
    assert unknown.code == 1 and unknown.json() == {"task_id": "no-such-task", "found": False}

    # When the waiting preview is cancelled, Then it is REVOKED (exit 0); a second cancel changes nothing (exit 1)
    assert cli("cancel", queued).code == 0
    again = cli("cancel", queued, "--json")
    assert again.code == 1 and again.json()["reason"] == "the task already ended REVOKED"

    # When the history is listed, filtered, Then each filter keeps what it names
    table = cli("history")
    assert table.code == 0 and all(task in table.out for task in (done, failed, queued))
    assert [t["task_id"] for t in cli("history", "--json", "--state", "FAILURE").json()["tasks"]] == [failed]
    assert [t["task_id"] for t in cli("history", "--json", "--user", "u1").json()["tasks"]] == [done]
    assert [t["task_id"] for t in cli("history", "--json", "--actor", "tests.fail").json()["tasks"]] == [failed]
    assert len(cli("history", "--json", "--since", "1m").json()["tasks"]) == 3
    assert cli("history", "--json", "--since", "2099-01-01T00:00:00").json()["tasks"] == []
    assert cli("history", "--since", "soon").code == 2


def test_dead_letters_requeue_and_delete(start_worker: Callable[..., WorkerProcess], client: JobClient) -> None:
    # Given three failed jobs, dead-lettered, and no worker running
    worker = start_worker()
    failed = [client.send("tests.fail", (f"boom {i}",)) for i in range(3)]
    wait_until(lambda: all(client.store.is_final(task) for task in failed), 15, "all failed")
    worker.stop()

    # When the dead letters are listed, Then each is there with its error
    table = cli("dead-letters", "default")
    assert table.code == 0 and all(task in table.out for task in failed) and "ValueError: boom 1" in table.out
    letters = cli("dead-letters", "default", "--json").json()["dead_letters"]
    assert {d["task_id"] for d in letters} == set(failed)

    # When one is deleted by its redis id, Then it is gone; deleting it again finds nothing (exit 1)
    victim = next(d for d in letters if d["task_id"] == failed[0])
    assert cli("delete", "default", victim["redis_id"]).code == 0
    assert cli("delete", "default", victim["redis_id"]).code == 1

    # When one is requeued by its task id, Then it waits in the queue again, its state cleared
    requeued = cli("requeue", "default", failed[1], "--json")
    assert requeued.code == 0 and requeued.json() == {"queue": "default", "requeued": 1, "task_id": failed[1]}
    assert client.get_task_status(failed[1])["state"] == "PENDING"
    # And --all moves the rest; asking for both an id and --all is a usage error
    assert cli("requeue", "default", "--all").out.strip() == "requeued 1 dead letter(s) of default"
    assert cli("requeue", "default", failed[2], "--all").code == 2
    assert cli("dead-letters", "default", "--json").json()["dead_letters"] == []


def test_redis_unreachable_is_exit_3_without_a_password() -> None:
    # When a command cannot reach Redis, Then it exits 3 with the URL, its password masked
    ran = cli("queues", BROKER_URL="redis://:hunter2@127.0.0.1:1/1", RESULT_BACKEND_URL="redis://127.0.0.1:1/2")
    assert ran.code == 3 and "cannot read Redis" in ran.err and "hunter2" not in ran.err


def _worker_ids(client: JobClient) -> list[str]:
    from rosetta_jobs.workers import read_workers

    return [w.id for w in read_workers(client.store.client, "dramatiq")]
