"""Graph in, SQL out: one SELECT body per node, named and ordered, with no DuckDB and no I/O.

The rules are the original compiler's (``../shared/spec/rosetta-tasks.md`` 2.1-2.3) with the defects of
section 11 fixed; ``docs/flows.md`` lists every difference a user may notice. In short:

- every identifier that comes from a picker is quoted, every literal escaped (F7); expressions, filters
  and SQL nodes are the user's text, checked by ``sandbox`` before anything runs;
- the editor's fields are read first, the legacy ones still honoured (F1): ``rename_columns`` /
  ``_rename_pairs`` beside ``renames``, ``union_all`` beside ``distinct``, ``pivot_type`` beside
  ``direction``, FULL OUTER and CROSS joins, ``drop_nulls``;
- renames and casts replace the column instead of adding a second one (F3);
- names come from the node's position, the same string everywhere (F4): ``n<k>_<id>`` for a node's
  rows (a CTE in a preview, a temp table in a run), ``src_<k>`` for an attached input;
- a node's configuration error belongs to that node (``Step.error``): its branch fails, the others run.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .graph import Graph, GraphError, Node, NodeError

__all__ = [
    "WRITE_MODES",
    "Attachment",
    "OutputPlan",
    "Plan",
    "Step",
    "Watermark",
    "compile_graph",
    "ident",
    "literal",
]

WRITE_MODES = ("APPEND", "REPLACE", "UPSERT")
#: The operators of the editor's filter builder (input and clean nodes).
FILTER_OPERATORS = frozenset({"=", "!=", "<>", ">", "<", ">=", "<=", "LIKE", "NOT LIKE", "ILIKE", "IN", "NOT IN",
                              "IS NULL", "IS NOT NULL"})  # fmt: skip
_JOINS = {
    "INNER": "INNER JOIN", "LEFT": "LEFT JOIN", "LEFT OUTER": "LEFT JOIN", "RIGHT": "RIGHT JOIN",
    "RIGHT OUTER": "RIGHT JOIN", "FULL": "FULL OUTER JOIN", "FULL OUTER": "FULL OUTER JOIN",
    "OUTER": "FULL OUTER JOIN", "CROSS": "CROSS JOIN",
}  # fmt: skip
_FUNCTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: A type as the editor offers them: a name, optional (p[, s]), optional [] suffixes.
_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?: [A-Za-z][A-Za-z0-9_]*)*(?:\(\s*\d+\s*(?:,\s*\d+\s*)?\))?(?:\[\])*")
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_TEMPLATE = re.compile(r"\{\{\s*(input|upstream|input_(\d+))\s*\}\}")
#: Characters of a node id kept in its name (for people reading the SQL; the position makes it unique).
_NAME_ID_CHARS = 40


def ident(name: str) -> str:
    """``name`` as a quoted SQL identifier: any character is allowed, ``"`` doubled."""
    if "\x00" in name:
        raise ValueError("a name cannot contain a NUL character")
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """``value`` as an SQL string literal, ``'`` doubled."""
    if "\x00" in value:
        raise ValueError("a value cannot contain a NUL character")
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Watermark:
    """An incremental read of one input: rows whose ``column`` is greater than ``value`` (spec 3.4)."""

    column: str
    value: str | None = None


@dataclass(frozen=True)
class Attachment:
    """One database the inputs read, attached once however many inputs use it (spec 3.3)."""

    alias: str
    source_id: int | None = None
    destination_id: int | None = None
    #: The node asked for a Snowflake destination (the legacy ``source_type``).
    snowflake: bool = False

    @property
    def key(self) -> str:
        return f"source:{self.source_id}" if self.source_id is not None else f"dest:{self.destination_id}"


@dataclass(frozen=True)
class Step:
    """One node compiled: the name of its rows, its inputs, its SQL body, or why it cannot run."""

    node: Node
    name: str
    upstream: tuple[str, ...] = ()
    body: str | None = None
    error: str | None = None
    #: For an input: the database it reads and the table, as ``(alias, schema, table)``.
    attachment: Attachment | None = None
    table: tuple[str, str, str] | None = None
    watermark: Watermark | None = None
    #: The body holds no text of the user's (only quoted names and checked function names).
    generated: bool = False
    #: Aggregate functions named by the node (checked against the allow-list even when ``generated``).
    functions: tuple[str, ...] = ()

    @property
    def query(self) -> str:
        """What runs: the body as one subquery, so it cannot reach outside its parentheses."""
        if self.body is None:
            raise NodeError(self.node.id, self.error or f"Node {self.node.id} produces no rows")
        return f"SELECT * FROM ({self.body}) AS __node"


