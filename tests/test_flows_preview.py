"""``worker.flow_task.preview`` and ``POST /schema`` through a real worker, over a real PostgreSQL source.

The five worked examples of the spec (``tests/data/flow_examples.json``) and one preview per node type and
per join, union and pivot variant; the result's shape; hostile graphs refused or stopped with the worker
alive; the Celery ingress; and the ops service's ``POST /schema`` over real HTTP.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery

from rosetta_jobs.client import JobClient
from rosetta_jobs.contracts import FLOW_PREVIEW

from .conftest import WorkerProcess, wait_until, worker_env
from .support.flowdb import FlowDatabases
from .support.ops_service import ServiceProcess, start_service

EXAMPLES: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "flow_examples.json").read_text())


def preview(client: JobClient, graph: dict[str, Any], node_id: str, limit: int = 500, profile: bool = False) -> Any:
    task_id = client.submit(FLOW_PREVIEW, [1, node_id, graph, limit, profile])
    return client.result(task_id).get(timeout=60)


def edge(source: str, target: str, handle: str | None = None) -> dict[str, Any]:
    return {"id": f"{source}-{target}", "source": source, "target": target, "targetHandle": handle}


def plain(rows: list[list[Any]]) -> list[tuple[Any, ...]]:
    return sorted((tuple(row) for row in rows), key=lambda row: [(v is None, str(v)) for v in row])


def graph_of(*nodes: dict[str, Any], edges: list[dict[str, Any]]) -> dict[str, Any]:
    return {"nodes": list(nodes), "edges": edges}


def source(node_id: str, table: str, **data: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "input", "data": {"source_id": 1, "table_name": table, **data}}


# --- the worked examples ---------------------------------------------------------------------------------------


def test_example_a(flow_worker: WorkerProcess, client: JobClient) -> None:
    # When the clean node of example A is previewed, then renames and casts replace their column, nulls are dropped
    result = preview(client, EXAMPLES["A"], "clean_2_1712000000001")
    assert result["columns"] == ["id", "customer_id", "amount_usd", "amount_x2", "status_uc"]
    assert result["column_types"]["customer_id"] == "BIGINT"
    assert plain(result["rows"]) == [(2, 11, 20.0, 40.0, "PAID"), (5, 13, 50.0, 100.0, "PAID")]


def test_example_b(flow_worker: WorkerProcess, client: JobClient) -> None:
    # When the output of example B is previewed, it shows its upstream aggregate (a destination as an input)
    result = preview(client, EXAMPLES["B"], "out")
    assert result["columns"] == ["region", "total", "count_distinct_customer_id", "count__"]
    assert plain(result["rows"]) == [("north", 35.0, 2, 2), ("south", 90.0, 2, 3), (None, 40.0, 0, 1)]


def test_example_c(flow_worker: WorkerProcess, client: JobClient) -> None:
    # When the pivot of example C is previewed, the union was a UNION (the editor's union_all: false)
    result = preview(client, EXAMPLES["C"], "p")
    assert result["columns"] == ["region", "Q1", "Q2"]
    assert plain(result["rows"]) == [("north", 101, 103), ("south", 105, None)]


def test_example_d(flow_worker: WorkerProcess, client: JobClient) -> None:
    # When the unpivot and the first output of example D are previewed
    long = preview(client, EXAMPLES["D"], "up")
    wide = preview(client, EXAMPLES["D"], "o1")
    assert long["columns"] == ["k", "v", "month", "amt"] and long["row_count"] == 4
    assert plain(wide["rows"]) == [(1, 10, 11, "a"), (2, 20, 21, "b")]


def test_example_e(flow_worker: WorkerProcess, client: JobClient) -> None:
    # When the editor's own graph is previewed: sides by handle, FULL OUTER, rename, drop_nulls, UNPIVOT
    result = preview(client, EXAMPLES["E"], "p")
    expected = ["id", "customer_id", "amount", "status", "updated_at", "id_1", "customer_name", "month", "amount_1"]
    assert result["columns"] == expected
    assert sorted((row[0], row[7], row[8]) for row in result["rows"]) == [
        (2, "feb", 4), (2, "feb", 4), (2, "jan", 3), (2, "jan", 3), (3, "feb", 6), (3, "jan", 5)]  # fmt: skip


# --- node types and variants -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("join_type", "count"), [("INNER", 4), ("LEFT", 6), ("RIGHT", 5), ("FULL OUTER", 7), ("CROSS", 24)]
)
def test_join_variants(flow_worker: WorkerProcess, client: JobClient, join_type: str, count: int) -> None:
    graph = graph_of(
        source("o", "orders"),
        source("c", "customers"),
        {
            "id": "j",
            "type": "join",
            "data": {"join_type": join_type, "left_keys": ["customer_id"], "right_keys": ["id"]},
        },
        edges=[edge("c", "j", "right"), edge("o", "j", "left")],
    )
    result = preview(client, graph, "j")
    assert result["row_count"] == count
    assert result["columns"][:2] == ["id", "customer_id"]  # the left side is orders, whatever the edge order


@pytest.mark.parametrize(("data", "count"), [({}, 8), ({"union_all": True}, 8), ({"union_all": False}, 6),
                                             ({"distinct": True}, 6)])  # fmt: skip
def test_union_variants(flow_worker: WorkerProcess, client: JobClient, data: dict[str, Any], count: int) -> None:
    graph = graph_of(
        source("a", "sales_2023"),
        source("b", "sales_2024"),
        {"id": "u", "type": "union", "data": data},
        edges=[edge("b", "u", "input_b"), edge("a", "u", "input_a")],
    )
    result = preview(client, graph, "u")
    assert result["row_count"] == count
    if count == 8:  # UNION ALL keeps the order: input_a (2023) first, whatever the edge order
        assert [row[2] < 100 for row in result["rows"]] == [True] * 4 + [False] * 4


@pytest.mark.parametrize(
    ("data", "columns", "rows"),
    [
        ({"pivot_column": "quarter", "value_column": "amount", "pivot_values": ["Q1", "Q2"],
          "group_columns": ["region"]},
         ["region", "Q1", "Q2"], [("north", 1, 2), ("south", 6, None)]),
        ({"pivot_type": "PIVOT", "pivot_column": "quarter", "value_column": "amount", "agg_func": "max"},
         ["region", "Q1", "Q2"], [("north", 1, 2), ("south", 3, None)]),
        ({"pivot_type": "UNPIVOT", "pivot_values": ["quarter"], "pivot_column": "field", "value_column": "text"},
         ["region", "amount", "field", "text"], None),
        ({"direction": "unpivot", "unpivot_columns": ["region", "quarter"]}, ["amount", "name", "value"], None),
    ],
)  # fmt: skip
def test_pivot_variants(
    flow_worker: WorkerProcess, client: JobClient, data: dict[str, Any], columns: list[str], rows: Any
) -> None:
    graph = graph_of(source("s", "sales_2023"), {"id": "p", "type": "pivot", "data": data}, edges=[edge("s", "p")])
    result = preview(client, graph, "p")
    assert result["columns"] == columns
    if rows is not None:
        assert plain(result["rows"]) == rows


@pytest.mark.parametrize(
    ("node", "columns", "count"),
    [
        ({"type": "clean", "data": {"select_columns": ["id", "amount"], "deduplicate": True,
                                    "_rename_pairs": [["amount", "Amount USD"]]}}, ["id", "Amount USD"], 5),
        ({"type": "clean", "data": {"drop_nulls": True, "filter_rows": [{"col": "status", "op": "=", "val": "paid"}]}},
         ["id", "customer_id", "amount", "status", "updated_at"], 4),
        ({"type": "aggregate", "data": {"group_by": ["status"], "aggregations": [
            {"function": "SUM", "column": "amount", "alias": "total"}]}}, ["status", "total"], 2),
        ({"type": "new_rows", "data": {"columns": [{"alias": "src", "type": "static", "value": "shop"},
                                                   {"alias": "twice", "type": "expression", "expr": "amount * 2"}]}},
         ["id", "customer_id", "amount", "status", "updated_at", "src", "twice"], 6),
        ({"type": "sql", "data": {"sql_expression": "SELECT status, count(*) AS n FROM {{input}} GROUP BY status;"}},
         ["status", "n"], 2),
    ],
)  # fmt: skip
def test_node_types(
    flow_worker: WorkerProcess, client: JobClient, node: dict[str, Any], columns: list[str], count: int
) -> None:
    graph = graph_of(source("o", "orders"), {"id": "n", **node}, edges=[edge("o", "n")])
    result = preview(client, graph, "n")
    assert (result["columns"], result["row_count"]) == (columns, count)


def test_input_filter_escapes_values_and_sample_limit(flow_worker: WorkerProcess, client: JobClient) -> None:
    graph = graph_of(
        source("o", "orders", sample_limit=2, filter_rows=[{"col": "status", "op": "!=", "val": "it's"}]),
        edges=[],
    )
    assert preview(client, graph, "o")["row_count"] == 2


# --- the result -----------------------------------------------------------------------------------------------


def test_the_result_shape_profile_and_json_safe_cells(flow_worker: WorkerProcess, client: JobClient) -> None:
    # When a table with NaN, json and an array is previewed with profiling
    result = preview(client, graph_of(source("m", "measures"), edges=[]), "m", profile=True)
    # Then the shape is the spec's (4.3), with DuckDB's type names, and NaN is null
    assert set(result) == {"columns", "column_types", "rows", "row_count", "elapsed_ms", "profile"}
    assert result["column_types"] == {"id": "INTEGER", "x": "DOUBLE", "meta": "VARCHAR", "tags": "VARCHAR[]"}
    assert plain(result["rows"]) == [(1, None, '{"a": 1}', ["x", "y"]), (2, 2.5, None, None)]
    assert [p["column"] for p in result["profile"]] == ["id", "x", "meta", "tags"]
    assert isinstance(result["elapsed_ms"], int)


def test_the_limit_caps_the_answer_too(flow_worker: WorkerProcess, client: JobClient) -> None:
    # Given a union of two inputs, each sampled to the limit
    graph = graph_of(source("a", "orders"), source("b", "orders"), {"id": "u", "type": "union", "data": {}},
                     edges=[edge("a", "u"), edge("b", "u")])  # fmt: skip
    # Then the answer has at most the limit (F13)
    assert preview(client, graph, "u", limit=3)["row_count"] == 3


# --- errors and hostile graphs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("graph", "node_id", "message"),
    [
        (graph_of(source("o", "orders"), edges=[]), "zz", "Node 'zz' not found in graph"),
        (graph_of(source("o", "no_such_table"), edges=[]), "o", "no_such_table"),
        (graph_of({"id": "o", "type": "input", "data": {"source_id": 42, "table_name": "x"}}, edges=[]), "o",
         "Source 42 not found"),
        (graph_of(source("o", "orders"), {"id": "n", "type": "note", "data": {}}, edges=[]), "n", "is a note"),
        (graph_of({"id": "o", "type": "input", "data": {"destination_id": 5, "table_name": "x"}}, edges=[]), "o",
         "Snowflake inputs are not supported by this worker yet"),
        (graph_of(source("o", "orders"), {"id": "c", "type": "clean", "data": {"expressions": [
            {"expr": "(SELECT count(*) FROM glob('/etc/*'))", "alias": "n"}]}}, edges=[edge("o", "c")]), "c",
         "Clean node c refused: function glob is not allowed"),
    ],
)  # fmt: skip
def test_errors_are_failures_with_the_reason(
    flow_worker: WorkerProcess, client: JobClient, graph: dict[str, Any], node_id: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        preview(client, graph, node_id)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "not allowed"),
        ("SELECT * FROM {{input}} WHERE id IN (SELECT id FROM payroll)", "reads 'payroll'"),
        ("SELECT id FROM src_0.public.payroll", "reads 'src_0.public.payroll'"),
        (
            "SELECT sum(len(range(id * 100000000))) AS n FROM {{input}}",
            r"more than 256 MB of memory|stopped its executor",
        ),
    ],
)
def test_hostile_sql_is_refused_or_stopped_and_the_worker_goes_on(
    flow_worker: WorkerProcess, client: JobClient, sql: str, message: str
) -> None:
    # Given a SQL node reading a file, another table, or building a memory bomb
    graph = graph_of(source("o", "orders"), {"id": "s", "type": "sql", "data": {"sql_expression": sql}},
                     edges=[edge("o", "s")])  # fmt: skip
    # When it is previewed, it is refused, or stopped at the memory bound
    with pytest.raises(ValueError, match=message):
        preview(client, graph, "s")
    # And the worker still previews
    assert preview(client, graph_of(source("o", "orders"), edges=[]), "o")["row_count"] == 6
    assert flow_worker.proc.poll() is None


def test_the_celery_ingress_reaches_the_preview(flow_worker: WorkerProcess, celery_app: Celery) -> None:
    # When the backend's send_task sends the preview with four positional arguments (profiling defaults to on)
    sent = celery_app.send_task("worker.flow_task.preview", args=[1, "a", EXAMPLES["C"], 2], queue="preview")
    result = sent.get(timeout=60)
    # Then AsyncResult reads the rows and the profile
    assert result["row_count"] == 2 and "profile" in result


# --- POST /schema ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(
    flow_worker: WorkerProcess, flow_dbs: FlowDatabases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    logs = tmp_path_factory.mktemp("flow-schema")
    svc = start_service(worker_env(DATABASE_URL=flow_dbs.config_url), logs / "service.log")
    yield svc
    svc.stop()


@pytest.fixture
def live(service: ServiceProcess) -> ServiceProcess:
    """The service once it sees the worker's heartbeat (other tests flush Redis; a heartbeat comes every 5 s)."""
    wait_until(lambda: httpx.get(service.url + "/health", timeout=5).json().get("healthy"), 15, "a live worker")
    return service


