"""The preview cache in Redis (``REDIS_URL``, db 0): checked before any database or DuckDB work.

The key covers every argument that changes the answer, the row limit and profiling included
(the Celery worker's key left both out and served unprofiled results to profiled requests).
"""

from __future__ import annotations

import hashlib
from typing import Any, cast

import redis
from loguru import logger

from .. import codec
from .request import PreviewRequest

__all__ = ["PreviewCache", "cache_key"]


def cache_key(request: PreviewRequest) -> str:
    text = (
        f"sql:{request.sql or ''}|source:{request.source_id}|dest:{request.destination_id}"
        f"|table:{request.table_name}|filter:{request.filter_sql or ''}"
        f"|profile:{int(request.include_profiling)}|limit:{request.row_limit}"
    )
    return "preview:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


class PreviewCache:
    """Best effort: a Redis error is logged and the preview runs without the cache."""

    def __init__(self, client: redis.Redis | None, *, ttl: int) -> None:
        self.client = client if ttl > 0 else None
        self.ttl = ttl

    @classmethod
    def from_url(cls, url: str, *, ttl: int) -> PreviewCache:
        return cls(redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5), ttl=ttl)

    def get(self, request: PreviewRequest) -> dict[str, Any] | None:
        if self.client is None:
            return None
        try:
            raw = cast("bytes | None", self.client.get(cache_key(request)))
        except redis.RedisError as exc:
            logger.warning("preview cache unavailable, running without it: {}", exc)
            return None
        return codec.loads(raw) if raw else None

    def put(self, request: PreviewRequest, result: dict[str, Any]) -> None:
        if self.client is None:
            return
        try:
            self.client.setex(cache_key(request), self.ttl, codec.dumps(result))
        except redis.RedisError as exc:
            logger.warning("preview cache write failed: {}", exc)
