"""DuckDB sessions: the postgres extension loaded from its wheel, the source attached read-only, the
session locked. They live in the preview's executor processes (``executor_main``), never in a worker:
each executor runs one preview at a time and keeps a few idle sessions for the next.

Opening and attaching costs ~15 ms (the extension's signature is checked once per process:
``connect_with_postgres``), the first query ~15 more, a 500-row query on a warm session a few. A session
is reused for the next preview *of the same source* only, which is safe because nothing a job can run changes
what the next job sees:
- the configuration is locked after ATTACH (``lock_configuration``), external access is off, so no
  SET, ATTACH, LOAD, INSTALL, COPY or file read can run;
- the sandbox lets through one SELECT that reads the previewed table, so no temp objects, macros
  or sequences are created;
- sessions are keyed by a fingerprint of the whole connection config, credentials included;
- the attached catalog is cached by the extension, so a session is retired after ``max_age``
  seconds and a schema change in the source shows up within that time.

The session's ``TimeZone`` is a choice, not a given: ``CAST(tstz AS DATE)``, ``hour(tstz)`` and
``date_trunc('day', tstz)`` answer in it. The Celery worker's DuckDB followed the process zone
(``TZ=Asia/Jakarta`` in its image); ``host.process_timezone`` finds that zone for callers who want the same.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from ..errors import ConfigError, JobCancelled, JobTimedOut, PreviewError
from ..redact import redact

if TYPE_CHECKING:
    import pyarrow as pa

    from ..sources import SourceConfig

__all__ = [
    "REFRESH_AT",
    "Session",
    "SessionPool",
    "check_timezone",
    "connect_with_postgres",
    "extension_path",
]

#: Share of ``max_age`` at which a source in use gets its replacement session, opened in the background.
REFRESH_AT = 0.75
#: The niceness of the thread that opens replacement sessions (19: the lowest priority).
REFRESH_NICENESS = 19
# The standard library's logger: sessions live in executor processes, which load as little as they can.
_log = logging.getLogger(__name__)


def extension_path() -> Path:
    """The postgres extension shipped by ``duckdb-extension-postgres-scanner`` for this duckdb."""
    try:
        import duckdb_extension_postgres_scanner as package
    except ImportError as exc:
        raise PreviewError(
            "the postgres extension is not installed: pip install 'rosetta-jobs[worker]' "
            f"(duckdb-extension-postgres-scanner=={duckdb.__version__})"
        ) from exc
    path = Path(package.__file__).parent / "extensions" / f"v{duckdb.__version__}" / "postgres_scanner.duckdb_extension"
    if not path.is_file():
        raise PreviewError(
            f"no postgres extension for duckdb {duckdb.__version__} at {path}: install "
            f"duckdb-extension-postgres-scanner=={duckdb.__version__}, the same version as duckdb"
        )
    return path


#: The extension files whose signature a LOAD in this process has checked (``_identity``).
_verified: set[tuple[int, ...]] = set()


def _identity(path: Path) -> tuple[int, ...]:
    """Device, inode, size, modification and change times: a file rewritten or replaced has another."""
    stat = path.stat()
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def connect_with_postgres(config: Mapping[str, Any]) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB with ``config`` and the postgres extension loaded, no other extension loadable
    (auto-install, auto-load and community extensions off).

    DuckDB checks an extension's signature at every LOAD by hashing the whole file (40 MB: ~150 ms of
    CPU, nearly all of a session's opening). It is checked once per process: once a LOAD of this file
    passed the check, later connections load the same file (``_identity``, which the process has already
    mapped) with ``allow_unsigned_extensions``, and turn it off right after, so any later LOAD on the
    connection is checked again. A changed file is checked again. (Sessions also turn external access
    off before a job's SQL runs, which refuses any LOAD.)
    """
    path = extension_path()
    identity = _identity(path)
    policy = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "allow_unsigned_extensions": identity in _verified,
    }
    con = duckdb.connect(":memory:", config={**config, **policy})
    try:
        con.execute(f"LOAD {_sql_string(str(path))}")
        con.execute("SET allow_unsigned_extensions = false")
    except duckdb.Error as exc:
        con.close()
        raise PreviewError(
            f"Could not load the postgres extension ({exc}): reinstall "
            f"duckdb-extension-postgres-scanner=={duckdb.__version__}"
        ) from None
    except BaseException:
        con.close()
        raise
    if _identity(path) == identity:  # not changed while it was loaded
        _verified.add(identity)
    return con


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@functools.lru_cache(maxsize=16)
def check_timezone(name: str) -> str:
    """DuckDB's spelling of zone ``name`` (``asia/jakarta`` -> ``Asia/Jakarta``), once it is known that both DuckDB
    and Arrow (which serialises timestamptz in it) know the zone; a ``ConfigError`` naming the setting otherwise."""
    fix = "set WORKER_TIMEZONE (or TZ) to an IANA zone name such as Asia/Jakarta or UTC"
    if not name or not name.isprintable():
        raise ConfigError(f"Invalid time zone {name!r} for the preview's DuckDB session: {fix}.")
    con = duckdb.connect(":memory:", config={"autoload_known_extensions": False, "autoinstall_known_extensions": False})
    try:
        con.execute(f"SET TimeZone = {_sql_string(name)}")
        row = con.execute("SELECT current_setting('TimeZone')").fetchone()
    except duckdb.Error as exc:
        hint = str(exc).partition("Candidate time zones:")[2].strip()
        raise ConfigError(
            f"Unknown time zone {name!r} for the preview's DuckDB session: {fix}"
            + (f" (close names: {hint})." if hint else ".")
        ) from None
    finally:
        con.close()
    canonical = str(row[0]) if row else name
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        pc.strftime(pa.array([0], pa.timestamp("us", tz=canonical)), format="%z")
    except pa.ArrowException as exc:
        raise ConfigError(
            f"Time zone {canonical!r} is known to DuckDB but not to Arrow, which writes timestamptz values in it "
            f"({exc}): install the system time zone database (tzdata), or {fix}."
        ) from None
    return canonical


