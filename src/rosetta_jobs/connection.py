"""Redis URL to redis-py client, in one place: plain Redis, TLS, a Unix socket, or a Sentinel-managed master.

Every client rosetta-jobs opens comes from here: the result backend's and the broker's (worker, producer,
Celery ingress, pidbox, Lua scripts), the preview cache's, the ops service's asyncio client, and the
consumers' own blocking-wait clients (``own_pool``).

URL forms, as Celery and kombu accept them:

- ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS), ``unix://[:password@]/path?db=N``:
  redis-py's ``from_url``.
- ``sentinel://[[user]:password@]host[:port][/db][;sentinel://host2[:port][/db]...]``: one or more Sentinels
  separated by ``;`` (port 26379 when left out). As in Celery and kombu, the database and the password are
  read from the *first* Sentinel of the list, and the password is the Redis master's (and replicas'), not
  the Sentinels'. The master's name is ``SENTINEL_MASTER_NAME`` (Celery's ``master_name`` transport
  option); the Sentinels' own password is ``SENTINEL_PASSWORD`` (Celery's ``sentinel_kwargs={"password":
  ...}``). A later Sentinel whose database or password differs from the first's is refused: kombu would
  silently use the first's, and the worker would read another database than the Celery producer writes.

A Sentinel-managed client asks the Sentinels for the master's address when it connects, and again after
a connection error or a ``READONLY`` answer (the master it held was demoted): redis-py's
``SentinelConnectionPool``; nothing here hand-writes failover.

``ReplicaWait`` is the other half of surviving a failover: ``WAIT numreplicas timeout`` after the writes
that must not vanish with a demoted master (a final state, an enqueue; ``docs/operations.md``).
"""

from __future__ import annotations

import functools
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio as aioredis
from loguru import logger
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelManagedConnection as AsyncSentinelManagedConnection
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from .redact import redact

if TYPE_CHECKING:
    from redis.client import Pipeline

__all__ = [
    "DEFAULT_SENTINEL",
    "SENTINEL_PORT",
    "SENTINEL_RETRIES",
    "SENTINEL_SCHEME",
    "AsyncMasterConnection",
    "MasterConnection",
    "ReplicaWait",
    "SentinelOptions",
    "SentinelURL",
    "async_redis_client",
    "connect",
    "is_sentinel_url",
    "own_pool",
    "parse_sentinel_url",
    "redis_client",
    "replica_wait_for",
    "validate_redis_url",
]

SENTINEL_SCHEME = "sentinel://"
#: Sentinel's port when a URL leaves it out (kombu's ``SentinelTransport.default_port``).
SENTINEL_PORT = 26379
#: Seconds to connect to a Redis master (and to a Sentinel), and to wait for a Sentinel's answer.
CONNECT_TIMEOUT = 5.0
SENTINEL_TIMEOUT = 2.0
#: A Sentinel-managed client resends a command once, at once, when its connection dropped or met a demoted
#: master (READONLY): the retry asks the Sentinels for the master again (``MasterConnection``), which is all a
#: finished failover needs. A longer outage is each caller's to wait out (``TaskStore.write``, Dramatiq's
#: consumers, the heartbeat), as with plain clients, which keep ``from_url``'s behaviour: no retry.
SENTINEL_RETRIES = 1
_PLAIN_SCHEMES = ("redis://", "rediss://", "unix://")
_EXAMPLE = "sentinel://host1:26379/1;sentinel://host2:26379/1"


@dataclass(frozen=True, kw_only=True)
class SentinelOptions:
    """What a ``sentinel://`` URL does not say: the settings ``SENTINEL_MASTER_NAME`` and ``SENTINEL_PASSWORD``."""

    #: The monitored master's name (``sentinel monitor <name> ...``): Celery's ``master_name`` transport option.
    master_name: str = "mymaster"
    #: The Sentinels' own password (``requirepass`` of the Sentinels): Celery's ``sentinel_kwargs["password"]``.
    password: str | None = field(default=None, repr=False)


#: The options of a client built without settings: master ``mymaster``, Sentinels without a password.
DEFAULT_SENTINEL = SentinelOptions()


