"""``worker.flow_task.execute`` through a real worker: real PostgreSQL source and destination, real config rows.

APPEND, REPLACE and UPSERT (DuckDB's MERGE, and the staging path for json and array columns); a failing output
beside succeeding ones; the run, node-log, flow-task and notification rows as the backend reads them; no
destination password anywhere when an output cannot attach; watermarks; a CANCELLED run kept; hostile SQL.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from celery import Celery

from rosetta_jobs.client import JobClient
from rosetta_jobs.contracts import FLOW_EXECUTE

from .conftest import RESULTS_DB, WorkerProcess, redis_url
from .support.flowdb import DESTINATION_PASSWORD, FlowDatabases


@pytest.fixture
def tables(flow_dbs: FlowDatabases) -> Iterator[dict[str, str]]:
    """Destination tables of this test's own (unique names), dropped afterwards."""
    suffix = uuid.uuid4().hex[:6]
    names = {k: f"{k}_{suffix}" for k in ("copy", "replaced", "measures", "keys", "events")}
    with psycopg.connect(flow_dbs.warehouse_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {names['copy']} (id int PRIMARY KEY, customer_id int, amount numeric(10,2), "
                     "status text)")  # fmt: skip
        conn.execute(f"INSERT INTO {names['copy']} VALUES (1, 0, 0, 'old'), (77, 7, 7, 'kept')")
        conn.execute(f"CREATE TABLE {names['replaced']} (id int, customer_id int, amount numeric(10,2), status text)")
        conn.execute(f"INSERT INTO {names['replaced']} VALUES (99, 9, 9, 'stale')")
        conn.execute(
            f"CREATE TABLE {names['measures']} (id int PRIMARY KEY, x double precision, meta jsonb, tags text[])"
        )
        conn.execute(f"INSERT INTO {names['measures']} VALUES (1, 0, '{{}}', ARRAY['old'])")
        conn.execute(f"CREATE TABLE {names['keys']} (id int PRIMARY KEY)")
        conn.execute(f"INSERT INTO {names['keys']} VALUES (1)")
    yield names
    with psycopg.connect(flow_dbs.warehouse_url, autocommit=True) as conn:
        for name in names.values():
            conn.execute(f"DROP TABLE IF EXISTS {name}")


def start_run(flow_dbs: FlowDatabases, status: str = "RUNNING") -> tuple[int, int]:
    """A flow task and a run row, as the backend's ``trigger_run`` leaves them."""
    with psycopg.connect(flow_dbs.config_url, autocommit=True) as conn:
        task = conn.execute("INSERT INTO flow_tasks (name, status) VALUES (%s, 'RUNNING') RETURNING id",
                            (f"flow-{uuid.uuid4().hex[:8]}",)).fetchone()  # fmt: skip
        assert task is not None
        run = conn.execute("INSERT INTO flow_task_run_history (flow_task_id, status) VALUES (%s, %s) RETURNING id",
                           (task[0], status)).fetchone()  # fmt: skip
        assert run is not None
    return int(task[0]), int(run[0])


def execute(client: JobClient, flow_dbs: FlowDatabases, graph: dict[str, Any], **run: int) -> tuple[int, int, Any]:
    flow_task_id, run_id = (run["flow_task_id"], run["run_id"]) if run else start_run(flow_dbs)
    task_id = client.submit(FLOW_EXECUTE, [flow_task_id, run_id, graph])
    return flow_task_id, run_id, client.result(task_id).get(timeout=90)


def rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]


def edge(source: str, target: str) -> dict[str, Any]:
    return {"id": f"{source}-{target}", "source": source, "target": target}


def output(node_id: str, table: str, mode: str, destination: int = 3, **data: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "output", "data": {"destination_id": destination, "table_name": table,
                                                      "write_mode": mode, **data}}  # fmt: skip


