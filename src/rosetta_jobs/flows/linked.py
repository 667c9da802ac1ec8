"""Linked tasks: a DAG of flow runs, advanced by events, with no worker thread waiting on a child.

The Celery worker waited on each child with ``AsyncResult.get()``, which Celery forbids inside a task, so
every step was marked FAILED at once while the flows ran detached (``../shared/spec/rosetta-tasks.md`` 7.4,
F26). Here nothing waits: ``start`` writes every step log PENDING and ``advance`` enqueues the steps that
are ready, each as a ``worker.linked_task.step`` message whose id is recorded on the step log before it can
run. A step runs its flow in its own job and, when the flow ends, records its status and calls ``advance``
again, which enqueues what became ready. The run ends when no step is PENDING or RUNNING.

The rules (spec 7.5, the recommended reading of the UI):

- a step runs when **every** predecessor has finished and every ``ON_SUCCESS`` predecessor ended SUCCESS
  (``ALWAYS`` ones only need to have finished; an ``ON_FAILURE`` one, which the UI does not offer, must have
  FAILED); the original ran it when **any** incoming edge allowed it,
  which with the UI's complete stage-to-stage edges started stage N as soon as one step of stage N-1
  succeeded (``docs/flows.md``). Otherwise it is SKIPPED, and its successors are judged in turn: SKIPPED
  counts as finished but not SUCCESS, so no step is left PENDING; steps on a cycle end SKIPPED too;
- at most ``LINKED_TASK_MAX_PARALLEL_STEPS`` steps run at once, each as soon as its own predecessors are
  done (no layer barrier);
- a run the backend marked CANCELLED, or whose linked task's own task id was revoked (its cancel flag: the
  run is then marked CANCELLED here), starts nothing more, its PENDING steps end SKIPPED, its running steps
  are stopped (``StepWatch``), and CANCELLED is never overwritten;
- the run ends FAILED if a step FAILED, else SUCCESS, with ``finished_at`` and an error message naming the
  failed steps; the linked task goes back to IDLE with ``last_run_at`` and ``last_run_status``.

The linked task's own task (its id recorded on the run as ``celery_task_id``) stays PROGRESS while its DAG
runs (``job.Deferred``); the change that ends the run writes its final state through ``ended``: SUCCESS with
``{"status", "step_results"}``, or REVOKED for a cancelled run, never over a final state already there.

Every change is one transaction under an advisory lock on the run, so two steps ending at once advance it
once each, in turn. A crash anywhere loses nothing and repeats nothing finished: a redelivered step whose
log is final only advances the run; one still RUNNING reruns its flow on the same flow-run row.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loguru import logger

from ..errors import JobCancelled, RosettaJobsError
from ..redact import redact

if TYPE_CHECKING:
    import psycopg

    from ..catalog import Catalog
    from ..job import Job

__all__ = ["FINAL", "Coordinator", "LinkedTaskError", "StepWatch"]

FINAL = frozenset({"SUCCESS", "FAILED", "SKIPPED"})
#: Characters of an error message kept on a step log or a run.
_MESSAGE = 2000

#: ``dispatch(run_history_id, step_id, task_id)``: enqueue one step under a task id chosen beforehand.
Dispatch = Callable[[int, int, str], None]
#: ``ended(task_id, status, result)``: the run of the linked task ``task_id`` ended with ``status`` (SUCCESS,
#: FAILED or CANCELLED); ``result`` is ``{"status", "step_results"}``. Called again by every later advance.
Ended = Callable[[str, str, dict[str, Any]], None]
#: ``revoked(task_id)``: whether the linked task ``task_id`` was revoked (its standing cancel flag).
Revoked = Callable[[str], bool]


class LinkedTaskError(RosettaJobsError):
    """A linked-task run that cannot start (the run row is missing)."""


@dataclass
class _Step:
    id: int
    flow_task_id: int
    name: str
    status: str = "PENDING"
    log_id: int = 0


@dataclass
class _Edge:
    source: int
    target: int
    condition: str


class Coordinator:
    """Starts and advances linked-task runs in the config database; ``dispatch`` enqueues a step, ``ended``
    writes the linked task's final state, ``revoked`` reads its cancel."""

    def __init__(
        self, *, catalog: Catalog, dispatch: Dispatch, max_parallel: int = 3, ended: Ended | None = None,
        revoked: Revoked | None = None,
    ) -> None:  # fmt: skip
        self.catalog = catalog
        self.dispatch = dispatch
        self.max_parallel = max_parallel
        self.ended = ended
        self.revoked = revoked

    # --- the run ----------------------------------------------------------------------------------------
    def start(self, linked_task_id: int, run_history_id: int, task_id: str | None = None) -> dict[str, Any]:
        """Write every step log PENDING (once: a redelivered start adds none), then advance the run.

        ``task_id``, the linked task's own, is recorded on the run (the backend records the same one): a revoke
        of it cancels the run, and the run's end writes its final state.
        """
        with self.catalog.connection() as conn, conn.transaction():
            _lock(conn, run_history_id)
            run = conn.execute(
                "SELECT linked_task_id, status FROM linked_task_run_history WHERE id = %s FOR UPDATE",
                (run_history_id,),
            ).fetchone()
            task = conn.execute("SELECT id FROM linked_tasks WHERE id = %s", (linked_task_id,)).fetchone()
            if run is None:
                conn.execute("UPDATE linked_tasks SET status = 'IDLE', updated_at = now() WHERE id = %s",
                             (linked_task_id,))  # fmt: skip
                return {"status": "MISSING", "run_history_id": run_history_id}
            if task_id:
                conn.execute("UPDATE linked_task_run_history SET celery_task_id = %s WHERE id = %s",
                             (task_id, run_history_id))  # fmt: skip
            problem = None
            if task is None:
                problem = f"LinkedTask {linked_task_id} not found"
            elif int(run[0]) != linked_task_id:
                problem = f"Run {run_history_id} belongs to linked task {run[0]}, not {linked_task_id}"
            steps, edges = _graph(conn, linked_task_id)
            problem = problem or _check_edges(steps, edges)
            if problem is not None:
                self._end(conn, linked_task_id, run_history_id, "FAILED", problem)
                return {"status": "FAILED", "run_history_id": run_history_id, "error": problem}
            logged = conn.execute(
                "SELECT step_id FROM linked_task_run_step_log WHERE run_history_id = %s", (run_history_id,)
            ).fetchall()
            existing = {int(r[0]) for r in logged}
            for step in steps.values():
                if step.id not in existing:
                    conn.execute(
                        "INSERT INTO linked_task_run_step_log (run_history_id, linked_task_id, step_id, flow_task_id,"
                        " status, created_at, updated_at) VALUES (%s, %s, %s, %s, 'PENDING', now(), now())",
                        (run_history_id, linked_task_id, step.id, step.flow_task_id),
                    )
        status = self.advance(run_history_id)
        return {"status": status, "run_history_id": run_history_id, "steps": len(steps)}

    def begin(self, linked_task_id: int, run_history_id: int, task_id: str | None = None) -> dict[str, Any]:
        """``start``, and a run row that does not exist is an error (FAILURE), after ``linked_tasks`` was reset."""
        answer = self.start(linked_task_id, run_history_id, task_id)
        if answer["status"] == "MISSING":
            raise LinkedTaskError(f"Linked task run {run_history_id} not found")
        return answer

    def advance(self, run_history_id: int) -> str:
        """Skip what cannot run, enqueue what is ready (within the parallel limit), end the run when all is done.

        Returns the run's status afterwards. Once the run is over, every advance (re)writes the linked task's
        final state through ``ended`` (after its transaction): a write lost to a Redis outage is retried by the
        next one, and one already there is kept.
        """
        status, task_id, result = self._advance(run_history_id)
        if status not in ("RUNNING", "MISSING") and task_id and self.ended is not None:
            try:
                self.ended(task_id, status, result)
            except Exception as exc:
                logger.error("linked run {}: could not store the final state of task {}: {}", run_history_id, task_id,
                             redact(str(exc)))  # fmt: skip
        return status

    def _advance(self, run_history_id: int) -> tuple[str, str | None, dict[str, Any]]:
        """``advance``'s transaction: the run's status, the linked task's id, and its result."""
        with self.catalog.connection() as conn, conn.transaction():
            _lock(conn, run_history_id)
            run = conn.execute(
                "SELECT linked_task_id, status, celery_task_id FROM linked_task_run_history WHERE id = %s FOR UPDATE",
                (run_history_id,),
            ).fetchone()
            if run is None:
                return "MISSING", None, {}
            linked_task_id, status, parent = int(run[0]), str(run[1]), run[2]
            steps, edges = _graph(conn, linked_task_id)
            for log_id, step_id, step_status in conn.execute(
                "SELECT id, step_id, status FROM linked_task_run_step_log WHERE run_history_id = %s", (run_history_id,)
            ).fetchall():
                if int(step_id) in steps:
                    steps[int(step_id)].status, steps[int(step_id)].log_id = str(step_status), int(log_id)
            if status == "RUNNING" and self._revoked(parent):
                self._end(conn, linked_task_id, run_history_id, "CANCELLED", "Cancelled by user")
                status = "CANCELLED"
            if status != "RUNNING":
                if status == "CANCELLED":
                    for step in steps.values():
                        if step.status == "PENDING":
                            _set(conn, step, "SKIPPED", "Run cancelled")
                return status, parent, _result(status, steps)
            ready = self._judge(conn, steps, edges)
            running = sum(1 for s in steps.values() if s.status == "RUNNING")
            for step in ready[: max(self.max_parallel - running, 0)]:
                task_id = str(uuid.uuid4())
                conn.execute(
                    "UPDATE linked_task_run_step_log SET status = 'RUNNING', celery_task_id = %s,"
                    " started_at = COALESCE(started_at, now()), updated_at = now() WHERE id = %s",
                    (task_id, step.log_id),
                )
                step.status = "RUNNING"
                # Enqueued before this transaction commits: the step waits on its log's row lock, so it can
                # never run before RUNNING and its task id are visible; a rollback leaves a step that claims it.
                self.dispatch(run_history_id, step.id, task_id)
            if any(s.status in ("PENDING", "RUNNING") for s in steps.values()):
                return "RUNNING", parent, {}
            failed = [s for s in steps.values() if s.status == "FAILED"]
            final = "FAILED" if failed else "SUCCESS"
            message = "; ".join(f"Step #{s.id} ({s.name}) failed" for s in failed) or None
            self._end(conn, linked_task_id, run_history_id, final, message)
            return final, parent, _result(final, steps)

    def _revoked(self, task_id: str | None) -> bool:
        return bool(task_id) and self.revoked is not None and self.revoked(str(task_id))

    def cancelled(self, run_history_id: int) -> bool:
        """Whether the run is cancelled: CANCELLED in the database, or still RUNNING with its linked task revoked."""
        with self.catalog.connection() as conn:
            row = conn.execute(
                "SELECT status, celery_task_id FROM linked_task_run_history WHERE id = %s", (run_history_id,)
            ).fetchone()
        return row is not None and (row[0] == "CANCELLED" or (row[0] == "RUNNING" and self._revoked(row[1])))

    def result(self, run_history_id: int) -> dict[str, Any]:
        """The linked task's answer (spec 1.7 step 7): ``{"status", "step_results": {"<step id>": status}}``."""
        with self.catalog.connection() as conn:
            run = conn.execute("SELECT status FROM linked_task_run_history WHERE id = %s", (run_history_id,)).fetchone()
            logs = conn.execute(
                "SELECT step_id, status FROM linked_task_run_step_log WHERE run_history_id = %s ORDER BY step_id",
                (run_history_id,),
            ).fetchall()
        return {"status": None if run is None else str(run[0]),
                "step_results": {str(int(r[0])): str(r[1]) for r in logs}}  # fmt: skip

    def _judge(self, conn: psycopg.Connection[Any], steps: dict[int, _Step], edges: list[_Edge]) -> list[_Step]:
        """SKIP every PENDING step that can no longer run (repeatedly: skips propagate); the ready ones, in order."""
        incoming: dict[int, list[_Edge]] = {s: [] for s in steps}
        for edge in edges:
            if edge.source in steps and edge.target in steps:
                incoming[edge.target].append(edge)
        changed = True
        while changed:
            changed = False
            for step in steps.values():
                if step.status != "PENDING":
                    continue
                preds = incoming[step.id]
                if any(steps[e.source].status not in FINAL for e in preds):
                    continue
                blocking = next((e for e in preds if not _allows(e.condition, steps[e.source].status)), None)
                if blocking is not None:
                    source = steps[blocking.source]
                    _set(conn, step, "SKIPPED", f"Skipped: step #{source.id} ({source.name}) ended {source.status}")
                    changed = True
        ready = [s for s in steps.values() if s.status == "PENDING" and
                 all(steps[e.source].status in FINAL for e in incoming[s.id])]  # fmt: skip
        if not ready and not any(s.status == "RUNNING" for s in steps.values()):
            for step in steps.values():  # nothing can move any more: what is left is on a cycle
                if step.status == "PENDING":
                    _set(conn, step, "SKIPPED", "Skipped: the step is on a cycle of the linked task's edges")
        return ready

    def _end(
        self, conn: psycopg.Connection[Any], linked_task_id: int, run_history_id: int, status: str, message: str | None
    ) -> None:
        conn.execute(
            "UPDATE linked_task_run_history SET status = %s, finished_at = now(), error_message = %s,"
            " updated_at = now() WHERE id = %s AND status = 'RUNNING'",
            (status, (message or None) and message[:_MESSAGE], run_history_id),
        )
        conn.execute(
            "UPDATE linked_tasks SET status = 'IDLE', last_run_at = now(), last_run_status = %s, updated_at = now()"
            " WHERE id = %s",
            (status, linked_task_id),
        )

    # --- a step --------------------------------------------------------------------------------------------
    def claim(self, run_history_id: int, step_id: int, task_id: str) -> dict[str, Any] | None:
        """Take step ``step_id`` for the job ``task_id``: its flow run row (created once) and graph, or ``None`` when
        the step must not run (final already, the run cancelled, or another job owns it)."""
        with self.catalog.connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT sl.id, sl.status, sl.flow_task_id, sl.flow_task_run_history_id, sl.celery_task_id, r.status,"
                " r.trigger_type FROM linked_task_run_step_log sl JOIN linked_task_run_history r"
                " ON r.id = sl.run_history_id WHERE sl.run_history_id = %s AND sl.step_id = %s FOR UPDATE OF sl",
                (run_history_id, step_id),
            ).fetchone()
            if row is None:
                return None
            log_id, status, flow_task_id, flow_run_id, owner, run_status, trigger = row
            if status in FINAL or run_status != "RUNNING" or (owner is not None and owner != task_id):
                return None
            if flow_run_id is None:
                created = conn.execute(
                    "INSERT INTO flow_task_run_history (flow_task_id, trigger_type, status, celery_task_id, started_at,"
                    " created_at, updated_at) VALUES (%s, %s, 'RUNNING', %s, now(), now(), now()) RETURNING id",
                    (flow_task_id, trigger or "MANUAL", task_id),
                ).fetchone()
                assert created is not None
                flow_run_id = created[0]
            conn.execute(
                "UPDATE linked_task_run_step_log SET status = 'RUNNING', celery_task_id = %s,"
                " flow_task_run_history_id = %s, started_at = COALESCE(started_at, now()), updated_at = now()"
                " WHERE id = %s",
                (task_id, flow_run_id, log_id),
            )
            conn.execute("UPDATE flow_tasks SET status = 'RUNNING', updated_at = now() WHERE id = %s", (flow_task_id,))
            graph = conn.execute(
                "SELECT nodes_json, edges_json FROM flow_task_graph WHERE flow_task_id = %s LIMIT 1", (flow_task_id,)
            ).fetchone()
        return {
            "flow_task_id": int(flow_task_id),
            "flow_run_id": int(flow_run_id),
            "graph": {"nodes": (graph[0] if graph else None) or [], "edges": (graph[1] if graph else None) or []},
        }

    def finish(self, run_history_id: int, step_id: int, status: str, message: str | None = None) -> None:
        """Record the step's end (once: a final status is never changed), then advance the run."""
        with self.catalog.connection() as conn:
            conn.execute(
                "UPDATE linked_task_run_step_log SET status = %s, error_message = %s, finished_at = now(),"
                " updated_at = now() WHERE run_history_id = %s AND step_id = %s AND status NOT IN"
                " ('SUCCESS', 'FAILED', 'SKIPPED')",
                (status, (message or None) and redact(message)[:_MESSAGE], run_history_id, step_id),
            )
        self.advance(run_history_id)

    def cancel_flow_run(self, flow_run_id: int) -> None:
        """A stopped step's flow run: CANCELLED, unless it already ended."""
        with self.catalog.connection() as conn:
            conn.execute(
                "UPDATE flow_task_run_history SET status = 'CANCELLED', finished_at = now(), error_message ="
                " 'Cancelled by user', updated_at = now() WHERE id = %s AND status = 'RUNNING'",
                (flow_run_id,),
            )

    def run_status(self, run_history_id: int) -> str | None:
        with self.catalog.connection() as conn:
            row = conn.execute("SELECT status FROM linked_task_run_history WHERE id = %s", (run_history_id,)).fetchone()
        return None if row is None else str(row[0])


