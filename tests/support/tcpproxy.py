"""A TCP forwarder whose link can be cut and healed, to put a real process on the far side of a partition.

``cut()`` behaves as a pulled cable does for the process behind the proxy: bytes already sent wait (the
forwarder stops reading; the kernel buffers them, as TCP retransmission would), so a command in flight hangs
instead of failing, and a new connection is refused at once. ``heal()`` lets the waiting bytes through in both
directions, as a link that comes back does. Used by ``tests/test_partition.py``; the multi-host rig
(``bench/chaos_cluster.py``) cuts real links in network namespaces instead, and runs this module as a plain
forwarder (``python tcpproxy.py LISTEN_HOST:PORT UPSTREAM_HOST:PORT``) to let its namespaced hosts reach
the PostgreSQL server that listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import selectors
import signal
import socket
import sys
import threading

__all__ = ["TcpProxy"]


class TcpProxy:
    """Forwards ``listen`` (default ``127.0.0.1:<a free port>``) to ``upstream``; ``cut()`` and ``heal()`` the link."""

    def __init__(self, upstream: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(listen, reuse_port=False)
        self.port: int = self._listener.getsockname()[1]
        self._linked = threading.Event()
        self._linked.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="tcpproxy-accept", daemon=True).start()

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def cut(self) -> None:
        self._linked.clear()

    def heal(self) -> None:
        self._linked.set()

    def close(self) -> None:
        self._closed.set()
        self._linked.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._linked.is_set():  # no route to the host: the connection fails at once
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), name="tcpproxy-pump", daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        peer = {client: server, server: client}
        with selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ)
            selector.register(server, selectors.EVENT_READ)
            while not self._closed.is_set():
                if not self._linked.wait(0.2):
                    continue  # cut: read nothing, so everything sent waits in the kernel's buffers
                for key, _ in selector.select(0.2):
                    if not self._linked.is_set():
                        break
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = sock.recv(65536)
                        if not data:
                            raise OSError("closed")
                        peer[sock].sendall(data)
                    except OSError:
                        for end in (client, server):
                            with contextlib.suppress(OSError):
                                end.close()
                        return


def _address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


if __name__ == "__main__":
    proxy = TcpProxy(_address(sys.argv[2]), listen=_address(sys.argv[1]))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    finally:
        proxy.close()
