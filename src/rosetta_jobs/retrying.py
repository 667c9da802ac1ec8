"""The one retry policy of rosetta-jobs.

- Errors of the user's SQL or of the configuration are terminal: they come back as the preview's
  ``error`` (a SUCCESS) or as FAILURE, and are never retried.
- Infrastructure errors (``TransientError``: the config database unreachable, the source dropping the
  connection mid-query) are retried with exponential backoff (``RETRY_MIN_BACKOFF_MS`` doubling up to
  ``RETRY_MAX_BACKOFF_MS``, with jitter) up to ``MAX_RETRIES`` times; the poller sees RETRY, then
  STARTED again, then the final state.
- Interrupts (time limit, cancel, shutdown) are never retried as ordinary errors.

An actor opts in with ``**retry_options()``; every other actor runs once (the broker's default).
"""

from __future__ import annotations

from typing import Any

from dramatiq.middleware import Shutdown, TimeLimitExceeded

from .config import get_settings
from .errors import JobInterrupt, TransientError

__all__ = ["retry_options", "should_retry"]


def should_retry(retries: int, exception: BaseException) -> bool:
    """``retry_when`` for Dramatiq's ``Retries``: ``retries`` is the number of retries already made."""
    if isinstance(exception, JobInterrupt | Shutdown | TimeLimitExceeded):
        return False
    return isinstance(exception, TransientError) and retries < get_settings().max_retries


def retry_options() -> dict[str, Any]:
    """The actor options that apply the policy."""
    settings = get_settings()
    return {
        "retry_when": should_retry,
        "min_backoff": settings.retry_min_backoff_ms,
        "max_backoff": settings.retry_max_backoff_ms,
    }
