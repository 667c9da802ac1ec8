"""``job_actor``: declare a Dramatiq actor from its job contract, running under the job context.

The contract gives the actor's name (the Celery task name), its queue and its retry policy; the
wrapper runs the function through ``Job.call``, so time limits and cancels reach it whatever it does,
and decides how a stopped job ends:

- **cancelled**: not a failure. The function's end is swallowed, ``TaskState`` keeps REVOKED, the
  message is acknowledged (no dead letter, no error log) and the metrics count it as cancelled;
- **timed out**: ``timed_out(job)`` gives the result where the contract says a timeout is an answer
  (the preview's SUCCESS with ``error``); otherwise FAILURE with Celery's ``TimeLimitExceeded``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import dramatiq

from .contracts import JobContract
from .errors import JobCancelled, JobTimedOut
from .job import Job, current_job
from .retrying import retry_options

__all__ = ["job_actor"]

F = TypeVar("F", bound=Callable[..., Any])


def job_actor(
    contract: JobContract, *, timed_out: Callable[[Job], Any] | None = None, **options: Any
) -> Callable[[F], dramatiq.Actor[Any, Any]]:
    """Decorate a function as the actor of ``contract``."""
    if contract.retry == "transient":
        options = {**retry_options(), **options}

    def decorator(fn: F) -> dramatiq.Actor[Any, Any]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            job = current_job()
            if job is None:  # called as a plain function
                return fn(*args, **kwargs)
            try:
                return job.call(fn, *args, **kwargs)
            except JobCancelled:
                job.outcome = "cancelled"
                return None
            except JobTimedOut:
                if timed_out is None:
                    raise
                return timed_out(job)

        return dramatiq.actor(actor_name=contract.name, queue_name=contract.queue, **options)(run)

    return decorator