def test_every_write_mode_and_a_failure_beside_them(
    flow_worker: WorkerProcess, flow_dbs: FlowDatabases, tables: dict[str, str], celery_app: Celery
) -> None:
    # Given one input feeding outputs of every mode, one that cannot attach, one to Snowflake, and a note
    columns = ["id", "customer_id", "amount", "status"]
    graph = {
        "nodes": [
            {"id": "in_o", "type": "input", "data": {"source_id": 1, "table_name": "orders", "label": "Orders"}},
            {"id": "in_m", "type": "input", "data": {"source_id": 1, "table_name": "measures"}},
            {"id": "c1", "type": "clean", "data": {"select_columns": columns, "deduplicate": True}},
            output("o_merge", tables["copy"], "UPSERT", upsert_keys=["id"]),
            output("o_stage", tables["measures"], "UPSERT", upsert_keys=["id"]),
            output("o_replace", tables["replaced"], "REPLACE"),
            output("o_append", tables["copy"], "APPEND"),
            output("o_new", f"new_{tables['copy']}", "APPEND"),
            {"id": "c_keys", "type": "clean", "data": {"select_columns": ["id"], "deduplicate": True}},
            output("o_keys", tables["keys"], "UPSERT", upsert_keys=["id"]),
            output("o_down", "anything", "APPEND", destination=4),
            output("o_snow", "anything", "APPEND", destination=5),
            {"id": "lonely", "type": "input", "data": {"source_id": 2, "table_name": "payroll"}},
            {"id": "n", "type": "note", "data": {"note_content": "not run"}},
        ],
        "edges": [edge("in_o", "c1"), edge("c1", "o_merge"), edge("in_m", "o_stage"), edge("c1", "o_replace"),
                  edge("c1", "o_append"), edge("c1", "o_new"), edge("c1", "c_keys"), edge("c_keys", "o_keys"),
                  edge("c1", "o_down"), edge("c1", "o_snow")],
    }  # fmt: skip
    flow_task_id, run_id = start_run(flow_dbs)

    # When the backend sends it through Celery, as its WorkerClient does
    sent = celery_app.send_task("worker.flow_task.execute", args=[flow_task_id, run_id, graph], queue="default")
    result = sent.get(timeout=90)

    # Then the Celery state is SUCCESS with the original's result, FAILED because some outputs failed
    assert sent.state == "SUCCESS"
    assert set(result) == {"status", "total_input_records", "total_output_records", "elapsed_ms", "node_logs"}
    assert result["status"] == "FAILED"
    logs = {log["node_id"]: log for log in result["node_logs"]}
    statuses = {node: log["status"] for node, log in logs.items()}
    assert statuses == {"in_o": "SUCCESS", "in_m": "SUCCESS", "c1": "SUCCESS", "o_merge": "SUCCESS",
                        "o_stage": "SUCCESS", "o_replace": "SUCCESS", "o_append": "FAILED", "o_new": "SUCCESS",
                        "c_keys": "SUCCESS", "o_keys": "SUCCESS", "o_down": "FAILED", "o_snow": "FAILED",
                        "lonely": "SKIPPED"}  # fmt: skip
    # And only the inputs that feed an output are counted (the lonely one is not run at all)
    assert result["total_input_records"] == 6 + 2
    assert (logs["c1"]["row_count_in"], logs["c1"]["row_count_out"]) == (6, 5)
    assert logs["o_merge"]["node_label"] == f"Output → {tables['copy']}"
    assert "duplicate key" in logs["o_append"]["error_message"]
    assert "Snowflake destinations are not supported by this worker yet" in logs["o_snow"]["error_message"]
    assert logs["lonely"]["error_message"] == "Not connected to an output: not run"

    # And the destination holds what each mode means
    copy = rows(flow_dbs.warehouse_url, f"SELECT id, status FROM {tables['copy']} ORDER BY id")
    assert copy == [(1, "paid"), (2, "paid"), (3, "void"), (4, "paid"), (5, "paid"), (77, "kept")]  # merged
    assert [r[0] for r in rows(flow_dbs.warehouse_url, f"SELECT id FROM {tables['replaced']} ORDER BY id")] == [
        1,
        2,
        3,
        4,
        5,
    ]
    measures = rows(flow_dbs.warehouse_url, f"SELECT id, meta, tags, x::text FROM {tables['measures']} ORDER BY id")
    assert measures == [(1, {"a": 1}, ["x", "y"], "NaN"), (2, None, None, "2.5")]  # json and arrays converted
    assert rows(flow_dbs.warehouse_url, f"SELECT count(*) FROM new_{tables['copy']}") == [(5,)]  # a new table, created
    assert rows(flow_dbs.warehouse_url, f"SELECT id FROM {tables['keys']} ORDER BY id") == [
        (1,),
        (2,),
        (3,),
        (4,),
        (5,),
    ]

    # And the run, its node logs and the flow task are as the backend reads them
    run = rows(flow_dbs.config_url, "SELECT status, error_message, total_input_records, total_output_records,"
               " finished_at FROM flow_task_run_history WHERE id = %s", run_id)[0]  # fmt: skip
    assert run[0] == "FAILED" and run[4] is not None and run[2:4] == (8, result["total_output_records"])
    assert run[1].count("; ") == 2 and "Snowflake" in run[1]
    node_rows = rows(flow_dbs.config_url, "SELECT node_id, node_type, status, row_count_in, row_count_out, node_label"
                     " FROM flow_task_run_node_log WHERE run_history_id = %s ORDER BY id", run_id)  # fmt: skip
    assert [r[0] for r in node_rows] == [log["node_id"] for log in result["node_logs"]]
    assert ("in_o", "input", "SUCCESS", 6, 6, "Orders") in node_rows
    task = rows(flow_dbs.config_url, "SELECT status, last_run_status, last_run_record_count, last_run_at"
                " FROM flow_tasks WHERE id = %s", flow_task_id)[0]  # fmt: skip
    assert task[:3] == ("FAILED", "FAILED", result["total_output_records"]) and task[3] is not None
    # And each failed output was notified, as the backend counts notifications
    keys = rows(flow_dbs.config_url, "SELECT key_notification, title FROM notification_log WHERE key_notification"
                " LIKE %s ORDER BY key_notification", f"flow_task_error_{flow_task_id}_%")  # fmt: skip
    assert [k for k, _ in keys] == [f"flow_task_error_{flow_task_id}_{n}" for n in ("o_append", "o_down", "o_snow")]
    assert {t for _, t in keys} == {f"Flow Task {flow_task_id} Node Failed"}

    # And the destination's password is nowhere: result, rows, notifications, task state, worker log
    everywhere = json.dumps(result) + json.dumps(rows(flow_dbs.config_url, "SELECT message FROM notification_log"))
    everywhere += json.dumps(rows(flow_dbs.config_url, "SELECT error_message FROM flow_task_run_node_log"))
    everywhere += json.dumps(rows(flow_dbs.config_url, "SELECT error_message FROM flow_task_run_history"), default=str)
    import redis

    everywhere += str(redis.Redis.from_url(redis_url(RESULTS_DB)).get(f"celery-task-meta-{sent.id}"))
    everywhere += flow_worker.output()
    assert "port=1" in logs["o_down"]["error_message"] or "Connection refused" in logs["o_down"]["error_message"]
    for form in (DESTINATION_PASSWORD, DESTINATION_PASSWORD.replace("'", "\\'"), "s3cret"):
        assert form not in everywhere


