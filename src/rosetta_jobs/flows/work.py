"""The DuckDB side of a flow: preview, schema or run, in one locked session of its own.

It runs inside an executor process (``preview/executor_main.py`` hands it a task whose ``kind`` is
``flow``), so a flow is under the same hard memory and time bounds as a preview: ``RLIMIT_DATA``, the
RSS watchdog, and a kill ``GRACE`` seconds after a stop the query did not answer. It never reads the
config database: the worker sends the connection strings it resolved, and the passwords to redact.

The session (the preview's layer 3, ``preview/session.py``): the postgres extension loaded from its
wheel, the inputs attached ``READ_ONLY``, the outputs' destinations attached read-write as ``__out_<k>``,
then ``enable_external_access = false`` and ``lock_configuration = true``: no file, URL, ATTACH, LOAD or
SET after that. Every step's SQL went through ``sandbox`` first, so a user's text reads only its inputs.

A run materialises each node once, in topological order, into a temp table named like its CTE (defect
F21): each node's SQL runs once, its row count is exact, a failure stays with its node and its
descendants (SKIPPED), other branches and outputs go on. Temp tables spill to a directory of the run's
own inside ``DUCKDB_TEMP_DIRECTORY``, removed when the work ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any

import duckdb

from .. import codec
from ..errors import JobCancelled, JobInterrupt, JobTimedOut, PreviewError
from ..redact import redact
from .compiler import OutputPlan, Plan, Step, Watermark, compile_graph, ident, literal
from .graph import Graph, GraphError, NodeError
from .sandbox import check_step
from .writer import write_output

__all__ = ["FlowWork", "node_label"]

#: What a node's log says when the node is not on any path to an output (F22).
NOT_CONNECTED = "Not connected to an output: not run"


def node_label(step: Step, table: str | None = None) -> str:
    """The node log's label: the original's ``Output → <table>`` for outputs, else the node's label or type."""
    if step.node.type == "output":
        return f"Output → {table if table is not None else str(step.node.data.get('table_name') or '')}"
    return step.node.title