class Session:
    """One DuckDB connection with one source attached, used by one job at a time."""

    def __init__(
        self, source: SourceConfig, *, memory_limit: int, threads: int, timezone: str = "UTC", temp_directory: str = ""
    ) -> None:
        self.timezone = check_timezone(timezone)
        self.fingerprint = source.fingerprint()
        self.alias = source.alias
        self.created = time.monotonic()
        self._lock = threading.Lock()
        self._running: object | None = None
        self._stopped_by: type[BaseException] | None = None
        self.broken = False
        #: Replaced by a fresher session of the same source: closed when given back.
        self.retired = False
        self.con = connect_with_postgres(
            {
                "memory_limit": f"{memory_limit}B",
                "threads": threads,
                # Set explicitly: DuckDB's default, ./.tmp, is where a container's user may not write.
                **({"temp_directory": temp_directory} if temp_directory else {}),
            }
        )
        try:
            self.con.execute(f"SET TimeZone = {_sql_string(self.timezone)}")
            # JSON columns reach Arrow (and so the serialiser) tagged as JSON, UUIDs as UUIDs.
            self.con.execute("SET arrow_lossless_conversion = true")
            # A bare name never resolves to a Python variable of the worker (a second line behind the sandbox).
            self.con.execute("SET python_enable_replacements = false")
            self.con.execute(f'ATTACH {_sql_string(source.conninfo())} AS "{self.alias}" (TYPE postgres, READ_ONLY)')
            self.con.execute("SET enable_external_access = false")
            self.con.execute("SET lock_configuration = true")
        except duckdb.Error as exc:
            self.con.close()
            message = redact(str(exc), source.password, source.conninfo())
            raise PreviewError(f"Could not connect to source database: {message}") from None

    def run(self, sql: str, *, timeout: float, cancelled: threading.Event | None = None) -> pa.Table:
        """Run ``sql``; interrupt it in DuckDB (not just in Python) after ``timeout`` seconds.

        ``cancelled`` covers a cancel that arrives before the query starts: ``stop`` can only
        interrupt a query that is running.
        """
        token = object()
        with self._lock:
            self._running, self._stopped_by = token, None
        if cancelled is not None and cancelled.is_set():
            with self._lock:
                self._running = None
            raise JobCancelled()
        timer = threading.Timer(timeout, self.stop, args=(JobTimedOut, token))
        timer.daemon = True
        timer.start()
        try:
            return self.con.execute(sql).to_arrow_table()
        except (duckdb.FatalException, duckdb.InternalException):
            self.broken = True  # DuckDB may have invalidated the database: never hand it out again
            raise
        except duckdb.InterruptException:
            if self._stopped_by is JobTimedOut:
                raise JobTimedOut(timeout) from None
            if self._stopped_by is JobCancelled:
                raise JobCancelled() from None
            raise
        finally:
            timer.cancel()
            with self._lock:
                self._running = None

    def stop(self, reason: type[BaseException] = JobCancelled, token: object | None = None) -> bool:
        """Interrupt the running query, if it is still the one ``token`` names. Any thread may call it."""
        with self._lock:
            if self._running is None or (token is not None and token is not self._running):
                return False
            self._stopped_by = reason
            self.con.interrupt()
            return True

    def close(self) -> None:
        self.con.close()


