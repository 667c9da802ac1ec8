"""Cache hits answered at the door: a preview whose answer is cached gets its SUCCESS from whoever submits it.

On a cache hit the worker does nothing but a Redis GET, yet sending the job there costs an enqueue, a pickup,
a STARTED, a final write and the worker's bookkeeping: three quarters of a hit's time. So the submitter
(``JobClient.send``, the Celery ingress) looks the cache up itself and, on a hit, writes the SUCCESS the worker
would have written: the same meta (the SQL as its digest under ``TASK_META_SQL=hash``), a task-history entry,
the cached bytes spliced in undecoded. A poller sees PENDING, then SUCCESS, as for any quick job; the Celery
worker's pollers saw the same when they polled slower than the job ran. A miss, or anything the door cannot
read (arguments the worker will refuse with an error), goes to the queue as before.

The key is the worker's (``preview.cache.cache_key`` of ``PreviewRequest.from_arguments``), so the door needs
the same ``PREVIEW_ROW_LIMIT`` as the workers: ``JobClient.from_settings`` and the ingress read it from the
same settings.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from loguru import logger

from .connection import SentinelOptions
from .contracts import PREVIEW
from .errors import StateRefused
from .preview.cache import PreviewCache
from .preview.request import PreviewRequest
from .states import SUCCESS, task_meta
from .store import TaskStore

__all__ = ["Door"]


class Door:
    """Answers cached previews for one submitter (thread-safe: Redis clients are)."""

    def __init__(
        self, *, cache: PreviewCache, store: TaskStore, row_limit: int, hash_sql: bool = True, hostname: str = ""
    ) -> None:
        self.cache = cache
        self.store = store
        self.row_limit = row_limit
        self.hash_sql = hash_sql
        #: The meta's ``worker``: who answered (a worker's is ``rosetta@<host>``).
        self.hostname = hostname or f"rosetta-door@{socket.gethostname()}"

    @classmethod
    def for_cache(
        cls, url: str, *, ttl: int, sentinel: SentinelOptions, store: TaskStore, row_limit: int, hash_sql: bool
    ) -> Door | None:
        """The door of the preview cache at ``url`` (the workers' ``REDIS_URL``); none when the cache is off."""
        if not url or ttl <= 0:
            return None
        cache = PreviewCache.from_url(url, ttl=ttl, sentinel=sentinel)
        return cls(cache=cache, store=store, row_limit=row_limit, hash_sql=hash_sql)

    def answer(
        self, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any], *, queue: str, user: str | None = None
    ) -> bool:
        """Whether the preview ``args``/``kwargs`` was answered from the cache (its SUCCESS is then stored)."""
        if self.cache.client is None:
            return False
        try:
            bound = PREVIEW.bind(args, kwargs)
            request = PreviewRequest.from_arguments(*bound, row_limit=self.row_limit)
        except (TypeError, ValueError):
            return False  # the worker answers the error, as it always has
        hit = self.cache.get(request)
        if hit is None:
            return False
        now = time.time()
        meta = task_meta(task_id, SUCCESS, hit, actor=PREVIEW.name, args=bound, kwargs={}, worker=self.hostname,
                         queue=queue, hash_sql=self.hash_sql)  # fmt: skip
        context: dict[str, Any] = {"user": user, "enqueued_at": now, "started_at": now, "args": list(bound),
                                   "kwargs": {}, "worker": f"{socket.gethostname()}:{os.getpid()}"}  # fmt: skip
        try:
            self.store.write(meta, context=context)  # False only if the id already has a final state: done too
        except (redis.RedisError, StateRefused) as exc:
            logger.warning("task {}: could not answer from the preview cache ({}); queued instead", task_id, exc)
            return False
        return True