def test_a_failing_node_skips_its_branch_only(
    flow_worker: WorkerProcess, client: JobClient, flow_dbs: FlowDatabases, tables: dict[str, str]
) -> None:
    # Given a SQL node reading another table, beside a healthy branch
    graph = {
        "nodes": [
            {"id": "o", "type": "input", "data": {"source_id": 1, "table_name": "orders"}},
            {"id": "s", "type": "sql", "data": {"sql_expression": "SELECT * FROM {{input}} JOIN payroll USING (id)"}},
            output("o_bad", tables["replaced"], "REPLACE"),
            {"id": "c", "type": "clean", "data": {"select_columns": ["id"], "deduplicate": True}},
            output("o_good", tables["keys"], "UPSERT", upsert_keys=["id"]),
        ],
        "edges": [edge("o", "s"), edge("s", "o_bad"), edge("o", "c"), edge("c", "o_good")],
    }
    _, _, result = execute(client, flow_dbs, graph)
    statuses = {log["node_id"]: (log["status"], log["error_message"]) for log in result["node_logs"]}
    # Then the SQL node is refused, its output SKIPPED, the other branch written
    assert statuses["s"][0] == "FAILED" and "reads 'payroll'" in statuses["s"][1]
    assert statuses["o_bad"] == ("SKIPPED", "Skipped: upstream node 'sql' (s) did not succeed")
    assert statuses["o_good"][0] == "SUCCESS"
    assert rows(flow_dbs.warehouse_url, f"SELECT count(*) FROM {tables['replaced']}") == [(1,)]  # untouched


def test_a_whole_run_failure_is_persisted_notified_and_a_failure(
    flow_worker: WorkerProcess, client: JobClient, flow_dbs: FlowDatabases
) -> None:
    # Given a graph with a cycle
    graph = {"nodes": [{"id": "a", "type": "clean"}, {"id": "b", "type": "clean"}],
             "edges": [edge("a", "b"), edge("b", "a")]}  # fmt: skip
    flow_task_id, run_id = start_run(flow_dbs)
    # When it runs, the task fails with the original's ValueError
    with pytest.raises(ValueError, match="Graph contains a cycle"):
        execute(client, flow_dbs, graph, flow_task_id=flow_task_id, run_id=run_id)
    # And the run is FAILED with the reason, and notified under the flow task's key
    run = rows(flow_dbs.config_url, "SELECT status, error_message FROM flow_task_run_history WHERE id = %s", run_id)
    assert run[0][0] == "FAILED" and "cycle" in run[0][1]
    assert rows(flow_dbs.config_url, "SELECT title FROM notification_log WHERE key_notification = %s",
                f"flow_task_error_{flow_task_id}") == [(f"Flow Task {flow_task_id} Failed",)]  # fmt: skip


