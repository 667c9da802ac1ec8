"""The middleware rosetta-jobs adds to Dramatiq's stack (declared in ``rosetta_jobs.stack``)."""

from __future__ import annotations

from .cancel import Cancellation
from .chains import Callbacks, Pipelines
from .context import JobContext, TimeLimit
from .fence import Fence
from .recovery import Recovery
from .state import TaskState

__all__ = ["Callbacks", "Cancellation", "Fence", "JobContext", "Pipelines", "Recovery", "TaskState", "TimeLimit"]
