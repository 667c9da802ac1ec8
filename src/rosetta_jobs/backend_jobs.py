"""Backend jobs (``worker.backend_job.run``): the Rosetta backend's own code, run by its runner module.

The backend's scheduler sends every periodic job (``worker_health_check`` every 10 s, the monitors,
``notification_sender``, ...) here. The worker runs the backend's runner exactly as the Celery worker
did (``../shared/spec/rosetta-tasks.md`` 8.3):

    <python> -m app.worker_bridge.runner <job_name> --payload <json>

in ``BACKEND_DIR`` with ``PYTHONPATH=BACKEND_DIR`` and ``PYTHONUNBUFFERED=1`` added to the worker's
environment (the backend reads its own settings from it), stdin from ``/dev/null``, in a session of its
own. The runner logs to stdout, prints its result as one JSON line, logs again while it shuts down, and
exits 0; any exception is a traceback on stderr and exit 1.

What differs from the Celery worker, and why (defects F30, rosetta-worker.md 13 #7, #12):

- job names are checked against the runner's list (plus ``BACKEND_EXTRA_JOBS``) *before* a runner is
  started: an unknown name costs no backend boot and is not retried;
- the runner is killed with its whole process group at the job's time limit (``BACKEND_JOB_TIME_LIMIT``)
  or on cancel; the Celery worker waited forever;
- the result is the *last JSON object line that is not a log record*, so the runner's shutdown logs
  (JSON lines too with ``LOG_FORMAT=json``) are never taken for the result;
- a failed runner's error is the tail of its stderr (the exception, not the whole traceback).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from .errors import ConfigError, TransientError
from .redact import redact

if TYPE_CHECKING:
    from .config import Settings
    from .job import Job

__all__ = ["KNOWN_JOBS", "RUNNER_MODULE", "BackendJobFailed", "BackendRunner", "parse_result"]

#: The runner's ``JOB_HANDLERS`` (backend/app/worker_bridge/runner.py, April 2026).
KNOWN_JOBS: frozenset[str] = frozenset(
    {
        "wal_monitor",
        "replication_monitor",
        "schema_monitor",
        "credit_monitor",
        "table_list_refresh",
        "destination_table_list_refresh",
        "system_metric_collection",
        "notification_sender",
        "worker_health_check",
        "pipeline_refresh_check",
        "source.refresh_metadata",
        "source.refresh_available_tables",
        "destination.refresh_credits",
        "pipeline.refresh",
    }
)
RUNNER_MODULE = "app.worker_bridge.runner"
#: Lines of a failed runner's stderr kept in the error.
ERROR_TAIL_LINES = 20
#: Keys that make a JSON line a log record of the backend (python-json-logger, structlog, loguru, ...), not a
#: result: any one of the first set, or a level next to a message.
_LOG_KEYS = frozenset({"levelname", "asctime", "record"})
_LEVEL_KEYS = frozenset({"level", "levelno", "severity"})
_MESSAGE_KEYS = frozenset({"message", "msg", "event", "text"})


class BackendJobFailed(TransientError):
    """The runner exited non-zero: retried once (the Celery worker's policy), then FAILURE with its stderr."""


@dataclass(frozen=True, kw_only=True)
class BackendRunner:
    """Runs backend jobs: where the backend is, which interpreter runs it, which job names exist."""

    backend_dir: str | None
    python: str | None = None
    extra_jobs: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> BackendRunner:
        return cls(
            backend_dir=settings.backend_dir,
            python=settings.backend_python,
            extra_jobs=frozenset(settings.backend_extra_job_names),
        )

    @property
    def jobs(self) -> frozenset[str]:
        return KNOWN_JOBS | self.extra_jobs

    def run(
        self, job_name: str, payload: Mapping[str, Any] | None = None, *, task_id: str | None, job: Job | None
    ) -> dict[str, Any]:
        """Run ``job_name`` and return ``{"job_name", "task_id", **result}`` (result keys win, as before)."""
        argv, cwd, env = self.command(job_name, payload)
        if job is not None:
            completed = job.run_subprocess(argv, cwd=cwd, env=env, text=True, encoding="utf-8", errors="replace")
        else:  # a plain call (tests, a shell): the same process, without a time limit
            completed = subprocess.run(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                encoding="utf-8", errors="replace", start_new_session=True, check=False,
            )  # fmt: skip
        stdout, stderr = completed.stdout or "", completed.stderr or ""
        if completed.returncode != 0:
            raise BackendJobFailed(_failure(job_name, completed.returncode, stderr, stdout))
        logger.debug("backend job {} printed {} lines", job_name, len(stdout.splitlines()))
        return {"job_name": job_name, "task_id": task_id, **parse_result(stdout, job_name)}

    def command(self, job_name: str, payload: Mapping[str, Any] | None) -> tuple[list[str], Path, dict[str, str]]:
        """argv, working directory and environment of the runner; refuses what must not be started."""
        if job_name not in self.jobs:
            raise ValueError(
                f"Unsupported backend bridge job: {job_name} (the runner's jobs are {', '.join(sorted(self.jobs))}; "
                "a newer backend's jobs go in BACKEND_EXTRA_JOBS)"
            )
        if payload is not None and not isinstance(payload, Mapping):
            raise TypeError(f"payload of backend job {job_name} must be a JSON object, got {type(payload).__name__}")
        if not self.backend_dir:
            raise ConfigError(
                "BACKEND_DIR is not set: set it to the Rosetta backend's directory (the one holding "
                "app/worker_bridge/runner.py) on every worker that runs backend jobs"
            )
        backend = Path(self.backend_dir)
        if not backend.is_dir():
            raise FileNotFoundError(f"Backend directory not found: {backend}")
        argv = [self.interpreter(backend), "-m", RUNNER_MODULE, job_name, "--payload", json.dumps(dict(payload or {}))]
        env = {**os.environ, "PYTHONPATH": str(backend), "PYTHONUNBUFFERED": "1"}
        return argv, backend, env

    def interpreter(self, backend: Path) -> str:
        """``BACKEND_PYTHON``, else the backend's own virtualenv if it has one, else the worker's Python."""
        if self.python:
            return self.python
        for candidate in (backend / ".venv" / "bin" / "python", backend / ".venv" / "Scripts" / "python.exe"):
            if candidate.is_file():
                return str(candidate)
        return sys.executable


def parse_result(stdout: str, job_name: str) -> dict[str, Any]:
    """The runner's result: the last line of stdout that is a JSON object and not a log record.

    No such line (a runner that printed nothing) answers ``{"message": "Backend bridge job completed: <job>"}``.
    """
    for line in _reversed_lines(stdout):
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and not _is_log_record(value):
            return value
    return {"message": f"Backend bridge job completed: {job_name}"}


def _is_log_record(value: dict[str, Any]) -> bool:
    keys = value.keys()
    return bool(_LOG_KEYS & keys) or (bool(_LEVEL_KEYS & keys) and bool(_MESSAGE_KEYS & keys))


def _reversed_lines(text: str) -> Iterable[str]:
    return (line.strip() for line in reversed(text.splitlines()))


def _failure(job_name: str, returncode: int, stderr: str, stdout: str) -> str:
    how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
    lines = [line for line in (stderr or stdout).splitlines() if line.strip()]
    tail = "\n".join(lines[-ERROR_TAIL_LINES:])
    return redact(f"Backend bridge job {job_name} {how}" + (f":\n{tail}" if tail else ""))
