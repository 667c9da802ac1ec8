"""A stand-in for the backend's ``app.worker_bridge.runner``, with its argv and stdout protocol.

Run by the worker as ``python -m app.worker_bridge.runner <job_name> --payload <json>``, in the backend's
directory. Like the real runner it logs to stdout while it boots, prints its result as one JSON line,
logs two more lines while it shuts down (JSON lines too with ``LOG_FORMAT=json``, as the backend's
python-json-logger writes them), and exits 1 with a traceback on stderr when the job raises.

The payload's ``behaviour`` says what the job does: ``ok`` (default), ``fail`` (raise), ``hang``
(start a child and sleep past any time limit), ``silent`` (print nothing). Every run appends one JSON
line to ``$RUNNER_RECORD`` (argv, cwd, environment, pids) so the tests can see what was started.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from typing import Any

JOBS = {
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


def log(message: str, level: str = "INFO") -> None:
    """One log line on stdout, as the backend's logging writes it."""
    now = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    if os.environ.get("LOG_FORMAT", "").lower() == "json":
        print(json.dumps({"asctime": now, "name": "app.core.database", "levelname": level, "message": message}))
    else:
        print(f"{now} - app.core.database - {level} - {message}")


def record(job_name: str, payload: dict[str, Any], **extra: Any) -> None:
    path = os.environ.get("RUNNER_RECORD")
    if not path:
        return
    entry = {
        "argv": sys.argv[1:],
        "job_name": job_name,
        "payload": payload,
        "cwd": os.getcwd(),
        "pythonpath": os.environ.get("PYTHONPATH"),
        "unbuffered": os.environ.get("PYTHONUNBUFFERED"),
        "stdin": os.path.realpath("/proc/self/fd/0"),
        "pid": os.getpid(),
        "sid": os.getsid(0),
        **extra,
    }
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def run_job(job_name: str, payload: dict[str, Any]) -> dict[str, Any]:
    if job_name not in JOBS:
        raise ValueError(f"Unsupported backend bridge job: {job_name}")
    log("Database connection pool initialized")
    behaviour = payload.get("behaviour", "ok")
    if behaviour == "fail":
        record(job_name, payload)
        raise RuntimeError(f"the {job_name} handler failed: connection to server at db:5432 refused")
    if behaviour == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        record(job_name, payload, child=child.pid)
        time.sleep(600)
    record(job_name, payload)
    return {"message": f"{job_name} cycle completed", "payload": payload, "at": dt.datetime.now(dt.UTC)}


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a backend bridge job")
    parser.add_argument("job_name")
    parser.add_argument("--payload", default="{}")
    args = parser.parse_args()
    payload = json.loads(args.payload)
    try:
        result = run_job(args.job_name, payload)
        if payload.get("behaviour") != "silent":
            print(json.dumps(result, default=str))
    finally:
        if payload.get("behaviour") != "silent":
            log("Closing database connection pool")
            log("Database connection pool closed")


if __name__ == "__main__":
    main()
