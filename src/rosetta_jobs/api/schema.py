"""``POST /schema``: a flow node's output columns, answered in the Celery server's shape.

The backend uses one setting, ``WORKER_HEALTH_URL``, for ``GET /health`` and ``POST /schema``
(``../shared/spec/rosetta-worker.md`` 5.1, 6.2, 11.4), so the route lives on the ops service. The graph's
SQL does not run here: the route enqueues ``worker.flow_task.schema`` on the ``preview`` queue and waits
for it, so the user's SQL runs in a worker's bounded executor, sandboxed like a preview, and the ops
service needs no DuckDB. The answer is ``{"columns": [{"column_name", "data_type"}]}`` with DuckDB's type
text; any error (an unknown node, a source that is down, no worker, the wait running out) is the Celery
server's ``{"columns": []}`` with 200, and the reason goes to the log.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from loguru import logger
from pydantic import BaseModel, Field

from ..contracts import FLOW_SCHEMA
from ..redact import redact

__all__ = ["WAIT", "router"]

#: Seconds the route waits for a worker's answer: under the backend's 30 s httpx timeout.
WAIT = 25.0

router = APIRouter(tags=["ops"])


class SchemaRequest(BaseModel):
    node_id: str
    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]


class Column(BaseModel):
    column_name: str
    data_type: str


class SchemaAnswer(BaseModel):
    columns: list[Column] = Field(description="the node's output columns; empty on any error (see the log)")


@router.post("/schema", response_model=SchemaAnswer)
def schema(body: SchemaRequest, request: Request) -> SchemaAnswer:
    """The output columns of ``node_id`` in the graph ``nodes``/``edges`` (the editor's column pickers)."""
    ops = request.app.state.ops
    try:
        if FLOW_SCHEMA.queue not in ops.snapshot().consumed:
            return _empty(body.node_id, f"no live worker consumes the {FLOW_SCHEMA.queue} queue")
        task_id = ops.client.submit(FLOW_SCHEMA, [body.node_id, body.nodes, body.edges])
        try:
            result = ops.client.result(task_id).get(timeout=WAIT)
        except Exception:
            ops.client.cancel(task_id)  # an answer nobody waits for is not computed
            raise
    except Exception as exc:
        return _empty(body.node_id, f"{type(exc).__name__}: {exc}")
    if not isinstance(result, dict):
        return _empty(body.node_id, f"unexpected answer {type(result).__name__}")
    if result.get("error"):
        return _empty(body.node_id, str(result["error"]))
    return SchemaAnswer(columns=[Column(**column) for column in result.get("columns") or []])


def _empty(node_id: str, reason: str) -> SchemaAnswer:
    logger.warning('POST /schema (node {}): answering {{"columns": []}}: {}', node_id, redact(reason))
    return SchemaAnswer(columns=[])
