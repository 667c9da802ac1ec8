"""The ``rosetta-jobs`` command: the worker, the ops service, and the operators' and developers' tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .config import get_settings
from .errors import RosettaJobsError

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    from .api import serve

    settings = get_settings()
    serve(settings, host=args.host or settings.server_host, port=args.port or settings.server_port)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(sql=args.sql, rows=args.rows, timeout=args.timeout)


def _config_docs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .configdoc import render

    text = render()
    if args.output is None:
        sys.stdout.write(text)
        return 0
    path = Path(args.output)
    if args.check:
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            print(f"{path} is stale: run `make docs` (rosetta-jobs config-docs --output {path})", file=sys.stderr)
            return 1
        return 0
    path.write_text(text, encoding="utf-8")
    return 0


def _check(args: argparse.Namespace) -> int:
    """Exit 1 unless this host has ``--min-processes`` worker processes with a fresh heartbeat.

    The container health check: the heartbeat is what ``/health`` and the recovery of lost jobs
    go by, so a worker whose heartbeat stopped is unhealthy even if its process still exists.
    """
    import socket
    import time

    import redis

    from .connection import redis_client
    from .redact import redact
    from .workers import read_workers

    settings = get_settings()
    hostname = args.hostname or socket.gethostname()
    max_age = args.max_age if args.max_age is not None else settings.heartbeat_ttl
    try:
        results = redis_client(settings.result_backend_url, sentinel=settings.sentinel)
        workers = read_workers(results, settings.broker_namespace)
    except redis.RedisError as exc:
        where = redact(settings.result_backend_url)
        print(f"unhealthy: cannot read heartbeats at {where}: {redact(str(exc))}", file=sys.stderr)
        return 1
    now = time.time()
    mine = [w for w in workers if w.hostname == hostname]
    fresh = [w for w in mine if w.state == "running" and now - w.last_seen <= max_age]
    if len(fresh) < args.min_processes:
        seen = ", ".join(f"pid {w.pid} {w.state} {now - w.last_seen:.0f} s ago" for w in mine) or "none"
        print(
            f"unhealthy: {len(fresh)} of {args.min_processes} worker processes on {hostname} have a heartbeat "
            f"younger than {max_age:g} s (seen: {seen})",
            file=sys.stderr,
        )
        return 1
    print(f"healthy: {len(fresh)} worker processes on {hostname}, {sum(w.busy for w in fresh)} jobs running")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rosetta-jobs", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the ops HTTP service (health, metrics, tasks, admin)")
    serve.add_argument("--host", default=None, help="default: SERVER_HOST")
    serve.add_argument("--port", type=int, default=None, help="default: SERVER_PORT")
    serve.set_defaults(run=_serve)

    demo = commands.add_parser("demo", help="seed a demo config database and source table, run one preview")
    demo.add_argument("--sql", default=None, help="custom SQL over the demo table 'orders'")
    demo.add_argument("--rows", type=int, default=10, help="rows to print")
    demo.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the result")
    demo.set_defaults(run=_demo)

    docs = commands.add_parser("config-docs", help="print (or write) docs/configuration.md, generated from Settings")
    docs.add_argument("--output", default=None, help="write to this file instead of stdout")
    docs.add_argument("--check", action="store_true", help="with --output: exit 1 if the file is not up to date")
    docs.set_defaults(run=_config_docs)

    check = commands.add_parser("check", help="exit 1 unless a worker on this host has a fresh heartbeat")
    check.add_argument("--min-processes", type=int, default=1, help="worker processes that must be alive")
    check.add_argument("--max-age", type=float, default=None, help="seconds; default HEARTBEAT_TTL")
    check.add_argument("--hostname", default=None, help="default: this host's name, as the worker records it")
    check.set_defaults(run=_check)

    worker = commands.add_parser(
        "worker",
        add_help=False,
        help="run a worker with dramatiq's flags (-p, -t, -Q, ...); a process that dies is replaced",
    )
    worker.set_defaults(run=_worker)
    _operators(commands)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"{text} is not between 1 and 100000")
    return value


def _operators(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The operators' commands (``commands.py``), each with ``--json``."""
    from . import commands as ops

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    sql = argparse.ArgumentParser(add_help=False)
    sql.add_argument("--show-sql", action="store_true", help="show SQL arguments in clear, not as their sha256")

    def add(name: str, command: ops.Command, help: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, parents=[common, *parents], description=command.__doc__)
        sub.set_defaults(run=ops.run(command))
        return sub

    inspect = add("inspect", ops.inspect, "one task: state, actor, queue, arguments, worker, timings, result", sql)
    inspect.add_argument("task_id")
    inspect.add_argument("--traceback", action="store_true", help="print a failed task's traceback")
    add("queues", ops.queues, "depth of every queue; queues with work and no live consumer are flagged (exit 4)")
    add("workers", ops.workers, "live worker processes: queues, threads, busy, processed, last heartbeat")
    jobs = add("jobs", ops.jobs, "the jobs waiting in a queue, in the order workers take them", sql)
    jobs.add_argument("queue")
    jobs.add_argument("--limit", type=_positive, default=50, help="at most this many (default 50)")
    purge = add("purge", ops.purge, "drop every job waiting in a queue; each becomes REVOKED")
    purge.add_argument("queue")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    letters = add("dead-letters", ops.dead_letters, "the dead letters of a queue, newest first", sql)
    letters.add_argument("queue")
    letters.add_argument("--limit", type=_positive, default=50, help="at most this many (default 50)")
    requeue = add("requeue", ops.requeue, "put a dead letter (or --all) back on its queue")
    requeue.add_argument("queue")
    requeue.add_argument("id", nargs="?", default=None, help="the dead letter's task id or redis id")
    requeue.add_argument("--all", action="store_true", help="every dead letter of the queue")
    delete = add("delete", ops.delete, "drop one dead letter for good")
    delete.add_argument("queue")
    delete.add_argument("id", help="the dead letter's task id or redis id")
    cancel = add("cancel", ops.cancel, "cancel a task: a queued one never starts, a running one is stopped")
    cancel.add_argument("task_id")
    history = add("history", ops.history, "recent finished tasks, newest first")
    history.add_argument("--actor", default=None, help="e.g. worker.preview.execute")
    history.add_argument("--state", default=None, choices=["SUCCESS", "FAILURE", "REVOKED"], type=str.upper)
    history.add_argument("--user", default=None, help="the user_id the job was sent with")
    history.add_argument("--queue", default=None)
    history.add_argument("--since", default=None, type=ops.parse_since, help="15m, 1h, 2d, or an ISO time")
    history.add_argument("--limit", type=_positive, default=50, help="at most this many (default 50)")


def _worker(args: argparse.Namespace) -> int:
    from .supervisor import main as supervise

    return supervise(args.dramatiq_args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "worker":
        args.dramatiq_args = rest  # dramatiq's own flags, parsed by dramatiq's own parser
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except RosettaJobsError as exc:
        print(f"rosetta-jobs: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
