"""``worker.flow_task.schema``: a flow node's output columns, for the ops service's ``POST /schema``.

Not a Celery task: the ops service enqueues it and waits, so a graph's SQL runs in a worker's bounded
executor and never in the ops service. Any error is an answer, ``{"columns": [], "error"}``, which the
ops service logs and turns into the Celery server's ``{"columns": []}``.
"""

from __future__ import annotations

from typing import Any

from ..actor import job_actor
from ..contracts import FLOW_SCHEMA
from ..errors import RosettaJobsError
from ..flows.graph import GraphError, NodeError
from ..job import current_job
from .flow_execute import runner

__all__ = ["schema"]


@job_actor(FLOW_SCHEMA)
def schema(node_id: str, nodes: Any, edges: Any) -> dict[str, Any]:
    """``{"columns": [{"column_name", "data_type"}]}`` of node ``node_id``."""
    try:
        return {"columns": runner().schema({"nodes": nodes, "edges": edges}, str(node_id), job=current_job())}
    except (RosettaJobsError, GraphError, NodeError) as exc:
        return {"columns": [], "error": str(exc)}
