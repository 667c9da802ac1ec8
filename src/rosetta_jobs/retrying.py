"""The one retry policy of rosetta-jobs.

- Errors of the user's SQL or of the configuration are terminal: they come back as the preview's
  ``error`` (a SUCCESS) or as FAILURE, and are never retried.
- Infrastructure errors (``TransientError``: the config database unreachable, the source dropping the
  connection mid-query; and Redis unreachable or failing over, ``REDIS_OUTAGES``) are retried with
  exponential backoff (``RETRY_MIN_BACKOFF_MS`` doubling up to ``RETRY_MAX_BACKOFF_MS``, with jitter) up
  to ``MAX_RETRIES`` times; the poller sees RETRY, then STARTED again, then the final state.
- Interrupts (time limit, cancel, shutdown) are never retried as ordinary errors.

An actor opts in with ``**retry_options()``; every other actor runs once (the broker's default). A job
whose contract names fewer retries or a longer first delay (the Celery worker's ``max_retries`` and
``countdown``) passes them: ``retry_options(max_retries=2, min_backoff_ms=10_000)``; ``MAX_RETRIES``
still caps every job, so ``MAX_RETRIES=0`` turns retries off everywhere.
"""

from __future__ import annotations

import functools
from typing import Any

import redis
from dramatiq.middleware import Shutdown, TimeLimitExceeded

from .config import get_settings
from .errors import JobInterrupt, TransientError

__all__ = ["REDIS_OUTAGES", "retries_left", "retry_options", "should_retry"]

#: Redis errors an actor's own Redis calls may meet while Redis restarts or fails over: a dropped or
#: refused connection (``MasterNotFoundError`` while the Sentinels elect a master is one), a timeout, and
#: ``READONLY`` from a demoted master. Infrastructure, so retried like ``TransientError``.
REDIS_OUTAGES: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError)


def should_retry(retries: int, exception: BaseException, *, limit: int | None = None) -> bool:
    """``retry_when`` for Dramatiq's ``Retries``: ``retries`` is the number of retries already made."""
    if isinstance(exception, JobInterrupt | Shutdown | TimeLimitExceeded):
        return False
    return isinstance(exception, (TransientError, *REDIS_OUTAGES)) and retries_left(retries, limit=limit) > 0


def retries_left(retries: int, *, limit: int | None = None) -> int:
    """How many more retries a job that already made ``retries`` may make (0: this attempt is its last)."""
    allowed = get_settings().max_retries
    if limit is not None:
        allowed = min(allowed, limit)
    return max(allowed - retries, 0)


def retry_options(*, max_retries: int | None = None, min_backoff_ms: int | None = None) -> dict[str, Any]:
    """The actor options that apply the policy, with a job's own retry count and first delay if given.

    With ``min_backoff_ms`` every retry waits between it and twice it (Dramatiq's jitter), so a job
    keeps the Celery worker's countdown as its floor. A message's own ``min_backoff``/``max_backoff``
    options still win (Dramatiq reads the message first).
    """
    settings = get_settings()
    retry_when = should_retry if max_retries is None else functools.partial(should_retry, limit=max_retries)
    if min_backoff_ms is None:
        return {
            "retry_when": retry_when,
            "min_backoff": settings.retry_min_backoff_ms,
            "max_backoff": settings.retry_max_backoff_ms,
        }
    return {"retry_when": retry_when, "min_backoff": min_backoff_ms, "max_backoff": 2 * min_backoff_ms}
