"""``worker.flow_task.preview``: the rows of one node of an unsaved flow graph, for the editor.

Thin glue over ``rosetta_jobs.flows.runner``: inputs sampled to ``limit`` rows, the answer capped at
``limit`` rows (spec 4.3). An error is a FAILURE with the user's message, as the Celery worker's was.
"""

from __future__ import annotations

from typing import Any

from ..actor import job_actor
from ..contracts import FLOW_PREVIEW
from ..flows.graph import GraphError, NodeError
from ..flows.runner import FlowFailed
from ..job import current_job
from .flow_execute import runner

__all__ = ["MAX_LIMIT", "preview"]

#: The largest ``limit`` the backend allows.
MAX_LIMIT = 5000


@job_actor(FLOW_PREVIEW)
def preview(
    flow_task_id: int, node_id: str, graph_snapshot: Any, limit: int = 500, include_profiling: bool = True
) -> dict[str, Any]:
    """Preview node ``node_id`` of ``graph_snapshot`` (flow task ``flow_task_id``)."""
    job = current_job()
    if job is not None:
        job.progress({"status": "previewing", "flow_task_id": flow_task_id, "node_id": node_id})
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, not {limit!r}")
    try:
        return runner().preview(graph_snapshot, str(node_id), limit=limit, include_profiling=bool(include_profiling),
                                job=job)  # fmt: skip
    except (FlowFailed, GraphError, NodeError) as exc:
        raise ValueError(str(exc)) from None
