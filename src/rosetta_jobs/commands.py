"""The operators' commands of ``rosetta-jobs``: ``inspect``, ``queues``, ``workers``, ``jobs``, ``purge``,
``dead-letters``, ``requeue``, ``delete``, ``cancel`` and ``history``, what ``celery inspect``/``purge``/
``control revoke`` and ``rq info``/``requeue``/``empty`` give their operators.

Each reads the Redis the workers and the ops service use, through ``deployment.Deployment`` (so it says
what ``/admin`` and ``/metrics`` say), prints a table or, with ``--json``, one JSON document
(``output.Output``), and exits with a code scripts can rely on (``EXIT_*``). A user's SQL is shown as
its digest (``redact.sql_digest``) unless ``--show-sql``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import redis

from .config import get_settings
from .contracts import masked_arguments
from .deployment import Deployment
from .errors import BrokerUnavailable
from .history import HistoryFilter
from .output import Output, ago, clock, seconds
from .queues import DeadLetter, WaitingJob, is_queue_name
from .redact import redact
from .states import FINAL_STATES, PENDING, exception_message

__all__ = [
    "EXIT_ATTENTION",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "cancel",
    "dead_letters",
    "delete",
    "history",
    "inspect",
    "jobs",
    "parse_since",
    "purge",
    "queues",
    "requeue",
    "run",
    "workers",
]

#: Done; or found what was asked for.
EXIT_OK = 0
#: Not found, or nothing done: an unknown task or dead letter, a task that already ended, a purge declined.
EXIT_NOT_FOUND = 1
#: A bad argument or setting (argparse's own code).
EXIT_USAGE = 2
#: Redis (broker or result backend) did not answer.
EXIT_UNREACHABLE = 3
#: Something needs an operator: a queue holds work that no live worker consumes, or no worker is alive.
EXIT_ATTENTION = 4

Command = Callable[[argparse.Namespace, Deployment, Output], int]


def run(command: Command) -> Callable[[argparse.Namespace], int]:
    """``command`` as a ``rosetta-jobs`` subcommand: settings read, output chosen, Redis errors turned into exit 3."""

    def main(args: argparse.Namespace) -> int:
        settings = get_settings()
        out = Output(json_mode=bool(getattr(args, "json", False)))
        try:
            return command(args, Deployment(settings), out)
        except (redis.RedisError, BrokerUnavailable) as exc:
            where = f"{redact(settings.broker_url)} / {redact(settings.result_backend_url)}"
            print(f"rosetta-jobs: cannot read Redis at {where}: {redact(str(exc))}", file=sys.stderr)
            return EXIT_UNREACHABLE

    main.__doc__ = command.__doc__
    return main


def _arguments(actor: str, args: list[Any], kwargs: dict[str, Any], show_sql: bool) -> str:
    if not show_sql:
        args, kwargs = masked_arguments(actor, args, kwargs)
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    text = ", ".join(shown)
    return text if len(text) <= 160 or show_sql else text[:157] + "..."


def _usage(message: str) -> SystemExit:
    print(f"rosetta-jobs: {message}", file=sys.stderr)
    return SystemExit(EXIT_USAGE)


def _queue_name(queue: str) -> str:
    if not is_queue_name(queue):
        raise _usage(f"{queue!r} is not a queue name")
    return queue


# --- inspect -------------------------------------------------------------------------------------------------------


def inspect(args: argparse.Namespace, ops: Deployment, out: Output) -> int:
    """One task: state, actor, queue, arguments, deliveries, worker, timings, result or error."""
    task_id: str = args.task_id
    meta = ops.store.get(task_id)
    entry = ops.history.get(task_id)
    submitted = ops.store.submitted_queue(task_id)
    running = next(
        (dict(r, worker=w.id) for w in ops.workers() for r in w.running if r.get("task_id") == task_id), None
    )
    if meta is None and entry is None and submitted is None:
        out.emit({"task_id": task_id, "found": False}, lambda o: o.line(f"no task {task_id} is known"))
        return EXIT_NOT_FOUND
    meta = meta or {}
    entry = entry or {}
    state = str(meta.get("status") or entry.get("state") or PENDING)
    actor = str(meta.get("name") or entry.get("actor") or "")
    raw_args, raw_kwargs = list(meta.get("args") or []), dict(meta.get("kwargs") or {})
    if not args.show_sql:
        raw_args, raw_kwargs = masked_arguments(actor, raw_args, raw_kwargs)
    result = meta.get("result")
    queue = meta.get("queue") or entry.get("queue") or submitted
    started = entry.get("started_at") or (running or {}).get("started_at")
    finished = entry.get("finished_at")
    data: dict[str, Any] = {
        "task_id": task_id,
        "found": True,
        "state": state,
        "actor": actor or None,
        "queue": queue,
        "args": raw_args if meta else None,
        "kwargs": raw_kwargs if meta else None,
        "sql_digest": entry.get("sql_digest"),
        "user": entry.get("user"),
        "deliveries": ops.store.deliveries(task_id),
        "worker": (running or {}).get("worker") or entry.get("worker") or meta.get("worker"),
        "enqueued_at": entry.get("enqueued_at"),
        "started_at": started,
        "finished_at": finished,
        "runtime_seconds": round(finished - started, 3) if finished and started else None,
        "retries": meta.get("retries"),
    }
    if state in FINAL_STATES and isinstance(result, dict) and "exc_type" in result:
        data.update(error_type=result.get("exc_type"), error=exception_message(result), traceback=meta.get("traceback"))
    elif state == "SUCCESS":
        data["result"] = result
    elif isinstance(result, dict):
        data["progress"] = result

    def draw(o: Output) -> None:
        o.fields(
            [
                ("task", task_id),
                ("state", state),
                ("actor", actor),
                ("queue", queue),
                ("arguments", _arguments(actor, raw_args, raw_kwargs, True) if meta else _no_arguments(state, queue)),
                ("sql", f"sha256:{data['sql_digest']}" if data["sql_digest"] and not args.show_sql else None),
                ("user", data["user"]),
                ("deliveries", data["deliveries"] or None),
                ("worker", data["worker"]),
                ("enqueued", clock(data["enqueued_at"])),
                ("started", clock(started)),
                ("finished", clock(finished)),
                ("ran", seconds(data["runtime_seconds"])),
                ("error", f"{data['error_type']}: {data['error']}" if "error_type" in data else None),
                ("result", _summary(result) if state == "SUCCESS" else None),
                ("progress", data.get("progress")),
            ]
        )
        if data.get("traceback") and args.traceback:
            o.line(str(data["traceback"]))

    out.emit(data, draw)
    return EXIT_OK


def _no_arguments(state: str, queue: str | None) -> str:
    if state == PENDING and queue:
        return f"(not started: rosetta-jobs jobs {queue} lists it while it waits)"
    return "(no longer stored)"


def _summary(result: Any) -> str:
    """A result in one line: a preview's rows and columns, or the start of its JSON."""
    if isinstance(result, dict) and isinstance(result.get("data"), list):
        if result.get("error"):
            return f"error: {result['error']}"
        return f"{len(result['data'])} rows; columns: {', '.join(map(str, result.get('columns') or []))}"
    text = repr(result)
    return text if len(text) <= 200 else text[:197] + "..."


