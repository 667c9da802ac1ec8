"""Task states and Celery's result-meta layout.

The backend polls with ``celery.result.AsyncResult``; it must read exactly what a
Celery worker with ``result_extended=True`` would have written (key order,
exception encoding, ISO ``date_done``).
"""

from __future__ import annotations

import datetime as dt
import json
import traceback as tb
from collections.abc import Mapping, Sequence
from typing import Any

from .contracts import CONTRACTS
from .errors import JobTimedOut

__all__ = [
    "EXCEPTION_STATES",
    "FAILURE",
    "FINAL_STATES",
    "PENDING",
    "PROGRESS",
    "RETRY",
    "REVOKED",
    "STARTED",
    "SUCCESS",
    "build_meta",
    "celery_exception",
    "encode_exception",
    "exception_message",
    "revoked_exception",
    "status_dict",
    "task_meta",
]

PENDING = "PENDING"
STARTED = "STARTED"
PROGRESS = "PROGRESS"
RETRY = "RETRY"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"

#: States after which nothing may overwrite the stored meta.
FINAL_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
#: States whose ``result`` holds an encoded exception.
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value


def encode_exception(exc: BaseException) -> dict[str, Any]:
    """Encode an exception as Celery's ``prepare_exception`` does for JSON.

    A job stopped at its time limit is encoded as Celery's own ``TimeLimitExceeded``, which an
    unchanged ``AsyncResult`` rebuilds from ``celery.exceptions``.
    """
    if isinstance(exc, JobTimedOut):
        return celery_exception("TimeLimitExceeded", str(exc))
    return {
        "exc_type": type(exc).__qualname__,
        "exc_message": [_jsonable(arg) for arg in exc.args],
        "exc_module": type(exc).__module__,
    }


def celery_exception(exc_type: str, *args: Any) -> dict[str, Any]:
    """One of ``celery.exceptions``, encoded: an unchanged ``AsyncResult`` rebuilds the real class."""
    return {"exc_type": exc_type, "exc_message": list(args), "exc_module": "celery.exceptions"}


def revoked_exception(reason: str = "revoked") -> dict[str, Any]:
    """What Celery stores for a revoked task (``expired`` when its ``expires`` passed before it ran)."""
    return celery_exception("TaskRevokedError", reason)


def exception_message(result: Any) -> str:
    """``str()`` of the exception an encoded result stands for, as the backend shows it."""
    if not isinstance(result, Mapping):
        return str(result) if result else ""
    message = result.get("exc_message")
    if isinstance(message, Sequence) and not isinstance(message, str):
        args = list(message)
        return "" if not args else str(args[0]) if len(args) == 1 else str(tuple(args))
    return str(message or "")


def format_traceback(exc: BaseException) -> str:
    return "".join(tb.format_exception(type(exc), exc, exc.__traceback__, limit=30))


def task_meta(
    task_id: str,
    status: str,
    result: Any = None,
    *,
    actor: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    worker: str | None,
    queue: str | None,
    hash_sql: bool,
    **extra: Any,
) -> dict[str, Any]:
    """The meta of a job of ``actor`` as the worker writes it (``build_meta``).

    With ``hash_sql`` (``TASK_META_SQL=hash``), the SQL arguments of a contract's job are replaced by their
    digest and the SQL's SHA-256 is kept as ``sql_sha256``: the meta outlives the job.
    """
    digest: str | None = None
    contract = CONTRACTS.get(actor) if hash_sql else None
    if contract is not None and contract.sql_params:
        digest = contract.sql_sha256(args, kwargs)
        args, kwargs = contract.masked(args, kwargs)
    meta = build_meta(task_id, status, result, name=actor, args=args, kwargs=kwargs, worker=worker, queue=queue,
                      **extra)  # fmt: skip
    if digest is not None:
        meta["sql_sha256"] = digest
    return meta


def build_meta(
    task_id: str,
    status: str,
    result: Any = None,
    *,
    traceback: str | None = None,
    name: str | None = None,
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    worker: str | None = None,
    retries: int = 0,
    queue: str | None = None,
) -> dict[str, Any]:
    """The meta document in Celery's key order; ``date_done`` is set for final states."""
    done = dt.datetime.now(dt.UTC).isoformat() if status in FINAL_STATES else None
    return {
        "status": status,
        "result": result,
        "traceback": traceback,
        "children": [],
        "date_done": done,
        "name": name,
        "args": list(args) if args is not None else None,
        "kwargs": dict(kwargs) if kwargs is not None else None,
        "worker": worker,
        "retries": retries,
        "queue": queue,
        "task_id": task_id,
    }


def status_dict(task_id: str, meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """The backend's status answer (its ``WorkerClient.get_task_status``) for stored ``meta``."""
    state = str(meta.get("status", PENDING)) if meta else PENDING
    info = meta.get("result") if meta else None
    answer: dict[str, Any] = {"task_id": task_id, "state": state}
    if state == PENDING:
        answer["status"] = "queued"
    elif state in (STARTED, PROGRESS):
        answer["status"] = "running"
        if isinstance(info, dict) and info:
            answer["meta"] = info
    elif state == SUCCESS:
        answer.update(status="completed", result=info)
    elif state == FAILURE:
        answer.update(status="failed", error=exception_message(info) or "Unknown error")
    elif state == REVOKED:
        answer["status"] = "cancelled"
    else:
        answer["status"] = state.lower()
    return answer
