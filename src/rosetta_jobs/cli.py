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