# --- queues and workers ----------------------------------------------------------------------------------------


def queues(args: argparse.Namespace, ops: Deployment, out: Output) -> int:
    """Ready, delayed, in progress and dead-lettered per queue; queues with work and no live consumer flagged."""
    snapshot = ops.snapshot()
    consumed, stranded = snapshot.consumed, set(snapshot.unconsumed)
    consumers = {q.name: sum(q.name in w.queues for w in snapshot.running_workers) for q in snapshot.queues}
    data = {
        "queues": [
            dict(q.asdict(), consumers=consumers[q.name], unconsumed=q.name in stranded) for q in snapshot.queues
        ],
        "unconsumed": sorted(stranded),
        "consumed": sorted(consumed),
    }

    def draw(o: Output) -> None:
        rows = [
            (
                q.name,
                q.ready,
                q.delayed,
                q.in_progress,
                q.dead_lettered,
                consumers[q.name],
                "NO CONSUMER" if q.name in stranded else "",
            )
            for q in snapshot.queues
        ]
        o.table(None, ["Queue", ">Ready", ">Delayed", ">In progress", ">Dead-lettered", ">Consumers", ""], rows,
                empty="no queue holds anything, and no worker is alive")  # fmt: skip

    out.emit(data, draw)
    for name in sorted(stranded):
        out.warn(f"queue {name!r} holds work but no live worker consumes it: start a worker for it (-Q {name})")
    return EXIT_ATTENTION if stranded else EXIT_OK


