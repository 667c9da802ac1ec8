"""A real ``rosetta-jobs serve`` process on a free port, for the tests of the ops service."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-api-key-0123456789"
ADMIN_KEY = "test-admin-key-9876543210"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServiceProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def start_service(env: dict[str, str], log: Path, timeout: float = 30.0) -> ServiceProcess:
    """Start the service with ``env`` and wait until it answers."""
    port = free_port()
    args = [sys.executable, "-m", "rosetta_jobs.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    handle = open(log, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    service = ServiceProcess(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}:\n{service.output()}")
        try:
            httpx.get(service.url + "/openapi.json", timeout=1.0)
            return service
        except httpx.TransportError:
            time.sleep(0.1)
    service.stop()
    raise TimeoutError(f"service not up after {timeout} s:\n{service.output()}")
