"""The table list of a destination (``worker.destination_table_list.fetch``): fetched, stored, cached.

What the backend reads is the contract (``../shared/spec/rosetta-tasks.md`` 8.1, 10): the columns
``destinations.list_tables``, ``total_tables`` and ``last_table_check_at``, and the cache key
``destination:<id>:tables`` (JSON list, 600 s) on ``REDIS_URL``. The job's answer is
``{"destination_id", "total_tables", "tables", "error"}``.

How each case ends (the Celery worker's contract, with the fixes of defect F28):

- a PostgreSQL destination (type ``POSTGRES`` or ``POSTGRESQL``) lists the base tables of its
  configured ``schema`` (``public`` when none), stores and caches them;
- a destination the worker cannot reach is retried (``DestinationUnreachable``, a transient error);
  on the last attempt, like any other fetch error (wrong password, a key that does not decrypt), it is
  answered with ``error`` (SUCCESS), the old list is kept, ``last_table_check_at`` records the attempt
  and a ``destination_table_list_error_<id>`` notification tells the UI;
- a Snowflake destination is answered with a clear "not supported yet" error; other types with
  ``Unsupported destination type: <T>`` (nothing is written for either);
- a destination that does not exist raises ``DestinationNotFound``: retried, then FAILURE, as the
  Celery worker's ``ValueError`` was.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
import redis
from loguru import logger
from psycopg.types.json import Jsonb

from .errors import PreviewError, RosettaJobsError, TransientError
from .layout import BackendKeys
from .notifications import notify_error
from .redact import redact

if TYPE_CHECKING:
    from .catalog import Catalog, DestinationRecord
    from .job import Job

__all__ = [
    "CACHE_TTL",
    "DestinationFetchError",
    "DestinationNotFound",
    "DestinationUnreachable",
    "PostgresDestination",
    "error_result",
    "fetch_table_list",
    "list_postgres_tables",
]

#: Seconds the backend's cache key lives (the Celery worker's ``SETEX`` value).
CACHE_TTL = 600
#: Seconds to wait for a destination to accept a connection.
CONNECT_TIMEOUT = 10

_TABLES_SQL = (
    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'"
    " ORDER BY table_name"
)
_SAVE_SQL = (
    "UPDATE destinations SET list_tables = %s, total_tables = %s, last_table_check_at = now(), updated_at = now()"
    " WHERE id = %s"
)
_CHECKED_SQL = "UPDATE destinations SET last_table_check_at = now(), updated_at = now() WHERE id = %s"
#: SQLSTATE classes of a server that is there but cannot serve now: worth another attempt.
_TRANSIENT_SQLSTATES = ("08", "53", "57P")
#: libpq reports a refused login without a SQLSTATE, as "FATAL: <reason>"; these reasons pass.
_TRANSIENT_FATAL = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "too many clients",
    "connection slots are reserved",
    "terminating connection",
)


class DestinationNotFound(TransientError, ValueError):
    """No destination has this id (yet): retried as the Celery worker did, then FAILURE."""


class DestinationUnreachable(TransientError):
    """The destination did not accept a connection, or dropped it: another attempt may succeed."""


class DestinationFetchError(RosettaJobsError):
    """The destination answered, but its tables cannot be listed (login refused, no such database)."""


@dataclass(frozen=True, kw_only=True)
class PostgresDestination:
    """A PostgreSQL destination's connection, its password decrypted and never shown."""

    id: int
    name: str
    host: str
    port: int
    database: str
    user: str
    password: str = field(repr=False)
    schema: str = "public"

    @classmethod
    def from_record(cls, record: DestinationRecord, decrypt: Callable[[str | None], str]) -> PostgresDestination:
        config = record.config
        missing = [key for key in ("host", "database", "user") if not config.get(key)]
        if missing:
            raise DestinationFetchError(f"Destination {record.id} ({record.name}) has no {', '.join(missing)}")
        return cls(
            id=record.id,
            name=record.name,
            host=str(config["host"]),
            port=_port(record, config.get("port")),
            database=str(config["database"]),
            user=str(config["user"]),
            password=decrypt(config.get("password")),
            schema=str(config.get("schema") or config.get("schema_name") or "public"),
        )


def _port(record: DestinationRecord, value: Any) -> int:
    try:
        return int(value or 5432)
    except (TypeError, ValueError):
        raise DestinationFetchError(f"Destination {record.id} ({record.name}) has an invalid port {value!r}") from None


def error_result(destination_id: int, error: str) -> dict[str, Any]:
    """The answer of a fetch that failed (SUCCESS, as the Celery worker answered)."""
    return {"destination_id": destination_id, "total_tables": 0, "tables": [], "error": error}


