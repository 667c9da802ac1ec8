"""``worker.linked_task.execute``: a DAG of flows through real workers, every step's log checked in the database.

A three-stage DAG with ON_SUCCESS, ON_FAILURE and ALWAYS edges and a failing middle step; a cancel mid-run, by the
database and by a Celery revoke of the linked task's id; a worker SIGKILLed mid-run and a new one finishing the run
without repeating a finished step. The backend's side
(run row RUNNING, ``linked_tasks.status`` RUNNING, the task sent by name with kwargs) is done as it does it.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from celery import Celery

from .conftest import WorkerProcess, launch_worker, wait_until
from .support.flowdb import FlowDatabases, create_flow_databases
from .test_ingress import backend_producer

#: Fast crash recovery for the SIGKILL test: a silent worker is dead after 2 s.
WORKER_ENV = {"HEARTBEAT_TIMEOUT_MS": "2000", "DUCKDB_MAX_CONCURRENT": "2", "DUCKDB_MEMORY_LIMIT": "256MB",
              "PREVIEW_MEMORY_HEADROOM": "256MB", "LINKED_TASK_MAX_PARALLEL_STEPS": "3"}  # fmt: skip
#: A step that takes a few seconds: a three-way cross join of a 1,100-row table, counted.
SLOW_SQL = "SELECT count(*) AS n FROM {{input}} a, {{input}} b, {{input}} c WHERE a.id + b.id + c.id > 7"


@pytest.fixture(scope="module")
def dbs() -> Iterator[FlowDatabases]:
    databases = create_flow_databases()
    with psycopg.connect(databases.shop_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE big AS SELECT g AS id FROM generate_series(1, 1100) g")
    yield databases
    databases.drop()


@pytest.fixture(scope="module")
def workers(dbs: FlowDatabases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[WorkerProcess]]:
    """The module's workers (the SIGKILL test replaces its own); all stopped at the end."""
    logs = tmp_path_factory.mktemp("linked")
    started = [launch_worker(logs / "worker-0.log", threads=3, DATABASE_URL=dbs.config_url, **WORKER_ENV)]
    yield started
    for worker in started:
        worker.stop()


class Backend:
    """What the backend writes around a linked-task run (``LinkedTaskService.trigger_run``)."""

    def __init__(self, dbs: FlowDatabases) -> None:
        self.dbs = dbs
        self.suffix = uuid.uuid4().hex[:6]

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dbs.config_url, autocommit=True) as conn:
            cursor = conn.execute(statement, params)
            return [tuple(r) for r in cursor.fetchall()] if cursor.description else []

    def flow(self, name: str, graph: dict[str, Any] | None) -> int:
        flow_id = self.sql("INSERT INTO flow_tasks (name) VALUES (%s) RETURNING id", f"{name}-{self.suffix}")[0][0]
        if graph is not None:
            self.sql("INSERT INTO flow_task_graph (flow_task_id, nodes_json, edges_json) VALUES (%s, %s, %s)",
                     flow_id, json.dumps(graph["nodes"]), json.dumps(graph["edges"]))  # fmt: skip
        return int(flow_id)

    def linked(self, steps: dict[str, int], edges: list[tuple[str, str, str]]) -> tuple[int, dict[str, int]]:
        task = int(self.sql("INSERT INTO linked_tasks (name) VALUES (%s) RETURNING id", f"lt-{self.suffix}")[0][0])
        ids = {name: int(self.sql("INSERT INTO linked_task_steps (linked_task_id, flow_task_id) VALUES (%s, %s)"
                                  " RETURNING id", task, flow)[0][0]) for name, flow in steps.items()}  # fmt: skip
        for source, target, condition in edges:
            self.sql("INSERT INTO linked_task_edges (linked_task_id, source_step_id, target_step_id, condition)"
                     " VALUES (%s, %s, %s, %s)", task, ids[source], ids[target], condition)  # fmt: skip
        return task, ids

    def trigger(self, celery_app: Celery, linked_task_id: int) -> tuple[int, str]:
        run = int(self.sql("INSERT INTO linked_task_run_history (linked_task_id, status, started_at)"
                           " VALUES (%s, 'RUNNING', now()) RETURNING id", linked_task_id)[0][0])  # fmt: skip
        self.sql("UPDATE linked_tasks SET status = 'RUNNING' WHERE id = %s", linked_task_id)
        sent = celery_app.send_task(
            "worker.linked_task.execute",
            kwargs={"linked_task_id": linked_task_id, "run_history_id": run},
            queue="default",
        )
        self.sql("UPDATE linked_task_run_history SET celery_task_id = %s WHERE id = %s", sent.id, run)
        return run, sent.id

    def steps(self, run: int) -> dict[int, dict[str, Any]]:
        rows = self.sql(
            "SELECT step_id, status, error_message, started_at, finished_at, celery_task_id, flow_task_run_history_id"
            " FROM linked_task_run_step_log WHERE run_history_id = %s", run)  # fmt: skip
        keys = ("status", "error", "started_at", "finished_at", "task_id", "flow_run")
        return {int(r[0]): dict(zip(keys, r[1:], strict=True)) for r in rows}

    def run_status(self, run: int) -> str:
        return str(self.sql("SELECT status FROM linked_task_run_history WHERE id = %s", run)[0][0])

    def wait_done(self, run: int, timeout: float = 60) -> None:
        wait_until(lambda: self.run_status(run) != "RUNNING", timeout, f"linked run {run} to end")


