"""The executor process: where a preview's SQL is read, checked and run, away from the worker.

Started by ``executor.ExecutorPool`` as ``python -m rosetta_jobs.preview.executor_main`` (a fresh
interpreter, never a fork of the threaded worker), it talks to its worker over one socket and does
everything that reads the user's SQL or touches DuckDB: attach (sessions reused per source, as the
worker did before), resolve ``table_name`` (``identity``), build and check the statement (``query``),
run it, bound and serialise the result (``bounds``, ``serialize``). So all of it is under the process's
memory bound and can be killed at the deadline without touching the worker.

What bounds it, and why each:

- ``RLIMIT_DATA`` (the worker's ``DUCKDB_MEMORY_LIMIT`` + ``PREVIEW_MEMORY_HEADROOM``): lists and strings
  built by scalar functions are outside DuckDB's ``memory_limit``; with the rlimit an allocation past
  the bound fails, and DuckDB answers ``OutOfMemoryException`` instead of growing to the OOM killer.
  Measured (DuckDB 1.5): ``SELECT sum(len(range(id * 1000000))) FROM range(1, 60) t(id)`` reached
  13.9 GB RSS without it, and stopped at once with it (RLIMIT_AS works too, but counts the libraries'
  and threads' reservations; RLIMIT_DATA is closer to what is really used);
- the parent samples this process's RSS and SIGKILLs it past the bound (what the rlimit does not count);
- ``PR_SET_PDEATHSIG``: the process dies with its worker, whatever killed the worker;
- SIGINT and SIGTERM are ignored: a Ctrl-C or a container stop reaches the whole process group, and the
  worker, not the signal, decides when a running preview ends;
- the environment is the worker's minus its secrets (the credential key, database and Redis URLs, API
  keys): a query that took over this process would find no key to the other sources.

The wire: length-prefixed frames (``multiprocessing.connection``), each a JSON object, never pickle: written
with ``codec``, read here with the standard library (strict JSON the worker wrote; ``codec.loads`` would load
pydantic-core, ~13 MB of every executor's memory). ``{"op": "run", "seq", "task"}`` runs a preview,
``{"op": "stop", "seq", "reason"}`` interrupts it; the answer is ``{"seq", "kind", ...}`` and, for a result, a
second frame with the result's JSON.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import queue
import resource
import signal
import sys
import threading
import time
import weakref
from multiprocessing.connection import Connection
from typing import Any

from .. import codec
from ..errors import ConfigError, JobCancelled, JobInterrupt, JobTimedOut, PreviewError
from ..redact import redact
from ..sources import SourceConfig
from .stages import Stages

__all__ = ["Engine", "main"]

_PR_SET_PDEATHSIG = 1
#: Tables per source a refreshed session resolves ahead of its first preview.
WARM_TABLES = 4
_REASONS: dict[str, type[JobInterrupt]] = {"timeout": JobTimedOut, "cancel": JobCancelled}


class Engine:
    """The DuckDB side of previews: one at a time, sessions kept per source for the next one."""

    def __init__(
        self,
        *,
        memory_limit: int,
        threads: int,
        timezone: str,
        max_age: float,
        idle_sessions: int,
        max_result_bytes: int,
        max_cell_bytes: int,
        schemas: list[str],
        temp_directory: str = "",
    ) -> None:
        from .session import SessionPool

        self.sessions = SessionPool(
            memory_limit=memory_limit, threads=threads, slots=idle_sessions, max_age=max_age, timezone=timezone,
            temp_directory=temp_directory, warm=self._warm,
        )  # fmt: skip
        self.temp_directory = temp_directory
        self.max_result_bytes = max_result_bytes
        self.max_cell_bytes = max_cell_bytes
        self.schemas = frozenset(schemas)
        self._lock = threading.Lock()
        self._seq: int | None = None
        #: The highest ``seq`` begun, and a stop that came for a later one before it began (kept for it).
        self._begun = 0
        self._early: tuple[int, type[JobInterrupt]] | None = None
        self._stop: threading.Event = threading.Event()
        self._reason: type[JobInterrupt] = JobCancelled
        self._session: Any = None
        #: ``table_name`` resolved per session: as fresh as the session's own catalog (``max_age``), and a
        #: round trip to the source saved on every warm preview (~2.5 ms of ~8).
        self._tables: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
        #: The tables last previewed per source (fingerprint; most recent last): what a refreshed session warms.
        self._recent: dict[str, list[str]] = {}
        self._tables_lock = threading.Lock()

    def stop(self, seq: int, reason: type[JobInterrupt]) -> None:
        """Interrupt the preview ``seq`` if it is the one running, or as it begins if it has not yet (the stop
        can overtake it: previews wait their turn on another thread). A late stop of an earlier one is ignored."""
        with self._lock:
            if seq > self._begun:
                self._early = (seq, reason)
                return
            if seq != self._seq or self._stop.is_set():
                return
            self._reason = reason
            self._stop.set()
            if self._session is not None:
                self._session.stop(reason)

    def run(self, seq: int, task: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
        """The answer header for ``task``, and the result's JSON when there is one."""
        with self._lock:
            self._seq, self._session, self._begun = seq, None, seq
            early, self._early = self._early, None
            self._stop.clear()
            if early is not None and early[0] == seq:
                self._reason = early[1]
                self._stop.set()
        if task.get("kind") == "flow":  # a flow's DuckDB work (issue 13), under this process's same bounds
            return self._run_flow(seq, task)
        source = SourceConfig(**task["source"])
        stages = Stages()
        try:
            body, rows = self._run(task, source, stages)
            return {"seq": seq, "kind": "result", "stages": stages.took, "rows": rows}, body
        except JobTimedOut:
            return {"seq": seq, "kind": "timeout"}, None
        except JobCancelled:
            return {"seq": seq, "kind": "cancelled"}, None
        except _Answer as answer:
            return {"seq": seq, **answer.header}, None
        except Exception as exc:  # an error of ours: the worker turns it into a FAILURE
            message = redact(f"{type(exc).__name__}: {exc}", source.password, source.conninfo())
            return {"seq": seq, "kind": "internal", "message": message}, None
        finally:
            with self._lock:
                self._seq, self._session = None, None

    def _run(self, task: dict[str, Any], source: SourceConfig, stages: Stages) -> tuple[bytes, int]:
        import duckdb
        import pyarrow as pa

        from .bounds import check_cells, encode_result
        from .messages import clean_error
        from .query import build_statement
        from .request import PreviewRequest
        from .serialize import serialize

        request = PreviewRequest(**task["request"])
        deadline = time.monotonic() + float(task["timeout"])
        table = None

        def clean(text: str) -> str:
            return clean_error(redact(text, source.password, source.conninfo()), alias=source.alias, table=table,
                               shown=request.table_name)  # fmt: skip

        try:
            with self.sessions.session(source, wait=_left(deadline)) as session:
                stages.mark("session")
                with self._lock:
                    self._session = session
                self._check_stop()
                table = self._table(session, request.table_name)
                stages.mark("resolve")
                statement = build_statement(request, source_alias=session.alias, table=table)
                stages.mark("build")
                self._check_stop()
                arrow = session.run(statement, timeout=_left(deadline), cancelled=self._stop)
                stages.mark("duckdb")
            check_cells(arrow, max_cell_bytes=self.max_cell_bytes, max_result_bytes=self.max_result_bytes)
            result = serialize(arrow)
            if request.include_profiling:
                from .profile import profile

                result["profile"] = profile(arrow)
            stages.mark("serialise")
            encoded = encode_result(result, max_result_bytes=self.max_result_bytes)
            stages.mark("encode")
            return encoded, arrow.num_rows
        except PreviewError as exc:
            raise _Answer(kind="error", message=clean(str(exc))) from None
        except duckdb.InterruptException:
            raise self._reason() from None
        except (MemoryError, duckdb.OutOfMemoryException, pa.ArrowMemoryError) as exc:
            # DuckDB answers "out of memory" too when it cannot spill any more to its temporary directory
            answer = _storage_answer(str(exc), self.temp_directory)
            raise answer or _Answer(kind="memory", message=clean(str(exc))) from None
        except (duckdb.ConnectionException, duckdb.IOException) as exc:
            # an I/O error is the source's, unless it is about DuckDB's own temporary files
            answer = _storage_answer(str(exc), self.temp_directory)
            raise answer or _Answer(kind="transient", message=clean(str(exc))) from None
        except duckdb.Error as exc:
            raise _Answer(kind="error", message=clean(str(exc))) from None
        except (pa.ArrowException, RecursionError) as exc:
            raise _Answer(
                kind="error",
                message=clean(f"The result cannot be converted for the preview (nested too deeply?): {exc}"),
            ) from None

    def _table(self, session: Any, table_name: str) -> Any:
        """``table_name`` resolved in ``session`` (once per session), remembered as recently previewed."""
        from .identity import resolve_table

        with self._tables_lock:
            known = self._tables.setdefault(session, {})
            table = known.get(table_name)
            recent = self._recent.setdefault(session.fingerprint, [])
            if table_name in recent:
                recent.remove(table_name)
            recent.append(table_name)
            del recent[:-WARM_TABLES]
        if table is None:
            table = resolve_table(session.con, alias=session.alias, table_name=table_name, schemas=self.schemas)
            with self._tables_lock:
                self._tables.setdefault(session, {})[table_name] = table
        return table

    def _warm(self, session: Any) -> None:
        """Make a new session (``SessionPool``'s refresh) as quick as the one it replaces: its source's recent
        tables resolved, and the last one read once (the extension loads the table's schema and connects)."""
        from .filters import quote_identifier

        with self._tables_lock:
            names = list(self._recent.get(session.fingerprint, []))
        table = None
        for name in names:
            try:
                table = self._table(session, name)
            except PreviewError:  # gone from the source: the next preview of it says so
                continue
        if table is not None:
            parts = (session.alias, table.schema, table.name)
            session.con.execute(
                f"SELECT * FROM {'.'.join(quote_identifier(p) for p in parts)} LIMIT 1"
            ).to_arrow_table()

    def _run_flow(self, seq: int, task: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
        """A flow's preview, schema or run (``flows/work.py``); a stop reaches it as it reaches a preview's session."""
        from ..flows.work import FlowWork

        work = FlowWork(task, memory_limit=self.sessions.memory_limit, threads=self.sessions.threads,
                        timezone=self.sessions.timezone, max_result_bytes=self.max_result_bytes,
                        max_cell_bytes=self.max_cell_bytes, temp_directory=self.temp_directory)  # fmt: skip
        with self._lock:
            self._session = work
            stopped = self._stop.is_set()
        try:
            if stopped:
                work.stop(self._reason)
            return work.answer(seq)
        finally:
            with self._lock:
                self._seq, self._session = None, None

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise self._reason()

    def close(self) -> None:
        self.sessions.close()


class _Answer(Exception):
    """An answer other than a result, raised from inside the run."""

    def __init__(self, **header: str) -> None:
        super().__init__(header.get("message", ""))
        self.header = header


#: OS errors on DuckDB's temporary files, as its messages spell them (``strerror``), to say which it was.
_STORAGE_ERRORS = ("Permission denied", "No space left on device", "Read-only file system", "Disk quota exceeded",
                   "not a directory", "Not a directory", "No such file or directory")  # fmt: skip


def _storage_answer(message: str, temp_directory: str) -> _Answer | None:
    """The answer for DuckDB failing on its temporary files, or ``None`` if ``message`` is about something else.

    Two cases, told apart from a source's I/O errors (which name the source, never the temp directory):

    - the spill limit (``max_temp_directory_size``, by default the disk's free space) was reached: the
      query is too big for this worker, the user's to change, like a memory error;
    - an OS error on the temp directory (permission, full disk, read-only, gone): the worker's, a FAILURE
      that says which directory and why, never "lost the source database", and never retried.
    """
    if "max_temp_directory_size" in message or "failed to offload data block" in message:
        return _Answer(
            kind="error",
            message="The preview needed more temporary disk space than this worker allows (DuckDB spills what "
            "does not fit in memory to DUCKDB_TEMP_DIRECTORY): select fewer rows, or aggregate earlier.",
        )
    if temp_directory and temp_directory in message:
        why = next((error for error in _STORAGE_ERRORS if error in message), "unusable")
        return _Answer(
            kind="storage",
            message=f"DuckDB cannot write its temporary files in {temp_directory} ({why}): make "
            "DUCKDB_TEMP_DIRECTORY a writable directory with free space for the worker's user. "
            f"DuckDB said: {message.splitlines()[0][:300]}",
        )
    return None


def _left(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise JobTimedOut(0)
    return remaining


# --- the process ---------------------------------------------------------------------------------------------


def _die_with(parent: int) -> None:
    """SIGKILL this process when its parent (the worker) dies, and exit now if that already happened."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the closed socket ends it instead
        pass
    if os.getppid() != parent:
        os._exit(0)


def _bound_memory(limit: int) -> None:
    """The hard memory bound of this process (see the module's docstring); no core dump of a bomb either."""
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


#: Optional modules DuckDB's client imports on every ``execute`` with parameters (to recognise their types).
_OPTIONAL = ("pandas", "numpy", "polars")


def _skip_absent(names: tuple[str, ...] = _OPTIONAL) -> None:
    """Record the optional modules that are not installed as absent (``None`` in ``sys.modules``).

    Python does not cache a failed import: DuckDB looked for pandas on the file system twice per parse of a
    preview's statement (~0.1 ms). An installed module is left alone.
    """
    for name in names:
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            sys.modules[name] = None  # type: ignore[assignment]


def _serve(conn: Connection, engine: Engine) -> None:
    """Read frames on this thread (so a stop arrives while a preview runs); run previews on one other.

    One long-lived thread for every preview, not one per preview: DuckDB and the postgres extension keep
    per-thread state, and a fresh thread each time doubled a warm preview's time (measured: 6.9 -> 14.5 ms).
    """
    runs: queue.SimpleQueue[tuple[int, dict[str, Any]]] = queue.SimpleQueue()

    def work() -> None:
        while True:
            seq, task = runs.get()
            header, body = engine.run(seq, task)
            try:
                conn.send_bytes(codec.dumps(header))
                if body is not None:
                    conn.send_bytes(body)
            except OSError:  # the worker is gone: so are we
                os._exit(0)

    threading.Thread(target=work, name="preview", daemon=True).start()
    while True:
        try:
            message = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            os._exit(0)
        if message.get("op") == "run":
            runs.put((message["seq"], message["task"]))
        elif message.get("op") == "stop":
            engine.stop(message["seq"], _REASONS.get(message.get("reason", ""), JobCancelled))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rosetta_jobs.preview.executor_main")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--config", required=True, help="the Engine's keyword arguments and memory_bound, as JSON")
    args = parser.parse_args(argv)
    _die_with(args.parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(args.fd)
    config = json.loads(args.config)
    bound = int(config.pop("memory_bound"))
    _skip_absent()
    try:
        engine = Engine(**config)
        import pyarrow  # noqa: F401  (loaded now, not inside the first preview's memory and time)

        from . import bounds, identity, profile, query, serialize  # noqa: F401
    except ConfigError as exc:
        conn.send_bytes(codec.dumps({"kind": "config", "message": str(exc)}))
        sys.exit(1)
    _bound_memory(bound)
    conn.send_bytes(codec.dumps({"kind": "ready", "pid": os.getpid()}))
    _serve(conn, engine)


if __name__ == "__main__":
    main()