@dataclass(frozen=True, kw_only=True)
class SentinelURL:
    """A parsed ``sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    #: The Redis master's and replicas' credentials (kombu and Celery pass them to ``master_for``).
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def is_sentinel_url(url: str) -> bool:
    return url.strip().lower().startswith(SENTINEL_SCHEME)


def _bad(url: str, why: str) -> ValueError:
    return ValueError(f"{redact(url)!r} is not a Sentinel URL: {why}; write it like {_EXAMPLE}")


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse ``sentinel://[[user]:password@]host[:port][/db];sentinel://...`` (Celery's and kombu's form).

    Raises ``ValueError`` naming what is wrong and how to write it.
    """
    chunks = [chunk.strip() for chunk in url.split(";") if chunk.strip()]  # a trailing ';' is harmless here
    if not chunks:
        raise _bad(url, "it names no Sentinel")
    sentinels: list[tuple[str, int]] = []
    dbs: list[int | None] = []
    credentials: list[tuple[str | None, str | None]] = []
    for chunk in chunks:
        if not chunk.lower().startswith(SENTINEL_SCHEME):
            raise _bad(url, "every Sentinel of the list starts with sentinel:// (they are separated by ';')")
        parts = urllib.parse.urlsplit(chunk)
        if parts.query or parts.fragment:
            raise _bad(url, "it takes no ?options: the master's name is SENTINEL_MASTER_NAME")
        try:
            host, port = parts.hostname, parts.port or SENTINEL_PORT
        except ValueError:
            raise _bad(url, f"{parts.netloc.rpartition('@')[2]!r} is not host:port") from None
        if not host:
            raise _bad(url, "a Sentinel has no host")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise _bad(url, f"the database must be a number, not {path!r}")
        sentinels.append((host, port))
        dbs.append(int(path) if path else None)
        user = urllib.parse.unquote(parts.username) if parts.username else None
        password = urllib.parse.unquote(parts.password) if parts.password else None
        credentials.append((user, password))
    first_db = dbs[0] or 0
    if any(db is not None and db != first_db for db in dbs[1:]):
        raise _bad(url, f"Celery and kombu read the database from the first Sentinel only (here {first_db}); "
                        "write the same /db on the first Sentinel, or on every one")  # fmt: skip
    if any(c != (None, None) and c != credentials[0] for c in credentials[1:]):
        raise _bad(url, "Celery and kombu read the password from the first Sentinel only; write it there, or "
                        "the same on every one (the Sentinels' own password is SENTINEL_PASSWORD)")  # fmt: skip
    username, password = credentials[0]
    return SentinelURL(sentinels=tuple(sentinels), db=first_db, username=username, password=password)


def validate_redis_url(url: str) -> str:
    """``url`` if rosetta-jobs can connect with it, else ``ValueError`` saying how to write one."""
    if is_sentinel_url(url):
        parse_sentinel_url(url)
        return url
    if not url.startswith(_PLAIN_SCHEMES):
        fix = f"write it like redis://localhost:6379/1 (or, with Redis Sentinel, {_EXAMPLE})"
        raise ValueError(f"{redact(url)!r} is not a Redis URL; {fix}")
    return url


class MasterConnection(SentinelManagedConnection):
    """redis-py's Sentinel-managed connection, asking the Sentinels for the master on *every* (re)connect.

    redis-py 7.4 asks them only when the pool hands out a connection: a command whose connection dropped
    (a demoted master's READONLY, a dead master) is retried on the same, stale address, so it fails even
    when the new master is known (redis-py#3874, fix pending in #3875). One more Sentinel query per new
    connection; the failover itself stays redis-py's.
    """

    def _connect(self) -> Any:
        if self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        return super()._connect()  # type: ignore[no-untyped-call]


class AsyncMasterConnection(AsyncSentinelManagedConnection):
    """``MasterConnection`` for ``redis.asyncio`` (the same redis-py#3874)."""

    async def _connect(self) -> None:
        if self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super()._connect()  # type: ignore[no-untyped-call]


def _sentinel_kwargs(options: SentinelOptions) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"socket_connect_timeout": SENTINEL_TIMEOUT, "socket_timeout": SENTINEL_TIMEOUT}
    if options.password:
        kwargs["password"] = options.password
    return kwargs


def _master_kwargs(parsed: SentinelURL, timeouts: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"db": parsed.db, **timeouts}
    if parsed.username:
        kwargs["username"] = parsed.username
    if parsed.password:
        kwargs["password"] = parsed.password
    return kwargs


def _timeouts(connect_timeout: float, socket_timeout: float | None) -> dict[str, Any]:
    return {"socket_connect_timeout": connect_timeout, "socket_timeout": socket_timeout, "socket_keepalive": True}


def connect(
    url: str,
    *,
    sentinel: SentinelOptions = DEFAULT_SENTINEL,
    connect_timeout: float = CONNECT_TIMEOUT,
    socket_timeout: float | None = None,
) -> redis.Redis:
    """A new client (with a pool of its own) for ``url``; most callers want the shared ``redis_client``.

    ``socket_timeout`` bounds each answer (none by default: blocking commands wait as long as they ask).
    """
    timeouts = _timeouts(connect_timeout, socket_timeout)
    if is_sentinel_url(url):
        parsed = parse_sentinel_url(url)
        manager = Sentinel(list(parsed.sentinels), sentinel_kwargs=_sentinel_kwargs(sentinel))
        retry = Retry(NoBackoff(), SENTINEL_RETRIES)
        client: redis.Redis = manager.master_for(
            sentinel.master_name, connection_class=MasterConnection, retry=retry, **_master_kwargs(parsed, timeouts)
        )
        return client
    validate_redis_url(url)
    return redis.Redis.from_url(url, **timeouts)


