"""``rosetta-jobs worker``: Dramatiq's worker processes under a master that replaces a process that dies.

Why a master of our own: ``dramatiq rosetta_jobs.actors -p N`` stops *every* process when one dies (an OOM
kill, a segfault in a C extension) and exits, so one SIGKILL takes the whole worker down until something
outside restarts it, and the surviving processes first drain their jobs for up to
``--worker-shutdown-timeout`` while taking no new ones. A supervisor outside (compose's restart policy,
systemd) restores service only after that whole drain and a cold start. Here the master starts a new
process in the dead one's place within ``RESTART_DELAY`` seconds, the others keep working, and the jobs the
dead process held are requeued by ``Recovery`` (after ``HEARTBEAT_TIMEOUT_MS``) and run by any live process,
the new one included. A process that keeps dying waits longer each time (up to ``MAX_RESTART_DELAY``), and
a worker that cannot even import its actors stops the master (exit 2), as Dramatiq's does. The container
restart policy and the systemd unit (``docs/operations.md``) remain for the master itself.

The worker processes are Dramatiq's own (``dramatiq.cli.worker_process``, same flags, same signals, same
"Worker process is ready for action."); only the master is ours, so its own lines are loguru's, JSON under
``LOG_FORMAT=json`` like every worker line (Dramatiq's master writes plain text whatever the setting). The
master is single-threaded: it forks new processes while running, which must not happen under another
thread's lock.

Dramatiq's CLI module says its contents may change without notice: what is used here (``make_argument_parser``,
``worker_process``, ``import_broker``, ``Canteen``, ``StreamablePipe``, the ``RET_*`` codes) is that of
``DRAMATIQ_CLI_VERSION``, and ``tests/test_supervisor.py`` runs it for real.

``--foreground`` runs one worker process as the command's own process, with no master: for a container or a
systemd unit that restarts the process itself (``restart: unless-stopped``, ``Restart=always``). It saves
the master's interpreter (26 MiB resident for Dramatiq's, measured in ``make bench``'s lean burst); what
it gives up is the master's restart within a second: a process killed there is restored by whatever runs
it, and its jobs are requeued by ``Recovery``, as when a whole host dies.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any, TextIO

from dramatiq import Worker
from dramatiq import __version__ as dramatiq_version
from dramatiq import cli as dramatiq_cli
from dramatiq.canteen import Canteen
from dramatiq.compat import StreamablePipe
from dramatiq.errors import ConnectionError as BrokerConnectionError
from loguru import logger

from .errors import RosettaJobsError

__all__ = [
    "DRAMATIQ_CLI_VERSION",
    "MAX_RESTART_DELAY",
    "RESTART_DELAY",
    "Supervisor",
    "main",
    "parse_args",
    "run_in_foreground",
]

#: The Dramatiq release whose ``dramatiq.cli`` internals this module uses.
DRAMATIQ_CLI_VERSION = "2.2"
#: Seconds before a dead process is replaced; doubled for each death of the same slot within ``STORMY``.
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
#: A slot whose process died less than this many seconds after the previous death is crash-looping.
STORMY = 60.0
#: Dramatiq flags that a worker under this master cannot honour.
_UNSUPPORTED = {"watch": "--watch", "forks": "--fork-function", "use_spawn": "--use-spawn"}
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_fork = multiprocessing.get_context("fork")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Dramatiq's own flags; the broker module is ``rosetta_jobs.actors`` unless given first."""
    parser = dramatiq_cli.make_argument_parser()
    parser.prog = "rosetta-jobs worker"
    parser.description = "Run rosetta-jobs worker processes, replacing any that dies. Dramatiq's flags."
    parser.add_argument(
        "--foreground",
        action="store_true",
        help="run one worker process as this process, without a master, for a container or systemd unit that "
        "restarts it (saves the master's memory); -p must be 1 or left out",
    )
    cpus = parser.get_default("processes")
    parser.set_defaults(processes=None)  # to tell an explicit -p from the default
    if "rosetta_jobs.actors" not in argv:  # the broker module, wherever it is given among the flags
        argv = ["rosetta_jobs.actors", *argv]
    args: argparse.Namespace = parser.parse_args(argv)
    for name, flag in _UNSUPPORTED.items():
        if getattr(args, name):
            parser.error(f"{flag} is not supported by rosetta-jobs worker; run dramatiq itself for it")
    if args.foreground and args.processes not in (None, 1):
        parser.error(f"--foreground runs one process: drop -p {args.processes} (or run without --foreground)")
    args.processes = args.processes or (1 if args.foreground else cpus)
    return args