@dataclass(frozen=True)
class OutputPlan:
    """Where an output node writes (spec 2.3 output row, 5.3)."""

    node: Node
    source: str
    table: str
    schema: str
    write_mode: str
    upsert_keys: tuple[str, ...]
    destination_id: int

    @property
    def label(self) -> str:
        return f"Output → {self.table}"


@dataclass
class Plan:
    """A compiled graph: every node's step in topological order, the attachments and the outputs."""

    graph: Graph
    steps: dict[str, Step] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)
    outputs: dict[str, OutputPlan] = field(default_factory=dict)

    def step(self, node_id: str) -> Step:
        try:
            return self.steps[node_id]
        except KeyError:
            raise GraphError(f"Node '{node_id}' not found in graph") from None

    def target(self, node_id: str) -> Step:
        """The step whose rows a preview of ``node_id`` shows: its own, or an output's upstream (spec 4.1 step 5)."""
        step = self.step(node_id)
        if step.node.type == "note":
            raise NodeError(node_id, f"Node '{node_id}' is a note: it has no rows to preview")
        if step.node.type == "output":
            if not step.upstream:
                raise NodeError(node_id, step.error or f"Output node {node_id} has no upstream nodes")
            return self.step(step.upstream[0])
        return step

    def chain(self, node_id: str) -> list[Step]:
        """The steps ``node_id``'s rows are computed from, in order, ending with its target's."""
        target = self.target(node_id)
        needed = self.graph.ancestors([target.node.id])
        return [step for step in self.steps.values() if step.node.id in needed and step.node.produces]

    def statement(self, node_id: str, *, limit: int | None = None) -> str:
        """``WITH <chain> SELECT * FROM <target>[ LIMIT n]``; ``NodeError`` for the first step that cannot run."""
        steps = self.chain(node_id)
        for step in steps:
            if step.error is not None:
                raise NodeError(step.node.id, step.error)
        parts = ",\n".join(f"{step.name} AS (\n{step.query}\n)" for step in steps)
        tail = f"SELECT * FROM {steps[-1].name}" + ("" if limit is None else f" LIMIT {int(limit)}")
        return f"WITH {parts}\n{tail}"


def compile_graph(graph: Graph, *, watermarks: Mapping[str, Watermark] | None = None) -> Plan:
    """Compile every node of ``graph``; ``GraphError`` only for what breaks the whole graph (a cycle)."""
    plan = Plan(graph)
    order = graph.order()
    names = {node.id: _name(node) for node in graph.nodes}
    attachments: dict[str, Attachment] = {}
    for node in graph.nodes:  # inputs are attached in node-list order (spec 3.1)
        if node.type == "input":
            attachment = _attachment(node, len(attachments))
            if attachment is not None and attachment.key not in attachments:
                attachments[attachment.key] = attachment
    plan.attachments = list(attachments.values())
    for node in order:
        upstream = tuple(n.id for n in graph.upstream(node.id))
        ins = [names[u] for u in upstream]
        try:
            step = _compile(node, names[node.id], upstream, ins, attachments, (watermarks or {}).get(node.id))
        except NodeError as exc:
            step = Step(node, names[node.id], upstream, error=str(exc))
        except ValueError as exc:  # a NUL in a name or value
            step = Step(node, names[node.id], upstream, error=f"{_kind(node)} node {node.id}: {exc}")
        if node.type == "output" and step.error is None:
            try:
                plan.outputs[node.id] = _output(node, upstream)
            except (NodeError, ValueError) as exc:
                step = Step(node, names[node.id], upstream, error=str(exc))
        plan.steps[node.id] = step
    return plan


# --- naming --------------------------------------------------------------------------------------------


def _name(node: Node) -> str:
    return f"n{node.position}_{_UNSAFE.sub('_', node.id)[:_NAME_ID_CHARS]}"


def _kind(node: Node) -> str:
    return {"new_rows": "New Rows", "sql": "SQL"}.get(node.type, node.type.capitalize())


def _attachment(node: Node, index: int) -> Attachment | None:
    data = node.data
    source_id, destination_id = _id(data.get("source_id")), _id(data.get("destination_id"))
    alias = f"src_{index}"
    if source_id is not None:
        return Attachment(alias, source_id=source_id)
    if destination_id is not None:
        kind = data.get("source_type")  # a present null is absent (F8)
        return Attachment(alias, destination_id=destination_id, snowflake=str(kind or "").upper() == "SNOWFLAKE")
    return None