class StepWatch:
    """While a step's flow runs: stop it when its linked run is cancelled (``Coordinator.cancelled``: CANCELLED
    in the database, or the linked task revoked), and settle a stopped step.

    The settling (step SKIPPED, flow run CANCELLED, the run advanced) happens on this thread, never on the job's:
    a stopped job's thread must end at once.
    """

    def __init__(
        self, coordinator: Coordinator, job: Job | None, *, run_history_id: int, step_id: int, flow_run_id: int,
        every: float = 1.0,
    ) -> None:  # fmt: skip
        self.coordinator = coordinator
        self.job = job
        self.run_history_id = run_history_id
        self.step_id = step_id
        self.flow_run_id = flow_run_id
        self.every = every
        self._done = threading.Event()
        self._settled = threading.Lock()
        self.settled = False
        self._thread = threading.Thread(target=self._watch, name=f"linked-step-{step_id}", daemon=True)

    def __enter__(self) -> StepWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if not self.settled and self.job is not None and self.job.cancelled:  # stopped before the watch saw it
            threading.Thread(target=self._settle_stopped, name=f"linked-step-{self.step_id}-settle").start()

    def settle(self, status: str, message: str | None) -> bool:
        """Record the step's end once, whoever comes first (the job, or this watch after a stop)."""
        with self._settled:
            if self.settled:
                return False
            self.settled = True
        self.coordinator.finish(self.run_history_id, self.step_id, status, message)
        return True

    def _watch(self) -> None:
        while not self._done.wait(self.every):
            try:
                cancelled_run = self.coordinator.cancelled(self.run_history_id)
            except Exception as exc:
                logger.warning("linked run {}: could not read its status: {}", self.run_history_id, redact(str(exc)))
                continue
            if cancelled_run and self.job is not None:
                self.job.stop(JobCancelled)
            if cancelled_run or (self.job is not None and self.job.cancelled):
                self._settle_stopped()
                return

    def _settle_stopped(self) -> None:
        try:
            self.coordinator.cancel_flow_run(self.flow_run_id)
            self.settle("SKIPPED", "Cancelled by user while running")
        except Exception as exc:
            logger.error("linked run {}: step {} could not be settled: {}", self.run_history_id, self.step_id,
                         redact(str(exc)))  # fmt: skip