@dataclass(eq=False)
class _Slot:
    """One worker process's place: the process in it now, its log pipe, and its recent deaths."""

    number: int
    process: Any = None
    pipe: Connection | None = None
    started_at: float = 0.0
    deaths: list[float] = field(default_factory=list)
    restart_at: float | None = None

    def restart_delay(self, now: float) -> float:
        self.deaths = [*(t for t in self.deaths if now - t < STORMY), now]
        return float(min(RESTART_DELAY * 2 ** (len(self.deaths) - 1), MAX_RESTART_DELAY))


class Supervisor:
    """Starts ``args.processes`` Dramatiq worker processes and keeps that many running until told to stop."""

    def __init__(self, args: argparse.Namespace, *, output: TextIO | None = None) -> None:
        self.args = args
        self.output = output or sys.stderr
        self.slots = [_Slot(number) for number in range(args.processes)]
        self.pipes: list[Connection] = []  # every open read end, a dead process's until it is drained
        self.canteen = _fork.Value(Canteen)
        self.stopping: signal.Signals | None = None
        self.reload = False
        self.exit_code = 0

    # --- the processes -----------------------------------------------------------------------------------------
    def _start(self, slot: _Slot) -> None:
        read, write = _fork.Pipe(duplex=False)
        started = _fork.Event()
        process = _fork.Process(
            target=dramatiq_cli.worker_process,
            args=(self.args, slot.number, StreamablePipe(write), self.canteen, started),
            daemon=False,
        )
        _block_signals()
        try:
            process.start()
        finally:
            _unblock_signals()
        write.close()
        slot.process, slot.pipe, slot.started_at, slot.restart_at = process, read, time.time(), None
        self.pipes.append(read)
        logger.info("worker process {} started (pid {})", slot.number, process.pid)

    def _reap(self, slot: _Slot, now: float) -> None:
        """The process of ``slot`` has exited: schedule its replacement, unless the master is stopping."""
        process, slot.process = slot.process, None
        process.join(0)
        code = process.exitcode
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        if self.stopping is not None:
            logger.info("worker process {} (pid {}) stopped ({})", slot.number, process.pid, how)
            if code not in (0, None) and code != -signal.SIGTERM:
                self.exit_code = self.exit_code or dramatiq_cli.RET_KILLED
            return
        if code == dramatiq_cli.RET_IMPORT:
            logger.critical("worker process {} could not import its modules ({}); stopping", slot.number, how)
            self.exit_code = dramatiq_cli.RET_IMPORT
            self.stop(signal.SIGTERM)
            return
        self._forget(process.pid)
        delay = slot.restart_delay(now)
        slot.restart_at = now + delay
        logger.error(
            "worker process {} (pid {}) died ({}) after {:.0f} s; starting a new one in {:g} s. Its jobs are "
            "requeued by the other processes once its heartbeat is stale",
            slot.number, process.pid, how, now - slot.started_at, delay,
        )  # fmt: skip

    @staticmethod
    def _forget(pid: int) -> None:
        """Remove a dead process's heartbeat now, not when its TTL runs out: ``/health``, ``rosetta-jobs check``
        and ``workers`` stop counting it at once. (Its jobs are recovered by Dramatiq's heartbeats, not these.)"""
        import redis

        from .config import get_settings
        from .connection import redis_client
        from .layout import Keys

        try:
            settings = get_settings()
            keys, worker_id = Keys(settings.broker_namespace), f"{socket.gethostname()}:{pid}"
            client = redis_client(settings.result_backend_url, sentinel=settings.sentinel)
            client.delete(keys.worker(worker_id))
            client.zrem(keys.workers(), worker_id)
        except (redis.RedisError, RosettaJobsError) as exc:
            logger.warning("could not remove the heartbeat of the dead process {}: {}", pid, exc)

    def stop(self, signum: signal.Signals) -> None:
        """Ask every process to stop (SIGTERM twice: stop now); dead slots are not replaced any more.

        Called from the signal handler too, so it does not log (a handler that logs can deadlock on the
        lock of the line it interrupted): the loop says so.
        """
        self.stopping = signum
        for slot in self.slots:
            if slot.process is not None:  # not polled here: a handler must not reap under the loop's feet
                with contextlib.suppress(OSError):
                    os.kill(slot.process.pid, signal.SIGTERM)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        self.reload = self.reload or sig == signal.SIGHUP
        self.stop(signal.SIGTERM if sig in (signal.SIGINT, signal.SIGHUP) else sig)

    # --- the loop ----------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Run until every process has stopped after a signal; the exit code (``RET_IMPORT`` if they cannot start)."""
        logger.info(
            "rosetta-jobs worker: {} processes x {} threads (dramatiq {}), modules {}",
            self.args.processes, self.args.threads, dramatiq_version, [self.args.broker, *self.args.modules],
        )  # fmt: skip
        for slot in self.slots:
            self._start(slot)
        for sig in _SIGNALS:
            signal.signal(sig, self._on_signal)
        announced = False
        while True:
            alive = [slot for slot in self.slots if slot.process is not None]
            if self.stopping is not None and not announced:
                logger.info("stopping the worker processes ({})", self.stopping.name)
                announced = True
            if self.stopping is not None and not alive:
                break
            sentinels = [slot.process.sentinel for slot in alive]
            for ready in wait([*self.pipes, *sentinels], timeout=0.5):
                if isinstance(ready, Connection):
                    self._copy(ready)
            now = time.time()
            for slot in alive:
                if slot.process.exitcode is not None:
                    self._reap(slot, now)
            for slot in self.slots:
                if self.stopping is None and slot.process is None and (slot.restart_at or 0) <= now:
                    self._start(slot)
        for pipe in list(self.pipes):
            self._copy(pipe)
        logger.info("all worker processes stopped")
        return self.exit_code

    def _copy(self, pipe: Connection) -> None:
        """Write what a process logged (already formatted: JSON or text) to the master's output."""
        try:
            while pipe.poll():
                self.output.write(pipe.recv_bytes().decode("utf-8", errors="replace"))
        except (EOFError, OSError):
            pipe.close()
            self.pipes.remove(pipe)
        self.output.flush()