def _id(value: Any) -> int | None:
    if isinstance(value, bool) or value in (None, "", 0):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# --- per node --------------------------------------------------------------------------------------------


def _compile(
    node: Node,
    name: str,
    upstream: tuple[str, ...],
    ins: list[str],
    attachments: Mapping[str, Attachment],
    watermark: Watermark | None,
) -> Step:
    kind = node.type
    if kind == "note":
        return Step(node, name, upstream)
    if kind == "input":
        return _input(node, name, attachments, watermark)
    if not ins:
        raise NodeError(node.id, _NO_UPSTREAM.get(kind, "{kind} node {id} has no upstream nodes").format(
            kind=_kind(node), id=node.id))  # fmt: skip
    if kind == "output":
        _single(node, ins)
        return Step(node, name, upstream)
    if kind in ("join", "union"):
        body, generated = (_join if kind == "join" else _union)(node, ins)
        return Step(node, name, upstream, body=body, generated=generated)
    if kind == "sql":
        return Step(node, name, upstream, body=_sql(node, ins))
    _single(node, ins)
    if kind == "pivot":
        body, functions, generated = _pivot(node, ins[0])
        return Step(node, name, upstream, body=body, functions=functions, generated=generated)
    build = {"clean": _clean, "aggregate": _aggregate, "new_rows": _new_rows}[kind]
    return Step(node, name, upstream, body=build(node, ins[0]))


_NO_UPSTREAM = {
    "new_rows": "New Rows node {id} has no upstream input. Connect an upstream node first.",
    "join": "Join node {id} requires exactly 2 inputs, got 0",
    "union": "Union node {id} requires at least 2 inputs, got 0",
}


def _single(node: Node, ins: Sequence[str]) -> None:
    if len(ins) > 1:
        raise NodeError(node.id, f"{_kind(node)} node {node.id} takes one input, but {len(ins)} are connected")


def _strings(node: Node, key: str) -> list[str]:
    """A list of names from ``data[key]``: blanks dropped, anything but strings refused."""
    value = node.data.get(key)
    if value in (None, ""):
        return []
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, list | tuple):
        raise NodeError(node.id, f"{_kind(node)} node {node.id}: {key} must be a list of names")
    out = []
    for item in value:
        if not isinstance(item, str | int | float) or isinstance(item, bool):
            raise NodeError(node.id, f"{_kind(node)} node {node.id}: {key} must be a list of names")
        if str(item).strip():
            out.append(str(item))
    return out


def _text(node: Node, key: str) -> str:
    value = node.data.get(key)
    return value.strip() if isinstance(value, str) else ""


def _sql_type(node: Node, value: str) -> str:
    text = " ".join(value.split())
    if not _TYPE.fullmatch(text):
        raise NodeError(node.id, f"{_kind(node)} node {node.id}: '{value}' is not a type name")
    return text


def _function(node: Node, value: str, what: str) -> str:
    if not _FUNCTION.fullmatch(value):
        raise NodeError(node.id, f"{_kind(node)} node {node.id}: '{value}' is not a {what} function name")
    return value


def _input(node: Node, name: str, attachments: Mapping[str, Attachment], watermark: Watermark | None) -> Step:
    attachment = _attachment(node, 0)
    if attachment is None:
        raise NodeError(node.id, f"Input node {node.id} missing source_id or destination_id")
    attachment = attachments[attachment.key]
    table = _text(node, "table_name")
    if not table:
        raise NodeError(node.id, f"Input node {node.id} missing table_name")
    schema = _text(node, "schema_name") or "public"
    columns = _strings(node, "columns")
    select = ", ".join(ident(c) for c in columns) if columns else "*"
    where = []
    condition = _filter(node, "filter_rows", "filter_sql")
    if condition:
        where.append(f"({condition})")
    column = (watermark.column if watermark else None) or _text(node, "watermark_column")
    value = watermark.value if watermark is not None else _text(node, "watermark_value")
    if column and value:
        where.append(f"{ident(column)} > {literal(value)}")
    body = f"SELECT {select} FROM {ident(attachment.alias)}.{ident(schema)}.{ident(table)}"
    if where:
        body += " WHERE " + " AND ".join(where)
    limit = _sample_limit(node)
    if limit:
        body += f" LIMIT {limit}"
    return Step(
        node,
        name,
        body=body,
        attachment=attachment,
        table=(attachment.alias, schema, table),
        watermark=Watermark(column) if column else None,
        generated=not condition,
    )


