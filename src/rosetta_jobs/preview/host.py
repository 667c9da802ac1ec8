"""What the worker's host gives the preview: its time zone and a directory DuckDB may spill to.

Read in the worker process when it builds the executors' configuration, so this module loads no DuckDB:
a worker process never runs a query, and importing DuckDB there costs ~40 MB of resident memory.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError

__all__ = ["prepare_temp_directory", "process_timezone"]

_LOCALTIME = Path("/etc/localtime")


def prepare_temp_directory(path: str) -> str:
    """``path`` (``DUCKDB_TEMP_DIRECTORY``) made absolute, created if missing (mode 0700), and checked writable.

    A ``ConfigError`` naming the setting otherwise: found at the first preview, not when a query first
    spills (which, in a container whose working directory belongs to root, used to fail with "Permission
    denied" and be retried as a lost source database).
    """
    absolute = os.path.abspath(path)
    try:
        os.makedirs(absolute, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"DUCKDB_TEMP_DIRECTORY {absolute} cannot be created ({exc.strerror}): set it to a directory "
            f"the worker's user (uid {os.getuid()}) can write"
        ) from None
    if not os.path.isdir(absolute) or not os.access(absolute, os.W_OK | os.X_OK):
        raise ConfigError(
            f"DUCKDB_TEMP_DIRECTORY {absolute} is not a directory the worker's user (uid {os.getuid()}) can "
            "write: DuckDB spills big sorts, joins and aggregates there"
        )
    return absolute


def process_timezone(*, localtime: Path = _LOCALTIME) -> str:
    """The IANA name of this process's zone, found as the C library finds it: ``TZ`` (a leading ``:`` stripped),
    else the zoneinfo file ``/etc/localtime`` links to (``Etc/UTC``), else ``UTC``. Set but empty, ``TZ`` is UTC."""
    tz = os.environ.get("TZ")
    if tz is not None:
        name = tz.removeprefix(":")
        if name.startswith("/"):  # TZ=:/etc/localtime, or a zoneinfo file by path
            return _zone_of(name) or "UTC"
        return name or "UTC"
    return _zone_of(str(localtime)) or "UTC"


def _zone_of(path: str) -> str | None:
    """``Asia/Jakarta`` for ``.../zoneinfo/Asia/Jakarta`` or a chain of links to it; ``None`` for anything else."""
    for _ in range(8):
        zone = path.rpartition("/zoneinfo/")[2] if "/zoneinfo/" in path else ""
        if zone:
            return zone.removeprefix("posix/").removeprefix("right/")
        try:
            target = os.readlink(path)
        except OSError:  # not a link (a copied file), or missing
            return None
        path = os.path.normpath(os.path.join(os.path.dirname(path), target))
    return None