def copy_graph(table: str, *, destination: int = 3, source_table: str = "t2", sql: str | None = None) -> dict[str, Any]:
    nodes = [{"id": "in", "type": "input", "data": {"source_id": 1, "table_name": source_table}},
             {"id": "out", "type": "output", "data": {"destination_id": destination, "table_name": table}}]  # fmt: skip
    edges = [{"id": "e", "source": "in", "target": "out"}]
    if sql is not None:
        nodes.append({"id": "s", "type": "sql", "data": {"sql_expression": sql}})
        edges = [{"id": "e1", "source": "in", "target": "s"}, {"id": "e2", "source": "s", "target": "out"}]
    return {"nodes": nodes, "edges": edges}


@pytest.fixture
def backend(dbs: FlowDatabases, redis_dbs: None) -> Iterator[Backend]:
    side = Backend(dbs)
    yield side
    with psycopg.connect(dbs.warehouse_url, autocommit=True) as conn:
        for (name,) in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s", (f"%{side.suffix}",)):
            conn.execute(f'DROP TABLE "{name}"')


def test_a_three_stage_dag_with_a_failing_middle_step(
    workers: list[WorkerProcess], backend: Backend, celery_app: Celery
) -> None:
    # Given stage 1: s1; stage 2: s2 (fails: its output is a Snowflake destination) ON_SUCCESS and s3 ALWAYS;
    # stage 3 after s2: s4 ON_SUCCESS, s5 ALWAYS, s6 ON_FAILURE; and s7 after s4 (ON_SUCCESS)
    flows = {f"s{i}": backend.flow(f"f{i}", copy_graph(f"copy{i}_{backend.suffix}")) for i in (1, 3, 4, 5, 6, 7)}
    flows["s2"] = backend.flow("f2", copy_graph("anything", destination=5))
    task, ids = backend.linked(dict(sorted(flows.items())), [
        ("s1", "s2", "ON_SUCCESS"), ("s1", "s3", "ALWAYS"), ("s2", "s4", "ON_SUCCESS"), ("s2", "s5", "ALWAYS"),
        ("s2", "s6", "ON_FAILURE"), ("s4", "s7", "ON_SUCCESS")])  # fmt: skip

    # When the backend triggers it as its LinkedTaskService does (send_task by name, kwargs only)
    run, entry = backend.trigger(celery_app, task)
    backend.wait_done(run)

    # Then each step's log says what happened, as the UI reads it
    steps = backend.steps(run)
    status = {name: steps[ids[name]]["status"] for name in ids}
    assert status == {"s1": "SUCCESS", "s2": "FAILED", "s3": "SUCCESS", "s4": "SKIPPED", "s5": "SUCCESS",
                      "s6": "SUCCESS", "s7": "SKIPPED"}  # fmt: skip
    assert "Snowflake destinations are not supported" in steps[ids["s2"]]["error"]
    assert steps[ids["s4"]]["error"].startswith(f"Skipped: step #{ids['s2']} (f2-")
    assert steps[ids["s7"]]["error"].startswith(f"Skipped: step #{ids['s4']} (f4-")
    for name in ("s1", "s2", "s3", "s5", "s6"):
        step = steps[ids[name]]
        assert step["started_at"] is not None and step["finished_at"] >= step["started_at"]
        # And the step's job id is on its log and on its flow run, which ended with the step's status
        flow_run = backend.sql("SELECT status, celery_task_id, trigger_type FROM flow_task_run_history WHERE id = %s",
                               step["flow_run"])[0]  # fmt: skip
        assert flow_run == (step["status"], step["task_id"], "MANUAL")
    # And no step started before its predecessors had finished
    for first, then in (("s1", "s2"), ("s1", "s3"), ("s2", "s5"), ("s2", "s6")):
        assert steps[ids[then]]["started_at"] >= steps[ids[first]]["finished_at"]
    # And the run is FAILED naming the failed step, the linked task IDLE with the last run's status
    run_row = backend.sql("SELECT status, error_message, finished_at FROM linked_task_run_history WHERE id = %s", run)
    assert run_row[0][0] == "FAILED" and f"Step #{ids['s2']}" in run_row[0][1] and run_row[0][2] is not None
    assert backend.sql("SELECT status, last_run_status FROM linked_tasks WHERE id = %s", task) == [("IDLE", "FAILED")]
    assert backend.sql("SELECT status FROM flow_tasks WHERE id = %s", flows["s1"]) == [("SUCCESS",)]
    # And the linked task's own state is SUCCESS with the spec's answer, written by the step that ended the run
    wait_until(lambda: celery_app.AsyncResult(entry).state == "SUCCESS", 5, "the linked task's final state")
    assert celery_app.AsyncResult(entry).result == {"status": "FAILED",
                                                    "step_results": {str(ids[n]): status[n] for n in ids}}  # fmt: skip


