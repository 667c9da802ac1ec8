"""Per-user SSE stream slots: at most ``MAX_STREAMS_PER_USER`` open task streams per user.

A slot is a lease in a sorted set (``Keys.user_streams``), not a counter: the stream renews it on
each frame it sends (a keep-alive at the latest every ``SSE_KEEPALIVE`` seconds) and gives it back when
it ends, so a closed stream frees its slot at once, and a service that dies leaks nothing for
longer than one lease.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import anyio
import redis.asyncio as aioredis

from ..layout import Keys, lua_source
from ..limits import UserLimits

__all__ = ["StreamLimitExceeded", "StreamSlots", "lease_seconds"]


class StreamLimitExceeded(Exception):
    """The user already holds ``MAX_STREAMS_PER_USER`` open streams."""


def lease_seconds(keepalive: float) -> float:
    """How long a slot outlives its last renewal: three keep-alives, at least 30 s (a slow proxy)."""
    return max(3 * keepalive, 30.0)


class StreamSlots:
    """Take a slot for a user's new stream, renew it while the stream runs, give it back at the end."""

    def __init__(self, *, client: aioredis.Redis, namespace: str, limit: int, lease: float) -> None:
        self.client = client
        self.keys = Keys(namespace)
        self.limit = limit
        self.lease = lease
        self._script = client.register_script(lua_source("stream_slot"))

    async def _call(self, op: str, user_id: str, stream_id: str) -> tuple[bool, int]:
        granted, open_streams = await self._script(
            keys=[self.keys.user_streams(user_id)],
            args=[op, stream_id, self.limit, int(time.time() * 1000), int(self.lease * 1000)],
        )
        return bool(granted), int(open_streams)

    async def take(self, user_id: str) -> str:
        """A new slot's id, or ``StreamLimitExceeded`` naming the limit."""
        user_id = UserLimits.check_user_id(user_id)
        stream_id = uuid.uuid4().hex
        granted, open_streams = await self._call("take", user_id, stream_id)
        if not granted:
            raise StreamLimitExceeded(
                f"user {user_id!r} already has {open_streams} open task streams; the limit is {self.limit} "
                "(MAX_STREAMS_PER_USER). Close one first."
            )
        return stream_id

    async def hold(self, user_id: str, stream_id: str, frames: AsyncIterator[str]) -> AsyncIterator[str]:
        """Pass ``frames`` through, renewing the slot, and give it back however the stream ends."""
        user_id = UserLimits.check_user_id(user_id)
        renewed = time.monotonic()
        try:
            async for frame in frames:
                if time.monotonic() - renewed > self.lease / 3:
                    await self._call("renew", user_id, stream_id)
                    renewed = time.monotonic()
                yield frame
        finally:
            # The client went away: the stream is being cancelled, so the release must be shielded.
            with anyio.CancelScope(shield=True):
                aclose = getattr(frames, "aclose", None)
                if aclose is not None:
                    await aclose()
                await self._call("give", user_id, stream_id)
