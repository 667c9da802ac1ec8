"""The worker's side of a flow: configs looked up, the DuckDB work sent to an executor, the run persisted.

The worker process compiles a graph only to learn what it reads and writes (the compiler is pure: no
parser, no DuckDB), resolves each source's and destination's connection (decrypting the passwords),
and hands the rest to an executor process of the preview's pool (``preview/executor.py``), the same
processes, bounds and slots as a preview. What comes back is persisted here, with the notifications.

Snowflake is not supported by this worker yet (no account to test against): an input or output that
uses one fails with an error that says so; the rest of the graph runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loguru import logger

from ..errors import JobTimedOut, PreviewError, RosettaJobsError
from ..notifications import notify_error
from ..redact import redact
from .compiler import Attachment, Plan, compile_graph
from .graph import Graph, GraphError
from .runs import Run, load_watermarks, persist_run

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..job import Job
    from ..preview.executor import ExecutorPool

__all__ = ["SNOWFLAKE_INPUT", "SNOWFLAKE_OUTPUT", "FlowFailed", "FlowRunner", "conninfo"]

SNOWFLAKE_INPUT = "Snowflake inputs are not supported by this worker yet"
SNOWFLAKE_OUTPUT = "Snowflake destinations are not supported by this worker yet"
#: How the executor pool says an executor died under a task for another reason than memory.
_DIED = "The preview's query stopped its executor process"
#: Seconds of a run's time limit kept for saving its results after the DuckDB work.
PERSIST_RESERVE = 10.0


class FlowFailed(RosettaJobsError, ValueError):
    """The whole flow failed (the original's ``ValueError``): the message is the user's, without secrets."""


def conninfo(*, host: str, port: int, database: str, user: str, password: str) -> str:
    """A libpq keyword/value string, every value quoted (F9: a password with a space or a quote works)."""

    def quote(value: str) -> str:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    parts = {"host": host, "port": str(port), "dbname": database, "user": user, "password": password}
    return (
        " ".join(f"{k}={quote(v)}" for k, v in parts.items()) + " connect_timeout=10 application_name=rosetta-jobs-flow"
    )


@dataclass
class _Resolved:
    attachments: dict[str, dict[str, Any]]
    destinations: dict[str, dict[str, Any]]
    secrets: list[str]


class FlowRunner:
    """The flow jobs of one worker process: its config catalog and the preview's executor pool."""

    def __init__(self, *, catalog: Catalog, executors: ExecutorPool) -> None:
        self.catalog = catalog
        self.executors = executors

    # --- preview and schema ------------------------------------------------------------------------------
    def preview(
        self, graph_json: Any, node_id: str, *, limit: int, include_profiling: bool, job: Job | None = None
    ) -> dict[str, Any]:
        """The rows of ``node_id`` (spec 4.3); ``FlowFailed`` with the user's message otherwise."""
        started = time.monotonic()
        task = self._look("preview", graph_json, node_id)
        task.update(limit=int(limit), include_profiling=bool(include_profiling))
        result = self._send(task, job=job)
        result["elapsed_ms"] = int((time.monotonic() - started) * 1000)
        return result

    def schema(self, graph_json: Any, node_id: str, *, job: Job | None = None) -> list[dict[str, str]]:
        """``[{"column_name", "data_type"}]`` of ``node_id``'s rows (``POST /schema``)."""
        result = self._send(self._look("schema", graph_json, node_id), job=job)
        return list(result.get("columns") or [])

    def _look(self, op: str, graph_json: Any, node_id: str) -> dict[str, Any]:
        graph = Graph.parse(graph_json)
        graph = graph.trimmed(graph.node(str(node_id)).id)
        resolved = self._resolve(compile_graph(graph), outputs=False)
        return {"kind": "flow", "op": op, "graph": graph_json, "node_id": str(node_id),
                "attachments": resolved.attachments, "secrets": resolved.secrets}  # fmt: skip

    # --- execute -----------------------------------------------------------------------------------------
    def execute(
        self, flow_task_id: int, run_history_id: int, graph_json: Any, *, job: Job | None = None
    ) -> dict[str, Any]:
        """Run the flow, persist the run, notify failures; the original's return value (spec 5.8).

        A node's failure is the node's (FAILED, its descendants SKIPPED, other outputs written). A failure of
        the whole run (the graph, the executor) is persisted, notified and raised as ``FlowFailed``.
        """
        started = time.monotonic()
        secrets: list[str] = []
        try:
            graph = Graph.parse(graph_json)
            plan = compile_graph(graph)
            resolved = self._resolve(plan, outputs=True)
            secrets = resolved.secrets
            marks = load_watermarks(self.catalog, flow_task_id, graph)
            task = {"kind": "flow", "op": "execute", "graph": graph_json, "attachments": resolved.attachments,
                    "destinations": resolved.destinations, "secrets": secrets,
                    "watermarks": {n: {"column": w.column, "value": w.value} for n, w in marks.items()}}  # fmt: skip
            result = self._send(task, job=job, reserve=PERSIST_RESERVE)
        except JobTimedOut:
            if job is not None and job.stopped:
                raise  # the job's own limit: the actor's timed_out hook records it
            self.fail_run(flow_task_id, run_history_id, "Flow run timed out", secrets=secrets)
            raise
        except (RosettaJobsError, GraphError) as exc:
            message = redact(str(exc), *secrets)
            self.fail_run(flow_task_id, run_history_id, message, secrets=secrets)
            raise FlowFailed(message) from None
        run = Run(
            flow_task_id=flow_task_id,
            run_history_id=run_history_id,
            status=str(result["status"]),
            error_message=result.get("error_message"),
            total_input_records=int(result.get("total_input_records") or 0),
            total_output_records=int(result.get("total_output_records") or 0),
            node_logs=[_clean_log(log, secrets) for log in result.get("node_logs") or []],
            watermarks=result.get("watermarks") or {},
        )
        for log in run.node_logs:
            if log["status"] == "FAILED":
                notify_error(self.catalog, f"flow_task_error_{flow_task_id}_{log['node_id']}",
                             f"Flow Task {flow_task_id} Node Failed", str(log["error_message"]))  # fmt: skip
        persist_run(self.catalog, run, secrets=secrets)
        return {
            "status": run.status,
            "total_input_records": run.total_input_records,
            "total_output_records": run.total_output_records,
            "elapsed_ms": int((time.monotonic() - started) * 1000),
            "node_logs": list(run.node_logs),
        }

    def fail_run(
        self, flow_task_id: int, run_history_id: int, message: str, *, secrets: list[str] | None = None
    ) -> None:
        """A whole-run failure (spec 5.7): the notification, then the run persisted FAILED; never raises."""
        message = redact(message, *(secrets or []))
        notify_error(self.catalog, f"flow_task_error_{flow_task_id}", f"Flow Task {flow_task_id} Failed", message)
        try:
            persist_run(self.catalog, Run(flow_task_id, run_history_id, "FAILED", message), secrets=secrets or [])
        except Exception as exc:
            logger.error("flow run {} could not be marked FAILED: {}", run_history_id, redact(str(exc)))

    # --- the executor ------------------------------------------------------------------------------------
    def _send(self, task: dict[str, Any], *, job: Job | None, reserve: float = 0.0) -> dict[str, Any]:
        deadline = job.deadline if job is not None and job.deadline is not None else time.monotonic() + 600
        if deadline - time.monotonic() > 2 * reserve:
            deadline -= reserve
        for attempt in (1, 2):
            try:
                answer = self.executors.run(task, fingerprint="flow", deadline=deadline, job=job)
                return dict(answer.result)
            except PreviewError as exc:
                # An executor that died of something else than memory (a rare abort of DuckDB at start or
                # teardown was seen once) is retried once for a preview or a schema: they only read.
                died = str(exc).startswith(_DIED) and str(exc) != str(self.executors.memory_error())
                if attempt == 1 and died and task.get("op") in ("preview", "schema"):
                    logger.warning("flow {}: its executor died ({}); trying once more", task.get("op"), exc)
                    continue
                raise FlowFailed(_flow_wording(str(exc), self.executors.memory_error())) from None
        raise AssertionError("unreachable")

    # --- configs -----------------------------------------------------------------------------------------
    def _resolve(self, plan: Plan, *, outputs: bool) -> _Resolved:
        resolved = _Resolved({}, {}, [])
        for attachment in plan.attachments:
            resolved.attachments[attachment.key] = self._input(attachment, resolved.secrets)
        if outputs:
            for output in plan.outputs.values():
                key = str(output.destination_id)
                if key not in resolved.destinations:
                    resolved.destinations[key] = self._destination(output.destination_id, resolved.secrets)
        return resolved

    def _input(self, attachment: Attachment, secrets: list[str]) -> dict[str, Any]:
        if attachment.snowflake:
            return {"error": f"{SNOWFLAKE_INPUT} (destination {attachment.destination_id})"}
        if attachment.source_id is not None:
            try:
                source = self.catalog.source(attachment.source_id)
            except PreviewError as exc:
                return {"error": str(exc).replace("can be previewed", "can be read by a flow")}
            secrets.append(source.password)
            return {"conninfo": conninfo(host=source.host, port=source.port, database=source.database,
                                         user=source.user, password=source.password)}  # fmt: skip
        assert attachment.destination_id is not None
        return self._destination(attachment.destination_id, secrets, as_input=True)

    def _destination(self, destination_id: int, secrets: list[str], *, as_input: bool = False) -> dict[str, Any]:
        from ..destinations import DestinationFetchError, PostgresDestination

        record = self.catalog.destination_record(destination_id)
        if record is None:
            return {"error": f"Destination {destination_id} not found"}
        kind = record.type.strip().upper()
        if kind == "SNOWFLAKE":
            return {"error": f"{SNOWFLAKE_INPUT if as_input else SNOWFLAKE_OUTPUT} (destination {destination_id})"}
        if kind not in ("POSTGRES", "POSTGRESQL"):
            if as_input:
                return {"error": f"Unsupported source_type '{kind}'. Registered: ['POSTGRES']"}
            return {
                "error": f"No writer registered for destination type '{kind}'. Available: ['POSTGRES', 'POSTGRESQL']"
            }
        try:
            target = PostgresDestination.from_record(
                record, lambda token: self.catalog.decrypt(token, owner=f"Destination {destination_id}")
            )
        except (DestinationFetchError, PreviewError) as exc:
            return {"error": redact(str(exc))}
        secrets.append(target.password)
        return {"conninfo": conninfo(host=target.host, port=target.port, database=target.database, user=target.user,
                                     password=target.password)}  # fmt: skip


def _clean_log(log: Mapping[str, Any], secrets: list[str]) -> dict[str, Any]:
    out = dict(log)
    if out.get("error_message"):
        out["error_message"] = redact(str(out["error_message"]), *secrets)
    return out


def _flow_wording(message: str, memory: PreviewError) -> str:
    """The executor pool speaks of previews; a flow's user reads about the flow."""
    if message == str(memory):
        return message.replace("Preview used", "The flow used", 1)
    return message.replace("The preview's query", "The flow's query", 1)
