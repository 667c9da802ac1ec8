"""A real Redis Sentinel topology on private ports: a master, a replica, three Sentinels.

``SentinelTopology.start(root)`` writes each server's config file under ``root``, starts
``redis-server`` processes (Sentinels as ``redis-server sentinel.conf --sentinel``) and waits until every
Sentinel knows the replica and the two other Sentinels, so that both a forced failover (``failover``:
``SENTINEL FAILOVER``, no wait for the down-after period) and a real one (``kill_master``: SIGKILL) work.
``stop`` kills every process it started and removes the directory it made; use it in a ``finally`` (or
a fixture's teardown). The servers also die with the process that started them (``PR_SET_PDEATHSIG``),
so a test run killed outright leaves none behind.

The config writers (``server_config``, ``sentinel_config``) take the host to bind, so a rig that puts
each server in a network namespace of its own can reuse them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

__all__ = ["REDIS_SERVER", "SentinelTopology", "free_ports", "sentinel_config", "server_config"]

REDIS_SERVER = os.environ.get("REDIS_SERVER", "redis-server")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` TCP ports nothing listens on now (the OS's choice, so two runs do not collide)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def server_config(*, host: str, port: int, directory: Path, replica_of: tuple[str, int] | None = None) -> str:
    """A ``redis-server`` config: no persistence (a restarted server resyncs from its master)."""
    lines = [
        f"bind {host}",
        f"port {port}",
        f"dir {directory}",
        'save ""',
        "appendonly no",
        "protected-mode no",
        "repl-diskless-sync yes",
        "repl-diskless-sync-delay 0",
        f"logfile {directory / 'redis.log'}",
    ]
    if replica_of is not None:
        lines.append(f"replicaof {replica_of[0]} {replica_of[1]}")
    return "\n".join(lines) + "\n"


def sentinel_config(
    *,
    host: str,
    port: int,
    directory: Path,
    master: tuple[str, int],
    master_name: str = "mymaster",
    quorum: int = 2,
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 5000,
    password: str | None = None,
) -> str:
    """A Sentinel's config (Sentinel rewrites the file, so it must be writable)."""
    lines = [
        f"bind {host}",
        f"port {port}",
        f"dir {directory}",
        "protected-mode no",
        f"logfile {directory / 'sentinel.log'}",
        f"sentinel monitor {master_name} {master[0]} {master[1]} {quorum}",
        f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
        f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
        f"sentinel parallel-syncs {master_name} 1",
    ]
    if password:
        lines.append(f"requirepass {password}")
    return "\n".join(lines) + "\n"


