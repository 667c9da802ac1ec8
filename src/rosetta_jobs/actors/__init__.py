"""What ``dramatiq rosetta_jobs.actors`` imports: the broker first, then one module per job.

A new job is one contract in ``rosetta_jobs.contracts``, one module here and one import below.
"""

from __future__ import annotations

import dramatiq

from ..logs import configure_logging
from ..stack import build_broker

configure_logging()
broker = build_broker()
dramatiq.set_broker(broker)

# (actors must be declared after the broker)
from . import (  # noqa: E402
    backend_job,
    destination_tables,
    flow_execute,
    flow_preview,
    flow_schema,
    lineage,
    linked_task,
    preview,
    test,
)

__all__ = [
    "backend_job",
    "broker",
    "destination_tables",
    "flow_execute",
    "flow_preview",
    "flow_schema",
    "lineage",
    "linked_task",
    "preview",
    "test",
]