def _lock(conn: psycopg.Connection[Any], run_history_id: int) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"linked_task_run:{run_history_id}",))


def _graph(conn: psycopg.Connection[Any], linked_task_id: int) -> tuple[dict[int, _Step], list[_Edge]]:
    steps = {
        int(r[0]): _Step(int(r[0]), int(r[1]), str(r[2] or f"Step #{r[0]}"))
        for r in conn.execute(
            "SELECT s.id, s.flow_task_id, f.name FROM linked_task_steps s"
            " LEFT JOIN flow_tasks f ON f.id = s.flow_task_id WHERE s.linked_task_id = %s ORDER BY s.id",
            (linked_task_id,),
        ).fetchall()
    }
    edges = [
        _Edge(int(r[0]), int(r[1]), str(r[2] or "ON_SUCCESS").upper())
        for r in conn.execute(
            "SELECT source_step_id, target_step_id, condition FROM linked_task_edges WHERE linked_task_id = %s"
            " ORDER BY id",
            (linked_task_id,),
        ).fetchall()
    ]
    return steps, edges


def _check_edges(steps: Mapping[int, _Step], edges: list[_Edge]) -> str | None:
    """Why the edges cannot be run (a step of another linked task, an unknown condition), or ``None`` (F27)."""
    for edge in edges:
        if edge.source not in steps or edge.target not in steps:
            return f"Edge #{edge.source} -> #{edge.target} connects a step that is not in this linked task"
        if edge.condition not in ("ON_SUCCESS", "ON_FAILURE", "ALWAYS"):
            return f"Edge #{edge.source} -> #{edge.target} has the unknown condition {edge.condition!r}"
    return None


def _allows(condition: str, status: str) -> bool:
    """Whether a finished predecessor with ``status`` lets its successor run through an edge of ``condition``."""
    if condition == "ALWAYS":
        return True
    return status == ("FAILED" if condition == "ON_FAILURE" else "SUCCESS")


def _result(status: str, steps: Mapping[int, _Step]) -> dict[str, Any]:
    """The linked task's answer (spec 1.7 step 7): the run's status and each step's, keyed by the step id as text."""
    return {"status": status, "step_results": {str(s.id): s.status for s in sorted(steps.values(), key=lambda s: s.id)}}


def _set(conn: psycopg.Connection[Any], step: _Step, status: str, message: str | None) -> None:
    conn.execute(
        "UPDATE linked_task_run_step_log SET status = %s, error_message = %s, finished_at = now(), updated_at = now()"
        " WHERE id = %s",
        (status, message, step.log_id),
    )
    step.status = status
