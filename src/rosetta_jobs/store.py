"""Task state in Redis: ``celery-task-meta-<id>`` written with SETEX and PUBLISH.

Writes go through one Lua script so that a final state (SUCCESS, FAILURE,
REVOKED) is never overwritten, whatever order a redelivered message, a late
worker and a cancel arrive in.
"""

from __future__ import annotations

import time
from typing import Any, cast

import redis
from loguru import logger

from . import codec
from .errors import BrokerUnavailable
from .states import FINAL_STATES

__all__ = ["KEY_PREFIX", "TaskStore"]

#: Celery's key prefix; the channel of the same name carries every write.
KEY_PREFIX = "celery-task-meta-"
#: rosetta-jobs' own per-task keys, next to the meta in the result backend.
CANCEL_PREFIX = "rosetta-cancel-"
SUBMITTED_PREFIX = "rosetta-submitted-"
DELIVERIES_PREFIX = "rosetta-deliveries-"
STOPPED_PREFIX = "rosetta-stopped-"
#: How long a submitted task is known to ``cancel`` while it waits in a queue (Dramatiq's DLQ TTL).
SUBMITTED_TTL = 7 * 24 * 3600

#: Sets ``final`` to the stored status of KEYS[1] when that status is final, else leaves it nil.
_FINAL = """
local final = nil
local current = redis.call('GET', KEYS[1])
if current then
  local ok, doc = pcall(cjson.decode, current)
  if ok and type(doc) == 'table' then
    local s = doc['status']
    if s == 'SUCCESS' or s == 'FAILURE' or s == 'REVOKED' then final = s end
  end
end
"""

_START = (
    _FINAL
    + """
if final then return final end
if redis.call('EXISTS', KEYS[3]) == 1 then return 'REVOKED' end
local starts = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('PUBLISH', KEYS[1], ARGV[1])
return starts
"""
)

_WRITE = (
    _FINAL
    + """
if final then return 0 end
redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""
)


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest


class TaskStore:
    """Read and write task meta. Thread-safe; one per process is enough."""

    def __init__(self, client: redis.Redis, *, expires: int = 600, url: str = "") -> None:
        self.client = client
        self.expires = expires
        self.url = url
        self._write = client.register_script(_WRITE)
        self._start = client.register_script(_START)

    @classmethod
    def from_url(cls, url: str, *, expires: int = 600) -> TaskStore:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_keepalive=True)
        return cls(client, expires=expires, url=url)

    @staticmethod
    def key(task_id: str) -> str:
        return KEY_PREFIX + task_id

    def unavailable(self, exc: Exception) -> BrokerUnavailable:
        return BrokerUnavailable(
            f"cannot reach the result backend at {_redact(self.url)}: {exc}. Start Redis or set RESULT_BACKEND_URL."
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
        self.client.delete(self.key(task_id), DELIVERIES_PREFIX + task_id, CANCEL_PREFIX + task_id)

    def mark_submitted(self, task_id: str, queue_name: str) -> None:
        """Remember that ``task_id`` was enqueued, so ``cancel`` can tell queued from unknown."""
        self.client.set(SUBMITTED_PREFIX + task_id, queue_name, ex=SUBMITTED_TTL)

    def is_submitted(self, task_id: str) -> bool:
        return bool(self.client.exists(SUBMITTED_PREFIX + task_id))

    def request_cancel(self, task_id: str) -> None:
        """Flag ``task_id`` as cancelled for as long as its message may wait in a queue.

        The REVOKED state expires after ``RESULT_EXPIRES``; the flag outlives it, so a job cancelled
        while queued never starts, however long the queue waited.
        """
        self.client.set(CANCEL_PREFIX + task_id, b"1", ex=SUBMITTED_TTL)

    def cancel_requested(self, task_ids: list[str]) -> list[str]:
        """The ids among ``task_ids`` that a client asked to cancel."""
        flags = cast("list[bytes | None]", self.client.mget([CANCEL_PREFIX + t for t in task_ids]))
        return [task_id for task_id, flag in zip(task_ids, flags, strict=True) if flag]

    def start(self, started: dict[str, Any]) -> str | int:
        """Write STARTED and count one more start, in one step, unless the task is already final.

        Returns the final state found (the job must not run), or the number of starts so far.
        """
        task_id = started["task_id"]
        keys = [self.key(task_id), DELIVERIES_PREFIX + task_id, CANCEL_PREFIX + task_id]
        answer = self._start(keys=keys, args=[codec.dumps(started), self.expires, SUBMITTED_TTL])
        return answer.decode() if isinstance(answer, bytes) else int(answer)

    def mark_stopped(self, task_id: str) -> None:
        """Record when a cancelled job really stopped running (epoch milliseconds)."""
        self.client.set(STOPPED_PREFIX + task_id, int(time.time() * 1000), ex=self.expires)

    def stopped_at(self, task_id: str) -> float | None:
        """Epoch seconds at which a cancelled job stopped, if it was running when cancelled."""
        raw = cast("bytes | None", self.client.get(STOPPED_PREFIX + task_id))
        return int(raw) / 1000 if raw else None