def run_in_foreground(args: argparse.Namespace) -> int:
    """Run one Dramatiq worker in this process until SIGTERM, SIGINT or SIGHUP (twice: at once).

    The steps of ``dramatiq.cli.worker_process``, but with our own signal handling: that function ignores
    SIGINT, which its master turns into a SIGTERM; here nothing would, and Ctrl-C must stop the worker.
    """
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)
        if len(stopping) > 1:
            raise SystemExit(dramatiq_cli.RET_KILLED)

    for sig in _SIGNALS:
        signal.signal(sig, on_signal)
    try:
        _, broker = dramatiq_cli.import_broker(args.broker)
        broker.emit_after("process_boot")
        for module in args.modules:
            importlib.import_module(module)
        worker = Worker(broker, queues=args.queues, worker_threads=args.threads)
        worker.start()
    except ImportError:
        logger.exception("could not import the worker's modules")
        return int(dramatiq_cli.RET_IMPORT)
    except BrokerConnectionError:
        logger.exception("could not connect to the broker")
        return int(dramatiq_cli.RET_CONNECT)
    logger.info("Worker process is ready for action.")  # Dramatiq's words: the line tools and tests wait for
    while not stopping:
        time.sleep(0.2)
    logger.info("stopping the worker ({})", signal.Signals(stopping[0]).name)
    worker.stop(timeout=args.worker_shutdown_timeout)
    broker.close()
    logger.info("worker stopped")
    return 0


def _block_signals() -> None:
    # A new process must not run the master's handlers before Dramatiq's worker_process installs its own.
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)


def _unblock_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)


def main(argv: list[str]) -> int:
    """``rosetta-jobs worker [dramatiq flags] [modules]``."""
    from .logs import configure_logging

    args = parse_args(argv)
    for path in args.path:
        sys.path.insert(0, path)
    with open(args.log_file, "a", encoding="utf-8") if args.log_file else contextlib.nullcontext(sys.stderr) as out:
        configure_logging(sink=out)
        if args.verbose:
            logger.warning("-v is ignored here: set LOG_LEVEL=DEBUG")
        if args.pid_file:
            try:
                dramatiq_cli.setup_pidfile(args.pid_file)
            except RuntimeError as exc:
                logger.critical("{}", exc)
                return int(dramatiq_cli.RET_PIDFILE)
        if args.foreground:
            sys.stdout = sys.stderr = out  # the broker module logs to stderr: to the log file, if there is one
            code = run_in_foreground(args)
            reload = False
        else:
            supervisor = Supervisor(args, output=out)
            code = supervisor.run()
            reload = supervisor.reload
    if args.pid_file:
        with contextlib.suppress(FileNotFoundError):
            os.remove(args.pid_file)
    if reload and code == 0:  # SIGHUP: start again, as Dramatiq's master does
        os.execv(sys.executable, [sys.executable, "-m", "rosetta_jobs.cli", "worker", *argv])
    return code