@pytest.mark.parametrize(
    ("example", "node_id", "columns"),
    [
        ("A", "input_1_1712000000000", [("id", "INTEGER"), ("customer_id", "INTEGER"), ("amount", "DECIMAL(10,2)"),
                                        ("status", "VARCHAR"), ("updated_at", "TIMESTAMP WITH TIME ZONE")]),
        ("A", "clean_2_1712000000001", [("id", "INTEGER"), ("customer_id", "BIGINT"), ("amount_usd", "DECIMAL(10,2)"),
                                        ("amount_x2", "DECIMAL(18,2)"), ("status_uc", "VARCHAR")]),
        ("A", "output_3_1712000000002", None),
        ("B", "agg", [("region", "VARCHAR"), ("total", "DECIMAL(38,2)"), ("count_distinct_customer_id", "BIGINT"),
                      ("count__", "BIGINT")]),
        ("B", "j", None),
        ("C", "u", [("region", "VARCHAR"), ("quarter", "VARCHAR"), ("amount", "INTEGER")]),
        ("C", "nr", None),
        ("C", "p", [("region", "VARCHAR"), ("Q1", "HUGEINT"), ("Q2", "HUGEINT")]),
        ("D", "s", [("k", "INTEGER"), ("jan", "INTEGER"), ("feb", "INTEGER"), ("v", "VARCHAR")]),
        ("D", "up", [("k", "INTEGER"), ("v", "VARCHAR"), ("month", "VARCHAR"), ("amt", "INTEGER")]),
    ],
)  # fmt: skip
def test_schema_of_a_node_of_each_kind(
    live: ServiceProcess, example: str, node_id: str, columns: list[tuple[str, str]] | None
) -> None:
    graph = EXAMPLES[example]
    response = httpx.post(live.url + "/schema", json={"node_id": node_id, **graph}, timeout=30)
    assert response.status_code == 200
    answer = [(c["column_name"], c["data_type"]) for c in response.json()["columns"]]
    if columns is None:
        assert answer  # non-empty; the types are the upstream's
        if node_id == "output_3_1712000000002":
            assert answer[0] == ("id", "INTEGER") and answer[2][0] == "amount_usd"
    else:
        assert answer == columns


@pytest.mark.parametrize("node_id", ["nope", "note-1"])
def test_schema_errors_are_empty_columns(live: ServiceProcess, node_id: str) -> None:
    started = time.monotonic()
    response = httpx.post(live.url + "/schema", json={"node_id": node_id, **EXAMPLES["C"]}, timeout=30)
    assert (response.status_code, response.json()) == (200, {"columns": []})
    assert time.monotonic() - started < 10
    # And the reason is in the log
    wait_until(lambda: f"POST /schema (node {node_id})" in live.output(), 5, "the reason logged")


def test_schema_request_without_a_field_is_422(service: ServiceProcess) -> None:
    assert httpx.post(service.url + "/schema", json={"node_id": "a", "nodes": []}, timeout=10).status_code == 422
