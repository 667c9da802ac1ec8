"""Executor processes: each preview's DuckDB work runs in a child process that can be killed, never in the worker.

DuckDB's ``memory_limit`` does not bound lists and strings built by scalar functions, and its interrupt is
only checked between chunks: one preview could take its whole worker process down (and Dramatiq's master
then stops every process of the worker), or run far past its time limit. So the worker keeps a small pool
of executor processes (``executor_main``), at most ``DUCKDB_MAX_CONCURRENT`` per worker process, each a fresh
interpreter under a hard memory bound, and a preview is sent to one of them:

- **memory**: the executor's ``RLIMIT_DATA`` is ``DUCKDB_MEMORY_LIMIT + PREVIEW_MEMORY_HEADROOM``; an
  allocation past it fails inside DuckDB (an ``OutOfMemoryException``: the preview's answer). A watchdog
  thread here samples each busy executor's RSS every 50 ms and SIGKILLs it past the bound plus
  ``WATCHDOG_SLACK`` (what the rlimit does not count: the libraries' pages). Either way the answer is
  "used more than N MB", and the executor is replaced.
- **time**: at the deadline, or on a cancel (``Job.stoppable``), the executor is asked to interrupt the
  query (which keeps its sessions); if it has not answered ``GRACE`` seconds later (a lambda over a huge
  list, a conversion in progress) it is SIGKILLed and replaced. Either way the answer comes within a
  second of the limit.
- **the worker**: nothing of this runs in it. A killed executor is a preview's error result, not a lost
  worker: the message is acknowledged normally, never redelivered as a worker loss.

Replacements start in the background, so the next preview rarely waits for an interpreter to start; an
executor whose data segment has grown past ``RETIRE_FRACTION`` of its bound (DuckDB's allocator keeps
what it reserved) is replaced after its preview too. Each executor keeps its attached sessions, keyed by
the source's connection config as before, and the pool prefers the executor that last served a source.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from loguru import logger

from .. import codec
from ..errors import (
    ConfigError,
    JobCancelled,
    JobInterrupt,
    JobTimedOut,
    PreviewError,
    TempStorageError,
    TransientError,
)
from ..job import Job
from .bounds import shown_size

__all__ = [
    "GRACE",
    "MIN_BOUND",
    "RETIRE_FRACTION",
    "WATCHDOG_SLACK",
    "Answer",
    "Executor",
    "ExecutorConfig",
    "ExecutorPool",
]

#: Seconds an executor has to answer a stop before it is killed.
GRACE = 0.3
#: RSS above the rlimit bound at which the watchdog kills: shared libraries' pages, not counted by RLIMIT_DATA.
WATCHDOG_SLACK = 64 * 2**20
#: An executor whose data segment reached this share of its bound is replaced after its preview.
RETIRE_FRACTION = 0.75
#: Seconds between two RSS samples of the busy executors.
SAMPLE_EVERY = 0.05
#: Seconds an executor may take to start (import DuckDB and Arrow) before the preview fails.
START_TIMEOUT = 60.0
#: Attached sessions one executor keeps between previews (each holds a connection to its source).
IDLE_SESSIONS = 2
#: The smallest bound an executor gets: loading the postgres extension into a new session (read and
#: verified in memory) needs ~300 MB of data segment for a moment (measured: 384 MB aborts the LOAD).
MIN_BOUND = 512 * 2**20

#: Environment variables an executor does not get: it needs no credentials but the source's, sent per preview.
_SECRET_ENV = ("CREDENTIAL_ENCRYPTION_KEY", "DATABASE_URL", "API_KEY", "ADMIN_API_KEY")
_SECRET_SUFFIXES = ("_URL", "_PASSWORD", "_SECRET", "_TOKEN", "_KEY")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, kw_only=True)
class ExecutorConfig:
    """What every executor of a pool is started with."""

    memory_limit: int
    threads: int
    timezone: str
    headroom: int
    max_result_bytes: int
    max_cell_bytes: int
    schemas: tuple[str, ...] = ()
    max_age: float = 60.0
    idle_sessions: int = IDLE_SESSIONS
    #: Where DuckDB spills (``DUCKDB_TEMP_DIRECTORY``, checked writable by ``host.prepare_temp_directory``); it is
    #: also the executor's working directory, so that no DuckDB of the executor falls back to ``./.tmp``.
    temp_directory: str = ""

    @property
    def memory_bound(self) -> int:
        """The executor's ``RLIMIT_DATA``: DuckDB's own limit plus room for Python, Arrow and the result."""
        return max(self.memory_limit + self.headroom, MIN_BOUND)

    def argument(self) -> str:
        return codec.dumps(
            {
                "memory_limit": self.memory_limit,
                "threads": self.threads,
                "timezone": self.timezone,
                "max_age": self.max_age,
                "idle_sessions": self.idle_sessions,
                "max_result_bytes": self.max_result_bytes,
                "max_cell_bytes": self.max_cell_bytes,
                "schemas": list(self.schemas),
                "temp_directory": self.temp_directory,
                "memory_bound": self.memory_bound,
            }
        ).decode()


class Answer(codec.Raw):
    """A preview's result from an executor, as the JSON it sent: cached and stored as is, decoded only if read."""

    __slots__ = ("rows", "stages")

    def __init__(self, data: bytes, *, rows: int = 0, stages: dict[str, float] | None = None) -> None:
        super().__init__(data)
        self.rows = rows
        #: Milliseconds the executor spent per stage (``Engine.run``): the preview's breakdown, for its log line.
        self.stages = stages or {}

    @property
    def encoded(self) -> bytes:
        return self.data

    @property
    def result(self) -> dict[str, Any]:
        return self.value


