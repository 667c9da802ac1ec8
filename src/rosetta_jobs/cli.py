"""The ``rosetta-jobs`` command: operator and developer entry points next to ``dramatiq rosetta_jobs.actors``."""

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

    from .redact import redact
    from .store import redis_client
    from .workers import read_workers

    settings = get_settings()
    hostname = args.hostname or socket.gethostname()
    max_age = args.max_age if args.max_age is not None else settings.heartbeat_ttl
    try:
        workers = read_workers(redis_client(settings.result_backend_url), settings.broker_namespace)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except RosettaJobsError as exc:
        print(f"rosetta-jobs: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