def _sample_limit(node: Node) -> int:
    value = node.data.get("sample_limit")
    if value in (None, "", False, 0):
        return 0
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise NodeError(node.id, f"Input node {node.id}: sample_limit {value!r} is not a number") from None
    if limit < 0:
        raise NodeError(node.id, f"Input node {node.id}: sample_limit must not be negative")
    return limit


def _filter(node: Node, rows_key: str, text_key: str) -> str:
    """The editor's filter rows, rebuilt with quoted names and escaped values; else the filter text as written."""
    rows = node.data.get(rows_key)
    parts = []
    if isinstance(rows, list):
        for row in rows:
            if not isinstance(row, Mapping) or not row.get("col") or not row.get("op"):
                continue
            column, op = ident(str(row["col"])), " ".join(str(row["op"]).upper().split())
            if op not in FILTER_OPERATORS:
                raise NodeError(node.id, f"{_kind(node)} node {node.id}: unknown filter operator '{row['op']}'")
            value = row.get("val")
            text = "" if value is None else str(value)
            if op in ("IS NULL", "IS NOT NULL"):
                parts.append(f"{column} {op}")
            elif op in ("IN", "NOT IN"):
                parts.append(f"{column} {op} ({text})")  # the editor's list, as typed: literals of the user's
            else:
                parts.append(f"{column} {op} {literal(text)}")
    if parts:
        return " AND ".join(parts)
    return _text(node, text_key)


def _renames(node: Node) -> dict[str, str]:
    """Renames, the editor's first (``_rename_pairs``, ``rename_columns``), else the legacy ``renames``."""
    data = node.data
    pairs: list[tuple[Any, Any]] = []
    if isinstance(data.get("_rename_pairs"), list):
        pairs = [tuple(p) for p in data["_rename_pairs"] if isinstance(p, list | tuple) and len(p) == 2]
    elif isinstance(data.get("rename_columns"), Mapping) and data["rename_columns"]:
        pairs = list(data["rename_columns"].items())
    elif isinstance(data.get("renames"), list):
        pairs = [(r.get("old"), r.get("new")) for r in data["renames"] if isinstance(r, Mapping)]
    return {str(old): str(new) for old, new in pairs if old and new and str(old) != str(new)}


def _pairs(node: Node, key: str, first: str, second: str) -> list[tuple[str, str]]:
    items = node.data.get(key)
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, Mapping):
            a, b = item.get(first), item.get(second)
            if isinstance(a, str) and isinstance(b, str) and a.strip() and b.strip():
                out.append((a.strip(), b.strip()))
    return out


def _clean(node: Node, upstream: str) -> str:
    select = _strings(node, "select_columns")
    drops = set(_strings(node, "drop_columns")) if not select else set()
    renames = {old: new for old, new in _renames(node).items() if old not in drops}
    casts = {c: _sql_type(node, t) for c, t in _pairs(node, "cast_columns", "column", "target_type") if c not in drops}
    extras = [f"{expr} AS {ident(alias)}" for expr, alias in
              _pairs(node, "calculations", "expr", "alias") + _pairs(node, "expressions", "expr", "alias")]  # fmt: skip
    late_renames: dict[str, str] = {}
    if select:
        items = []
        for column in select:
            value = f"CAST({ident(column)} AS {casts[column]})" if column in casts else ident(column)
            shown = renames.get(column, column)
            items.append(value if value == ident(shown) else f"{value} AS {ident(shown)}")
        for column in (c for c in casts if c not in select):  # casts and renames of unselected columns still show
            items.append(f"CAST({ident(column)} AS {casts[column]}) AS {ident(renames.get(column, column))}")
        items += [f"{ident(o)} AS {ident(n)}" for o, n in renames.items() if o not in select and o not in casts]
    else:
        star = "*"
        if drops:
            star += " EXCLUDE (" + ", ".join(ident(c) for c in sorted(drops)) + ")"
        if casts:
            star += " REPLACE (" + ", ".join(f"CAST({ident(c)} AS {t}) AS {ident(c)}" for c, t in casts.items()) + ")"
        late_renames = {o: n for o, n in renames.items() if o in casts}  # DuckDB: not in REPLACE and RENAME at once
        early = {o: n for o, n in renames.items() if o not in casts}
        if early:
            star += " RENAME (" + ", ".join(f"{ident(o)} AS {ident(n)}" for o, n in early.items()) + ")"
        items = [star]
    where = [f"({text})" for text in [_filter(node, "filter_rows", "filter_expr"), *_filters(node)] if text]
    distinct = "DISTINCT " if node.data.get("deduplicate") else ""
    drop_nulls = bool(node.data.get("drop_nulls"))
    inner_distinct = distinct if not (late_renames or drop_nulls) else ""
    body = f"SELECT {inner_distinct}{', '.join(items + extras)} FROM {upstream}"
    if where:
        body += " WHERE " + " AND ".join(where)
    if late_renames:
        renamed = ", ".join(f"{ident(o)} AS {ident(n)}" for o, n in late_renames.items())
        body = f"SELECT {distinct if not drop_nulls else ''}* RENAME ({renamed}) FROM ({body}) AS __clean"
    if drop_nulls:  # "Drop nulls (all columns)": a row is kept only if no column of the node's output is NULL
        body = f"SELECT {distinct}* FROM ({body}) AS __clean WHERE COLUMNS(*) IS NOT NULL"
    return body