def fetch_table_list(
    destination_id: int,
    *,
    catalog: Catalog,
    cache: redis.Redis | None,
    last_attempt: bool = True,
    job: Job | None = None,
) -> dict[str, Any]:
    """Fetch, store and cache the table list of ``destination_id``; see the module's docstring for the cases.

    ``last_attempt``: whether an unreachable destination is answered (True) or raised to be retried.
    """
    if isinstance(destination_id, bool) or not isinstance(destination_id, int):
        raise TypeError(f"destination_id must be an integer, got {destination_id!r}")
    record = catalog.destination_record(destination_id)
    if record is None:
        raise DestinationNotFound(f"Destination {destination_id} not found")
    kind = record.type.strip().upper()
    if kind == "SNOWFLAKE":  # told to the operator and the UI too: nobody reads this task's result (spec 10)
        return _failed(
            catalog,
            record,
            f"Snowflake destinations are not supported by this worker yet: the table list of destination "
            f"{destination_id} ({record.name}) was not refreshed",
        )
    if kind not in ("POSTGRES", "POSTGRESQL"):
        return error_result(destination_id, f"Unsupported destination type: {kind}")
    try:
        target = PostgresDestination.from_record(
            record, lambda token: catalog.decrypt(token, owner=f"Destination {destination_id}")
        )
        tables = list_postgres_tables(target, job=job)
    except DestinationUnreachable as exc:
        if not last_attempt:
            raise
        return _failed(catalog, record, str(exc))
    except (DestinationFetchError, PreviewError) as exc:  # PreviewError: "Decryption failed: ..."
        return _failed(catalog, record, redact(str(exc)))
    with catalog.connection() as conn:
        conn.execute(_SAVE_SQL, (Jsonb(tables), len(tables), destination_id))
    _cache(cache, destination_id, tables)
    return {"destination_id": destination_id, "total_tables": len(tables), "tables": tables, "error": None}


def list_postgres_tables(target: PostgresDestination, *, job: Job | None = None) -> list[str]:
    """The base tables of the destination's schema, by name (views, other schemas and system tables left out).

    Under a job, a stop cancels the query on the server and the stop is raised, not a fetch error.
    """
    try:
        with _connect(target) as conn:
            guard = job.stoppable(lambda reason: conn.cancel()) if job else contextlib.nullcontext()
            with guard:
                rows = conn.execute(_TABLES_SQL, (target.schema,)).fetchall()
    except psycopg.Error as exc:
        if job is not None:
            job.check()
        message = redact(" ".join(str(exc).split()), target.password)
        where = f"destination {target.id} ({target.name}) at {target.host}:{target.port}/{target.database}"
        if _transient(exc):
            raise DestinationUnreachable(f"Could not reach {where}: {message}") from None
        raise DestinationFetchError(f"Could not list the tables of {where}: {message}") from None
    return [str(row[0]) for row in rows]


def _connect(target: PostgresDestination) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=target.host,
        port=target.port,
        dbname=target.database,
        user=target.user,
        password=target.password,
        connect_timeout=CONNECT_TIMEOUT,
        application_name="rosetta-jobs-table-list",
        autocommit=True,
    )


def _transient(exc: psycopg.Error) -> bool:
    """No answer at all, a connection error, too many connections or a server starting or shutting down.

    A login the server refused (no such database or role, a wrong password) is not: it comes back
    without a SQLSTATE too, but as a ``FATAL:`` message from the server.
    """
    state = exc.sqlstate
    if state is not None:
        return state.startswith(_TRANSIENT_SQLSTATES)
    message = str(exc)
    return "FATAL:" not in message or any(reason in message for reason in _TRANSIENT_FATAL)


def _failed(catalog: Catalog, record: DestinationRecord, error: str) -> dict[str, Any]:
    """Keep the old list, record that a check happened, tell the UI; answer with the error."""
    logger.warning("table list of destination {}: {}", record.id, error)
    try:
        with catalog.connection() as conn:
            conn.execute(_CHECKED_SQL, (record.id,))
    except Exception as exc:
        logger.warning("table list of destination {}: could not record the check: {}", record.id, redact(str(exc)))
    notify_error(
        catalog,
        f"destination_table_list_error_{record.id}",
        f"Destination Table List Failed — {record.name}",
        f"Destination ID {record.id} ({record.name}): the table list could not be fetched by the worker. "
        f"Error: {error}",
    )
    return error_result(record.id, error)


def _cache(cache: redis.Redis | None, destination_id: int, tables: list[str]) -> None:
    """What the backend reads first; a failure only logs (the DB has the list too)."""
    if cache is None:
        return
    try:
        cache.setex(BackendKeys.destination_tables(destination_id), CACHE_TTL, json.dumps(tables))
    except redis.RedisError as exc:
        logger.warning("table list of destination {}: not cached: {}", destination_id, redact(str(exc)))