def test_a_memory_bomb_ends_the_run_and_the_worker_goes_on(
    flow_worker: WorkerProcess, client: JobClient, flow_dbs: FlowDatabases, tables: dict[str, str]
) -> None:
    graph = {
        "nodes": [
            {"id": "o", "type": "input", "data": {"source_id": 1, "table_name": "orders"}},
            {"id": "s", "type": "sql", "data": {"sql_expression":
                                                "SELECT sum(len(range(id * 100000000))) AS n FROM {{input}}"}},
            output("out", tables["keys"], "APPEND"),
        ],
        "edges": [edge("o", "s"), edge("s", "out")],
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"memory|stopped its executor"):
        execute(client, flow_dbs, graph)
    assert flow_worker.proc.poll() is None
    ok = {"nodes": [{"id": "o", "type": "input", "data": {"source_id": 1, "table_name": "t2"}},
                    output("out", f"t2_{tables['keys']}", "APPEND")], "edges": [edge("o", "out")]}  # fmt: skip
    assert execute(client, flow_dbs, ok)[2]["status"] == "SUCCESS"
    with psycopg.connect(flow_dbs.warehouse_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE t2_{tables['keys']}")


def test_watermarks_read_only_new_rows(
    flow_worker: WorkerProcess, client: JobClient, flow_dbs: FlowDatabases, tables: dict[str, str]
) -> None:
    # Given an events table, and a flow copying it incrementally by updated_at
    with psycopg.connect(flow_dbs.shop_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {tables['events']} (id int, updated_at timestamptz)")
        conn.execute(f"INSERT INTO {tables['events']} VALUES (1, '2024-01-01'), (2, '2024-01-02')")
    graph = {
        "nodes": [
            {"id": "e", "type": "input", "data": {"source_id": 1, "table_name": tables["events"],
                                                  "watermark_column": "updated_at"}},
            output("out", tables["events"], "APPEND"),
        ],
        "edges": [edge("e", "out")],
    }  # fmt: skip
    flow_task_id, _ = start_run(flow_dbs)

    def run() -> Any:
        _, second = start_run(flow_dbs)
        return execute(client, flow_dbs, graph, flow_task_id=flow_task_id, run_id=second)[2]

    # When it runs three times, with a new event before the third
    first, second = run(), run()
    with psycopg.connect(flow_dbs.shop_url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {tables['events']} VALUES (3, '2024-01-03')")
    third = run()
    # Then each run read only what was new, and the watermark is stored as the backend reads it
    assert [r["total_input_records"] for r in (first, second, third)] == [2, 0, 1]
    mark = rows(flow_dbs.config_url, "SELECT watermark_column, last_watermark_value, record_count,"
                " last_run_at IS NOT NULL FROM flow_task_watermarks WHERE flow_task_id = %s", flow_task_id)  # fmt: skip
    assert mark == [("updated_at", "2024-01-03 00:00:00+00", 1, True)]
    assert rows(flow_dbs.warehouse_url, f"SELECT id FROM {tables['events']} ORDER BY id") == [(1,), (2,), (3,)]
    with psycopg.connect(flow_dbs.shop_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {tables['events']}")


def test_a_cancelled_run_keeps_its_status(
    flow_worker: WorkerProcess, client: JobClient, flow_dbs: FlowDatabases, tables: dict[str, str]
) -> None:
    # Given a run the backend already marked CANCELLED (its cancel endpoint), whose message still runs
    flow_task_id, run_id = start_run(flow_dbs, status="CANCELLED")
    graph = {"nodes": [{"id": "o", "type": "input", "data": {"source_id": 1, "table_name": "t2"}},
                       output("out", f"t2c_{tables['keys']}", "APPEND")], "edges": [edge("o", "out")]}  # fmt: skip
    # When it finishes
    execute(client, flow_dbs, graph, flow_task_id=flow_task_id, run_id=run_id)
    # Then CANCELLED stays and the flow task is not touched (F20); the node logs are kept
    assert rows(flow_dbs.config_url, "SELECT status FROM flow_task_run_history WHERE id = %s", run_id) == [
        ("CANCELLED",)
    ]
    assert rows(flow_dbs.config_url, "SELECT status FROM flow_tasks WHERE id = %s", flow_task_id) == [("RUNNING",)]
    assert len(rows(flow_dbs.config_url, "SELECT 1 FROM flow_task_run_node_log WHERE run_history_id = %s", run_id)) == 2
    with psycopg.connect(flow_dbs.warehouse_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS t2c_{tables['keys']}")