@dataclass(eq=False)
class Executor:
    """One executor process, seen from the worker."""

    proc: subprocess.Popen[bytes]
    conn: Connection
    #: Fingerprints of the sources it served last (most recent last): its sessions are probably still attached.
    sources: list[str] = field(default_factory=list)
    #: Why it was killed on purpose: ``memory``, ``stop``, ``retire``; ``None`` while it lives.
    killed_for: str | None = None
    #: The RSS seen by the last sample (bytes).
    rss: int = 0
    _sending: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def start(cls, config: ExecutorConfig) -> Executor:
        """A new executor, ready for a preview (its interpreter, DuckDB and Arrow loaded)."""
        ours, theirs = socket.socketpair()
        args = [sys.executable, "-m", "rosetta_jobs.preview.executor_main", "--fd", str(theirs.fileno()),
                "--parent", str(os.getpid()), "--config", config.argument()]  # fmt: skip
        try:
            proc = subprocess.Popen(args, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=_child_env(),
                                    close_fds=True, cwd=config.temp_directory or None)  # fmt: skip
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        executor = cls(proc, conn)
        try:
            if not conn.poll(START_TIMEOUT):
                raise TransientError(f"a preview executor did not start within {START_TIMEOUT:g} s")
            hello = codec.loads(conn.recv_bytes())
        except (EOFError, OSError):
            executor.kill("start")
            raise TransientError(f"a preview executor exited at start (status {proc.wait()})") from None
        except BaseException:
            executor.kill("start")
            raise
        if hello.get("kind") == "config":
            executor.kill("start")
            raise ConfigError(str(hello.get("message")))
        return executor

    def send(self, message: dict[str, Any]) -> None:
        with self._sending:
            self.conn.send_bytes(codec.dumps(message))

    def kill(self, why: str) -> bool:
        """SIGKILL the process (once) and reap it; the socket is closed. Returns ``False``."""
        if self.killed_for is None:
            self.killed_for = why
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        with contextlib.suppress(OSError):
            self.conn.close()
        return False

    def sample(self) -> int:
        """The process's RSS now (bytes; 0 once it is gone)."""
        try:
            with open(f"/proc/{self.proc.pid}/statm", "rb") as statm:
                self.rss = int(statm.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            self.rss = 0
        return self.rss

    def data_size(self) -> int:
        """The process's data segment (``VmData``, what ``RLIMIT_DATA`` counts), in bytes."""
        try:
            with open(f"/proc/{self.proc.pid}/status", "rb") as status:
                for line in status:
                    if line.startswith(b"VmData:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
        return 0


class ExecutorPool:
    """At most ``slots`` executor processes of one worker process, and the previews sent to them."""

    def __init__(
        self, *, config: ExecutorConfig, slots: int, start: Callable[[ExecutorConfig], Executor] | None = None
    ):
        self.config = config
        self.slots = slots
        self._start_fn = start or Executor.start
        # Every executor is started from this one long-lived thread: PR_SET_PDEATHSIG fires when the thread
        # that started a child ends, not only the process, so a short-lived starter would kill its executor.
        self._launcher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="preview-executor-launcher")
        self._semaphore = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._idle: list[Executor] = []
        self._busy: set[Executor] = set()
        self._starting = 0
        self._closed = False
        self._seq = 0
        self._watchdog = threading.Thread(target=self._watch, name="preview-executor-watchdog", daemon=True)
        self._watchdog.start()
        for _ in range(slots):  # all of them, in the background: a burst must not wait for interpreters
            self._start_spare()

    @property
    def watchdog_bound(self) -> int:
        """The RSS at which the watchdog kills an executor."""
        return self.config.memory_bound + WATCHDOG_SLACK

    def memory_error(self) -> PreviewError:
        return PreviewError(
            f"Preview used more than {shown_size(self.config.memory_limit)} of memory and was stopped "
            "(DUCKDB_MEMORY_LIMIT): select fewer rows or smaller values (big lists, repeat(), range())."
        )

    # --- a preview -------------------------------------------------------------------------------------------
    def run(
        self,
        task: dict[str, Any],
        *,
        fingerprint: str,
        deadline: float,
        job: Job | None = None,
        sent: Callable[[], object] | None = None,
    ) -> Answer:
        """Run ``task`` in an executor; the result, or the preview's error, within a second of ``deadline``.

        ``sent`` is called once an executor has the task, while it runs (a PROGRESS write costs it no time).

        Raises ``PreviewError`` (the user's: shown as the result's error), ``JobTimedOut``, ``JobCancelled``,
        ``TransientError`` (the source went away), or ``RuntimeError`` (a bug of ours: a FAILURE).
        """
        if not self._semaphore.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            raise JobTimedOut(0)
        executor: Executor | None = None
        answered = False
        try:
            with self._lock:
                self._seq += 1
                seq = self._seq
            executor = self._dispatch(fingerprint, {"op": "run", "seq": seq, "task": task}, deadline)
            stop = _Stop()

            def stopper(reason: type[JobInterrupt]) -> None:
                stop.request(reason, executor, seq)

            with job.stoppable(stopper) if job is not None else contextlib.nullcontext():
                if sent is not None:
                    with contextlib.suppress(JobInterrupt):  # a stop went to the stopper: the wait ends it
                        sent()
                header, body = self._wait(executor, seq, deadline, stop)
            answered = True
            answer = self._answer(executor, header, body)
            self._remember(executor, fingerprint)
            return answer
        except BaseException:
            if executor is not None and not answered:
                executor.kill("stop")  # whatever interrupted the wait, the process is not left running a query
            raise
        finally:
            if executor is not None:
                self._give_back(executor)
            self._semaphore.release()

    def _dispatch(self, fingerprint: str, message: dict[str, Any], deadline: float) -> Executor:
        """An executor that took ``message``: an idle one that died meanwhile is replaced once."""
        for attempt in (1, 2):
            executor = self._take(fingerprint)
            message["task"]["timeout"] = max(deadline - time.monotonic(), 0.0)
            try:
                executor.send(message)
                return executor
            except OSError:
                executor.kill("died")
                self._give_back(executor)
                if attempt == 2:
                    raise TransientError("no preview executor could take the preview") from None
        raise AssertionError("unreachable")

    def _wait(self, executor: Executor, seq: int, deadline: float, stop: _Stop) -> tuple[dict[str, Any], bytes | None]:
        """The executor's answer; a stop at the deadline, and a kill ``GRACE`` seconds after any stop."""
        while True:
            now = time.monotonic()
            if stop.reason is None and now >= deadline:
                stop.request(JobTimedOut, executor, seq)
            if stop.reason is not None and now >= stop.at + GRACE:
                executor.kill("stop")
                raise stop.reason(0) if stop.reason is JobTimedOut else stop.reason()
            try:
                if executor.conn.poll(SAMPLE_EVERY):
                    header = codec.loads(executor.conn.recv_bytes())
                    if header.get("seq") != seq:
                        continue
                    body = executor.conn.recv_bytes() if header.get("kind") == "result" else None
                    return header, body
            except (EOFError, OSError):
                raise self._died(executor, stop) from None

    def _died(self, executor: Executor, stop: _Stop) -> BaseException:
        """Why the executor's socket closed under a running preview."""
        executor.kill(executor.killed_for or "died")
        status = executor.proc.returncode
        if executor.killed_for == "memory":
            return self.memory_error()
        if stop.reason is not None:
            return stop.reason(0) if stop.reason is JobTimedOut else stop.reason()
        logger.warning("preview executor {} died running a preview (status {})", executor.pid, status)
        if status == -signal.SIGKILL or executor.rss >= self.config.memory_bound * RETIRE_FRACTION:
            return self.memory_error()  # the kernel's OOM killer, or an allocation that aborted
        return PreviewError(
            f"The preview's query stopped its executor process (status {status}); the worker is unaffected. "
            "Simplify the query."
        )

    def _answer(self, executor: Executor, header: dict[str, Any], body: bytes | None) -> Answer:
        kind = header.get("kind")
        message = str(header.get("message", ""))
        if kind == "result" and body is not None:
            return Answer(body, rows=int(header.get("rows") or 0), stages=header.get("stages"))
        if kind == "memory":
            executor.kill("retire")  # give back what DuckDB's allocator kept; a fresh one starts
            raise self.memory_error()
        if kind == "timeout":
            raise JobTimedOut(0)
        if kind == "cancelled":
            raise JobCancelled()
        if kind == "error":
            raise PreviewError(message)
        if kind == "storage":  # the worker's disk or permissions, not the source: reported as such, not retried
            raise TempStorageError(message)
        if kind == "transient":
            raise TransientError(f"lost the source database: {message}")
        raise RuntimeError(f"preview executor failed: {message}")

    # --- the processes ---------------------------------------------------------------------------------------
    def _take(self, fingerprint: str) -> Executor:
        """An idle executor (one that served this source, if any), a spare being started, or a new one."""
        with self._cond:
            while True:
                if self._closed:
                    raise TransientError("the preview executors are shut down")
                self._idle = [e for e in self._idle if e.proc.poll() is None or e.kill("died")]
                chosen = next((e for e in reversed(self._idle) if fingerprint in e.sources), None)
                if chosen is None and self._idle:
                    chosen = self._idle[-1]
                if chosen is not None:
                    self._idle.remove(chosen)
                    self._busy.add(chosen)
                    return chosen
                if len(self._busy) + self._starting < self.slots:
                    break
                self._cond.wait(START_TIMEOUT)  # a spare is starting: it is ours when ready
            self._starting += 1
        executor: Executor | None = None
        try:
            executor = self._start(self.config)
        finally:
            with self._cond:
                self._starting -= 1
                if executor is not None:
                    self._busy.add(executor)
                self._cond.notify_all()
        return executor

    def _start(self, config: ExecutorConfig) -> Executor:
        return self._launcher.submit(self._start_fn, config).result()

    def _remember(self, executor: Executor, fingerprint: str) -> None:
        if fingerprint in executor.sources:
            executor.sources.remove(fingerprint)
        executor.sources = [*executor.sources, fingerprint][-self.config.idle_sessions :]

    def _give_back(self, executor: Executor) -> None:
        if executor.killed_for is None and executor.data_size() > self.config.memory_bound * RETIRE_FRACTION:
            executor.kill("retire")
        with self._cond:
            self._busy.discard(executor)
            keep = executor.killed_for is None and executor.proc.poll() is None and not self._closed
            if keep:
                self._idle.append(executor)
            self._cond.notify_all()
        if not keep:
            executor.kill(executor.killed_for or "died")
            self._start_spare()

    def _start_spare(self) -> None:
        """Start one executor in the background if the pool has room, so the next preview need not wait."""
        with self._cond:
            if self._closed or len(self._idle) + len(self._busy) + self._starting >= self.slots:
                return
            self._starting += 1
        threading.Thread(target=self._spare, name="preview-executor-start", daemon=True).start()

    def _spare(self) -> None:
        executor: Executor | None = None
        try:
            executor = self._start(self.config)
        except Exception as exc:
            logger.warning("could not start a spare preview executor: {}", exc)
        finally:
            with self._cond:
                self._starting -= 1
                if executor is not None and not self._closed:
                    self._idle.append(executor)
                    executor = None
                self._cond.notify_all()
        if executor is not None:
            executor.kill("closed")

    def _watch(self) -> None:
        """Kill any busy executor whose RSS passes the bound: what the rlimit did not stop."""
        while not self._closed:
            time.sleep(SAMPLE_EVERY)
            with self._lock:
                busy = list(self._busy)
            for executor in busy:
                if executor.killed_for is None and executor.sample() > self.watchdog_bound:
                    logger.warning("preview executor {} used {} (bound {}): killed", executor.pid,
                                   shown_size(executor.rss), shown_size(self.watchdog_bound))  # fmt: skip
                    executor.kill("memory")

    def pids(self) -> list[int]:
        with self._lock:
            return [e.pid for e in (*self._idle, *self._busy)]

    def busy(self) -> int:
        """How many executors run a preview now."""
        with self._lock:
            return len(self._busy)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            executors = [*self._idle, *self._busy]
            self._idle.clear()
            self._cond.notify_all()
        for executor in executors:
            executor.kill("closed")
        self._launcher.shutdown(wait=False, cancel_futures=True)


class _Stop:
    """The first stop asked of a running preview, and when; forwarded to its executor at once."""

    def __init__(self) -> None:
        self.reason: type[JobInterrupt] | None = None
        self.at = 0.0
        self._lock = threading.Lock()

    def request(self, reason: type[JobInterrupt], executor: Executor | None, seq: int) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason, self.at = reason, time.monotonic()
        if executor is not None:
            with contextlib.suppress(OSError):
                executor.send({"op": "stop", "seq": seq, "reason": "timeout" if reason is JobTimedOut else "cancel"})


def _child_env() -> dict[str, str]:
    """The worker's environment without its secrets (see ``executor_main``), and Arrow on the C allocator.

    Arrow's default allocator (mimalloc) reserves 1 GB of address space on first use, all of it counted by
    ``RLIMIT_DATA``: the bound would be spent before the first row. glibc's ``malloc`` reserves what it uses.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if key.upper() not in _SECRET_ENV and not key.upper().endswith(_SECRET_SUFFIXES)
    }
    env["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env
