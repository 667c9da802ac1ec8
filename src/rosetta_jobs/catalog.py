"""Connection configs of sources and destinations, read from the config database.

The rows come from the backend's tables ``sources`` and ``destinations`` through a
small psycopg pool, opened on first use so that a worker boots without the
database. Rows are cached briefly *still encrypted* and decrypted on every call,
so plaintext passwords live only as long as the config object a job holds. Jobs
that write to the config database (lineage, table lists, notifications) borrow
the same kind of pool through ``Catalog.connection``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from importlib import resources
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from .crypto import Cipher
from .errors import ConfigError, PreviewError, RosettaJobsError, TransientError
from .redact import redact
from .sources import DestinationConfig, DestinationRecord, SourceConfig

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["Catalog", "DestinationConfig", "DestinationRecord", "SourceConfig", "config_schema_sql"]

_SOURCE_SQL = "SELECT name, pg_host, pg_port, pg_database, pg_username, pg_password FROM sources WHERE id = %s"
# Only what the preview needs: the destination's config (and its secrets) are not fetched.
_DESTINATION_SQL = "SELECT name, type FROM destinations WHERE id = %s"
# The whole row, for jobs that connect to the destination (its secrets are decrypted on demand only).
_DESTINATION_RECORD_SQL = "SELECT name, type, config FROM destinations WHERE id = %s"


def config_schema_sql() -> str:
    """The DDL of the config tables the worker reads (for the demo command and tests)."""
    return (resources.files("rosetta_jobs") / "sql" / "config_schema.sql").read_text(encoding="utf-8")


class Catalog:
    """Look up source and destination configs by id. Thread-safe; one per worker process.

    A source must name a host, a database and a user: the columns are NULLable
    since non-PostgreSQL sources exist, and letting libpq fill in defaults would
    connect to the *worker's* local server as the worker's OS user. ``pg_port``
    NULL means 5432, ``pg_password`` NULL or empty means no password.
    """

    def __init__(
        self,
        database_url: str,
        *,
        cipher: Cipher | None,
        pool_size: int = 4,
        pool_timeout: float = 30.0,
        cache_ttl: float = 60.0,
        cache_size: int = 64,
    ) -> None:
        self.database_url = database_url
        self.cipher = cipher
        self.pool_size = pool_size
        self.pool_timeout = pool_timeout
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self._pool: ConnectionPool | None = None
        self._pool_lock = threading.Lock()
        self._cache: dict[tuple[str, int], tuple[float, tuple[Any, ...]]] = {}
        self._cache_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalog:
        key = settings.credential_encryption_key
        return cls(
            settings.database_url,
            cipher=Cipher(key) if key else None,
            pool_size=settings.db_pool_size,
            pool_timeout=settings.db_pool_timeout,
        )

    def __repr__(self) -> str:
        return f"Catalog({redact(self.database_url)!r})"

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lookups -------------------------------------------------------------

    def source(self, source_id: int) -> SourceConfig:
        """The source ``source_id`` with its password decrypted; ``PreviewError`` if it cannot be used."""
        _check_id("Source", source_id)
        row = self._row("source", _SOURCE_SQL, source_id)
        if row is None:
            raise PreviewError(f"Source {source_id} not found")
        name, host, port, database, user, token = row
        missing = [column for column, value in (("pg_host", host), ("pg_database", database), ("pg_username", user))
                   if not value]  # fmt: skip
        if missing:
            raise PreviewError(
                f"Source {source_id} ({name}) has no {', '.join(missing)}: "
                "only PostgreSQL sources with a host, database and user can be previewed"
            )
        return SourceConfig(
            id=source_id,
            name=name,
            host=host,
            port=port or 5432,
            database=database,
            user=user,
            password=self._decrypt(source_id, token),
        )

    def destination(self, destination_id: int) -> DestinationConfig:
        """The destination ``destination_id``; ``PreviewError`` if there is none."""
        _check_id("Destination", destination_id)
        row = self._row("destination", _DESTINATION_SQL, destination_id)
        if row is None:
            raise PreviewError(f"Destination {destination_id} not found")
        name, kind = row
        return DestinationConfig(id=destination_id, name=name or "", type=kind or "")

    def destination_record(self, destination_id: int) -> DestinationRecord | None:
        """The destination's row, read now (not cached: a refresh must see edited credentials); ``None`` if absent."""
        row = self._fetch(_DESTINATION_RECORD_SQL, destination_id)
        if row is None:
            return None
        name, kind, config = row
        return DestinationRecord(
            id=destination_id, name=name or "", type=kind or "", config=config if isinstance(config, dict) else {}
        )

    def decrypt(self, token: str | None, *, owner: str) -> str:
        """A backend AES-GCM token in plaintext (``""`` for none); ``owner`` names the row in the error."""
        if not token:
            return ""
        if self.cipher is None:
            raise PreviewError(
                f"{owner} has an encrypted password but CREDENTIAL_ENCRYPTION_KEY is not set on this worker: "
                "set it to the backend's key (32 bytes, raw or base64) and restart the worker"
            )
        return self.cipher.decrypt(token)

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled autocommit connection to the config database; its driver errors come out as ours.

        ``TransientError`` when the database cannot be reached or fails (a later attempt may succeed),
        ``ConfigError`` when it has no Rosetta tables, ``RosettaJobsError`` when it refuses what was sent
        (bad data, a constraint); messages never hold a password.
        """
        pool = self._get_pool()
        try:
            with pool.connection() as conn:
                yield conn
        except PoolTimeout:
            raise self._unavailable() from None
        except (pg_errors.UndefinedTable, pg_errors.UndefinedColumn) as exc:
            raise ConfigError(
                f"the config database {redact(self.database_url)} has no Rosetta tables "
                f"({_scrub(exc)}): check that DATABASE_URL names the backend's config database"
            ) from None
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as exc:
            raise RosettaJobsError(f"the config database {redact(self.database_url)} refused: {_scrub(exc)}") from None
        except psycopg.Error as exc:
            raise TransientError(
                f"the config database {redact(self.database_url)} failed: {_scrub(exc)}; "
                "check that PostgreSQL is running and reachable from this worker"
            ) from None

    def close(self) -> None:
        """Close the pool and forget cached rows; a later lookup opens a new pool."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        with self._cache_lock:
            self._cache.clear()

    # -- internals -----------------------------------------------------------

    def _decrypt(self, source_id: int, token: str | None) -> str:
        return self.decrypt(token, owner=f"Source {source_id}")

    def _row(self, kind: str, sql: str, row_id: int) -> tuple[Any, ...] | None:
        key = (kind, row_id)
        now = time.monotonic()
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        row = self._fetch(sql, row_id)
        # Misses are not cached: a source created a second ago must be found at once.
        if row is not None and self.cache_ttl > 0:
            self._remember(key, now + self.cache_ttl, row)
        return row

    def _remember(self, key: tuple[str, int], expires: float, row: tuple[Any, ...]) -> None:
        with self._cache_lock:
            self._cache.pop(key, None)
            if len(self._cache) >= self.cache_size:
                now = time.monotonic()
                live = {k: v for k, v in self._cache.items() if v[0] > now}
                if len(live) >= self.cache_size:
                    # Insertion order is age order: drop the oldest half.
                    live = dict(list(live.items())[len(live) // 2 :])
                self._cache = live
            self._cache[key] = (expires, row)

    def _get_pool(self) -> ConnectionPool:
        with self._pool_lock:
            if self._pool is None:
                pool: ConnectionPool = ConnectionPool(
                    self.database_url,
                    min_size=1,
                    max_size=self.pool_size,
                    timeout=self.pool_timeout,
                    name="rosetta-jobs-catalog",
                    open=False,
                    # A connection that died with a restarted server is replaced before it is handed out.
                    check=ConnectionPool.check_connection,
                    kwargs={
                        "autocommit": True,
                        "connect_timeout": 5,
                        "options": "-c statement_timeout=30000",
                        "application_name": "rosetta-jobs-catalog",
                    },
                )
                pool.open(wait=False)
                self._pool = pool
            return self._pool

    def _fetch(self, sql: str, row_id: int) -> tuple[Any, ...] | None:
        with self.connection() as conn:
            return conn.execute(sql, (row_id,)).fetchone()

    def _unavailable(self) -> TransientError:
        """Explain a pool timeout: the server cannot be reached, or every connection is busy."""
        url = redact(self.database_url)
        try:
            psycopg.connect(self.database_url, connect_timeout=5).close()
        except psycopg.Error as exc:
            return TransientError(
                f"the config database {url} is unreachable ({_scrub(exc)}); check that PostgreSQL is running, "
                "that DATABASE_URL is right and that this worker can reach it"
            )
        return TransientError(
            f"no connection to the config database {url} was free within {self.pool_timeout:g} s "
            f"(all {self.pool_size} in use); raise DB_POOL_SIZE or DB_POOL_TIMEOUT"
        )


def _check_id(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PreviewError(f"{what} id must be an integer, got {value!r}")


def _scrub(exc: BaseException) -> str:
    """A driver error as one line, with anything that looks like a password redacted."""
    return redact(" ".join(str(exc).split()))
