"""Server-Sent Events of one task, from the pub/sub channel its state is published on.

Every write of the task's meta (``store.TaskStore``) is ``PUBLISH``ed on the channel
``celery-task-meta-<id>``. The stream subscribes first, then reads the current state and
sends it, so no change can fall between the two; then one event per change, a comment
line as keep-alive, and the end after a final state.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

from .. import codec
from ..states import FINAL_STATES, status_dict
from ..store import TaskStore

__all__ = ["task_events"]


def _decode(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        doc = codec.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _event(number: int, status: dict[str, Any]) -> str:
    return f"id: {number}\nevent: {status['state'].lower()}\ndata: {json.dumps(status, default=str)}\n\n"


async def task_events(
    client: aioredis.Redis,
    task_id: str,
    *,
    keepalive: float,
    max_seconds: float,
) -> AsyncIterator[str]:
    """Yield the SSE frames of ``task_id`` until a final state (or ``max_seconds``), a comment every ``keepalive``."""
    channel = TaskStore.key(task_id)
    loop = asyncio.get_running_loop()
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    try:
        number, last = 0, None

        async def changed(meta: dict[str, Any] | None) -> str | None:
            nonlocal number, last
            status = status_dict(task_id, meta)
            if status == last:
                return None
            number, last = number + 1, status
            return _event(number, status)

        yield await changed(_decode(await client.get(channel))) or ""  # the first always differs
        deadline = loop.time() + max_seconds
        last_sent = loop.time()
        while last is not None and last["state"] not in FINAL_STATES and loop.time() < deadline:
            wait = max(min(keepalive - (loop.time() - last_sent), deadline - loop.time()), 0.01)
            message = await pubsub.get_message(timeout=wait)
            if message is not None and message.get("type") == "message":
                frame = await changed(_decode(message["data"]))
            elif loop.time() - last_sent >= keepalive:
                # Quiet: re-read in case a publish was missed (a reconnect), else send a comment.
                frame = await changed(_decode(await client.get(channel))) or ": keep-alive\n\n"
            else:
                continue
            if frame is not None:
                last_sent = loop.time()
                yield frame
    finally:
        await pubsub.unsubscribe()
        await pubsub.aclose()