def workers(args: argparse.Namespace, ops: Deployment, out: Output) -> int:
    """The live worker processes: queues, threads, busy threads, processed count, last heartbeat."""
    now = time.time()
    found = ops.workers()
    data = {"workers": [dict(w.asdict(), age_seconds=round(now - w.last_seen, 1)) for w in found]}

    def draw(o: Output) -> None:
        rows = [
            (
                w.id,
                ",".join(w.queues),
                w.threads,
                w.busy,
                w.processed,
                w.state,
                ago(w.started_at, now),
                ago(w.last_seen, now),
            )
            for w in found
        ]
        o.table(None, ["Process", "Queues", ">Threads", ">Busy", ">Processed", "State", "Started", "Heartbeat"],
                rows, empty="no worker process is alive")  # fmt: skip

    out.emit(data, draw)
    if not found:
        out.warn("no worker process has a live heartbeat")
    return EXIT_OK if found else EXIT_ATTENTION


# --- waiting jobs ---------------------------------------------------------------------------------------------------


def _job_dict(job: WaitingJob, show_sql: bool) -> dict[str, Any]:
    doc = job.asdict()
    if not show_sql:
        doc["args"], doc["kwargs"] = masked_arguments(job.actor, job.args, job.kwargs)
    return doc


def jobs(args: argparse.Namespace, ops: Deployment, out: Output) -> int:
    """The jobs waiting in a queue, in the order workers take them (ready), then the delayed ones."""
    queue = _queue_name(args.queue)
    waiting = ops.inspector.waiting(queue, limit=args.limit)
    now = time.time()
    data = {"queue": queue, "jobs": [_job_dict(job, args.show_sql) for job in waiting]}

    def draw(o: Output) -> None:
        rows = [
            (
                j.position,
                j.state,
                j.task_id,
                j.actor,
                _arguments(j.actor, j.args, j.kwargs, args.show_sql),
                j.user,
                ago(j.enqueued_at, now),
                clock(j.eta),
            )
            for j in waiting
        ]
        o.table(f"Waiting in {queue}", [">#", "State", "Task", "Actor", "Arguments", "User", "Enqueued", "Eta"],
                rows, empty="nothing is waiting")  # fmt: skip

    out.emit(data, draw)
    return EXIT_OK


def purge(args: argparse.Namespace, ops: Deployment, out: Output) -> int:
    """Drop every job waiting in a queue; each becomes REVOKED, so the backend's pollers stop waiting."""
    queue = _queue_name(args.queue)
    depth = next(iter(ops.inspector.depths([queue])))
    waiting = depth.ready + depth.delayed
    if not args.yes and not _confirm(f"Purge the {waiting} job(s) waiting in {queue!r}? [y/N] "):
        out.emit({"queue": queue, "purged": 0, "aborted": True}, lambda o: o.line("nothing purged"))
        return EXIT_NOT_FOUND
    purged = ops.inspector.purge(queue)
    data = {"queue": queue, "purged": len(purged), "task_ids": [job.task_id for job in purged]}
    out.emit(data, lambda o: o.line(f"purged {len(purged)} job(s) from {queue}; each is now REVOKED"))
    return EXIT_OK


def _confirm(question: str) -> bool:
    """Ask on the terminal; without one (a script), the answer is no: scripts pass ``--yes``."""
    if not sys.stdin.isatty():
        print("rosetta-jobs: not a terminal, so nothing purged; pass --yes to purge without asking", file=sys.stderr)
        return False
    return input(question).strip().lower() in ("y", "yes")


# --- dead letters ---------------------------------------------------------------------------------------------------


def _letter_dict(letter: DeadLetter, show_sql: bool) -> dict[str, Any]:
    doc = letter.asdict()
    if not show_sql:
        doc["args"], doc["kwargs"] = masked_arguments(letter.actor, letter.args, letter.kwargs)
    return doc


def dead_letters(args: argparse.Namespace, ops: Deployment, out: Output) -> int:
    """The dead letters of a queue, newest first, with the error their task recorded."""
    queue = _queue_name(args.queue)
    letters = ops.inspector.dead_letters(queue, limit=args.limit)
    data = {"queue": queue, "dead_letters": [_letter_dict(letter, args.show_sql) for letter in letters]}

    def draw(o: Output) -> None:
        rows = [
            (
                clock(d.dead_lettered_at),
                d.task_id,
                d.redis_id,
                d.actor,
                _arguments(d.actor, d.args, d.kwargs, args.show_sql),
                f"{d.exc_type}: {d.error}" if d.exc_type else d.error,
            )
            for d in letters
        ]
        o.table(f"Dead letters of {queue}", ["Dead-lettered", "Task", "Redis id", "Actor", "Arguments", "Error"],
                rows, empty="no dead letters")  # fmt: skip

    out.emit(data, draw)
    return EXIT_OK


