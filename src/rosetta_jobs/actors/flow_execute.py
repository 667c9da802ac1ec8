"""``worker.flow_task.execute``: run a flow graph, write its outputs, persist the run for the backend.

Thin glue over ``rosetta_jobs.flows.runner``. A node's failure is part of the answer (SUCCESS with
``status: "FAILED"``, as the Celery worker answered); a failure of the whole run is persisted, notified
and raised as the original's ``ValueError`` (FAILURE). At the time limit the run is recorded FAILED first,
then the job ends FAILURE with Celery's ``TimeLimitExceeded``. A cancel stops the executor's query; the
backend's cancel has already marked the run CANCELLED, which is never overwritten.
"""

from __future__ import annotations

import threading
from typing import Any

from .. import resources
from ..actor import job_actor
from ..contracts import FLOW_EXECUTE
from ..errors import JobTimedOut
from ..flows.graph import GraphError, NodeError
from ..flows.runner import FlowFailed, FlowRunner
from ..job import Job, current_job

__all__ = ["execute", "runner"]

_runner: FlowRunner | None = None
_lock = threading.Lock()


def runner() -> FlowRunner:
    """The process's flow runner: the config catalog and the preview's executor processes, built on first use."""
    global _runner
    with _lock:
        if _runner is None:
            from .preview import runner as preview_runner

            _runner = FlowRunner(catalog=resources.catalog(), executors=preview_runner().executors)
        return _runner


def _timed_out(job: Job) -> Any:
    message = job.message
    if message is not None:
        flow_task_id, run_history_id, _ = FLOW_EXECUTE.bind(message.args, message.kwargs)
        runner().fail_run(int(flow_task_id), int(run_history_id), f"Flow run timed out after {job.time_limit or 0:g} s")
    raise JobTimedOut(job.time_limit or 0)


@job_actor(FLOW_EXECUTE, timed_out=_timed_out)
def execute(flow_task_id: int, run_history_id: int, graph_json: Any) -> dict[str, Any]:
    """Run ``graph_json`` as run ``run_history_id`` of flow task ``flow_task_id``."""
    job = current_job()
    if job is not None:
        job.progress({"status": "executing", "flow_task_id": flow_task_id, "run_history_id": run_history_id})
    try:
        return runner().execute(int(flow_task_id), int(run_history_id), graph_json, job=job)
    except (FlowFailed, GraphError, NodeError) as exc:
        raise ValueError(str(exc)) from None  # the Celery worker's exception type, which AsyncResult rebuilds
