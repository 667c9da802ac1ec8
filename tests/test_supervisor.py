"""``rosetta-jobs worker``: a worker process killed the OOM killer's way is replaced, and its jobs still finish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rosetta_jobs.client import JobClient
from rosetta_jobs.workers import read_workers

from .conftest import ROOT, WorkerProcess, wait_until, worker_env


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc: no psutil here)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return sorted(found)


def test_a_killed_worker_process_is_replaced_and_its_job_still_finishes(
    start_worker: Callable[..., WorkerProcess], client: JobClient
) -> None:
    # Given `rosetta-jobs worker -p 2` running 3 s jobs (one process may have prefetched both)
    worker = start_worker(supervised=True, processes=2, threads=1, HEARTBEAT_TIMEOUT_MS="2000")
    before = children(worker.proc.pid)
    assert len(before) == 2
    jobs = [client.send("tests.pid", (3.0,)) for _ in range(2)]
    wait_until(lambda: any(w.busy for w in read_workers(client.store.client, "dramatiq")), 10, "a job running")

    # When a process running a job is SIGKILLed, as the OOM killer does
    victim = next(w.pid for w in read_workers(client.store.client, "dramatiq") if w.busy)
    survivor = next(pid for pid in before if pid != victim)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()

    # Then a new process takes its place within seconds, and the other one kept running
    def replaced() -> bool:  # one look at /proc: two looks can see the dead one unreaped, then reaped
        now = children(worker.proc.pid)
        return len(now) == 2 and victim not in now

    wait_until(replaced, 10, "respawn")
    replaced_in = time.monotonic() - killed_at
    after = children(worker.proc.pid)
    assert survivor in after and replaced_in < 5
    # And the dead one no longer counts as alive (its heartbeat is removed, not left to expire)
    assert victim not in {w.pid for w in read_workers(client.store.client, "dramatiq")}
    wait_until(lambda: worker.output().count("Worker process is ready for action") == 3, 15, "the new one ready")

    # And both jobs end SUCCESS: the killed one's is requeued and run again by a live process
    wait_until(lambda: all(client.store.is_final(job) for job in jobs), 30, "both jobs final")
    assert [client.get_task_status(job)["state"] for job in jobs] == ["SUCCESS", "SUCCESS"]
    assert {client.get_task_status(job)["result"] for job in jobs} <= set(after)
    assert "died (signal SIGKILL)" in worker.output()

    # And new jobs are served by both processes
    more = [client.send("tests.pid", (0.2,)) for _ in range(4)]
    wait_until(lambda: all(client.store.is_final(job) for job in more), 15, "new jobs final")
    assert {client.get_task_status(job)["result"] for job in more} <= set(after)

    # When the master is stopped with SIGTERM, Then everything stops cleanly
    assert worker.stop() == 0
    assert "all worker processes stopped" in worker.output()


def test_a_worker_that_cannot_import_its_modules_stops_instead_of_looping(tmp_path: Path) -> None:
    # Given a module that does not exist
    args = [sys.executable, "-m", "rosetta_jobs.cli", "worker", "rosetta_jobs.actors", "no_such_module", "-p", "1"]
    # When the worker starts
    out = subprocess.run(args, cwd=ROOT, env=worker_env(), capture_output=True, text=True, timeout=60)
    # Then it exits 2 (Dramatiq's code for an import error) after one attempt, saying why
    assert out.returncode == 2, out.stderr
    assert "could not import" in out.stderr and out.stderr.count("started (pid") == 1


def test_dramatiq_flags_it_cannot_honour_are_refused() -> None:
    # When the worker is asked to watch files, Then it refuses at once, naming the flag and the way out
    args = [sys.executable, "-m", "rosetta_jobs.cli", "worker", "--watch", str(ROOT)]
    out = subprocess.run(args, cwd=ROOT, env=worker_env(), capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "--watch is not supported" in out.stderr


def test_a_foreground_worker_is_one_process_that_runs_jobs_and_stops_on_ctrl_c(
    start_worker: Callable[..., WorkerProcess], client: JobClient
) -> None:
    # Given `rosetta-jobs worker --foreground -t 2`
    worker = start_worker(foreground=True, threads=2)
    # Then it is one process: no master above a worker process
    assert children(worker.proc.pid) == []
    assert [w.pid for w in read_workers(client.store.client, "dramatiq")] == [worker.proc.pid]

    # When jobs are sent, Then that very process runs them
    jobs = [client.send("tests.pid", (0.1,)) for _ in range(3)]
    wait_until(lambda: all(client.store.is_final(job) for job in jobs), 20, "jobs final")
    assert {client.get_task_status(job)["result"] for job in jobs} == {worker.proc.pid}

    # When it gets SIGINT (Ctrl-C), Then it stops cleanly, and its heartbeat goes with it
    worker.proc.send_signal(signal.SIGINT)
    assert worker.proc.wait(30) == 0
    assert "stopping the worker (SIGINT)" in worker.output() and "worker stopped" in worker.output()
    assert read_workers(client.store.client, "dramatiq") == []


def test_foreground_refuses_more_than_one_process() -> None:
    # When the worker is asked for two processes in the foreground, Then it refuses, naming the way out
    args = [sys.executable, "-m", "rosetta_jobs.cli", "worker", "--foreground", "-p", "2"]
    out = subprocess.run(args, cwd=ROOT, env=worker_env(), capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "--foreground runs one process: drop -p 2" in out.stderr
