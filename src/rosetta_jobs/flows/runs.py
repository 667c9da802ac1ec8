"""A flow run in the config database, as the backend reads it (``../shared/spec/rosetta-tasks.md`` 5.6, 9.1).

One transaction per run: the ``flow_task_run_history`` row, one ``flow_task_run_node_log`` row per node,
the ``flow_tasks`` row, and after a SUCCESS the watermarks. Fixed defects:

- a run the backend marked ``CANCELLED`` keeps that status, and its flow task is not touched (F20);
- a failed write is retried, then raised: the task ends FAILURE instead of a run row RUNNING forever (F19);
- watermarks are read from ``last_watermark_value`` and written back with ``last_run_at`` and
  ``record_count``; a node's column comes from its data, else from the table (F10, spec 3.4).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loguru import logger

from ..errors import TransientError
from ..redact import redact
from .compiler import Watermark
from .graph import Graph

if TYPE_CHECKING:
    from ..catalog import Catalog

__all__ = ["PERSIST_ATTEMPTS", "Run", "load_watermarks", "persist_run", "run_status"]

#: Attempts to write a run's results before the task fails (F19).
PERSIST_ATTEMPTS = 3

_RUN_SQL = (
    "UPDATE flow_task_run_history SET status = %s, finished_at = now(), total_input_records = %s,"
    " total_output_records = %s, error_message = %s, updated_at = now() WHERE id = %s"
)
_NODE_SQL = (
    "INSERT INTO flow_task_run_node_log (run_history_id, flow_task_id, node_id, node_type, node_label, row_count_in,"
    " row_count_out, duration_ms, status, error_message, created_at, updated_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), now())"
)
_TASK_SQL = (
    "UPDATE flow_tasks SET status = %s, last_run_at = now(), last_run_status = %s, last_run_record_count = %s,"
    " updated_at = now() WHERE id = %s"
)
_WATERMARKS_SQL = (
    "SELECT node_id, watermark_column, last_watermark_value FROM flow_task_watermarks WHERE flow_task_id = %s"
)
_WATERMARK_SQL = (
    "INSERT INTO flow_task_watermarks (flow_task_id, node_id, watermark_column, last_watermark_value, last_run_at,"
    " record_count, created_at, updated_at) VALUES (%s, %s, %s, %s, now(), %s, now(), now())"
    " ON CONFLICT (flow_task_id, node_id) DO UPDATE SET watermark_column = EXCLUDED.watermark_column,"
    " last_watermark_value = EXCLUDED.last_watermark_value, last_run_at = now(),"
    " record_count = EXCLUDED.record_count, updated_at = now()"
)


@dataclass
class Run:
    """What a run leaves behind."""

    flow_task_id: int
    run_history_id: int
    status: str
    error_message: str | None = None
    total_input_records: int = 0
    total_output_records: int = 0
    node_logs: Sequence[Mapping[str, Any]] = field(default_factory=list)
    #: ``{node_id: {"column", "value", "count"}}``: the watermarks to store after a SUCCESS.
    watermarks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def run_status(catalog: Catalog, run_history_id: int) -> str | None:
    """The run row's status now (``None`` if there is no such row)."""
    with catalog.connection() as conn:
        row = conn.execute("SELECT status FROM flow_task_run_history WHERE id = %s", (run_history_id,)).fetchone()
    return None if row is None else str(row[0])


def load_watermarks(catalog: Catalog, flow_task_id: int, graph: Graph) -> dict[str, Watermark]:
    """Each input's watermark: its column from the node's data, else from the table; the value stored for it."""
    with catalog.connection() as conn:
        stored = {str(r[0]): (r[1], r[2]) for r in conn.execute(_WATERMARKS_SQL, (flow_task_id,)).fetchall()}
    marks: dict[str, Watermark] = {}
    for node in graph.nodes:
        if node.type != "input":
            continue
        column = str(node.data.get("watermark_column") or "").strip()
        row = stored.get(node.id)
        if not column and row is not None and row[0]:
            column = str(row[0])
        if not column:
            continue
        value = str(row[1]) if row is not None and row[1] and str(row[0]) == column else None
        marks[node.id] = Watermark(column, value)
    return marks


def persist_run(catalog: Catalog, run: Run, *, secrets: Sequence[str] = (), pause: float = 1.0) -> bool:
    """Write ``run`` in one transaction; ``False`` if the run was CANCELLED (its status kept). Raises after
    ``PERSIST_ATTEMPTS`` failures."""
    for attempt in range(1, PERSIST_ATTEMPTS + 1):
        try:
            return _persist(catalog, run, secrets)
        except TransientError as exc:
            if attempt == PERSIST_ATTEMPTS:
                logger.error("flow run {} could not be saved: {}", run.run_history_id, exc)
                raise
            logger.warning("flow run {}: saving failed ({}), attempt {} of {}", run.run_history_id, exc, attempt,
                           PERSIST_ATTEMPTS)  # fmt: skip
            time.sleep(pause)
    return False


def _persist(catalog: Catalog, run: Run, secrets: Sequence[str]) -> bool:
    def clean(text: Any) -> str | None:
        return None if text is None else redact(str(text), *secrets)

    with catalog.connection() as conn, conn.transaction():
        row = conn.execute(
            "SELECT status FROM flow_task_run_history WHERE id = %s FOR UPDATE", (run.run_history_id,)
        ).fetchone()
        cancelled = row is not None and str(row[0]).upper() == "CANCELLED"
        if not cancelled:
            conn.execute(_RUN_SQL, (run.status, run.total_input_records, run.total_output_records,
                                    clean(run.error_message), run.run_history_id))  # fmt: skip
        for log in run.node_logs:
            conn.execute(
                _NODE_SQL,
                (run.run_history_id, run.flow_task_id, str(log["node_id"])[:255], str(log["node_type"])[:50],
                 (clean(log.get("node_label")) or "")[:255] or None, int(log.get("row_count_in") or 0),
                 int(log.get("row_count_out") or 0), int(log.get("duration_ms") or 0), str(log["status"]),
                 clean(log.get("error_message"))),
            )  # fmt: skip
        if cancelled:
            return False
        conn.execute(_TASK_SQL, (run.status, run.status, run.total_output_records, run.flow_task_id))
        if run.status == "SUCCESS":
            for node_id, mark in run.watermarks.items():
                if mark.get("value") is not None:
                    conn.execute(_WATERMARK_SQL, (run.flow_task_id, node_id, str(mark["column"]), str(mark["value"]),
                                                  int(mark.get("count") or 0)))  # fmt: skip
    return True
