"""Redis databases of one's own on the shared local server, for test runs and benchmarks at once.

A test run flushes its databases before and after each test. Two runs on one machine (a developer's
and CI's, or two helpers') must not flush each other's, so each run claims a *slot*, three databases,
with a lease key in database 15 that a thread renews; a run that finds every slot taken waits for
one. A run that dies lets its lease expire after ``LEASE_SECONDS``.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import threading
import time
import uuid

import redis

__all__ = ["SLOTS", "claim"]

#: Three databases per slot; 0-2 are the product's defaults (``make demo``, a developer's worker).
SLOTS: tuple[tuple[int, int, int], ...] = ((3, 4, 5), (6, 7, 8), (9, 10, 11), (12, 13, 14))
LEASE_DB = 15
LEASE_SECONDS = 60


def claim(host: str, port: int, *, count: int = 1, wait: float = 1800.0) -> list[tuple[int, int, int]]:
    """Claim ``count`` slots for this process until it exits; waits up to ``wait`` seconds for them."""
    client = redis.Redis(host=host, port=port, db=LEASE_DB, socket_connect_timeout=3)
    owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    claimed: list[tuple[int, int, int]] = []
    deadline = time.monotonic() + wait
    announced = False
    while len(claimed) < count:
        free = (s for s in SLOTS if s not in claimed and client.set(_key(s), owner, nx=True, ex=LEASE_SECONDS))
        claimed.extend(itertools.islice(free, count - len(claimed)))
        if len(claimed) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no free Redis test slot on {host}:{port} after {wait:g} s")
            if not announced:
                print(f"redis_slots: every test slot of {host}:{port} is in use; waiting", flush=True)
                announced = True
            time.sleep(1.0)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LEASE_SECONDS / 4):
            for slot in claimed:
                with contextlib.suppress(redis.RedisError):
                    client.set(_key(slot), owner, ex=LEASE_SECONDS)

    def release() -> None:
        stop.set()
        for slot in claimed:
            with contextlib.suppress(redis.RedisError):
                if client.get(_key(slot)) == owner.encode():
                    client.delete(_key(slot))

    threading.Thread(target=renew, name="redis-slot-lease", daemon=True).start()
    atexit.register(release)
    return claimed


def _key(slot: tuple[int, int, int]) -> str:
    return "rosetta-jobs-test-slot:" + ",".join(map(str, slot))