def test_a_cancel_stops_the_running_step_and_is_kept(
    workers: list[WorkerProcess], backend: Backend, celery_app: Celery
) -> None:
    # Given a slow step followed by another
    slow = backend.flow("slow", copy_graph(f"slow_{backend.suffix}", source_table="big", sql=SLOW_SQL))
    after = backend.flow("after", copy_graph(f"after_{backend.suffix}"))
    task, ids = backend.linked({"slow": slow, "after": after}, [("slow", "after", "ALWAYS")])
    run, entry = backend.trigger(celery_app, task)
    wait_until(lambda: backend.steps(run).get(ids["slow"], {}).get("flow_run"), 20, "the slow step to start")
    time.sleep(0.5)

    # When the user cancels the run in the database only
    backend.sql("UPDATE linked_task_run_history SET status = 'CANCELLED', finished_at = now(),"
                " error_message = 'Cancelled by user' WHERE id = %s", run)  # fmt: skip
    backend.sql("UPDATE linked_tasks SET status = 'IDLE' WHERE id = %s", task)
    cancelled_at = time.monotonic()

    # Then the running step is stopped within seconds, the next never starts, and CANCELLED stays
    wait_until(lambda: backend.steps(run)[ids["slow"]]["status"] == "SKIPPED", 15, "the slow step stopped")
    assert time.monotonic() - cancelled_at < 10
    # (the step's end and the run's advance are two transactions: the next step is settled just after)
    wait_until(lambda: backend.steps(run)[ids["after"]]["status"] != "PENDING", 5, "the next step settled")
    steps = backend.steps(run)
    assert steps[ids["slow"]]["error"] == "Cancelled by user while running"
    assert (steps[ids["after"]]["status"], steps[ids["after"]]["started_at"]) == ("SKIPPED", None)
    assert backend.sql("SELECT status FROM flow_task_run_history WHERE id = %s",
                       steps[ids["slow"]]["flow_run"]) == [("CANCELLED",)]  # fmt: skip
    time.sleep(1.5)
    assert backend.run_status(run) == "CANCELLED"
    assert backend.sql("SELECT count(*) FROM flow_task_run_history WHERE flow_task_id = %s", after) == [(0,)]
    # And the linked task's own state ends REVOKED
    assert celery_app.AsyncResult(entry).state == "REVOKED"