def redis_client(url: str, *, sentinel: SentinelOptions = DEFAULT_SENTINEL) -> redis.Redis:
    """One client (and connection pool) per URL per process: clients are thread-safe and fork-aware."""
    return _shared(url, sentinel)


@functools.lru_cache(maxsize=32)
def _shared(url: str, sentinel: SentinelOptions) -> redis.Redis:
    return connect(url, sentinel=sentinel)


def async_redis_client(url: str, *, sentinel: SentinelOptions = DEFAULT_SENTINEL) -> aioredis.Redis:
    """An asyncio client for ``url`` (create it in the event loop that uses it; the caller closes it)."""
    timeouts = _timeouts(CONNECT_TIMEOUT, None)
    if is_sentinel_url(url):
        parsed = parse_sentinel_url(url)
        manager = AsyncSentinel(list(parsed.sentinels), sentinel_kwargs=_sentinel_kwargs(sentinel))
        retry = AsyncRetry(NoBackoff(), SENTINEL_RETRIES)
        client: aioredis.Redis = manager.master_for(
            sentinel.master_name,
            connection_class=AsyncMasterConnection,
            retry=retry,
            **_master_kwargs(parsed, timeouts),
        )
        return client
    validate_redis_url(url)
    return aioredis.Redis.from_url(url, **timeouts)


def own_pool(client: redis.Redis) -> redis.Redis:
    """A client of the same server as ``client`` with a pool of its own (a blocking wait holds a connection).

    A Sentinel-managed client gets another Sentinel-managed pool of the same master, so the blocking
    client follows a failover too.
    """
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if k != "connection_pool"}
        new: redis.ConnectionPool = SentinelConnectionPool(
            pool.service_name, pool.sentinel_manager, is_master=pool.is_master,
            connection_class=pool.connection_class, **kwargs,
        )  # fmt: skip
    else:
        new = redis.ConnectionPool(connection_class=pool.connection_class, **pool.connection_kwargs)
    return redis.Redis.from_pool(new)


class ReplicaWait:
    """``WAIT replicas timeout`` after writes that must outlive a failover (``REDIS_WAIT_REPLICAS``).

    WAIT counts the replicas that hold every write *of its connection*, so it is queued on the same
    pipeline as the write (``add``) and its answer checked after (``check``). A shortfall (a replica
    down, or slower than the timeout) never fails the write: it is logged, once per ``quiet`` seconds,
    counted in ``shortfalls``, and WAIT is skipped for ``quiet`` seconds so that a cluster left without
    replicas does not pay the timeout on every write.
    """

    def __init__(self, *, replicas: int, timeout_ms: int = 500, quiet: float = 30.0, what: str = "writes") -> None:
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self.quiet = quiet
        self.what = what
        #: Writes whose WAIT saw fewer replicas than asked (this process).
        self.shortfalls = 0
        self._skip_until = 0.0
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Whether the next write should be followed by a WAIT."""
        return self.replicas > 0 and time.monotonic() >= self._skip_until

    def add(self, pipe: Pipeline) -> bool:
        """Queue the WAIT on ``pipe`` after its writes; whether it was queued (its answer is the pipeline's last)."""
        if not self.active:
            return False
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
        return True

    def check(self, acknowledged: Any) -> bool:
        """Whether enough replicas acknowledged (WAIT's answer); a shortfall is logged and counted."""
        count = int(acknowledged)
        if count >= self.replicas:
            return True
        with self._lock:
            self.shortfalls += 1
            quiet_now = time.monotonic() < self._skip_until
            self._skip_until = time.monotonic() + self.quiet
        if not quiet_now:
            logger.warning(
                "{}: {} of {} replica(s) acknowledged within {} ms; a failover now could lose the write. "
                "WAIT is skipped for {:g} s (REDIS_WAIT_REPLICAS, REDIS_WAIT_TIMEOUT_MS)",
                self.what, count, self.replicas, self.timeout_ms, self.quiet,
            )  # fmt: skip
        return False


def replica_wait_for(url: str, *, replicas: int | None, timeout_ms: int, what: str) -> ReplicaWait | None:
    """The ``ReplicaWait`` a URL's writes get: ``replicas`` unset means 1 for a Sentinel URL, else none."""
    wanted = (1 if is_sentinel_url(url) else 0) if replicas is None else replicas
    return ReplicaWait(replicas=wanted, timeout_ms=timeout_ms, what=what) if wanted > 0 else None
