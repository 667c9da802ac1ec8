"""The preview cache in Redis (``REDIS_URL``, db 0): checked before any database or DuckDB work.

The key covers every argument that changes the answer, the row limit and profiling included
(the Celery worker's key left both out and served unprofiled results to profiled requests).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, cast

import redis
from loguru import logger

from .. import codec
from ..connection import DEFAULT_SENTINEL, SentinelOptions, connect
from ..layout import BackendKeys
from .request import PreviewRequest

__all__ = ["KEY_VERSION", "PreviewCache", "cache_key"]


#: The version of the key's encoding: a change of fields or format changes every key, never mixes them.
KEY_VERSION = 2


def cache_key(request: PreviewRequest) -> str:
    """``preview:<sha256>`` of every field that changes the answer, as one JSON array.

    JSON quotes and escapes each string, so no field's text can pass for a separator (the Celery worker
    joined ``sql:...|source:...`` unescaped: ``sql="a|source:1"`` met another request's key), and ``None``
    stays apart from ``""``.
    """
    fields = [
        KEY_VERSION,
        request.sql,
        request.source_id,
        request.destination_id,
        request.table_name,
        request.filter_sql,
        bool(request.include_profiling),
        request.row_limit,
    ]
    text = json.dumps(fields, ensure_ascii=True, separators=(",", ":"))
    return BackendKeys.preview(hashlib.sha256(text.encode("ascii")).hexdigest())


class PreviewCache:
    """Best effort: a Redis error is logged and the preview runs without the cache."""

    def __init__(self, client: redis.Redis | None, *, ttl: int) -> None:
        self.client = client if ttl > 0 else None
        self.ttl = ttl

    @classmethod
    def from_url(cls, url: str, *, ttl: int, sentinel: SentinelOptions = DEFAULT_SENTINEL) -> PreviewCache:
        return cls(connect(url, sentinel=sentinel, connect_timeout=2, socket_timeout=5), ttl=ttl)

    def get(self, request: PreviewRequest) -> codec.Raw | None:
        """The cached result as stored (decoded only if something reads it), or ``None``."""
        if self.client is None:
            return None
        try:
            raw = cast("bytes | None", self.client.get(cache_key(request)))
        except redis.RedisError as exc:
            logger.warning("preview cache unavailable, running without it: {}", exc)
            return None
        if not raw:
            return None
        if not (raw.startswith(b"{") and raw.endswith(b"}")):  # not written by a worker: never spliced into a state
            logger.warning("preview cache entry {} is not a JSON object; running the preview", cache_key(request))
            return None
        return codec.Raw(raw)

    def put(self, request: PreviewRequest, result: bytes | dict[str, Any]) -> None:
        """Cache ``result``: a dict, or its JSON already (as the executor sent it)."""
        if self.client is None:
            return
        try:
            self.client.setex(
                cache_key(request), self.ttl, result if isinstance(result, bytes) else codec.dumps(result)
            )
        except redis.RedisError as exc:
            logger.warning("preview cache write failed: {}", exc)
