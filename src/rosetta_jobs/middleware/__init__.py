"""The middleware rosetta-jobs adds to Dramatiq's stack (see ``rosetta_jobs.broker``)."""

from __future__ import annotations

from .state import TaskState, report_progress

__all__ = ["TaskState", "report_progress"]