class SessionPool:
    """Per-process sessions: ``slots`` running at once, idle ones kept per source for reuse.

    A session is retired ``max_age`` seconds after it opened (the extension caches the source's catalog).
    Opening one costs ~15 ms and its first query ~15 more (waits on the source), so a source in use gets its
    replacement opened and warmed (``warm``: the executor resolves and reads its recent tables) by a background
    thread at ``REFRESH_AT`` of its age: a preview never waits for a refresh. A source nobody previewed
    for ``max_age`` seconds is not refreshed, and its session closes when it expires.
    """

    def __init__(
        self,
        *,
        memory_limit: int,
        threads: int,
        slots: int,
        max_age: float = 60.0,
        timezone: str = "UTC",
        temp_directory: str = "",
        warm: Callable[[Session], None] | None = None,
    ) -> None:
        self.memory_limit = memory_limit
        self.temp_directory = temp_directory
        self.threads = threads
        self.timezone = check_timezone(timezone)  # a bad zone fails once, here, before any session opens
        self.slots = slots
        self.max_age = max_age
        self.warm = warm
        self._semaphore = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._idle: list[Session] = []
        self._busy: set[Session] = set()
        #: Sources in use: their config (to open a replacement), when last taken, their newest session's age.
        self._hot: dict[str, _Hot] = {}
        self._closed = threading.Event()
        self._refresher: threading.Thread | None = None

    def open(self, source: SourceConfig) -> Session:
        return Session(source, memory_limit=self.memory_limit, threads=self.threads, timezone=self.timezone,
                       temp_directory=self.temp_directory)  # fmt: skip

    @contextmanager
    def session(self, source: SourceConfig, *, wait: float) -> Iterator[Session]:
        """A session attached to ``source``; waits up to ``wait`` seconds for a free slot."""
        if not self._semaphore.acquire(timeout=wait):
            raise JobTimedOut(wait)
        try:
            session = self._take(source) or self.open(source)
            self._note(source, session)
            healthy = False
            try:
                yield session
                healthy = True
            except (JobTimedOut, JobCancelled, PreviewError):
                healthy = True  # an interrupted or refused query leaves the session usable
                raise
            except duckdb.Error as exc:
                healthy = not isinstance(exc, duckdb.IOException | duckdb.FatalException)
                raise
            finally:
                self._give_back(session, healthy)
        finally:
            self._semaphore.release()

    def _take(self, source: SourceConfig) -> Session | None:
        """The newest idle session of ``source``; expired ones are closed on the way."""
        fingerprint, now = source.fingerprint(), time.monotonic()
        with self._lock:
            for session in sorted(self._idle, key=lambda s: s.created, reverse=True):
                if self._expired(session, now):
                    self._idle.remove(session)
                    session.close()
                elif session.fingerprint == fingerprint:
                    self._idle.remove(session)
                    return session
        return None

    def _expired(self, session: Session, now: float) -> bool:
        """Retired, or older than ``max_age`` (the extension caches its catalog): closed, never reused."""
        return session.retired or now - session.created > self.max_age

    def _note(self, source: SourceConfig, session: Session) -> None:
        with self._lock:
            hot = self._hot.get(session.fingerprint)
            if hot is None:
                self._hot[session.fingerprint] = hot = _Hot(source)
            hot.used = time.monotonic()
            hot.newest = max(hot.newest, session.created)
            self._busy.add(session)
            if self._refresher is None and self.warm is not None:
                self._refresher = threading.Thread(target=self._refresh, name="session-refresh", daemon=True)
                self._refresher.start()

    def _give_back(self, session: Session, healthy: bool) -> None:
        with self._lock:
            self._busy.discard(session)
        if not healthy or session.broken or self._expired(session, time.monotonic()):
            session.close()
            return
        with self._lock:
            self._keep(session)

    def _refresh(self) -> None:
        """Replace, ahead of time, the session of every source in use (see the class's docstring).

        The thread runs at the lowest CPU priority: what it spends (~15 ms of CPU a session, ~200 when the
        extension's signature was checked at each open) must not be taken from a preview running beside it (on
        two cores it showed as a tail of the fresh previews).
        """
        with contextlib.suppress(OSError, AttributeError):  # a thread is a task of its own on Linux
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), REFRESH_NICENESS)
        every = min(max(self.max_age / 20, 0.05), 1.0)
        while not self._closed.wait(every):
            now = time.monotonic()
            with self._lock:
                for fingerprint, hot in list(self._hot.items()):
                    if now - hot.used > self.max_age:
                        del self._hot[fingerprint]  # nobody previews it: let its session expire
                for session in [s for s in self._idle if self._expired(s, now)]:
                    self._idle.remove(session)  # expired: its connection to the source is closed now
                    session.close()
                due = [hot for hot in self._hot.values() if now - hot.newest > self.max_age * REFRESH_AT]
            for hot in due:
                self._replace(hot)

    def _replace(self, hot: _Hot) -> None:
        try:
            fresh = self.open(hot.source)
            if self.warm is not None:
                self.warm(fresh)
        except Exception as exc:  # the request path opens one itself when it must, and says why
            hot.newest = time.monotonic() - self.max_age * REFRESH_AT / 2  # try again in a while
            _log.debug("session refresh failed: %s", exc)
            return
        with self._lock:
            if self._closed.is_set():
                fresh.close()
                return
            for session in list(self._idle):
                if session.fingerprint == fresh.fingerprint:
                    self._idle.remove(session)
                    session.close()
            for session in self._busy:
                if session.fingerprint == fresh.fingerprint:
                    session.retired = True  # closed when its preview gives it back
            hot.newest = fresh.created
            self._keep(fresh)

    def _keep(self, session: Session) -> None:
        """Keep ``session`` idle; past ``slots`` idle ones, the oldest is closed. Under ``_lock``."""
        self._idle.append(session)
        while len(self._idle) > self.slots:
            oldest = min(self._idle, key=lambda s: s.created)
            self._idle.remove(oldest)
            oldest.close()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            for session in self._idle:
                session.close()
            self._idle.clear()


@dataclass
class _Hot:
    """A source in use: its config, when a preview last took a session of it, its newest session's birth."""

    source: SourceConfig
    used: float = 0.0
    newest: float = 0.0
