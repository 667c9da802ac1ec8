"""A real Celery worker (``--pool=threads``) beside rosetta-jobs on the same Redis, during a gradual migration:
with ``CELERY_FALLBACK_QUEUE``, the task names rosetta-jobs does not serve are left to the Celery worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from celery import Celery

from .conftest import BROKER_DB, RESULTS_DB, ROOT, WorkerProcess, redis_url, wait_until, worker_env
from .test_ingress import backend_producer


@pytest.fixture
def producer(celery_app: Celery) -> Celery:
    return backend_producer(celery_app)


def start_celery_worker(queue: str, log: Path) -> subprocess.Popen[bytes]:
    """``celery -A celery_legacy worker --pool=threads -Q <queue>`` as a real process, ready to consume."""
    env = worker_env(CELERY_BROKER_URL=redis_url(BROKER_DB), CELERY_RESULT_BACKEND=redis_url(RESULTS_DB))
    args = [sys.executable, "-m", "celery", "-A", "celery_legacy", "--workdir", str(ROOT / "tests" / "support"),
            "worker", "--pool=threads", "-c", "2", "-Q", queue, "--loglevel=INFO", "--without-gossip",
            "--without-mingle", "--without-heartbeat", "-n", "legacy@%h"]  # fmt: skip
    handle = open(log, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    wait_until(lambda: " ready." in log.read_text(errors="replace") or proc.poll() is not None, 60, "celery ready")
    assert proc.poll() is None, log.read_text(errors="replace")
    return proc


def test_a_celery_worker_beside_rosetta_jobs_serves_the_names_rosetta_jobs_does_not(
    start_worker: Callable[..., WorkerProcess], producer: Celery, tmp_path: Path
) -> None:
    # Given rosetta-jobs with the fallback option, and a Celery worker consuming the fallback list
    start_worker(threads=2, CELERY_FALLBACK_QUEUE="{queue}-celery")
    celery_worker = start_celery_worker("default-celery", tmp_path / "celery.log")
    try:
        # When the unchanged producer sends both kinds of task to the same queue
        legacy = producer.send_task("legacy.add", args=[2, 3], queue="default")
        ported = producer.send_task("worker.test.echo", args=["ours"], queue="default")
        # Then each worker runs its own names, and AsyncResult reads both
        assert legacy.get(timeout=30) == 5
        assert ported.get(timeout=30) == {"message": "ours", "steps": 0}
        assert str(legacy.worker).startswith("legacy@")
        assert str(ported.worker).startswith("rosetta@")
    finally:
        celery_worker.send_signal(signal.SIGTERM)
        try:
            celery_worker.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(celery_worker.pid, signal.SIGKILL)
            celery_worker.wait(5)
