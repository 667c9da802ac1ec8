"""Task state in Redis: ``celery-task-meta-<id>`` written with SETEX and PUBLISH.

Writes go through one Lua script so that a final state (SUCCESS, FAILURE,
REVOKED) is never overwritten, whatever order a redelivered message, a late
worker and a cancel arrive in.
"""

from __future__ import annotations

import functools
import time
from typing import Any, cast

import redis
from loguru import logger

from . import codec
from .errors import BrokerUnavailable
from .layout import Keys, script
from .redact import redact
from .states import FINAL_STATES, PENDING, REVOKED, build_meta, revoked_exception

__all__ = ["SUBMITTED_TTL", "TaskStore", "redis_client"]

#: How long a submitted task is known to ``cancel`` while it waits in a queue (Dramatiq's DLQ TTL).
SUBMITTED_TTL = 7 * 24 * 3600


@functools.lru_cache(maxsize=32)
def redis_client(url: str) -> redis.Redis:
    """One client (and connection pool) per URL per process: clients are thread-safe and fork-aware."""
    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_keepalive=True)


class TaskStore:
    """Read and write task meta. Thread-safe; one per process is enough."""

    def __init__(self, client: redis.Redis, *, expires: int = 600, url: str = "", namespace: str = "dramatiq") -> None:
        self.client = client
        self.expires = expires
        self.url = url
        self.keys = Keys(namespace)
        self._write = script(client, "task_write")
        self._start = script(client, "task_start")

    @classmethod
    def from_url(cls, url: str, *, expires: int = 600, namespace: str = "dramatiq") -> TaskStore:
        return cls(redis_client(url), expires=expires, url=url, namespace=namespace)

    key = staticmethod(Keys.meta)

    def unavailable(self, exc: Exception) -> BrokerUnavailable:
        return BrokerUnavailable(
            f"cannot reach the result backend at {redact(self.url)}: {redact(str(exc))}. "
            "Start Redis or set RESULT_BACKEND_URL."
        )

    def get(self, task_id: str) -> dict[str, Any] | None:
        """The stored meta, or ``None`` when there is none (Celery's PENDING)."""
        try:
            raw = cast("bytes | None", self.client.get(self.key(task_id)))
        except redis.RedisError as exc:
            raise self.unavailable(exc) from exc
        if raw is None:
            return None
        doc = codec.loads(raw)
        return doc if isinstance(doc, dict) else None

    def write(self, meta: dict[str, Any], *, wait: float = 0.0) -> bool:
        """Store ``meta`` unless a final state is already there. Returns whether it was written.

        With ``wait``, a connection error is retried for up to that many seconds: a worker must not
        acknowledge a job whose final state it could not store (Dramatiq retries its ack the same way).
        """
        payload = codec.dumps(meta)
        deadline = time.monotonic() + wait
        while True:
            try:
                return bool(self._write(keys=[self.key(meta["task_id"])], args=[payload, self.expires]))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() >= deadline:
                    raise
                logger.warning("cannot store the state of {} yet ({}); retrying", meta["task_id"], exc)
                time.sleep(0.5)

    def is_final(self, task_id: str) -> bool:
        meta = self.get(task_id)
        return meta is not None and meta.get("status") in FINAL_STATES

    def delete(self, task_id: str) -> None:
        """Forget a task's state, so that a requeued job can run again."""
        self.client.delete(self.key(task_id), self.keys.deliveries(task_id), self.keys.cancel(task_id))

    def mark_submitted(self, task_id: str, queue_name: str) -> None:
        """Remember that ``task_id`` was enqueued, so ``cancel`` can tell queued from unknown."""
        self.client.set(self.keys.submitted(task_id), queue_name, ex=SUBMITTED_TTL)

    def is_submitted(self, task_id: str) -> bool:
        return bool(self.client.exists(self.keys.submitted(task_id)))

    def request_cancel(self, task_id: str) -> None:
        """Flag ``task_id`` as cancelled for as long as its message may wait in a queue.

        The REVOKED state expires after ``RESULT_EXPIRES``; the flag outlives it, so a job cancelled
        while queued never starts, however long the queue waited.
        """
        self.client.set(self.keys.cancel(task_id), b"1", ex=SUBMITTED_TTL)

    def cancel_requested(self, task_ids: list[str]) -> list[str]:
        """The ids among ``task_ids`` that a client asked to cancel."""
        flags = cast("list[bytes | None]", self.client.mget([self.keys.cancel(t) for t in task_ids]))
        return [task_id for task_id, flag in zip(task_ids, flags, strict=True) if flag]

    def start(self, started: dict[str, Any]) -> str | int:
        """Write STARTED and count one more start, in one step, unless the task is already final.

        Returns the final state found (the job must not run), or the number of starts so far.
        """
        task_id = started["task_id"]
        keys = [self.key(task_id), self.keys.deliveries(task_id), self.keys.cancel(task_id)]
        answer = self._start(keys=keys, args=[codec.dumps(started), self.expires, SUBMITTED_TTL])
        return answer.decode() if isinstance(answer, bytes) else int(answer)

    def mark_stopped(self, task_id: str) -> None:
        """Record when a cancelled job really stopped running (epoch milliseconds)."""
        self.client.set(self.keys.stopped(task_id), int(time.time() * 1000), ex=self.expires)

    def stopped_at(self, task_id: str) -> float | None:
        """Epoch seconds at which a cancelled job stopped, if it was running when cancelled."""
        raw = cast("bytes | None", self.client.get(self.keys.stopped(task_id)))
        return int(raw) / 1000 if raw else None

    def deliveries(self, task_id: str) -> int:
        """How many times the job started (0 if it never did, or the count expired)."""
        raw = cast("bytes | None", self.client.get(self.keys.deliveries(task_id)))
        return int(raw) if raw else 0

    def cancel(self, task_id: str, *, known: bool | None = None) -> dict[str, Any]:
        """Cancel a job: if queued it never starts; if running, it is stopped. REVOKED stays.

        ``known`` says whether the caller knows the task was sent (``None``: ask the submitted record).
        An unknown or finished id is left as it is, and the answer says why:
        ``{"task_id", "cancelled": bool, "state", "reason"?}``.
        """
        meta = self.get(task_id)
        state = meta.get("status", PENDING) if meta else PENDING
        if state in FINAL_STATES:
            return {"task_id": task_id, "cancelled": False, "state": state, "reason": f"the task already ended {state}"}
        if meta is None and not (self.is_submitted(task_id) if known is None else known):
            return {"task_id": task_id, "cancelled": False, "state": PENDING,
                    "reason": "no task with this id was submitted"}  # fmt: skip
        self.request_cancel(task_id)
        if not self.write(build_meta(task_id, REVOKED, revoked_exception())):
            final = (self.get(task_id) or {}).get("status", state)
            return {"task_id": task_id, "cancelled": False, "state": final, "reason": f"the task already ended {final}"}
        return {"task_id": task_id, "cancelled": True, "state": REVOKED}
