"""Process-wide resources of the config-database jobs (table lists, lineage), built on first use.

One config-database pool and one cache client per worker process, shared by those jobs; built after
the worker process has forked (never at import), as the preview's runner is.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .config import get_settings

if TYPE_CHECKING:
    import redis

    from .catalog import Catalog

__all__ = ["cache", "catalog"]

_lock = threading.Lock()
_catalog: Catalog | None = None
_cache: redis.Redis | None = None


def catalog() -> Catalog:
    """The process's config-database catalog (its own pool of ``DB_POOL_SIZE`` connections)."""
    global _catalog
    with _lock:
        if _catalog is None:
            from .catalog import Catalog

            _catalog = Catalog.from_settings(get_settings())
        return _catalog


def cache() -> redis.Redis:
    """The process's client of the backend's cache Redis (``REDIS_URL``)."""
    global _cache
    with _lock:
        if _cache is None:
            from .connection import redis_client

            settings = get_settings()
            _cache = redis_client(settings.redis_url, sentinel=settings.sentinel)
        return _cache
