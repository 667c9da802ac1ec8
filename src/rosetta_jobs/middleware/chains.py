"""Dramatiq's ``Callbacks`` and ``Pipelines``, which do not continue a cancelled or deferred job.

A result passed on as stored JSON (``codec.Raw``, a preview's) reaches the next step decoded, and is
decoded only when there is a next step (most jobs have none: the 150 KB of a preview stay bytes).

A cancelled job returns normally (``rosetta_jobs.actor``: a cancel is no failure), so Dramatiq's own
middleware would call its ``on_success`` callback and enqueue the next step of its pipeline. A deferred
job (``job.Deferred``) has not succeeded yet: its final state is written later, elsewhere. An abandoned
job (``JobAbandoned``: its process stops or lost its lease) has not failed: it runs again elsewhere, and
Dramatiq's ``Callbacks`` would call its ``on_failure``.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq import middleware

from .. import codec
from ..errors import JobAbandoned
from ..job import RunningJobs

__all__ = ["Callbacks", "Pipelines"]


class _NotAfterCancel(middleware.Middleware):
    """Runs the parent's ``after_process_message`` unless the job was cancelled, deferred or abandoned."""

    def __init__(self, *, jobs: RunningJobs) -> None:
        super().__init__()
        self.jobs = jobs

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        job = self.jobs.get(message.message_id)
        if (job is not None and job.outcome in ("cancelled", "deferred")) or isinstance(exception, JobAbandoned):
            return
        if isinstance(result, codec.Raw) and exception is None and self._passes_result(broker, message):
            result = result.value  # a result passed on undecoded: the next step gets its value
        super().after_process_message(broker, message, result=result, exception=exception)

    def _passes_result(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> bool:
        """Whether a next step receives this job's result: only then is a ``Raw`` result decoded."""
        raise NotImplementedError


class Callbacks(_NotAfterCancel, middleware.Callbacks):
    def _passes_result(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> bool:
        return bool(message.options.get("on_success") or broker.get_actor(message.actor_name).options.get("on_success"))


class Pipelines(_NotAfterCancel, middleware.Pipelines):
    def _passes_result(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> bool:
        return message.options.get("pipe_target") is not None