def test_a_revoke_of_the_linked_task_stops_the_run_and_stays_revoked(
    workers: list[WorkerProcess], backend: Backend, celery_app: Celery
) -> None:
    # Given a slow step followed by another, and the linked task still PROGRESS while its DAG runs
    producer = backend_producer(celery_app)
    slow = backend.flow("slow", copy_graph(f"slow_{backend.suffix}", source_table="big", sql=SLOW_SQL))
    after = backend.flow("after", copy_graph(f"after_{backend.suffix}"))
    task, ids = backend.linked({"slow": slow, "after": after}, [("slow", "after", "ALWAYS")])
    run, entry = backend.trigger(producer, task)
    wait_until(lambda: backend.steps(run).get(ids["slow"], {}).get("flow_run"), 20, "the slow step to start")
    wait_until(lambda: producer.AsyncResult(entry).state == "PROGRESS", 5, "the linked task PROGRESS")
    assert producer.AsyncResult(entry).info == {"status": "executing", "linked_task_id": task, "run_history_id": run}
    time.sleep(0.5)

    # When the backend cancels it as its WorkerClient does: a revoke of the id it stored on the run
    assert backend.sql("SELECT celery_task_id FROM linked_task_run_history WHERE id = %s", run) == [(entry,)]
    revoked_at = time.monotonic()
    producer.control.revoke(entry, terminate=True, signal="SIGTERM")

    # Then the linked task is REVOKED at once, the running step stopped within seconds, the next SKIPPED
    wait_until(lambda: producer.AsyncResult(entry).state == "REVOKED", 2, "the linked task REVOKED")
    wait_until(lambda: backend.steps(run)[ids["slow"]]["status"] == "SKIPPED", 10, "the slow step stopped")
    assert time.monotonic() - revoked_at < 5
    steps = backend.steps(run)
    assert steps[ids["slow"]]["error"] == "Cancelled by user while running"
    assert (steps[ids["after"]]["status"], steps[ids["after"]]["error"]) == ("SKIPPED", "Run cancelled")
    assert steps[ids["after"]]["started_at"] is None
    assert backend.sql("SELECT status FROM flow_task_run_history WHERE id = %s",
                       steps[ids["slow"]]["flow_run"]) == [("CANCELLED",)]  # fmt: skip
    # And the run is CANCELLED in the database, the linked task IDLE
    assert backend.run_status(run) == "CANCELLED"
    linked_task = backend.sql("SELECT status, last_run_status FROM linked_tasks WHERE id = %s", task)
    assert linked_task == [("IDLE", "CANCELLED")]
    # And once the run has settled, REVOKED is still there and nothing more ran
    time.sleep(1.5)
    assert producer.AsyncResult(entry).state == "REVOKED"
    assert backend.run_status(run) == "CANCELLED"
    assert backend.sql("SELECT count(*) FROM flow_task_run_history WHERE flow_task_id = %s", after) == [(0,)]


def test_a_worker_killed_mid_run_neither_loses_nor_repeats_a_step(
    workers: list[WorkerProcess], backend: Backend, celery_app: Celery, dbs: FlowDatabases, tmp_path: Path
) -> None:
    # Given a fast first step, then a slow one
    first = backend.flow("first", copy_graph(f"first_{backend.suffix}"))
    slow = backend.flow("slow", copy_graph(f"slow_{backend.suffix}", source_table="big", sql=SLOW_SQL))
    task, ids = backend.linked({"first": first, "slow": slow}, [("first", "slow", "ON_SUCCESS")])
    run, _ = backend.trigger(celery_app, task)
    wait_until(lambda: backend.steps(run).get(ids["slow"], {}).get("flow_run"), 30, "the slow step to start")
    time.sleep(0.5)

    # When the worker is SIGKILLed, master and processes, while the slow step runs; a new one starts
    os.killpg(workers[0].proc.pid, signal.SIGKILL)
    workers[0].proc.wait(10)
    workers.append(launch_worker(tmp_path / "replacement.log", threads=3, DATABASE_URL=dbs.config_url, **WORKER_ENV))

    # Then the run completes on the new worker
    backend.wait_done(run, timeout=90)
    steps = backend.steps(run)
    assert backend.run_status(run) == "SUCCESS"
    assert {name: steps[ids[name]]["status"] for name in ids} == {"first": "SUCCESS", "slow": "SUCCESS"}
    # And the finished step was not repeated, the interrupted one reran on its own flow-run row
    assert backend.sql("SELECT count(*) FROM flow_task_run_history WHERE flow_task_id = %s", first) == [(1,)]
    assert backend.sql("SELECT count(*), min(status) FROM flow_task_run_history WHERE flow_task_id = %s",
                       slow) == [(1, "SUCCESS")]  # fmt: skip
    with psycopg.connect(dbs.warehouse_url) as conn:
        assert conn.execute(f"SELECT count(*) FROM first_{backend.suffix}").fetchone() == (2,)
        assert conn.execute(f"SELECT n FROM slow_{backend.suffix}").fetchall() == [(1100**3 - 35,)]
