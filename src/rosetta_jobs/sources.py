"""What a job needs to reach a source or a destination: their connection configs, and nothing that reads them.

Kept apart from ``catalog`` (which reads them from the config database with psycopg and decrypts them)
so that a preview's executor process, which receives one config per preview, loads neither.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DestinationConfig", "DestinationRecord", "SourceConfig"]

#: Fingerprints are keyed per process: equal configs match within a worker, yet a
#: fingerprint that leaks into a log cannot be used to guess a password offline.
_FINGERPRINT_KEY = os.urandom(32)

_ALIAS_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def _quote(value: str) -> str:
    """A libpq keyword/value: single-quoted, with backslash and quote escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """A PostgreSQL source as the preview attaches it. ``password`` is decrypted and never shown."""

    id: int
    name: str
    host: str
    port: int
    database: str
    user: str
    password: str = field(repr=False)

    @property
    def alias(self) -> str:
        """The DuckDB catalog name of the attached source (the Celery worker's rule)."""
        return "pg_src_" + _ALIAS_UNSAFE.sub("_", self.name.lower())

    def conninfo(self) -> str:
        """A libpq keyword/value connection string, every value quoted, for psycopg or DuckDB's ATTACH."""
        parts = {
            "host": self.host,
            "port": str(self.port),
            "dbname": self.database,
            "user": self.user,
            "password": self.password,
        }
        quoted = " ".join(f"{key}={_quote(value)}" for key, value in parts.items())
        return f"{quoted} connect_timeout=10 application_name=rosetta-jobs-preview"

    def fingerprint(self) -> str:
        """A stable-per-process digest of every field, password included, to key reusable sessions."""
        material = "\x00".join(
            (str(self.id), self.name, self.host, str(self.port), self.database, self.user, self.password)
        )
        return hmac.new(_FINGERPRINT_KEY, material.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True, kw_only=True)
class DestinationConfig:
    """The destination of a preview: the preview only needs to know it exists and its type."""

    id: int
    name: str
    type: str


@dataclass(frozen=True, kw_only=True)
class DestinationRecord:
    """A destination's row as stored: ``config`` still holds encrypted tokens (``Catalog.decrypt`` them)."""

    id: int
    name: str
    type: str
    config: Mapping[str, Any] = field(repr=False)
