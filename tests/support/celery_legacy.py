"""A tiny Celery worker app that still runs beside rosetta-jobs during a gradual migration.

It serves one task name rosetta-jobs does not (``legacy.add``); the tests start it as a real process,
``celery -A celery_legacy worker --pool=threads -Q <fallback list>``.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("rosetta_worker", broker=os.environ["CELERY_BROKER_URL"], backend=os.environ["CELERY_RESULT_BACKEND"])
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_extended=True,
    task_track_started=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
)


@app.task(name="legacy.add")
def add(a: int, b: int) -> int:
    return a + b
