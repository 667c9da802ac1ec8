"""The middleware rosetta-jobs adds to Dramatiq's stack (see ``rosetta_jobs.broker``)."""

from __future__ import annotations

from .cancel import Cancellation
from .recovery import Recovery
from .state import TaskState, report_progress

__all__ = ["Cancellation", "Recovery", "TaskState", "report_progress"]