def _find_letter(ops: Deployment, queue: str, ident: str) -> DeadLetter | None:
    """A dead letter by its redis id or by its task id."""
    letter = ops.inspector.dead_letter(queue, ident)
    if letter is not None:
        return letter
    return next((d for d in ops.inspector.dead_letters(queue, limit=100_000) if d.task_id == ident), None)


def requeue(args: argparse.Namespace, ops: Deployment, out: Output) -> int:
    """Put a dead letter (by task or redis id), or all of a queue's, back at the end of its queue."""
    queue = _queue_name(args.queue)
    if args.all == (args.id is not None):
        raise _usage("requeue: give one dead letter's id (task or redis id), or --all")
    if args.all:
        moved = ops.inspector.requeue_all(queue)
        out.emit({"queue": queue, "requeued": moved}, lambda o: o.line(f"requeued {moved} dead letter(s) of {queue}"))
        return EXIT_OK
    letter = _find_letter(ops, queue, args.id)
    if letter is None or not ops.inspector.requeue(queue, letter.redis_id):
        out.emit({"queue": queue, "requeued": 0}, lambda o: o.line(f"no dead letter {args.id} in {queue}"))
        return EXIT_NOT_FOUND
    data = {"queue": queue, "requeued": 1, "task_id": letter.task_id}
    out.emit(data, lambda o: o.line(f"requeued {letter.task_id} on {queue}; it runs again under the same id"))
    return EXIT_OK


def delete(args: argparse.Namespace, ops: Deployment, out: Output) -> int:
    """Drop one dead letter (by task or redis id) for good; its FAILURE state stays until it expires."""
    queue = _queue_name(args.queue)
    letter = _find_letter(ops, queue, args.id)
    if letter is None or not ops.inspector.delete(queue, letter.redis_id):
        out.emit({"queue": queue, "deleted": False}, lambda o: o.line(f"no dead letter {args.id} in {queue}"))
        return EXIT_NOT_FOUND
    out.emit({"queue": queue, "deleted": True, "task_id": letter.task_id},
             lambda o: o.line(f"deleted the dead letter of {letter.task_id}"))  # fmt: skip
    return EXIT_OK


# --- cancel and history ---------------------------------------------------------------------------------------------


def cancel(args: argparse.Namespace, ops: Deployment, out: Output) -> int:
    """Cancel a task: a queued one never starts, a running one is stopped; it ends REVOKED."""
    answer = ops.client.cancel(args.task_id)
    text = f"cancelled {args.task_id}" if answer["cancelled"] else f"not cancelled: {answer.get('reason')}"
    out.emit(answer, lambda o: o.line(text))
    return EXIT_OK if answer["cancelled"] else EXIT_NOT_FOUND


_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)\s*$", re.IGNORECASE)
_UNIT = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_since(text: str, *, now: float | None = None) -> float:
    """Epoch seconds of ``--since``: a duration back from now (``90s``, ``15m``, ``1h``, ``2d``) or an ISO time."""
    import datetime as dt

    match = _SINCE.match(text)
    if match:
        return (now or time.time()) - float(match.group(1)) * _UNIT[match.group(2).lower()]
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (15m, 1h, 2d) nor an ISO time") from None
    return moment.timestamp()


def history(args: argparse.Namespace, ops: Deployment, out: Output) -> int:
    """Recent finished tasks, newest first, from the task history (``TASK_HISTORY_MAX``, ``TASK_HISTORY_MAX_AGE``)."""
    where = HistoryFilter(actor=args.actor, state=args.state, user=args.user, queue=args.queue, since=args.since)
    entries = ops.history.recent(where, limit=args.limit)
    data = {"tasks": entries, "kept": ops.history.count()}

    def draw(o: Output) -> None:
        rows = [
            (
                clock(e.get("finished_at")),
                e.get("task_id"),
                e.get("actor"),
                e.get("queue"),
                e.get("state"),
                e.get("user"),
                e.get("sql_digest"),
                seconds(_runtime(e)),
                e.get("error_type") or e.get("reason"),
            )
            for e in entries
        ]
        o.table(None, ["Finished", "Task", "Actor", "Queue", "State", "User", "SQL sha256", ">Ran", "Error"], rows,
                empty="no finished task matches")  # fmt: skip

    out.emit(data, draw)
    return EXIT_OK


def _runtime(entry: dict[str, Any]) -> float | None:
    started, finished = entry.get("started_at"), entry.get("finished_at")
    return finished - started if started and finished else None
