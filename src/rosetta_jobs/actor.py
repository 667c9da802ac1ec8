"""Actors under the job context: ``job_actor`` declares one from its contract, ``run_as_job`` runs it.

``JobContext`` wraps the function of *every* actor declared on the worker's broker with ``run_as_job``
(in ``before_declare_actor``, as Dramatiq's own ``AsyncIO`` middleware wraps coroutines), so a plain
``@dramatiq.actor`` gets time limits and cancel too. The wrapper runs the function through
``Job.call`` and decides how a stopped job ends:

- **cancelled**: not a failure. The function's end is swallowed, ``TaskState`` keeps REVOKED, the
  message is acknowledged (no dead letter, no error log), the metrics count it as cancelled, and
  ``Callbacks``/``Pipelines`` do not continue it (``middleware/context.py``);
- **deferred**: the function returned ``Deferred(meta)`` (``job.py``): its final state is written
  later by whoever ends its work, so ``TaskState`` stores PROGRESS with ``meta``, and
  ``Callbacks``/``Pipelines`` do not continue it;
- **timed out**: the actor's ``timed_out(job)`` option gives the result where its contract says a
  timeout is an answer (the preview's SUCCESS with ``error``); otherwise FAILURE with Celery's
  ``TimeLimitExceeded``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import dramatiq

from .contracts import REQUIRED, JobContract
from .errors import JobCancelled, JobTimedOut
from .job import Deferred, Job, current_job
from .retrying import retry_options

__all__ = ["job_actor", "run_as_job"]

F = TypeVar("F", bound=Callable[..., Any])

#: Set on a wrapped function, so that declaring an actor twice does not wrap it twice.
_WRAPPED = "__rosetta_job__"


def run_as_job(fn: Callable[..., Any], *, timed_out: Callable[[Job], Any] | None = None) -> Callable[..., Any]:
    """``fn`` run as the calling thread's job (a plain call outside a worker)."""
    if getattr(fn, _WRAPPED, False):
        return fn

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        job = current_job()
        if job is None:
            return fn(*args, **kwargs)
        try:
            result = job.call(fn, *args, **kwargs)
        except JobCancelled:
            job.outcome = "cancelled"
            return None
        except JobTimedOut:
            if timed_out is None:
                raise
            return timed_out(job)
        if isinstance(result, Deferred):
            job.outcome = "deferred"
            return result.meta
        return result

    setattr(run, _WRAPPED, True)
    return run


def job_actor(
    contract: JobContract, *, timed_out: Callable[[Job], Any] | None = None, **options: Any
) -> Callable[[F], dramatiq.Actor[Any, Any]]:
    """Declare a function as the actor of ``contract``: its name, queue, time limit and retry policy.

    The function's parameters must be the contract's, in the same order with the same defaults:
    the argument order is then written once, in ``contracts.py``, and checked here.
    """
    options = {"time_limit": contract.time_limit_ms, **options}
    if timed_out is not None:
        options["timed_out"] = timed_out
    if contract.retry == "transient":
        options = {**retry_options(), **options}

    def decorator(fn: F) -> dramatiq.Actor[Any, Any]:
        _check_signature(fn, contract)
        return dramatiq.actor(actor_name=contract.name, queue_name=contract.queue, **options)(fn)

    return decorator


def _check_signature(fn: Callable[..., Any], contract: JobContract) -> None:
    params = [
        (p.name, REQUIRED if p.default is inspect.Parameter.empty else p.default)
        for p in inspect.signature(fn).parameters.values()
    ]
    expected = [(p.name, p.default) for p in contract.params]
    if params != expected:
        raise TypeError(f"{fn.__qualname__} takes {params}, but the contract of {contract.name} says {expected}")
