"""``worker.linked_task.execute`` and its steps: a linked task's DAG of flows, advanced by events.

Thin glue over ``rosetta_jobs.flows.linked``. The Celery task (kwargs ``linked_task_id``, ``run_history_id``)
writes the step logs and enqueues the first steps, then ends; each ``worker.linked_task.step`` runs one flow
in its own job and enqueues what became ready when it ends. No worker thread ever waits on another job.

The Celery task's job ends at once but its task does not: it returns ``Deferred`` (PROGRESS stays), and the
step that ends the run writes its final state (``TaskStore.finish``): SUCCESS with ``{"status",
"step_results"}``, or REVOKED for a cancelled run. So a revoke (or ``JobClient.cancel``) of its id while the
DAG runs finds a running task: REVOKED and the cancel flag, which the steps' watch turns into a cancelled run.
"""

from __future__ import annotations

import threading
from typing import Any

from .. import resources
from ..actor import job_actor
from ..config import get_settings
from ..contracts import LINKED_STEP, LINKED_TASK
from ..errors import JobTimedOut
from ..flows.graph import GraphError, NodeError
from ..flows.linked import Coordinator, StepWatch
from ..flows.runner import FlowFailed
from ..job import Deferred, Job, current_job
from ..states import REVOKED, SUCCESS, revoked_exception
from .flow_execute import runner

__all__ = ["coordinator", "execute", "step"]

_coordinator: Coordinator | None = None
_lock = threading.Lock()


def coordinator() -> Coordinator:
    """The process's coordinator: the config catalog, and a client that enqueues steps under their task ids."""
    global _coordinator
    with _lock:
        if _coordinator is None:
            from ..client import JobClient

            settings = get_settings()
            client = JobClient.from_settings(settings)

            def dispatch(run_history_id: int, step_id: int, task_id: str) -> None:
                client.submit(LINKED_STEP, [run_history_id, step_id], task_id=task_id)

            def ended(task_id: str, status: str, result: dict[str, Any]) -> None:
                if status == "CANCELLED":
                    client.store.finish(task_id, REVOKED, revoked_exception())
                else:
                    client.store.finish(task_id, SUCCESS, result)

            def revoked(task_id: str) -> bool:
                return bool(client.store.cancel_requested([task_id]))

            _coordinator = Coordinator(catalog=resources.catalog(), dispatch=dispatch, ended=ended, revoked=revoked,
                                       max_parallel=settings.linked_task_max_parallel_steps)  # fmt: skip
        return _coordinator


@job_actor(LINKED_TASK)
def execute(linked_task_id: int, run_history_id: int) -> dict[str, Any] | Deferred:
    """Start run ``run_history_id`` of linked task ``linked_task_id``: step logs, then the first steps.

    A run still going on leaves the task PROGRESS (``Deferred``: the step that ends the run writes its final
    state); one already over (no step could run, a broken DAG) answers ``{"status", "step_results"}`` now.
    """
    job = current_job()
    meta = {"status": "executing", "linked_task_id": linked_task_id, "run_history_id": run_history_id}
    if job is not None:
        job.progress(meta)
    answer = coordinator().begin(int(linked_task_id), int(run_history_id), job.id if job is not None else None)
    if answer["status"] == "RUNNING":
        return Deferred(meta)
    return coordinator().result(int(run_history_id))


def _step_timed_out(job: Job) -> Any:
    message = job.message
    if message is not None:
        run_history_id, step_id = LINKED_STEP.bind(message.args, message.kwargs)
        coordinator().finish(int(run_history_id), int(step_id), "FAILED",
                             f"The step's flow timed out after {job.time_limit or 0:g} s")  # fmt: skip
    raise JobTimedOut(job.time_limit or 0)


@job_actor(LINKED_STEP, timed_out=_step_timed_out)
def step(run_history_id: int, step_id: int) -> dict[str, Any]:
    """Run step ``step_id`` of linked run ``run_history_id`` (its flow), record its end, advance the run."""
    job = current_job()
    task_id = job.id if job is not None else ""
    claimed = coordinator().claim(int(run_history_id), int(step_id), task_id)
    if claimed is None:  # already final (a redelivery), cancelled, or another job's
        coordinator().advance(int(run_history_id))
        return {"step_id": step_id, "status": "NOT_RUN"}
    flow_task_id, flow_run_id = claimed["flow_task_id"], claimed["flow_run_id"]
    if job is not None:
        job.progress({"status": "executing", "flow_task_id": flow_task_id, "run_history_id": flow_run_id})
    with StepWatch(coordinator(), job, run_history_id=int(run_history_id), step_id=int(step_id),
                   flow_run_id=flow_run_id) as watch:  # fmt: skip
        try:
            result = runner().execute(flow_task_id, flow_run_id, claimed["graph"], job=job)
            status, message = str(result["status"]), _failures(result)
        except (FlowFailed, GraphError, NodeError) as exc:
            status, message = "FAILED", str(exc)
        except Exception as exc:  # the config database or an executor failed: the step ends, the run goes on
            watch.settle("FAILED", f"{type(exc).__name__}: {exc}")
            raise
        watch.settle(status, message)
    return {"step_id": step_id, "status": status, "flow_run_id": flow_run_id}


def _failures(result: dict[str, Any]) -> str | None:
    failed = [f"{log['node_label']}: {log['error_message']}" for log in result.get("node_logs") or []
              if log.get("status") == "FAILED"]  # fmt: skip
    return "; ".join(failed) or None
