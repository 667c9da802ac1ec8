"""A catalog for DMZ workers: connection configs asked of the ops service, not read from the database.

A worker in an untrusted zone holds neither ``DATABASE_URL`` nor ``CREDENTIAL_ENCRYPTION_KEY``: for
each preview it asks the ops service (``WORKER_API_URL``, trusted zone) for the one source the job
needs, authenticated by ``WORKER_API_KEY``. The answer is kept in memory for at most a minute (so a
password changed in the backend reaches every worker within it) and is never logged or stored.
``open_catalog`` picks this catalog or the database one from the settings.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from .catalog import Catalog, DestinationConfig, SourceConfig
from .errors import ConfigError, PreviewError, TransientError
from .redact import redact

if TYPE_CHECKING:
    import httpx

    from .config import Settings

__all__ = ["MAX_CACHE_SECONDS", "WORKER_KEY_HEADER", "RemoteCatalog", "open_catalog"]

#: Longest a config is kept in a worker's memory.
MAX_CACHE_SECONDS = 60.0
#: The header a DMZ worker authenticates with (never ``x-api-key`` or ``x-admin-key``).
WORKER_KEY_HEADER = "x-worker-key"


def open_catalog(settings: Settings) -> Catalog | RemoteCatalog:
    """The ops service's catalog for a DMZ worker (``Settings.dmz_worker``), else the config database's."""
    if settings.dmz_worker and settings.worker_api_url:
        if not settings.worker_api_key:
            raise ConfigError("WORKER_API_URL is set but WORKER_API_KEY is not: set it to the ops service's key")
        return RemoteCatalog(settings.worker_api_url, api_key=settings.worker_api_key)
    return Catalog.from_settings(settings)


class RemoteCatalog:
    """``Catalog.source`` and ``Catalog.destination`` over the ops service's ``/worker`` API. Thread-safe."""

    def __init__(
        self, base_url: str, *, api_key: str, cache_ttl: float = MAX_CACHE_SECONDS, timeout: float = 10.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.cache_ttl = min(max(cache_ttl, 0.0), MAX_CACHE_SECONDS)
        import httpx  # here: a worker of the trusted zone never loads it (with its CLI's rich and pygments)

        self._http = httpx.Client(base_url=self.base_url, headers={WORKER_KEY_HEADER: api_key}, timeout=timeout)
        self._http_error: type[Exception] = httpx.HTTPError
        self._cache: dict[tuple[str, int], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RemoteCatalog({redact(self.base_url)!r})"

    def source(self, source_id: int) -> SourceConfig:
        """The source with its password, from the ops service (or this process's memory, ≤ a minute)."""
        doc = self._get("sources", source_id)
        return SourceConfig(id=source_id, name=str(doc["name"]), host=str(doc["host"]), port=int(doc["port"]),
                            database=str(doc["database"]), user=str(doc["user"]),
                            password=str(doc.get("password") or ""))  # fmt: skip

    def destination(self, destination_id: int) -> DestinationConfig:
        doc = self._get("destinations", destination_id)
        return DestinationConfig(id=destination_id, name=str(doc.get("name") or ""), type=str(doc.get("type") or ""))

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
        self._http.close()

    def _get(self, kind: str, row_id: int) -> dict[str, Any]:
        if isinstance(row_id, bool) or not isinstance(row_id, int):
            raise PreviewError(f"{kind[:-1].capitalize()} id must be an integer, got {row_id!r}")
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get((kind, row_id))
            if hit is not None and hit[0] > now:
                return dict(hit[1])
        doc = self._fetch(kind, row_id)
        if self.cache_ttl > 0:
            with self._lock:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                self._cache[(kind, row_id)] = (now + self.cache_ttl, doc)
        return doc

    def _fetch(self, kind: str, row_id: int) -> dict[str, Any]:
        """One request; every failure becomes our error, with no response body that could hold a secret chained."""
        where = redact(self.base_url)
        try:
            response = self._http.get(f"/worker/{kind}/{row_id}")
        except self._http_error as exc:
            raise TransientError(f"the ops service at {where} did not answer ({type(exc).__name__}): "
                                 "check WORKER_API_URL and that this worker can reach it") from None  # fmt: skip
        if response.status_code in (401, 403):
            raise ConfigError(
                f"the ops service at {where} refused this worker's API key (HTTP {response.status_code}): "
                "set WORKER_API_KEY to the service's WORKER_API_KEY"
            )
        if response.status_code in (404, 422):
            raise PreviewError(_detail(response) or f"{kind[:-1].capitalize()} {row_id} not found")
        if response.status_code != 200:
            raise TransientError(
                f"the ops service at {where} failed (HTTP {response.status_code}): {_detail(response)}"
            )
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise TransientError(f"the ops service at {where} answered something that is not a config")
        return doc


def _detail(response: httpx.Response) -> str:
    """The service's own message (FastAPI's ``detail``), which never holds a config."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return ""
    return redact(detail) if isinstance(detail, str) else ""
