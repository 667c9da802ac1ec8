"""One error root for rosetta-jobs.

Errors that come from the user's input or configuration are *terminal*: retrying
them cannot help. Errors of the infrastructure (a database that does not answer,
a dropped connection) are *transient*. Interrupts (time limit, cancel, shutdown)
derive from ``BaseException`` so that ``except Exception`` in query code cannot
swallow them.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "ConfigError",
    "JobAbandoned",
    "JobCancelled",
    "JobInterrupt",
    "JobTimedOut",
    "PreviewError",
    "RosettaJobsError",
    "StateRefused",
    "TaskFailed",
    "TaskTimeout",
    "TempStorageError",
    "TransientError",
    "UnknownQueue",
    "UserLimitExceeded",
    "WorkerLost",
]


class RosettaJobsError(Exception):
    """Base class of every error rosetta-jobs raises on purpose."""


class ConfigError(RosettaJobsError):
    """A setting is missing or invalid. The message names the variable and the fix."""


class BrokerUnavailable(RosettaJobsError):
    """Redis (broker or result backend) cannot be reached. The message names the URL."""


class TaskTimeout(RosettaJobsError, TimeoutError):
    """``AsyncResult.get`` gave up waiting for a final state."""


class TaskFailed(RosettaJobsError):
    """``AsyncResult.get`` found a FAILURE whose exception type is not a builtin."""

    def __init__(self, exc_type: str, message: str, exc_module: str | None = None) -> None:
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.exc_message = message
        self.exc_module = exc_module


class StateRefused(RosettaJobsError):
    """Redis refused to store a task state (too large for it, or out of memory); a smaller state may still fit."""


class UserLimitExceeded(RosettaJobsError):
    """A user already has the maximum number of active jobs."""


class UnknownQueue(RosettaJobsError, ValueError):
    """A job was sent to a queue that no job contract declares: no worker would ever consume it."""


class TempStorageError(RosettaJobsError):
    """DuckDB could not write its temporary files (a permission or a full disk): the worker's, not the query's."""


class PreviewError(RosettaJobsError):
    """A preview cannot run as asked: the message is shown to the user as ``result.error``."""


class TransientError(RosettaJobsError):
    """An infrastructure failure that a later attempt may not meet again."""


class WorkerLost(RosettaJobsError):
    """The job's worker process died while running it, too many times to try again."""


class JobInterrupt(BaseException):
    """The job was stopped from outside: it must not be retried as an ordinary error."""


class JobTimedOut(JobInterrupt):
    """The job ran past its time limit (``JobTimedOut(seconds)``)."""

    def __str__(self) -> str:
        limit = self.args[0] if self.args else None
        return f"the job ran past its time limit of {limit:g} s" if isinstance(limit, int | float) else "time limit"


class JobCancelled(JobInterrupt):
    """The job was cancelled by a client."""


class JobAbandoned(JobInterrupt):
    """The worker process stopped before the job finished: nothing is recorded, it runs again elsewhere."""
