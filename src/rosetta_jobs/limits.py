"""Per-user active-job limits: a user with ``MAX_ACTIVE_PER_USER`` active jobs cannot submit another.

Nothing is counted up and down, so nothing can leak: each user has a sorted set of the
task ids they submitted (``Keys.user``), and every submit decides, in
one Lua script next to the task state, which of them are still active:

- a final state (SUCCESS, FAILURE, REVOKED): done, forgotten;
- STARTED or PROGRESS: active only while a live worker holds the task's lease
  (``Keys.lease``, renewed by the worker's heartbeat); a SIGKILLed worker's lease expires with it;
- RETRY: active (it waits in the delay queue for its next attempt);
- no state at all: queued if its message is still in the broker (checked just before the
  script, by the message's Redis id) or was submitted less than ``grace`` ago; otherwise
  its state expired long ago, and it is forgotten.

Only the script's decision and the reservation of the new task are atomic; that is what
keeps two concurrent submits of one user from both taking the last slot.
"""

from __future__ import annotations

import contextlib
import time
import unicodedata
from typing import cast

import redis

from .errors import UserLimitExceeded
from .layout import META_PREFIX, DramatiqKeys, Keys, script
from .store import TaskStore

__all__ = ["RESERVATION_GRACE", "UserLimits", "normalize_user_id"]

#: Seconds a reserved task without state counts as active even if the broker does not show it yet.
RESERVATION_GRACE = 60.0
#: Seconds a user's bookkeeping is kept after their last submit.
_KEEP = 7 * 86400
_MAX_USER_ID = 200


def normalize_user_id(user_id: str) -> str:
    """One user, one id: NFKC (fullwidth ``\\uff55`` is ``u``), trimmed, case-folded (``U1`` is ``u1``).

    The backend may send the same user's id as typed, padded or in another Unicode form; each spelling
    counted apart would multiply ``MAX_ACTIVE_PER_USER``.
    """
    return unicodedata.normalize("NFKC", str(user_id)).strip().casefold()


class UserLimits:
    """Reserve a slot for a user's new job, or refuse it with ``UserLimitExceeded``."""

    def __init__(
        self,
        *,
        store: TaskStore,
        broker_client: redis.Redis,
        namespace: str,
        max_active: int = 10,
        grace: float = RESERVATION_GRACE,
    ) -> None:
        self.store = store
        self.client = store.client
        self.broker_client = broker_client
        self.namespace = namespace
        self.max_active = max_active
        self.grace = grace
        self.keys = Keys(namespace)
        self.queues = DramatiqKeys(namespace)
        self._reserve = script(self.client, "user_reserve")

    def _keys(self, user_id: str) -> list[str]:
        # Two kinds, not "<set>:where": a user id may itself end in ":where".
        return [self.keys.user(user_id), self.keys.user_where(user_id)]

    @staticmethod
    def check_user_id(user_id: str) -> str:
        """The user's id as the limit counts it: ``normalize_user_id``, 1 to 200 characters."""
        normal = normalize_user_id(user_id)
        if not normal or len(normal) > _MAX_USER_ID:
            raise ValueError(f"user_id must be 1 to {_MAX_USER_ID} characters long")
        return normal

    def _present(self, user_id: str) -> list[str]:
        """Members whose message is still in the broker: queued, delayed, or held by a worker."""
        where = cast("dict[bytes, bytes]", self.client.hgetall(self._keys(user_id)[1]))
        if not where:
            return []
        located = []
        pipe = self.broker_client.pipeline(transaction=False)
        for task_id, place in where.items():
            queue, _, redis_id = place.decode().partition(" ")
            pipe.hexists(self.queues.messages(queue), redis_id)
            pipe.hexists(self.queues.delayed_messages(queue), redis_id)
            located.append(task_id.decode())
        found = pipe.execute()
        return [task_id for i, task_id in enumerate(located) if found[2 * i] or found[2 * i + 1]]

    def _run(self, user_id: str, task_id: str) -> tuple[bool, int]:
        user_id = self.check_user_id(user_id)
        try:
            present = self._present(user_id)
            ok, active = self._reserve(
                keys=self._keys(user_id),
                args=[
                    task_id,
                    self.max_active,
                    int(time.time() * 1000),
                    int(self.grace * 1000),
                    _KEEP * 1000,
                    META_PREFIX,
                    self.keys.lease(""),
                    *present,
                ],
            )
        except redis.RedisError as exc:
            raise self.store.unavailable(exc) from exc
        return bool(ok), int(active)

    def reserve(self, user_id: str, task_id: str) -> int:
        """Count ``task_id`` against ``user_id``; returns the user's active jobs including it."""
        ok, active = self._run(user_id, task_id)
        if not ok:
            raise UserLimitExceeded(
                f"user {user_id!r} already has {active} active jobs; the limit is {self.max_active} "
                "(MAX_ACTIVE_PER_USER). Wait for one to finish or cancel one."
            )
        return active

    def locate(self, user_id: str, task_id: str, queue_name: str, redis_message_id: str) -> None:
        """Record where the reserved task's message went, so later submits can find it in the broker."""
        # On failure the grace period covers it; a lost location only frees the slot sooner.
        with contextlib.suppress(redis.RedisError):
            self.client.hset(self._keys(self.check_user_id(user_id))[1], task_id, f"{queue_name} {redis_message_id}")

    def release(self, user_id: str, task_id: str) -> None:
        """Give back a reservation whose message never reached the broker."""
        keys = self._keys(self.check_user_id(user_id))
        # On failure: without state or message it is forgotten after the grace period.
        with contextlib.suppress(redis.RedisError):
            self.client.zrem(keys[0], task_id)
            self.client.hdel(keys[1], task_id)

    def active(self, user_id: str) -> int:
        """How many of ``user_id``'s jobs count as active now (forgetting the finished ones)."""
        return self._run(user_id, "")[1]
