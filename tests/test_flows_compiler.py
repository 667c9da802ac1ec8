"""The graph compiler, pure: graphs in, SQL out, run by an in-process DuckDB over tables created here.

The five worked examples of ``../shared/spec/rosetta-tasks.md`` 2.6 are here with the defects' fixes applied
(``docs/flows.md`` lists each difference); ``test_flows_preview.py`` runs the node types through real workers
against a real PostgreSQL source.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from rosetta_jobs.flows.compiler import Plan, compile_graph
from rosetta_jobs.flows.graph import Graph, GraphError, NodeError
from rosetta_jobs.flows.sandbox import check_step

#: The five worked examples of the spec, as stored graphs (shared with ``test_flows_preview.py``).
EXAMPLES: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "flow_examples.json").read_text())


@pytest.fixture(scope="module")
def db() -> Iterator[duckdb.DuckDBPyConnection]:
    """Two attached catalogs standing for the sources: ``src_0`` (source 1) and ``src_1`` (the second attachment)."""
    con = duckdb.connect()
    for alias in ("src_0", "src_1"):
        con.execute(f"ATTACH ':memory:' AS {alias}")
        con.execute(f"CREATE SCHEMA {alias}.public")
    con.execute("CREATE SCHEMA src_0.sales")
    con.execute(
        "CREATE TABLE src_0.public.orders AS SELECT * FROM (VALUES (1, 10, 5.0, 'paid'), (2, 11, 20.0, 'paid'),"
        " (2, 11, 20.0, 'paid'), (3, 12, 30.0, 'void'), (4, NULL, 40.0, 'paid'), (5, 13, 50.0, 'paid'))"
        " v(id, customer_id, amount, status)"
    )
    con.execute(
        "CREATE TABLE src_0.public.customers AS SELECT * FROM (VALUES (10, 'Ann', 1, 2), (11, 'Bob', 3, 4),"
        " (12, 'Cy', 5, 6), (99, 'Nobody', 7, 8)) v(id, name, jan, feb)"
    )
    con.execute("CREATE TABLE src_0.sales.orders AS SELECT * FROM src_0.public.orders")
    con.execute(
        "CREATE TABLE src_1.public.customers AS SELECT * FROM (VALUES (10, 'north'), (11, 'south'), (12, 'north'),"
        " (13, 'south')) v(id, region)"
    )
    for year, base in ((2023, 1), (2024, 100)):
        con.execute(
            f"CREATE TABLE src_0.public.sales_{year} AS SELECT * FROM (VALUES ('north', 'Q1', {base}),"
            f" ('north', 'Q2', {base + 1}), ('south', 'Q1', {base + 2}), ('south', 'Q1', {base + 2}))"
            " v(region, quarter, amount)"
        )
    con.execute("CREATE TABLE src_1.public.unused AS SELECT 1 AS x")
    con.execute("CREATE TABLE src_0.public.t1 AS SELECT * FROM (VALUES (1, 10, 11), (2, 20, 21)) v(k, jan, feb)")
    con.execute("CREATE TABLE src_0.public.t2 AS SELECT * FROM (VALUES (1, 'a'), (2, 'b')) v(k, v)")
    yield con
    con.close()


def compiled(graph: dict[str, Any]) -> Plan:
    """The plan of ``graph``, every step passed through the sandbox (as a run does)."""
    plan = compile_graph(Graph.parse(graph))
    for step in plan.steps.values():
        if step.body is not None and step.error is None:
            check_step(step, inputs=[plan.steps[u].name for u in step.upstream])
    return plan


def rows(
    db: duckdb.DuckDBPyConnection, plan: Plan, node_id: str, select: str = "*"
) -> tuple[list[str], list[tuple[Any, ...]]]:
    cursor = db.execute(f"SELECT {select} FROM ({plan.statement(node_id)})")
    plain = [tuple(float(v) if isinstance(v, Decimal) else v for v in row) for row in cursor.fetchall()]
    return [d[0] for d in cursor.description], sorted(plain, key=lambda row: [(v is None, str(v)) for v in row])


def edge(source: str, target: str, handle: str | None = None) -> dict[str, Any]:
    return {"id": f"{source}-{target}", "source": source, "target": target, "targetHandle": handle}


# --- the five worked examples (spec 2.6) ---------------------------------------------------------------------

EXAMPLE_A = EXAMPLES["A"]


def test_example_a_renames_and_casts_in_place_and_drops_nulls(db: duckdb.DuckDBPyConnection) -> None:
    # Given example A (input -> clean -> UPSERT output)
    plan = compiled(EXAMPLE_A)

    # When the clean node's rows are read
    columns, result = rows(db, plan, "clean_2_1712000000001")

    # Then the rename and the cast replace their column (F3), drop_nulls drops order 4 (F1), DISTINCT merges 2
    assert columns == ["id", "customer_id", "amount_usd", "amount_x2", "status_uc"]
    assert result == [(2, 11, 20.0, 40.0, "PAID"), (5, 13, 50.0, 100.0, "PAID")]
    assert db.execute(f"SELECT typeof(customer_id) FROM ({plan.statement('clean_2_1712000000001')})").fetchone() == (
        "BIGINT",
    )
    # And the output is planned as the original did, from the clean node
    output = plan.outputs["output_3_1712000000002"]
    planned = (output.source, output.table, output.schema, output.write_mode, output.upsert_keys, output.destination_id)
    assert planned == ("clean_2_1712000000001", "orders_clean", "public", "UPSERT", ("id",), 7)


EXAMPLE_B = EXAMPLES["B"]


def test_example_b_join_then_aggregate(db: duckdb.DuckDBPyConnection) -> None:
    # Given example B (its node list out of flow order)
    plan = compiled(EXAMPLE_B)

    # When it is compiled
    columns, result = rows(db, plan, "agg")

    # Then the order is the flow's, the two inputs have an attachment each, and the aggregate is the original's
    assert [step.node.id for step in plan.steps.values()] == ["in-a", "in-b", "j", "agg", "out"]
    assert [(a.alias, a.source_id, a.destination_id) for a in plan.attachments] == [
        ("src_0", 1, None),
        ("src_1", None, 3),
    ]
    assert columns == ["region", "total", "count_distinct_customer_id", "count__"]
    assert result == [("north", 35.0, 2, 2), ("south", 90.0, 2, 3), (None, 40.0, 0, 1)]
    output = plan.outputs["out"]
    assert (output.table, output.schema, output.write_mode) == ("region_totals", "mart", "APPEND")


EXAMPLE_C = EXAMPLES["C"]


def test_example_c_union_distinct_new_columns_and_pivot(db: duckdb.DuckDBPyConnection) -> None:
    # Given example C (union_all false, a note, a disconnected input)
    plan = compiled(EXAMPLE_C)

    # When the union, the new columns and the pivot are read
    _, union = rows(db, plan, "u")
    columns, added = rows(db, plan, "nr", "* REPLACE (loaded_at::VARCHAR AS loaded_at)")
    pivot_columns, pivoted = rows(db, plan, "p")

    # Then union_all false is a UNION (F1): the duplicate south row of each year is gone
    assert len(union) == 6
    # And the static values keep their JSON types, the alias-less expression is NULL
    assert columns == ["region", "quarter", "amount", "src_system", "batch", "is_new", "loaded_at", "new_col"]
    assert {(*row[3:6], row[7]) for row in added} == {("O'Hare", 42, True, None)}
    # And the pivot is the original's, with the union deduplicated
    assert pivot_columns == ["region", "Q1", "Q2"]
    assert pivoted == [("north", 101, 103), ("south", 105, None)]
    # And both inputs of source 1 share one attachment; the lonely input has its own
    assert [a.alias for a in plan.attachments] == ["src_0", "src_1"]
    assert plan.steps["lonely"].table == ("src_1", "public", "unused")
    assert list(plan.steps) == ["a", "b", "u", "nr", "p", "note-1", "lonely", "o"]


EXAMPLE_D = EXAMPLES["D"]


def test_example_d_sql_templates_unpivot_and_two_outputs(db: duckdb.DuckDBPyConnection) -> None:
    # Given example D
    plan = compiled(EXAMPLE_D)

    # When the SQL node and the unpivot are read
    sql_columns, joined = rows(db, plan, "s")
    columns, long = rows(db, plan, "up")

    # Then the templates named the inputs, and the legacy unpivot fields were honoured
    assert sql_columns == ["k", "jan", "feb", "v"] and joined == [(1, 10, 11, "a"), (2, 20, 21, "b")]
    assert columns == ["k", "v", "month", "amt"]
    assert len(long) == 4
    # And the order is the same in every process (F5): siblings in node-list order
    assert list(plan.steps) == ["x", "y", "s", "up", "o1", "o2"]
    assert [(o.source, o.destination_id) for o in plan.outputs.values()] == [("s", 7), ("up", 8)]


EXAMPLE_E = EXAMPLES["E"]


def test_example_e_runs_what_the_editor_shows(db: duckdb.DuckDBPyConnection) -> None:
    # Given example E, the graph the editor really stores (right side connected first)
    plan = compiled(EXAMPLE_E)

    # When the join, the clean node and the unpivot are read
    join_columns, joined = rows(db, plan, "j")
    clean_columns, cleaned = rows(db, plan, "c")
    columns, result = rows(db, plan, "p")

    # Then the sides follow the handles (F2) and FULL OUTER keeps the unmatched rows of both sides (F1)
    assert join_columns[:4] == ["id", "customer_id", "amount", "status"]
    assert (None, None, None, None, 99, "Nobody", 7, 8) in joined
    assert any(row[1] is None for row in joined)
    # And the rename is applied in place, amount > 10 filters, drop_nulls drops every row with a NULL
    assert clean_columns == ["id", "customer_id", "amount", "status", "id_1", "customer_name", "jan", "feb"]
    assert sorted(row[0] for row in cleaned) == [2, 2, 3]
    # And UNPIVOT is an unpivot of the editor's columns into its name and value columns (amount exists: amount_1)
    assert columns == ["id", "customer_id", "amount", "status", "id_1", "customer_name", "month", "amount_1"]
    assert sorted((row[0], row[6], row[7]) for row in result) == [
        (2, "feb", 4), (2, "feb", 4), (2, "jan", 3), (2, "jan", 3), (3, "feb", 6), (3, "jan", 5)]  # fmt: skip


# --- node types and variants --------------------------------------------------------------------------------


def two_inputs(node: dict[str, Any], *edges: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodes": [
            {"id": "o", "type": "input", "data": {"source_id": 1, "table_name": "orders"}},
            {"id": "c", "type": "input", "data": {"source_id": 1, "table_name": "customers"}},
            node,
        ],
        "edges": list(edges),
    }


@pytest.mark.parametrize(
    ("join_type", "count", "unmatched"),
    [("INNER", 4, False), ("LEFT", 6, False), ("RIGHT", 5, True), ("FULL OUTER", 7, True), ("full", 7, True)],
)
def test_join_types(db: duckdb.DuckDBPyConnection, join_type: str, count: int, unmatched: bool) -> None:
    # Given orders (left handle) joined to customers (right handle), the edges in the other order
    graph = two_inputs(
        {
            "id": "j",
            "type": "join",
            "data": {"join_type": join_type, "left_keys": ["customer_id"], "right_keys": ["id"]},
        },
        edge("c", "j", "right"),
        edge("o", "j", "left"),
    )
    # When it runs
    _, result = rows(db, compiled(graph), "j")
    # Then each join type keeps the rows it should
    assert len(result) == count
    assert any(row[0] is None and row[4] == 99 for row in result) is unmatched


def test_cross_join_needs_no_keys(db: duckdb.DuckDBPyConnection) -> None:
    graph = two_inputs({"id": "j", "type": "join", "data": {"join_type": "CROSS"}}, edge("o", "j"), edge("c", "j"))
    assert len(rows(db, compiled(graph), "j")[1]) == 24


def test_union_order_follows_handles(db: duckdb.DuckDBPyConnection) -> None:
    # Given a union whose input_b edge comes first
    graph = {
        "nodes": [
            {"id": "a", "type": "input", "data": {"source_id": 1, "table_name": "t1", "columns": ["k"]}},
            {"id": "b", "type": "input", "data": {"source_id": 1, "table_name": "t2", "columns": ["v"]}},
            {"id": "u", "type": "union", "data": {}},
        ],
        "edges": [edge("b", "u", "input_b"), edge("a", "u", "input_a")],
    }
    # When it runs, the names come from input_a (a union is positional)
    columns, result = rows(db, compiled(graph), "u")
    assert columns == ["k"] and len(result) == 4


def test_pivot_without_values_discovers_them(db: duckdb.DuckDBPyConnection) -> None:
    graph = {
        "nodes": [
            {"id": "s", "type": "input", "data": {"source_id": 1, "table_name": "sales_2023"}},
            {"id": "p", "type": "pivot", "data": {"pivot_type": "PIVOT", "pivot_column": "quarter",
                                                  "value_column": "amount", "agg_func": "max"}},
        ],
        "edges": [edge("s", "p")],
    }  # fmt: skip
    columns, result = rows(db, compiled(graph), "p")
    assert columns == ["region", "Q1", "Q2"] and result == [("north", 1, 2), ("south", 3, None)]


def test_clean_with_all_columns_drops_casts_and_renames(db: duckdb.DuckDBPyConnection) -> None:
    graph = {
        "nodes": [
            {"id": "o", "type": "input", "data": {"source_id": 1, "table_name": "orders", "sample_limit": "3"}},
            {"id": "c", "type": "clean", "data": {"drop_columns": ["status"],
             "cast_columns": [{"column": "amount", "target_type": "INTEGER"}],
             "_rename_pairs": [["amount", "whole"], ["id", "order id"]], "filter_rows": [
                 {"col": "status", "op": "!=", "val": "it's void"}, {"col": "customer_id", "op": "IS NOT NULL"}]}},
        ],
        "edges": [edge("o", "c")],
    }  # fmt: skip
    columns, result = rows(db, compiled(graph), "c")
    assert columns == ["order id", "customer_id", "whole"]
    assert len(result) == 3 and isinstance(result[0][2], int)


def test_new_rows_static_value_with_a_chosen_type(db: duckdb.DuckDBPyConnection) -> None:
    graph = {
        "nodes": [
            {"id": "o", "type": "input", "data": {"source_id": 1, "table_name": "t2"}},
            {"id": "n", "type": "new_rows", "data": {"columns": [
                {"alias": "n", "value": "42"}, {"alias": "m", "value": "42", "data_type": "INTEGER"}]}},
        ],
        "edges": [edge("o", "n")],
    }  # fmt: skip
    _, result = rows(db, compiled(graph), "n")
    assert result[0][2:] == ("42", 42)


def test_output_preview_shows_its_upstream(db: duckdb.DuckDBPyConnection) -> None:
    plan = compiled(EXAMPLE_D)
    assert plan.statement("o1") == plan.statement("s")


# --- errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        ({"nodes": []}, "Graph is empty — no nodes to compile"),
        ({"nodes": [{"id": "a", "type": "input"}, {"id": "a", "type": "clean"}]}, "Two nodes have the id 'a'"),
        ({"nodes": [{"id": "f", "type": "filter"}]}, "Unknown node type 'filter' on node f."),
        ({"nodes": [{"id": "f"}]}, "Unknown node type '' on node f."),
        ({"nodes": [{"id": "a", "type": "clean"}], "edges": [{"source": "a"}]}, "Edge #1 has no target"),
        ({"nodes": [{"id": "a", "type": "clean"}], "edges": [{"id": "e", "source": "z", "target": "a"}]},
         "Edge e comes from node 'z', which is not in the graph"),
        ({"nodes": [{"id": "a", "type": "clean"}], "edges": [{"id": "e", "source": "a", "target": "a"}]},
         "Edge e connects node 'a' to itself"),
        ({"nodes": [{"id": "a", "type": "clean"}, {"id": "b", "type": "clean"}],
          "edges": [edge("a", "b"), edge("b", "a")]}, "Graph contains a cycle"),
    ],
)  # fmt: skip
def test_graph_errors_name_the_problem(graph: dict[str, Any], message: str) -> None:
    with pytest.raises(GraphError, match=message.replace("(", r"\(").replace(".", r"\.")):
        compile_graph(Graph.parse(graph))


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"type": "join", "data": {"left_keys": ["a"], "right_keys": []}}, "left_keys and right_keys must be"),
        ({"type": "join", "data": {"join_type": "SIDEWAYS", "left_keys": ["a"], "right_keys": ["a"]}},
         "unknown join type 'SIDEWAYS'"),
        ({"type": "pivot", "data": {"pivot_column": "a"}}, "pivot_column and value_column are required"),
        ({"type": "pivot", "data": {"pivot_type": "UNPIVOT"}}, "unpivot_columns is required"),
        ({"type": "new_rows", "data": {}}, "define at least one column"),
        ({"type": "sql", "data": {"sql_expression": " "}}, "sql_expression is required"),
        ({"type": "aggregate", "data": {"aggregations": [{"function": "SUM"}]}}, "needs a column"),
        ({"type": "aggregate", "data": {"aggregations": [{"function": "SUM(x); --", "column": "a"}]}},
         "is not a aggregate function name"),
        ({"type": "clean", "data": {"cast_columns": [{"column": "a", "target_type": "INT); DROP"}]}},
         "is not a type name"),
        ({"type": "output", "data": {"destination_id": 1}}, "Output node has no target table name configured"),
        ({"type": "output", "data": {"table_name": "t"}}, "has no destination"),
        ({"type": "output", "data": {"table_name": "t", "destination_id": 1, "write_mode": "UPSERT"}},
         "UPSERT mode requires at least one upsert_key for table t"),
    ],
)  # fmt: skip
def test_node_errors_stay_with_their_node(node: dict[str, Any], message: str) -> None:
    # Given a misconfigured node beside a healthy branch
    edges = [edge("o", "bad", "left"), edge("c", "bad", "right")] if node["type"] == "join" else [edge("o", "bad")]
    graph = two_inputs({"id": "bad", **node}, *edges)
    graph["nodes"].append({"id": "fine", "type": "clean", "data": {}})
    graph["edges"].append(edge("c", "fine"))
    # When it is compiled
    plan = compile_graph(Graph.parse(graph))
    # Then the error is the node's, and the other branch compiles
    assert message in (plan.steps["bad"].error or "")
    assert plan.steps["fine"].error is None
    if node["type"] != "output":  # an output's preview shows its upstream, whatever its own settings
        with pytest.raises(NodeError, match="bad"):
            plan.statement("bad")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM {{input}} WHERE k IN (SELECT k FROM src_0.public.customers)",
        "SELECT getenv('HOME') AS h FROM {{input}}",
        "SELECT * FROM {{input}}; SELECT 1",
        "SELECT * FROM {{input}}) AS x, (SELECT * FROM 'secret.csv'",
        "SELECT current_setting('memory_limit') FROM {{input}}",
        "SELECT * FROM n0_o",  # another node's rows, not an input of this one
    ],
)
def test_hostile_sql_nodes_are_refused(sql: str) -> None:
    # Given a SQL node reading a file, another table, the environment or escaping its parentheses
    graph = two_inputs({"id": "s", "type": "sql", "data": {"sql_expression": sql}}, edge("c", "s"))
    plan = compile_graph(Graph.parse(graph))
    step = plan.steps["s"]
    # When it is checked, it is refused before anything runs
    with pytest.raises(NodeError, match="SQL node s refused"):
        check_step(step, inputs=[plan.steps[u].name for u in step.upstream])


def test_an_expression_calling_a_table_function_is_refused() -> None:
    graph = two_inputs(
        {"id": "c2", "type": "clean", "data": {"expressions": [
            {"expr": "(SELECT count(*) FROM glob('/etc/*'))", "alias": "n"}]}},
        edge("o", "c2"),
    )  # fmt: skip
    plan = compile_graph(Graph.parse(graph))
    with pytest.raises(NodeError, match="Clean node c2 refused: function glob is not allowed"):
        check_step(plan.steps["c2"], inputs=["n0_o"])


def test_an_input_filter_cannot_read_another_table() -> None:
    graph = two_inputs({"id": "x", "type": "note"})
    graph["nodes"][0]["data"]["filter_sql"] = "id IN (SELECT id FROM src_0.public.payroll)"
    plan = compile_graph(Graph.parse(graph))
    with pytest.raises(NodeError, match=r"Input node o refused: it reads 'src_0\.public\.payroll'"):
        check_step(plan.steps["o"], inputs=[])