@dataclass
class SentinelTopology:
    """One master, one replica and three Sentinels, all on 127.0.0.1."""

    root: Path
    server_ports: list[int]
    sentinel_ports: list[int]
    master_name: str = "mymaster"
    host: str = "127.0.0.1"
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: Whether ``stop`` removes ``root`` (a directory ``start`` made itself).
    owns_root: bool = False

    @classmethod
    def start(
        cls, root: Path | None = None, *, master_name: str = "mymaster", timeout: float = 20.0
    ) -> SentinelTopology:
        """Start it under ``root`` (kept), or under a temporary directory that ``stop`` removes."""
        ports = free_ports(5)
        owned = root is None
        root = Path(tempfile.mkdtemp(prefix="rosetta-sentinel-")) if root is None else root
        topology = cls(root=root, server_ports=ports[:2], sentinel_ports=ports[2:], master_name=master_name,
                       owns_root=owned)  # fmt: skip
        try:
            topology._start_all()
            topology.wait_ready(timeout)
        except BaseException:
            topology.stop()
            raise
        return topology

    # --- URLs and clients -------------------------------------------------------------------------------
    def url(self, db: int = 0, *, password: str | None = None) -> str:
        """``sentinel://127.0.0.1:p1/db;sentinel://...`` as Celery writes it (the db on every Sentinel)."""
        auth = f":{password}@" if password else ""
        return ";".join(f"sentinel://{auth}{self.host}:{port}/{db}" for port in self.sentinel_ports)

    def sentinel(self, index: int = 0) -> redis.Redis:
        return redis.Redis(self.host, self.sentinel_ports[index], socket_timeout=2, decode_responses=True)

    def server(self, port: int, db: int = 0) -> redis.Redis:
        """A plain client of one server (not Sentinel-managed: it stays on that server whatever its role)."""
        return redis.Redis(self.host, port, db=db, socket_timeout=5, decode_responses=True)

    def master_port(self) -> int:
        """The master's port, as the first Sentinel reports it."""
        _, port = self.sentinel().sentinel_get_master_addr_by_name(self.master_name)
        return int(port)

    def replica_port(self) -> int:
        master = self.master_port()
        return next(p for p in self.server_ports if p != master)

    # --- faults -------------------------------------------------------------------------------------------
    def failover(self, timeout: float = 30.0) -> int:
        """``SENTINEL FAILOVER``: the replica becomes the master, the old master its replica. Returns the new port."""
        old = self.master_port()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sentinel().execute_command("SENTINEL", "FAILOVER", self.master_name)
                break
            except redis.ResponseError as exc:  # NOGOODSLAVE / INPROG: the replica is not ready yet
                if time.monotonic() > deadline:
                    raise TimeoutError(f"SENTINEL FAILOVER refused: {exc}") from None
                time.sleep(0.2)
        new = self._wait_promoted(old, deadline)
        # Sentinel demotes the old master when its next INFO (every 10 s) shows it still a master; do it now.
        with contextlib.suppress(redis.RedisError):
            self.server(old).replicaof(self.host, new)
        self.wait_replicated(max(deadline - time.monotonic(), 1.0))
        return new

    def kill_master(self, *, restart: bool = True, timeout: float = 30.0) -> tuple[int, float]:
        """SIGKILL the master; return the new master's port and the seconds until the Sentinels promoted it.

        With ``restart``, the killed server is started again, empty, as the new master's replica (as Sentinel
        would reconfigure it), and the topology waited for.
        """
        old = self.master_port()
        started = time.monotonic()
        self.kill(old)
        new = self._wait_promoted(old, started + timeout)
        promoted_after = time.monotonic() - started
        if restart:
            self._start_server(old, replica_of=(self.host, new))
            self.wait_replicated(timeout)
        return new, promoted_after

    def kill(self, port: int) -> None:
        proc = self.processes.pop(port, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def pause(self, port: int) -> None:
        """SIGSTOP a server: it holds its connections but answers nothing (a replica that lags)."""
        os.kill(self.processes[port].pid, signal.SIGSTOP)

    def resume(self, port: int) -> None:
        os.kill(self.processes[port].pid, signal.SIGCONT)

    # --- life ---------------------------------------------------------------------------------------------
    def _start_all(self) -> None:
        master, replica = self.server_ports
        self._start_server(master, replica_of=None)
        self._start_server(replica, replica_of=(self.host, master))
        for port in self.sentinel_ports:
            directory = self.root / f"sentinel-{port}"
            directory.mkdir(parents=True, exist_ok=True)
            conf = directory / "sentinel.conf"
            conf.write_text(sentinel_config(host=self.host, port=port, directory=directory,
                                            master=(self.host, master), master_name=self.master_name))  # fmt: skip
            self._spawn(port, [REDIS_SERVER, str(conf), "--sentinel"])

    def _start_server(self, port: int, *, replica_of: tuple[str, int] | None) -> None:
        directory = self.root / f"redis-{port}"
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "redis.conf"
        conf.write_text(server_config(host=self.host, port=port, directory=directory, replica_of=replica_of))
        self._spawn(port, [REDIS_SERVER, str(conf)])

    def _spawn(self, port: int, args: list[str]) -> None:
        self.processes[port] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                preexec_fn=_die_with_parent)  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis(self.host, port, socket_timeout=1).ping():
                    return
            if time.monotonic() > deadline or self.processes[port].poll() is not None:
                raise RuntimeError(f"redis-server on port {port} did not start: {args}")
            time.sleep(0.05)

    def _wait_promoted(self, old: int, deadline: float) -> int:
        """Until every Sentinel names a new master and that server says it is one."""
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, IndexError):
                ports = {
                    int(self.sentinel(i).sentinel_get_master_addr_by_name(self.master_name)[1])
                    for i in range(len(self.sentinel_ports))
                }
                new = ports.pop() if len(ports) == 1 else old
                if new != old and self.server(new).info("replication")["role"] == "master":
                    return new
            time.sleep(0.1)
        raise TimeoutError(f"no Sentinel promoted a replica of port {old}")

    def wait_replicated(self, timeout: float = 20.0) -> None:
        """Until the master the Sentinels name has a replica online (what WAIT counts)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, KeyError):
                info = self.server(self.master_port()).info("replication")
                if info.get("role") == "master" and info["slave0"]["state"] == "online":
                    return
            time.sleep(0.05)
        raise TimeoutError(f"no replica in sync after {timeout} s; logs in {self.root}")

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until every Sentinel sees the master, one replica in sync, and the two other Sentinels."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                if all(self._ready(i) for i in range(len(self.sentinel_ports))):
                    return
            except redis.RedisError as exc:
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"Sentinel topology not ready after {timeout} s ({last}); logs in {self.root}")

    def _ready(self, index: int) -> bool:
        sentinel = self.sentinel(index)
        master = sentinel.sentinel_master(self.master_name)
        if master.get("num-other-sentinels", 0) < len(self.sentinel_ports) - 1 or master.get("num-slaves", 0) < 1:
            return False
        if any(flag in master.get("flags", "") for flag in ("s_down", "o_down", "failover")):
            return False
        replicas = sentinel.sentinel_slaves(self.master_name)
        ok = [r for r in replicas if r.get("master-link-status") == "ok" and "s_down" not in r.get("flags", "")]
        if not ok:
            return False
        info = self.server(int(master["port"])).info("replication")
        return info.get("role") == "master" and int(info.get("connected_slaves", 0)) >= 1

    def stop(self) -> None:
        """Kill every process this topology started; remove ``root`` if ``start`` made it."""
        for proc in self.processes.values():
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self.processes.clear()
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
