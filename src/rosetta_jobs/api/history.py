"""Queue-depth history for the dashboard's chart: a sample every few seconds, the last hour kept.

Samples live in Redis (a sorted set by time), so the chart is the same whichever
replica of the service draws it, and a lock key lets only one replica sample at a time.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, cast

import redis
from loguru import logger

from ..layout import Keys
from .context import Ops

__all__ = ["HISTORY_SECONDS", "read_history", "record_sample", "run_sampler"]

#: Seconds of history kept for the chart.
HISTORY_SECONDS = 3600


def _key(ops: Ops, *parts: str) -> str:
    return Keys(ops.namespace).depth_history(*parts)


def record_sample(ops: Ops, *, interval: float) -> bool:
    """Store the current depths unless another replica did within ``interval``; returns whether it did."""
    if not ops.results.set(_key(ops, "lock"), "1", nx=True, px=max(int(interval * 900), 1)):
        return False
    snapshot = ops.snapshot()
    now = time.time()
    sample = {
        "t": round(now, 3),
        "queues": {q.name: [q.ready, q.delayed, q.dead_lettered, q.in_progress] for q in snapshot.queues},
    }
    pipe = ops.results.pipeline(transaction=False)
    pipe.zadd(_key(ops), {json.dumps(sample, separators=(",", ":")): now})
    pipe.zremrangebyscore(_key(ops), 0, now - HISTORY_SECONDS)
    pipe.execute()
    return True


def read_history(ops: Ops, *, seconds: float = HISTORY_SECONDS) -> list[dict[str, Any]]:
    """Samples of the last ``seconds``, oldest first.

    Each is ``{"t": <epoch>, "queues": {name: [ready, delayed, dead_lettered, in_progress]}}``.
    """
    raw = cast("list[bytes]", ops.results.zrangebyscore(_key(ops), time.time() - seconds, "+inf"))
    return [json.loads(item) for item in raw]


async def run_sampler(ops: Ops) -> None:
    """Sample every ``DEPTH_SAMPLE_SECONDS`` until cancelled (the app's lifespan starts and cancels it)."""
    interval = ops.settings.depth_sample_seconds
    while True:
        try:
            await asyncio.to_thread(record_sample, ops, interval=interval)
        except redis.RedisError as exc:
            logger.warning("queue-depth sample failed: {}", exc)
        await asyncio.sleep(interval)