def _filters(node: Node) -> list[str]:
    value = node.data.get("filters")
    return [f.strip() for f in value if isinstance(f, str) and f.strip()] if isinstance(value, list) else []


def _aggregate(node: Node, upstream: str) -> str:
    groups = _strings(node, "group_by")
    aggregations = node.data.get("aggregations")
    items = []
    for index, agg in enumerate(aggregations if isinstance(aggregations, list) else [], 1):
        if not isinstance(agg, Mapping):
            continue
        function = str(agg.get("function") or agg.get("func") or "COUNT").strip().upper()
        column = str(agg.get("column") or "*").strip() or "*"
        if function != "COUNT" and column == "*":
            raise NodeError(node.id, f"Aggregate node {node.id}: aggregation {index} ({function}) needs a column")
        alias = str(agg.get("alias") or "").strip() or f"{function.lower()}_{_UNSAFE.sub('_', column)}"
        argument = "*" if column == "*" else ident(column)
        if function == "COUNT_DISTINCT":
            sql = f"COUNT(DISTINCT {argument})"
        else:
            sql = f"{_function(node, function, 'aggregate')}({argument})"
        items.append(f"{sql} AS {ident(alias)}")
    if not groups and not items:
        return f"SELECT * FROM {upstream}"
    body = f"SELECT {', '.join([ident(g) for g in groups] + items)} FROM {upstream}"
    if groups:
        body += " GROUP BY " + ", ".join(ident(g) for g in groups)
    return body


def _join(node: Node, ins: Sequence[str]) -> tuple[str, bool]:
    if len(ins) != 2:
        raise NodeError(node.id, f"Join node {node.id} requires exactly 2 inputs, got {len(ins)}")
    kind = " ".join(str(node.data.get("join_type") or "INNER").upper().split()).removesuffix(" JOIN")
    join = _JOINS.get(kind)
    if join is None:
        raise NodeError(node.id, f"Join node {node.id}: unknown join type '{node.data.get('join_type')}'")
    columns = _strings(node, "output_columns")
    select = ", ".join(columns) if columns else "__l.*, __r.*"
    sql = f"SELECT {select} FROM {ins[0]} AS __l {join} {ins[1]} AS __r"
    if join == "CROSS JOIN":
        return sql, not columns
    left, right = node.data.get("left_keys") or [], node.data.get("right_keys") or []
    if not isinstance(left, list) or not isinstance(right, list):
        left, right = [], []
    pairs = [(str(a or ""), str(b or "")) for a, b in zip(left, right, strict=False) if a or b]
    if not pairs or len(left) != len(right) or any(not a or not b for a, b in pairs):
        raise NodeError(node.id, f"Join node {node.id}: left_keys and right_keys must be non-empty and equal length")
    condition = " AND ".join(f"__l.{ident(a)} = __r.{ident(b)}" for a, b in pairs)
    return f"{sql} ON {condition}", not columns


def _union(node: Node, ins: Sequence[str]) -> tuple[str, bool]:
    if len(ins) < 2:
        raise NodeError(node.id, f"Union node {node.id} requires at least 2 inputs, got {len(ins)}")
    data = node.data
    distinct = data.get("union_all") is False if "union_all" in data else bool(data.get("distinct"))
    operator = " UNION " if distinct else " UNION ALL "
    return operator.join(f"SELECT * FROM {name}" for name in ins), True


