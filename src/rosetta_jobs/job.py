"""The job context: one object per running message, shared by the actor and every middleware.

``JobContext`` (the middleware in ``middleware/context.py``) creates a ``Job`` before a message runs and
keeps it in the process's one ``RunningJobs`` registry until the message is done. Heartbeats, metrics,
time limits, cancel and progress all read that same object; an actor reaches its own with
``current_job()`` (Dramatiq's ``CurrentMessage`` is the model).

How a job is stopped (a time limit or a cancel, both through ``Job.stop``):

- work that registered a *stopper* (``Job.stoppable``): the stopper runs, e.g. DuckDB's ``interrupt()``,
  or ``Job.popen``'s kill of the subprocess's whole process group;
- cooperative code: ``Job.wait``, ``Job.check`` and ``Job.progress`` raise the stop at once;
- anything still running ``ESCALATE_AFTER`` seconds after the stop (a pure-Python loop, or work whose
  stopper did not end it) gets an asynchronous exception (``PyThreadState_SetAsyncExc``, as Dramatiq's
  ``TimeLimit`` does), raised only while the thread is inside the actor's function and cleared, if
  still pending, the moment it leaves it, so it never hits Dramatiq's worker loop (dramatiq#445). It
  cannot break into a blocking C call: long waits belong in ``Job.wait``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import dramatiq
from loguru import logger

from .errors import JobAbandoned, JobCancelled, JobInterrupt, JobTimedOut

__all__ = ["ESCALATE_AFTER", "Deferred", "Job", "ProgressWriter", "RunningJobs", "current_job", "set_current_job"]

#: Seconds after a stop before a job that is still running gets an asynchronous exception.
ESCALATE_AFTER = 0.5

#: Writes a job's PROGRESS meta (``TaskState`` provides it).
ProgressWriter = Callable[["Job", dict[str, Any]], None]

_current = threading.local()


def current_job() -> Job | None:
    """The job the calling thread runs, or ``None`` outside a worker (a plain call in a test)."""
    return getattr(_current, "job", None)


def set_current_job(job: Job | None) -> None:
    """Bind ``job`` to the calling (worker) thread; ``JobContext`` does it around each message."""
    _current.job = job


@dataclass(frozen=True)
class Deferred:
    """Returned by an actor whose task's final state someone else writes later (with ``TaskStore.finish``).

    The job ends and its message is acknowledged, but the task is not over: ``TaskState`` stores PROGRESS with
    ``meta`` instead of SUCCESS, so a cancel still lands on it, and whoever ends the work writes SUCCESS or
    FAILURE through the store's Lua write, which never overwrites a final state (a cancel's REVOKED).
    ``job.outcome`` is then ``"deferred"``. Dramatiq's callbacks and pipelines do not continue such a job.
    """

    meta: dict[str, Any]


@dataclass(eq=False)
class Job:
    """One running message: who it is, how long it may run, and how to stop it."""

    id: str
    actor: str
    queue: str
    #: Seconds the job may run (``None``: no limit), and the ``time.monotonic()`` it must end by.
    time_limit: float | None
    deadline: float | None
    #: Times this message started (1 on the first run; a redelivery after a crash counts too).
    deliveries: int = 1
    #: Epoch seconds when it started, and how long it had waited in the queue.
    started_at: float = field(default_factory=time.time)
    waited: float = 0.0
    thread: int = field(default_factory=threading.get_ident)
    progress_writer: ProgressWriter | None = None
    #: The Dramatiq message (a ``MessageProxy``) this job runs.
    message: dramatiq.MessageProxy | None = field(default=None, repr=False)
    #: How the actor ended when it did not return a result or raise an error: ``"cancelled"``, ``"deferred"``
    #: (it returned ``Deferred``: its final state is written later, elsewhere), or ``None``.
    outcome: str | None = None
    #: Set as the job ends (``Heartbeat``'s after-hook): over, though still registered while the hooks run.
    finished: bool = False
    #: The lease its start writes with STARTED, in the same step (key, owner, TTL in ms): ``Heartbeat`` hands
    #: it over, ``TaskState`` writes it (the next beat does, if no STARTED is written).
    lease: tuple[str, str, int] | None = None
    _stopped: threading.Event = field(default_factory=threading.Event, repr=False)
    _stopped_by: type[JobInterrupt] | None = field(default=None, repr=False)
    _stopped_at: float = field(default=0.0, repr=False)
    _stoppers: list[Callable[[type[JobInterrupt]], object]] = field(default_factory=list, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _armed: bool = field(default=False, repr=False)
    _sent: bool = field(default=False, repr=False)
    _after_end: list[Callable[[], object]] = field(default_factory=list, repr=False)

    # --- for actors ---------------------------------------------------------------------------------
    @property
    def stopped(self) -> bool:
        """Whether a cancel or the time limit asked this job to stop."""
        return self._stopped.is_set()

    @property
    def stopped_by(self) -> type[JobInterrupt] | None:
        return self._stopped_by

    @property
    def cancelled(self) -> bool:
        return self._stopped_by is JobCancelled

    @property
    def in_actor(self) -> bool:
        """Whether the actor's function is running (not yet begun, or its state being written: ``False``)."""
        return self._armed

    def remaining(self) -> float | None:
        """Seconds left before the time limit, or ``None`` without one."""
        return None if self.deadline is None else max(self.deadline - time.monotonic(), 0.0)

    def check(self) -> None:
        """Raise the stop (``JobCancelled`` or ``JobTimedOut``) if one was asked for."""
        if self._stopped_by is not None:
            raise self.interrupt()

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the job is stopped meanwhile (then raise the stop)."""
        self._stopped.wait(seconds)
        self.check()

    def after_end(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` once the job's state is stored, on its thread, before the next message: work its
        client need not wait for (a preview's cache write). An error there is logged; the state stays."""
        self._after_end.append(fn)

    def ended(self) -> None:
        """Run what ``after_end`` put off (``JobContext``, after every other middleware's hook)."""
        work, self._after_end = self._after_end, []
        for fn in work:
            try:
                fn()
            except Exception:
                logger.exception("task {}: work after its end failed", self.id)

    def progress(self, meta: dict[str, Any]) -> None:
        """Store PROGRESS with ``meta``; a stopped job stops here."""
        self.check()
        if self.progress_writer is not None:
            self.progress_writer(self, meta)

    @contextlib.contextmanager
    def stoppable(self, stopper: Callable[[type[JobInterrupt]], object]) -> Iterator[None]:
        """Route a stop to ``stopper`` (called with the reason) while the block runs.

        A stop that came before the block calls ``stopper`` at once. Stoppers run under the job's lock,
        so a stopper is never called after the block has ended (a reused DuckDB session cannot be
        interrupted on behalf of a job that no longer uses it).
        """
        with self._lock:
            self._stoppers.append(stopper)
            reason = self._stopped_by
        if reason is not None:
            _call_stopper(stopper, reason)
        try:
            yield
        finally:
            with self._lock:
                self._stoppers.remove(stopper)

    @contextlib.contextmanager
    def popen(self, args: Sequence[str], **kwargs: Any) -> Iterator[subprocess.Popen[Any]]:
        """A subprocess in a process group of its own, killed whole if the job is stopped meanwhile.

        When the block ends the group is killed (children a finished parent left behind) and reaped,
        before the stopper goes: a stop can never signal a process group id the system has reused.
        """
        proc = subprocess.Popen(args, start_new_session=True, **kwargs)

        def kill(reason: type[JobInterrupt] | None = None) -> None:
            if proc.returncode is None:  # not reaped yet: the group id is still ours
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)

        try:
            with self.stoppable(kill), proc:
                try:
                    yield proc
                finally:
                    kill()
        finally:
            proc.wait()

    def run_subprocess(
        self, args: Sequence[str], *, input: str | bytes | None = None, **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """``subprocess.run`` under the job's control: killed with its children on a stop or the deadline."""
        stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
        with self.popen(args, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs) as proc:
            stdout, stderr = proc.communicate(input)
        self.check()
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def interrupt(self) -> JobInterrupt:
        """The exception that ends this job now that it was stopped."""
        if self._stopped_by is JobTimedOut:
            return JobTimedOut(self.time_limit if self.time_limit is not None else 0)
        if self._stopped_by is JobAbandoned:
            return JobAbandoned(self.id)
        return JobCancelled(self.id)

    # --- for the middleware ---------------------------------------------------------------------
    def stop(self, reason: type[JobInterrupt]) -> bool:
        """Ask the job to stop (``JobCancelled`` or ``JobTimedOut``); the first reason wins. Any thread."""
        with self._lock:
            if self._stopped_by is not None:
                return False
            self._stopped_by, self._stopped_at = reason, time.monotonic()
            self._stopped.set()
            for stopper in list(self._stoppers):
                _call_stopper(stopper, reason)
        return True

    def escalate(self, now: float) -> bool:
        """Raise the stop in the job's thread if stoppers did not end it within ``ESCALATE_AFTER``."""
        with self._lock:
            if self._stopped_by is None or now - self._stopped_at < ESCALATE_AFTER:
                return False
            return self._raise_in_thread()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run the actor's function as this job: asynchronous stops may land only inside it."""
        with self._lock:
            self._armed = True
        try:
            self.check()  # stopped before it began (its process lost its lease meanwhile): it does not begin
            return fn(*args, **kwargs)
        except BaseException:
            # After a stop, whatever the work raises (DuckDB's InterruptException, a killed subprocess's
            # broken pipe, the asynchronous exception itself) is that stop.
            if self._stopped_by is None:
                raise
            raise self.interrupt() from None
        finally:
            self._disarm()

    def _raise_in_thread(self) -> bool:
        if not self._armed or self._sent:
            return False
        self._sent = True
        assert self._stopped_by is not None
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread), ctypes.py_object(self._stopped_by))
        return True

    def _disarm(self) -> None:
        with self._lock:
            self._armed = False
            if self._sent:  # clear it if it is still pending: it must not fire in Dramatiq's code
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread), None)


def _call_stopper(stopper: Callable[[type[JobInterrupt]], object], reason: type[JobInterrupt]) -> None:
    """A stopper that fails (DuckDB's ``interrupt()`` on a closed connection) must not stop the caller."""
    try:
        stopper(reason)
    except Exception as exc:
        logger.warning("a stopper of a job failed: {!r}; the stop goes on by escalation", exc)


class RunningJobs:
    """The jobs running in this process: the one registry heartbeats, metrics and stops read."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        #: Jobs finished by this process since it started (for its heartbeat).
        self.processed = 0

    def add(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job

    def remove(self, task_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.pop(task_id, None)
            if job is not None:
                self.processed += 1
            return job

    def get(self, task_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(task_id)

    def snapshot(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def census(self) -> tuple[list[Job], int]:
        """The jobs here and the count of those removed, read together (a heartbeat counts neither twice)."""
        with self._lock:
            return list(self._jobs.values()), self.processed

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)
