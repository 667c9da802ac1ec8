"""A write that many jobs ask for and one thread does, at most once per ``coalesce`` seconds.

A busy worker process ends a hundred jobs a second; its heartbeat hash and its metrics need not be
written a hundred times. Each job ``poke``s; the thread runs the write soon after, and the pokes that
come while it waits out ``coalesce`` share the next one. Used by ``middleware.heartbeat`` (which also
writes every ``interval`` without a poke) and ``middleware.metrics``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from loguru import logger

__all__ = ["Coalescer"]


class Coalescer:
    """Runs ``write`` on a thread of its own when poked, and, if it returns a number, that many seconds later
    without a poke too."""

    def __init__(self, write: Callable[[], float | None], *, coalesce: float, name: str) -> None:
        self.write = write
        self.coalesce = coalesce
        self.name = name
        self.thread: threading.Thread | None = None
        self._poked = threading.Event()
        self._stop = threading.Event()

    def start(self, *, wait: float | None = None) -> None:
        """Start the thread; its first write comes at a poke, or after ``wait`` seconds."""
        self._stop.clear()
        self.thread = threading.Thread(target=self._loop, args=(wait,), name=self.name, daemon=True)
        self.thread.start()

    @property
    def running(self) -> bool:
        """Started and not stopped: a poke will be written."""
        return self.thread is not None and not self._stop.is_set()

    def poke(self) -> None:
        self._poked.set()

    def stop(self, *, timeout: float = 5.0) -> None:
        """End the thread without a last write (the owner writes what is left)."""
        self._stop.set()
        self._poked.set()
        if self.thread is not None:
            self.thread.join(timeout=timeout)

    def _loop(self, wait: float | None) -> None:
        while True:
            poked = self._poked.wait(wait)
            self._poked.clear()  # before the write reads its state: a poke after this wakes the next one
            if self._stop.is_set():
                return
            try:
                wait = self.write()
            except Exception:  # a bug must not end the thread: nothing would be written any more
                logger.exception("{} failed", self.name)
            if poked and self._stop.wait(self.coalesce):  # the pokes that come meanwhile share one write
                return
