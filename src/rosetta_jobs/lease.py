"""Whether a worker process still holds its jobs, judged by its own clock.

A worker process owns the messages it fetched only while Redis hears from it: once its heartbeat has
not reached Redis for ``timeout`` seconds (the lease TTL, or the broker's heartbeat timeout if that is
shorter), any other process may have judged it dead and requeued its messages (``Recovery``), and the
jobs may already run again elsewhere. The process cannot ask Redis (it is cut off from it), so it counts
on its own ``time.monotonic()`` from the last heartbeat Redis acknowledged. ``Heartbeat`` records each
acknowledged beat here; ``Fence`` (``middleware/fence.py``) stops the running jobs once the lease is
lost, and checks, once it is regained, that a message fetched before the loss is still this process's
before running it; the consumer fetches nothing while the lease is lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["FETCHED_AT", "GIVE_BACK", "Lease"]

#: The ``MessageProxy`` attribute where the consumer records when the fetch that brought the message went out.
FETCHED_AT = "rosetta_fetched_at"
#: The ``MessageProxy`` attribute that tells the consumer to give the message back instead of acknowledging it.
GIVE_BACK = "rosetta_give_back"


class Lease:
    """This process's hold on its fetched messages: lost ``timeout`` s after the last acknowledged heartbeat."""

    def __init__(self, timeout: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.clock = clock
        self._lock = threading.Lock()
        self._renewed_at = clock()
        self._lost = False
        self._losses = 0
        #: ``clock()`` when the last loss ended (a heartbeat reached Redis again); ``-inf`` before any loss.
        self._regained_at = float("-inf")

    @property
    def lost(self) -> bool:
        """Whether the lease was declared lost (``declare_lost``) and no heartbeat has reached Redis since."""
        return self._lost

    @property
    def losses(self) -> int:
        """How many times this process lost its lease."""
        return self._losses

    @property
    def regained_at(self) -> float:
        return self._regained_at

    def silent_for(self) -> float:
        """Seconds since the last heartbeat Redis acknowledged."""
        return self.clock() - self._renewed_at

    def expired(self) -> bool:
        """Whether the last acknowledged heartbeat is older than ``timeout``."""
        return self.silent_for() > self.timeout

    def renewed(self) -> bool:
        """Record a heartbeat Redis acknowledged; ``True`` if it ends a loss."""
        with self._lock:
            self._renewed_at = self.clock()
            if not self._lost:
                return False
            self._lost = False
            self._regained_at = self._renewed_at
            return True

    def declare_lost(self) -> bool:
        """Mark the lease lost if it expired; ``True`` only for the call that did it."""
        with self._lock:
            if self._lost or self.clock() - self._renewed_at <= self.timeout:
                return False
            self._lost = True
            self._losses += 1
            return True

    def stale(self, fetched_at: float) -> bool:
        """Whether a message fetched (its fetch sent) at ``fetched_at`` may have been requeued since.

        True while the lease is lost, and for a message whose fetch went out before the last loss ended.
        """
        return self._lost or fetched_at <= self._regained_at