def _pivot(node: Node, upstream: str) -> tuple[str, tuple[str, ...], bool]:
    mode = str(node.data.get("pivot_type") or node.data.get("direction") or "PIVOT").strip().upper()
    if mode == "PIVOT":
        column, value = _text(node, "pivot_column"), _text(node, "value_column")
        if not column or not value:
            raise NodeError(node.id, f"Pivot node {node.id}: pivot_column and value_column are required")
        function = _function(node, _text(node, "agg_func") or "SUM", "aggregate")
        values = _strings(node, "pivot_values")
        sql = f"PIVOT {upstream} ON {ident(column)}"
        if values:
            sql += " IN (" + ", ".join(literal(v) for v in values) + ")"
        sql += f" USING {function}({ident(value)})"
        groups = _strings(node, "group_columns")
        if groups:
            sql += " GROUP BY " + ", ".join(ident(g) for g in groups)
        return sql, (function,), True
    # UNPIVOT: the editor stores the columns in pivot_values and the new names in pivot_column/value_column.
    columns = _strings(node, "pivot_values") or _strings(node, "unpivot_columns")
    if not columns:
        raise NodeError(node.id, f"Pivot (UNPIVOT) node {node.id}: unpivot_columns is required")
    name = _text(node, "pivot_column") or _text(node, "name_alias") or "name"
    value = _text(node, "value_column") or _text(node, "value_alias") or "value"
    on = ", ".join(ident(c) for c in columns)
    return f"UNPIVOT {upstream} ON {on} INTO NAME {ident(name)} VALUE {ident(value)}", (), True


def _new_rows(node: Node, upstream: str) -> str:
    columns = node.data.get("columns")
    if not isinstance(columns, list) or not columns:
        raise NodeError(node.id, f"New Rows node {node.id}: define at least one column.")
    items = []
    for column in columns:
        if not isinstance(column, Mapping):
            continue
        alias = _UNSAFE.sub("_", str(column.get("alias") or "new_col"))
        if column.get("type") == "expression":
            value = str(column.get("expr") or "").strip() or "NULL"
        else:
            value = _static(node, column.get("value"))
            kind = column.get("data_type")
            if isinstance(kind, str) and kind.strip():
                value = f"CAST({value} AS {_sql_type(node, kind)})"
        items.append(f"{value} AS {ident(alias)}")
    return f"SELECT *, {', '.join(items)} FROM {upstream}"


def _static(node: Node, value: Any) -> str:
    """A static value as a literal: JSON booleans and numbers as such, null as NULL, anything else as text."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "NULL"
    if isinstance(value, str):
        return literal(value)
    return literal(json.dumps(value))


def _sql(node: Node, ins: Sequence[str]) -> str:
    text = _text(node, "sql_expression")
    if not text:
        raise NodeError(
            node.id, f"SQL node {node.id}: sql_expression is required. Use {{{{input}}}} to reference the upstream CTE."
        )

    def substitute(match: re.Match[str]) -> str:
        index = int(match.group(2)) if match.group(2) is not None else 0
        return ins[index] if index < len(ins) else match.group(0)

    text = _TEMPLATE.sub(substitute, text).strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    if not text:
        raise NodeError(node.id, f"SQL node {node.id}: sql_expression is empty")
    return text


def _output(node: Node, upstream: tuple[str, ...]) -> OutputPlan:
    table = _text(node, "table_name") or _text(node, "target_table")
    if not table:
        raise NodeError(
            node.id,
            "Output node has no target table name configured. Please set the 'Target Table' field and save the graph "
            "before running.",
        )
    destination = _id(node.data.get("destination_id"))
    if destination is None:
        raise NodeError(node.id, f"Output node {node.id} has no destination: choose one and save the graph")
    mode = str(node.data.get("write_mode") or "APPEND").strip().upper()
    if mode not in WRITE_MODES:
        raise NodeError(node.id, f"Output node {node.id}: write mode '{mode}' is not APPEND, REPLACE or UPSERT")
    keys = tuple(_strings(node, "upsert_keys"))
    if mode == "UPSERT" and not keys:
        raise NodeError(node.id, f"UPSERT mode requires at least one upsert_key for table {table}")
    schema = _text(node, "schema_name") or "public"
    return OutputPlan(node, upstream[0], table, schema, mode, keys, destination)
