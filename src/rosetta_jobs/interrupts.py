"""Which jobs run in this process, and how to stop one of them.

The cancel middleware asks; the job decides how it can be stopped. A preview registers its DuckDB
session's ``stop`` (which interrupts the query inside DuckDB); a plain Python job is stopped
cooperatively at its next ``check_cancelled()`` (``report_progress`` calls it). Nothing raises an
exception asynchronously into a thread, so a late interrupt can never kill a worker thread
(dramatiq#445).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from .errors import JobCancelled

__all__ = ["attach", "check_cancelled", "detach", "finished", "running", "started", "stop"]


@dataclass
class _Job:
    thread: int
    stopper: Callable[[], bool] | None = None
    cancelled: bool = False


_lock = threading.Lock()
_jobs: dict[str, _Job] = {}
_current = threading.local()


def started(task_id: str) -> None:
    """The calling thread starts running ``task_id``."""
    with _lock:
        _jobs[task_id] = _Job(thread=threading.get_ident())
    _current.task_id = task_id


def finished(task_id: str) -> bool:
    """The job is over; returns whether a stop had been asked for it."""
    with _lock:
        job = _jobs.pop(task_id, None)
    _current.task_id = None
    return job is not None and job.cancelled


def attach(task_id: str | None, stopper: Callable[[], bool]) -> None:
    """Route a stop of ``task_id`` to ``stopper`` (e.g. a DuckDB interrupt) while it is attached."""
    if task_id is None:
        return
    with _lock:
        job = _jobs.get(task_id)
        if job is not None:
            job.stopper = stopper
            cancelled = job.cancelled
        else:
            cancelled = False
    if cancelled:
        stopper()


def detach(task_id: str | None) -> None:
    if task_id is None:
        return
    with _lock:
        job = _jobs.get(task_id)
        if job is not None:
            job.stopper = None


def running() -> list[str]:
    with _lock:
        return list(_jobs)


def stop(task_id: str) -> bool:
    """Ask ``task_id`` to stop. Returns whether it runs in this process."""
    with _lock:  # held while stopping: ``detach`` cannot hand the session to another job meanwhile
        job = _jobs.get(task_id)
        if job is None:
            return False
        job.cancelled = True
        if job.stopper is not None:
            job.stopper()
    return True


def check_cancelled() -> None:
    """Raise ``JobCancelled`` in the job's own thread if a cancel arrived for it."""
    task_id = getattr(_current, "task_id", None)
    if task_id is None:
        return
    with _lock:
        job = _jobs.get(task_id)
        cancelled = job is not None and job.cancelled
    if cancelled:
        raise JobCancelled(task_id)
