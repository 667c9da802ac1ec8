"""Error notifications in the backend's ``notification_log``, written as the backend writes them.

One row per key repeats: a failure of a key whose latest row has been seen fewer than
``NOTIFICATION_ITERATION_DEFAULT`` times (3 unless configured) bumps that row's ``iteration_check`` and
marks it unread and unsent again; otherwise a new row starts at 1. The backend's ``notification_sender``
sends rows that reached the limit, so a key must fail that many times before anyone is alerted outside
the UI (``../shared/spec/rosetta-tasks.md`` 9.4, the backend's ``upsert_notification_by_key``).

Writing a notification never fails the job that reports: errors are logged and swallowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loguru import logger

from .redact import redact

if TYPE_CHECKING:
    from .catalog import Catalog

__all__ = ["DEFAULT_ITERATIONS", "MESSAGE_LIMIT", "notify_error"]

#: ``iteration_check`` a row reaches before a new row is started, when the setting is absent.
DEFAULT_ITERATIONS = 3
#: Characters of a message kept (the backend's worker truncated the same way).
MESSAGE_LIMIT = 2000

_LIMIT_SQL = (
    "SELECT config_value FROM rosetta_setting_configuration WHERE config_key = 'NOTIFICATION_ITERATION_DEFAULT'"
)
_LATEST_SQL = (
    "SELECT id, iteration_check FROM notification_log WHERE key_notification = %s ORDER BY created_at DESC, id DESC"
    " LIMIT 1"
)
_UPDATE_SQL = (
    "UPDATE notification_log SET iteration_check = COALESCE(iteration_check, 0) + 1, title = %s, message = %s,"
    " type = 'ERROR', is_read = FALSE, is_deleted = FALSE, is_sent = FALSE, updated_at = now() WHERE id = %s"
)
_INSERT_SQL = (
    "INSERT INTO notification_log (key_notification, title, message, type, is_read, is_deleted, iteration_check,"
    " is_sent, is_force_sent, created_at, updated_at)"
    " VALUES (%s, %s, %s, 'ERROR', FALSE, FALSE, 1, FALSE, FALSE, now(), now())"
)


def notify_error(catalog: Catalog, key: str, title: str, message: str) -> bool:
    """Record an error notification under ``key``; ``False`` (and a warning) if it could not be written.

    The read and the write run in one transaction under an advisory lock on the key, so two workers
    reporting the same key at once count twice instead of both updating the same old count.
    """
    message = redact(message)[:MESSAGE_LIMIT]
    try:
        with catalog.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"notification_log:{key}",))
            limit = _iteration_limit(conn.execute(_LIMIT_SQL).fetchone())
            latest = conn.execute(_LATEST_SQL, (key,)).fetchone()
            if latest is not None and (latest[1] or 0) < limit:
                conn.execute(_UPDATE_SQL, (title[:255], message, latest[0]))
            else:
                conn.execute(_INSERT_SQL, (key, title[:255], message))
    except Exception as exc:
        logger.warning("could not write notification {}: {}", key, redact(str(exc)))
        return False
    return True


def _iteration_limit(row: tuple[object, ...] | None) -> int:
    try:
        return int(str(row[0])) if row is not None else DEFAULT_ITERATIONS
    except ValueError:
        return DEFAULT_ITERATIONS
