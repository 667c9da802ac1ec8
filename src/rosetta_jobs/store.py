"""Task state in Redis: ``celery-task-meta-<id>`` written with SETEX and PUBLISH.

Writes go through one Lua script so that a final state (SUCCESS, FAILURE,
REVOKED) is never overwritten, whatever order a redelivered message, a late
worker and a cancel arrive in.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast

import redis
from loguru import logger

from . import codec
from .connection import DEFAULT_SENTINEL, ReplicaWait, SentinelOptions, redis_client
from .errors import BrokerUnavailable, StateRefused
from .history import history_entry
from .layout import Keys, script
from .redact import redact
from .states import FINAL_STATES, PENDING, REVOKED, build_meta, revoked_exception

__all__ = [
    "FULL_WAIT",
    "HISTORY_MAX",
    "HISTORY_MAX_AGE",
    "MAX_STATE_BYTES",
    "SUBMITTED_TTL",
    "TaskStore",
]

#: How long a submitted task is known to ``cancel`` while it waits in a queue (Dramatiq's DLQ TTL).
SUBMITTED_TTL = 7 * 24 * 3600
#: The largest task state stored (bytes of JSON): a poller reads it whole, and Redis refuses 512 MB anyway.
MAX_STATE_BYTES = 32 * 2**20
#: States above this size whose connection drops while Redis still answers were refused for their size
#: (``proto-max-bulk-len``, ``client-query-buffer-limit``: Redis closes the connection, at 1 MB at the least).
_REFUSABLE_BYTES = 2**20
#: Seconds a write is retried while Redis answers "OOM": keys expiring may free room, but not forever.
FULL_WAIT = 30.0
#: Default retention of the task history: entries, and seconds (``TASK_HISTORY_MAX``, ``TASK_HISTORY_MAX_AGE``).
HISTORY_MAX = 10_000
HISTORY_MAX_AGE = 7 * 24 * 3600


class TaskStore:
    """Read and write task meta. Thread-safe; one per process is enough."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        expires: int = 600,
        url: str = "",
        namespace: str = "dramatiq",
        history_max: int = HISTORY_MAX,
        history_max_age: int = HISTORY_MAX_AGE,
        replica_wait: ReplicaWait | None = None,
    ) -> None:
        self.client = client
        #: ``WAIT`` after a final state (``REDIS_WAIT_REPLICAS``), so that a failover cannot lose it.
        self.replica_wait = replica_wait
        self.expires = expires
        self.url = url
        self.keys = Keys(namespace)
        #: Retention of the task history (``history.py``): entries and seconds; 0 turns it off.
        self.history_max = history_max
        self.history_max_age = history_max_age
        self._write = script(client, "task_write")
        self._start = script(client, "task_start")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        expires: int = 600,
        namespace: str = "dramatiq",
        history_max: int = HISTORY_MAX,
        history_max_age: int = HISTORY_MAX_AGE,
        sentinel: SentinelOptions = DEFAULT_SENTINEL,
        replica_wait: ReplicaWait | None = None,
    ) -> TaskStore:
        """The store of ``url`` (``connection.redis_client``: one client per URL per process)."""
        return cls(redis_client(url, sentinel=sentinel), expires=expires, url=url, namespace=namespace,
                   history_max=history_max, history_max_age=history_max_age, replica_wait=replica_wait)  # fmt: skip

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

    def write(self, meta: dict[str, Any], *, wait: float = 0.0, context: Mapping[str, Any] | None = None) -> bool:
        """Store ``meta`` unless a final state is already there. Returns whether it was written.

        A final state is recorded in the task history by the same Lua call (``history.history_entry``;
        ``context`` fills in what the meta does not say: the user, when the job was enqueued and started).

        With ``wait``, an outage is retried for up to that many seconds, each retry logged: a worker must
        not acknowledge a job whose final state it could not store (Dramatiq retries its ack the same way).
        A failover is an outage: the connection drops, or a demoted master answers READONLY, until the
        client has found the new master. A final state is followed by ``WAIT`` (``replica_wait``).
        A refusal is not an outage and is never waited out: ``StateRefused`` at once for a state over
        ``MAX_STATE_BYTES`` or one whose connection Redis closed while still answering PING (too large for
        it), and after at most ``FULL_WAIT`` seconds of "OOM" answers.
        """
        task_id = meta["task_id"]
        payload = codec.dumps(meta)
        if len(payload) > MAX_STATE_BYTES:
            raise StateRefused(
                f"the state of {task_id} is {len(payload):,} bytes; at most {MAX_STATE_BYTES:,} are stored"
            )
        history = self._history_args(meta, context)
        keys, args = self._write_keys(task_id), [payload, self.expires, *history]
        replica_wait = self.replica_wait if meta.get("status") in FINAL_STATES else None
        started = time.monotonic()
        deadline, full_deadline = started + wait, started + min(wait, FULL_WAIT)
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._run_write(keys, args, replica_wait)
            except redis.OutOfMemoryError as exc:
                if time.monotonic() >= full_deadline:
                    raise StateRefused(f"Redis is out of memory ({exc}); gave up after {attempt} attempts") from None
                logger.warning("cannot store the state of {}: Redis is full ({}); retry {}", task_id, exc, attempt)
            except redis.ReadOnlyError as exc:  # a demoted master, until the client finds the new one
                if time.monotonic() >= deadline:
                    raise
                logger.warning("cannot store the state of {} yet ({}); retry {}", task_id, exc, attempt)
            except redis.ResponseError as exc:
                raise StateRefused(f"Redis refused the state of {task_id} ({len(payload):,} bytes): {exc}") from None
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if len(payload) > _REFUSABLE_BYTES and self._answers():
                    raise StateRefused(
                        f"Redis closed the connection on the state of {task_id} ({len(payload):,} bytes) "
                        "while answering PING: too large for it"
                    ) from None
                if time.monotonic() >= deadline:
                    raise
                logger.warning("cannot store the state of {} yet ({}); retry {}", task_id, exc, attempt)
            time.sleep(0.5)

    def _run_write(self, keys: list[str], args: list[Any], replica_wait: ReplicaWait | None) -> bool:
        """One ``task_write``; with ``replica_wait``, followed by WAIT on the same connection (a pipeline)."""
        if replica_wait is None or not replica_wait.active:
            return bool(self._write(keys=keys, args=args))
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            self._write(keys=keys, args=args, client=pipe)
            waited = replica_wait.add(pipe)
            try:
                answers = pipe.execute()  # loads the script first (SCRIPT EXISTS, SCRIPT LOAD) if needed
                break
            except redis.exceptions.NoScriptError:
                # The master changed between the load and the EVALSHA (a failover): load it on the new one.
                if attempt == 2:
                    raise
        if waited:
            replica_wait.check(answers[-1])
        return bool(answers[0])

    def _write_keys(self, task_id: str) -> list[str]:
        return [self.key(task_id), self.keys.history(), self.keys.history_entries()]

    def _history_args(self, meta: dict[str, Any], context: Mapping[str, Any] | None) -> list[Any]:
        """``task_write``'s history arguments: the task id, its entry ('' unless final), now, the retention."""
        now = time.time()
        final = meta.get("status") in FINAL_STATES and self.history_max > 0
        entry = codec.dumps(history_entry(meta, context, now=now)) if final else b""
        return [meta["task_id"], entry, int(now * 1000), self.history_max, self.history_max_age]

    def _answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def finish(self, task_id: str, status: str, result: Any = None) -> bool:
        """Write the final state of a task whose job ended before its work did (``job.Deferred``).

        The name, arguments, worker and queue of its last state are kept. Like every write it never
        overwrites a final state (a cancel's REVOKED stays). Returns whether it was written.
        """
        last = self.get(task_id) or {}
        if last.get("status") in FINAL_STATES:
            return False
        meta = build_meta(task_id, status, result, name=last.get("name"), args=last.get("args"),
                          kwargs=last.get("kwargs"), worker=last.get("worker"), queue=last.get("queue"))  # fmt: skip
        if last.get("sql_sha256"):
            meta["sql_sha256"] = last["sql_sha256"]
        return self.write(meta)

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

    def submitted_queue(self, task_id: str) -> str | None:
        """The queue ``task_id`` was enqueued on, while its submitted record lasts (``SUBMITTED_TTL``)."""
        raw = cast("bytes | None", self.client.get(self.keys.submitted(task_id)))
        return raw.decode() if raw is not None else None

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

    def start(self, started: dict[str, Any], *, lease: tuple[str, str, int] | None = None) -> str | int:
        """Write STARTED and count one more start, in one step, unless the task is already final.

        With ``lease`` (key, owner, TTL in ms: ``Job.lease``), the job's lease is written in the same step.
        Returns the final state found (the job must not run), or the number of starts so far.
        """
        task_id = started["task_id"]
        keys = [self.key(task_id), self.keys.deliveries(task_id), self.keys.cancel(task_id)]
        args: list[bytes | str | int] = [codec.dumps(started), self.expires, SUBMITTED_TTL]
        if lease is not None:
            keys.append(lease[0])
            args += [lease[1], lease[2]]
        answer = self._start(keys=keys, args=args)
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
        # The history entry gets the actor, queue and arguments of a task that had started.
        started = {"actor": meta.get("name"), "queue": meta.get("queue"), "args": meta.get("args"),
                   "kwargs": meta.get("kwargs"), "sql_sha256": meta.get("sql_sha256")} if meta else None  # fmt: skip
        if not self.write(build_meta(task_id, REVOKED, revoked_exception()), context=started):
            final = (self.get(task_id) or {}).get("status", state)
            return {"task_id": task_id, "cancelled": False, "state": final, "reason": f"the task already ended {final}"}
        return {"task_id": task_id, "cancelled": True, "state": REVOKED}