class FlowWork:
    """One flow task (``task["op"]``: ``preview``, ``schema`` or ``execute``) and how to stop it."""

    def __init__(
        self,
        task: Mapping[str, Any],
        *,
        memory_limit: int,
        threads: int,
        timezone: str,
        max_result_bytes: int,
        max_cell_bytes: int,
        temp_directory: str = "",
    ) -> None:
        self.task = task
        self.temp_directory = temp_directory
        self.memory_limit = memory_limit
        self.threads = threads
        self.timezone = timezone
        self.max_result_bytes = max_result_bytes
        self.max_cell_bytes = max_cell_bytes
        self.secrets = [str(s) for s in task.get("secrets") or [] if s]
        self._lock = threading.Lock()
        self._stopped: type[JobInterrupt] | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._tmp: str | None = None

    # --- control -------------------------------------------------------------------------------------
    def stop(self, reason: type[JobInterrupt] = JobCancelled) -> None:
        """Interrupt the running query; the work ends with ``reason``. Any thread."""
        with self._lock:
            if self._stopped is None:
                self._stopped = reason
            if self._con is not None:
                self._con.interrupt()

    def _check(self) -> None:
        if self._stopped is not None:
            raise self._stopped(0) if self._stopped is JobTimedOut else self._stopped()

    def clean(self, text: str) -> str:
        return redact(text, *self.secrets)

    # --- the answer, as an executor sends it ----------------------------------------------------------
    def answer(self, seq: int) -> tuple[dict[str, Any], bytes | None]:
        """``({"seq", "kind", ...}, body)``: the executor's wire answer for this work."""
        try:
            result = self.run()
            return {"seq": seq, "kind": "result"}, codec.dumps(result)
        except JobTimedOut:
            return {"seq": seq, "kind": "timeout"}, None
        except JobCancelled:
            return {"seq": seq, "kind": "cancelled"}, None
        except (GraphError, NodeError, PreviewError) as exc:
            return {"seq": seq, "kind": "error", "message": self.clean(str(exc))}, None
        except (MemoryError, duckdb.OutOfMemoryException) as exc:
            return {"seq": seq, "kind": "memory", "message": self.clean(str(exc))}, None
        except duckdb.Error as exc:
            return {"seq": seq, "kind": "error", "message": self.clean(str(exc))}, None
        except Exception as exc:  # a bug of ours: a FAILURE, without secrets
            return {"seq": seq, "kind": "internal", "message": self.clean(f"{type(exc).__name__}: {exc}")}, None

    def run(self) -> dict[str, Any]:
        op = self.task.get("op")
        try:
            if op == "execute":
                return self._execute()
            if op in ("preview", "schema"):
                return self._look(op)
            raise GraphError(f"unknown flow operation {op!r}")
        except duckdb.InterruptException:
            self._check()
            raise JobCancelled() from None
        finally:
            self._close()

    # --- the session -----------------------------------------------------------------------------------
    def _open(self, inputs: Mapping[str, str], outputs: Mapping[str, str]) -> dict[str, str]:
        """The locked session with ``inputs`` (read-only) and ``outputs`` attached; failures by alias."""
        from ..preview.session import check_timezone, connect_with_postgres

        con = connect_with_postgres({"memory_limit": f"{self.memory_limit}B", "threads": self.threads})
        with self._lock:
            self._con = con
        if self.temp_directory:
            os.makedirs(self.temp_directory, exist_ok=True)
        self._tmp = tempfile.mkdtemp(prefix="rosetta-flow-", dir=self.temp_directory or None)
        con.execute(f"SET TimeZone = {literal(check_timezone(self.timezone))}")
        con.execute("SET arrow_lossless_conversion = true")
        con.execute("SET python_enable_replacements = false")
        con.execute(f"SET temp_directory = {literal(self._tmp)}")
        failures: dict[str, str] = {}
        for alias, conninfo in [*((a, c) for a, c in inputs.items()), *outputs.items()]:
            self._check()
            mode = "TYPE postgres, READ_ONLY" if alias in inputs else "TYPE postgres"
            try:
                con.execute(f"ATTACH {literal(conninfo)} AS {ident(alias)} ({mode})")
            except duckdb.Error as exc:
                failures[alias] = self.clean(str(exc))
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return failures

    def _close(self) -> None:
        with self._lock:
            con, self._con = self._con, None
        if con is not None:
            con.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # --- preview and schema ----------------------------------------------------------------------------
    def _look(self, op: str) -> dict[str, Any]:
        graph = Graph.parse(self.task.get("graph") or {})
        node_id = str(self.task.get("node_id"))
        graph = graph.trimmed(graph.node(node_id).id)
        limit = int(self.task.get("limit") or 0)
        if op == "preview" and limit:
            for node in graph.nodes:
                if node.type == "input" and not node.data.get("sample_limit"):
                    graph = graph.with_data(node.id, sample_limit=limit)
        plan = compile_graph(graph)
        chain = plan.chain(node_id)
        attachments = self._attachments(plan)
        used = {step.attachment.alias for step in chain if step.attachment is not None}
        for step in chain:
            if step.error is not None:
                raise NodeError(step.node.id, step.error)
            check_step(step, inputs=[plan.steps[u].name for u in step.upstream])
            if step.attachment is not None:
                problem = attachments[step.attachment.alias].get("error")
                if problem:
                    raise NodeError(step.node.id, self.clean(str(problem)))
        failures = self._open({a: str(attachments[a]["conninfo"]) for a in sorted(used)}, {})
        for step in chain:
            if step.attachment is not None and step.attachment.alias in failures:
                raise NodeError(step.node.id, self._attach_error(step, failures[step.attachment.alias]))
        statement = plan.statement(node_id, limit=0 if op == "schema" else (limit or None))
        self._check()
        assert self._con is not None
        try:
            result = self._con.execute(statement)
            types = [str(d[1]) for d in result.description or []]
            names = [str(d[0]) for d in result.description or []]
            if op == "schema":
                return {"columns": [{"column_name": n, "data_type": t} for n, t in zip(names, types, strict=True)]}
            table = result.to_arrow_table()
        except (duckdb.InterruptException, duckdb.OutOfMemoryException):
            raise
        except duckdb.Error as exc:
            raise self._attributed(plan, chain, exc) from None
        return self._rows(names, types, table)

    def _attributed(self, plan: Plan, chain: list[Step], exc: duckdb.Error) -> Exception:
        """The error with the first node of the chain whose rows cannot be computed, for the user."""
        assert self._con is not None
        for step in chain:
            try:
                self._con.execute(plan.statement(step.node.id, limit=0)).fetchall()
            except duckdb.InterruptException:
                break
            except duckdb.Error as inner:
                return NodeError(step.node.id, self.clean(f"Node '{step.node.title}' ({step.node.id}): {inner}"))
        return NodeError(chain[-1].node.id, self.clean(str(exc)))

    def _rows(self, names: list[str], types: list[str], table: Any) -> dict[str, Any]:
        from ..preview.bounds import check_cells, encode_result
        from ..preview.profile import profile
        from ..preview.serialize import json_values

        if not names:
            return {"columns": [], "column_types": {}, "rows": [], "row_count": 0}
        check_cells(table, max_cell_bytes=self.max_cell_bytes, max_result_bytes=self.max_result_bytes)
        columns = [json_values(table.column(i)) for i in range(table.num_columns)]
        rows = [list(row) for row in zip(*columns, strict=True)]
        result: dict[str, Any] = {
            "columns": names,
            "column_types": dict(zip(names, types, strict=True)),
            "rows": rows,
            "row_count": len(rows),
        }
        if self.task.get("include_profiling"):
            try:
                result["profile"] = profile(table)
            except Exception:  # the original answered [] when profiling raised
                result["profile"] = []
        encode_result(result, max_result_bytes=self.max_result_bytes)
        return result

    def _attachments(self, plan: Plan) -> dict[str, dict[str, Any]]:
        """The worker's resolution of each attachment: ``{"conninfo"}`` or ``{"error"}``, by alias."""
        given = self.task.get("attachments") or {}
        out: dict[str, dict[str, Any]] = {}
        for attachment in plan.attachments:
            entry = given.get(attachment.key)
            out[attachment.alias] = dict(entry) if isinstance(entry, Mapping) else {"error": "not resolved"}
        return out

    def _attach_error(self, step: Step, message: str) -> str:
        attachment = step.attachment
        assert attachment is not None
        what = (
            f"source {attachment.source_id}"
            if attachment.source_id is not None
            else f"destination {attachment.destination_id}"
        )
        return f"Input node {step.node.id}: could not attach {what}: {message}"

    # --- execute ---------------------------------------------------------------------------------------
    def _execute(self) -> dict[str, Any]:
        graph = Graph.parse(self.task.get("graph") or {})
        watermarks = {
            str(node_id): Watermark(str(w["column"]), w.get("value"))
            for node_id, w in (self.task.get("watermarks") or {}).items()
        }
        plan = compile_graph(graph, watermarks=watermarks)
        outputs = [s.node.id for s in plan.steps.values() if s.node.type == "output"]
        needed = graph.ancestors(outputs) if outputs else set()
        attachments = self._attachments(plan)
        destinations = self.task.get("destinations") or {}
        used_inputs = {
            s.attachment.alias for s in plan.steps.values() if s.attachment is not None and s.node.id in needed
        }
        out_alias: dict[int, str] = {}
        for output in plan.outputs.values():
            out_alias.setdefault(output.destination_id, f"__out_{len(out_alias)}")
        inputs = {a: str(attachments[a]["conninfo"]) for a in sorted(used_inputs) if attachments[a].get("conninfo")}
        outs = {
            alias: str(destinations[str(d)]["conninfo"])
            for d, alias in out_alias.items()
            if (destinations.get(str(d)) or {}).get("conninfo")
        }
        failures = self._open(inputs, outs)
        state: dict[str, str] = {}
        counts: dict[str, int] = {}
        logs: list[dict[str, Any]] = []
        marks: dict[str, dict[str, Any]] = {}
        total_in = total_out = 0
        for step in plan.steps.values():
            node = step.node
            if node.type == "note":
                continue
            log = {"node_id": node.id, "node_type": node.type, "node_label": node_label(step),
                   "row_count_in": 0, "row_count_out": 0, "status": "SKIPPED", "error_message": None,
                   "duration_ms": 0}  # fmt: skip
            logs.append(log)
            if node.id not in needed:
                log["error_message"] = NOT_CONNECTED
                continue
            self._check()
            started = time.monotonic()
            blocked = [u for u in step.upstream if state.get(u) != "SUCCESS"]
            if blocked:
                up = plan.steps[blocked[0]].node
                log["error_message"] = f"Skipped: upstream node '{up.title}' ({up.id}) did not succeed"
                state[node.id] = "SKIPPED"
                continue
            try:
                if node.type == "output":
                    planned = plan.outputs.get(node.id)
                    if planned is None:
                        raise NodeError(node.id, step.error or "output not planned")
                    log["node_label"] = planned.label
                    log["row_count_in"] = counts[planned.source]
                    source = plan.steps[planned.source].name
                    written = self._write(step, planned, source, out_alias, destinations, failures)
                    log["row_count_out"] = written
                    total_out += written
                else:
                    count = self._materialise(plan, step, attachments, failures)
                    counts[node.id] = count
                    log["row_count_out"] = count
                    log["row_count_in"] = count if node.type == "input" else sum(counts[u] for u in step.upstream)
                    if node.type == "input":
                        total_in += count
                        if step.watermark is not None and count:
                            marks[node.id] = {"column": step.watermark.column, "value": self._max(step), "count": count}
                log["status"] = state[node.id] = "SUCCESS"
            except (duckdb.InterruptException, duckdb.OutOfMemoryException):
                raise  # a stop, or the memory bound: the whole run ends
            except (NodeError, PreviewError) as exc:
                log["status"], log["error_message"] = "FAILED", self.clean(str(exc))
                state[node.id] = "FAILED"
            except duckdb.Error as exc:
                log["status"], log["error_message"] = "FAILED", self.clean(str(exc))
                state[node.id] = "FAILED"
            log["duration_ms"] = int((time.monotonic() - started) * 1000)
        failed = [log for log in logs if log["status"] == "FAILED"]
        return {
            "status": "FAILED" if failed else "SUCCESS",
            "error_message": "; ".join(str(log["error_message"]) for log in failed) or None,
            "total_input_records": total_in,
            "total_output_records": total_out,
            "node_logs": logs,
            "watermarks": marks if not failed else {},
        }

    def _materialise(
        self, plan: Plan, step: Step, attachments: Mapping[str, Mapping[str, Any]], failures: Mapping[str, str]
    ) -> int:
        if step.error is not None:
            raise NodeError(step.node.id, step.error)
        if step.attachment is not None:
            entry = attachments[step.attachment.alias]
            if entry.get("error"):
                raise NodeError(step.node.id, f"Input node {step.node.id}: {entry['error']}")
            if step.attachment.alias in failures:
                raise NodeError(step.node.id, self._attach_error(step, failures[step.attachment.alias]))
        check_step(step, inputs=[plan.steps[u].name for u in step.upstream])
        assert self._con is not None
        self._con.execute(f"CREATE TEMP TABLE {step.name} AS {step.query}")
        row = self._con.execute(f"SELECT count(*) FROM {step.name}").fetchone()
        return int(row[0]) if row else 0

    def _max(self, step: Step) -> str | None:
        """The watermark to store: the greatest value of the column in the rows this run read (F10)."""
        assert self._con is not None and step.watermark is not None
        row = self._con.execute(f"SELECT max({ident(step.watermark.column)})::VARCHAR FROM {step.name}").fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def _write(
        self,
        step: Step,
        output: OutputPlan,
        source: str,
        out_alias: Mapping[int, str],
        destinations: Mapping[str, Any],
        failures: Mapping[str, str],
    ) -> int:
        entry = destinations.get(str(output.destination_id)) or {}
        if entry.get("error"):
            raise NodeError(step.node.id, str(entry["error"]))
        alias = out_alias[output.destination_id]
        if alias in failures:
            raise NodeError(step.node.id, f"Could not attach destination {output.destination_id}: {failures[alias]}")
        assert self._con is not None
        return write_output(self._con, output, source=source, alias=alias)
