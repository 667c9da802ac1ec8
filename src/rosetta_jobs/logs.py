"""Logging through loguru, with the standard library's records (Dramatiq's, uvicorn's) routed to it.

What every line gets, in every process (the ``rosetta-jobs worker`` master, its worker processes, the
ops service):

- under ``LOG_FORMAT=json``, one flat JSON object per line (``time``, ``level``, ``message``, ``logger``,
  ``process``, ``thread``, the bound fields, ``exception``), else readable text;
- inside a job, the job's ``task_id``, ``actor`` and ``queue`` (from the job context, ``job.current_job``),
  whichever thread of the worker logs it, so ``grep <task id>`` finds all of one job's lines;
- a Dramatiq message shown as ``actor(arguments)`` with a user's SQL replaced by its digest
  (``contracts.masked_arguments``): Dramatiq's own lines print a message's arguments in full.

And what no line says any more: Dramatiq's WARNING after *every* successful job that returns a value
("... you haven't added the Results middleware ..."): our results are the task state ``TaskState``
stores, so that warning is false here and is dropped; Dramatiq's WARNING "Message ... was skipped" for
a job cancelled while queued is DEBUG (``TaskState`` says so at INFO).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from typing import Any, TextIO

from loguru import logger

from .config import get_settings

__all__ = ["configure_logging", "safe_message"]

#: Fields a job's lines carry, from the job context.
JOB_FIELDS = ("task_id", "actor", "queue")
#: Dramatiq's lines that are wrong for rosetta-jobs: dropped (Dramatiq formats this one itself), or lowered.
_DROPPED = re.compile(r"^Actor '[^']*' returned a value that is not None, and you haven't added the Results")
_LOWERED = {"Message %s was skipped.": "DEBUG"}
_JSON_SKIPPED = {"_line", "_task"}


def safe_message(value: Any) -> Any:
    """A Dramatiq message (or its proxy) as ``actor(args)`` with SQL as its digest; anything else unchanged."""
    actor = getattr(value, "actor_name", None)
    if not isinstance(actor, str) or not hasattr(value, "message_id"):
        return value
    from .contracts import masked_arguments

    args, kwargs = masked_arguments(
        actor, list(getattr(value, "args", ()) or ()), dict(getattr(value, "kwargs", {}) or {})
    )
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{actor}({', '.join(shown)}) [{value.message_id}]"


class _InterceptHandler(logging.Handler):
    """Standard-library records into loguru, Dramatiq's messages made safe on the way."""

    def emit(self, record: logging.LogRecord) -> None:
        template = record.msg if isinstance(record.msg, str) else ""
        if _DROPPED.match(template):
            return
        level: str | int = _LOWERED.get(template, "")
        if not level:
            try:
                level = logger.level(record.levelname).name
            except ValueError:
                level = record.levelno
        try:
            if isinstance(record.args, tuple) and record.args:
                text = str(record.msg) % tuple(safe_message(arg) for arg in record.args)
            else:
                text = record.getMessage()
        except (TypeError, ValueError):
            text = record.getMessage()
        logger.opt(depth=6, exception=record.exc_info).log(level, "{}: {}", record.name, text)


def _job_context(record: Any) -> None:
    """The patcher: a job's lines carry its id, actor and queue (set by ``JobContext`` on the worker thread)."""
    from .job import current_job

    job = current_job()
    if job is not None:
        extra = record["extra"]
        extra.setdefault("task_id", job.id)
        extra.setdefault("actor", job.actor)
        extra.setdefault("queue", job.queue)


def _json_line(record: Any) -> str:
    """One flat JSON object: what a log pipeline indexes without unpacking loguru's nested record."""
    doc: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "message": record["message"],
        "logger": record["name"],
        "process": record["process"].id,
        "thread": record["thread"].name,
    }
    doc.update((k, v) for k, v in record["extra"].items() if k not in _JSON_SKIPPED)
    if record["exception"] is not None:
        kind, value, tb = record["exception"]
        doc["exception"] = "".join(traceback.format_exception(kind, value, tb)) if kind else None
    record["extra"]["_line"] = json.dumps(doc, default=str, ensure_ascii=False)
    return "{extra[_line]}\n"


def _text_line(record: Any) -> str:
    extra = record["extra"]
    extra["_task"] = f"{extra['task_id']} {extra.get('actor', '')} | " if "task_id" in extra else ""
    return (
        "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | {process} | "
        "{extra[_task]}<level>{message}</level>\n{exception}"
    )


def configure_logging(level: str | None = None, fmt: str | None = None, *, sink: TextIO | None = None) -> None:
    """One sink (stderr by default): flat JSON lines when ``LOG_FORMAT=json``, readable text otherwise."""
    settings = get_settings()
    level = level or settings.log_level
    json_lines = (fmt or settings.log_format) == "json"
    logger.remove()
    logger.configure(patcher=_job_context)
    stream = sink or sys.stderr
    logger.add(stream, level=level, format=_json_line if json_lines else _text_line, colorize=False if json_lines
               else None, backtrace=False, diagnose=False)  # fmt: skip
    logging.basicConfig(handlers=[_InterceptHandler()], level=level, force=True)
    logging.captureWarnings(True)  # a Python warning is a log line too, not raw text on stderr
