"""Coalescer: pokes share writes, a quiet thread still writes on its interval, and a failing write does not end it."""

from __future__ import annotations

import threading
import time

from rosetta_jobs.coalesce import Coalescer

from .conftest import wait_until


class Writes:
    """A write that counts itself, and fails when asked to."""

    def __init__(self, *, wait: float | None = None, fail: bool = False) -> None:
        self.count = 0
        self.wait = wait
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self) -> float | None:
        with self.lock:
            self.count += 1
        if self.fail:
            raise RuntimeError("a bug in the write")
        return self.wait


def test_many_pokes_share_a_few_writes() -> None:
    # Given a started coalescer that writes at most every 0.2 s
    writes = Writes()
    coalescer = Coalescer(writes, coalesce=0.2, name="test-coalescer")
    coalescer.start()
    try:
        # When it is poked 500 times within a moment
        for _ in range(500):
            coalescer.poke()
        # Then it writes soon, and no more than a few times
        wait_until(lambda: writes.count >= 1, 2, "a write")
        time.sleep(0.5)
        assert 1 <= writes.count <= 3
    finally:
        coalescer.stop()


def test_a_write_that_asks_for_it_comes_again_without_a_poke() -> None:
    # Given a write that wants to run again 0.1 s after itself
    writes = Writes(wait=0.1)
    coalescer = Coalescer(writes, coalesce=0.05, name="test-coalescer")
    # When the coalescer starts and nobody pokes it
    coalescer.start(wait=0.1)
    try:
        # Then it writes on that interval
        wait_until(lambda: writes.count >= 4, 3, "four writes on the interval")
    finally:
        coalescer.stop()


def test_a_failing_write_does_not_end_the_thread_and_stop_ends_it_at_once() -> None:
    # Given a coalescer whose write raises
    writes = Writes(fail=True)
    coalescer = Coalescer(writes, coalesce=0.01, name="test-coalescer")
    coalescer.start()
    # When it is poked twice, a moment apart
    coalescer.poke()
    wait_until(lambda: writes.count == 1, 2, "the first write")
    coalescer.poke()
    # Then the second poke is written too
    wait_until(lambda: writes.count == 2, 2, "the second write")
    # And stop ends the thread at once, without another write
    started = time.monotonic()
    coalescer.stop()
    assert time.monotonic() - started < 1
    assert coalescer.thread is not None and not coalescer.thread.is_alive()
    assert not coalescer.running and writes.count == 2
