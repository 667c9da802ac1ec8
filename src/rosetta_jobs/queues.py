"""What is waiting in the broker: queue depths, waiting jobs and dead letters, read from Dramatiq's Redis keys.

Shared by ``/health``, ``/metrics``, ``/admin`` and the ``rosetta-jobs`` commands. The key layout is
Dramatiq's, spelled once by ``layout.DramatiqKeys``: ready ids, payloads of ready *and*
fetched-but-unacked messages, delayed messages, and dead letters scored by nack time.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, cast

import redis

from .layout import DramatiqKeys, script
from .states import REVOKED, build_meta, exception_message, revoked_exception
from .store import TaskStore

__all__ = ["PURGE_BATCH", "DeadLetter", "QueueDepth", "QueueInspector", "WaitingJob", "is_queue_name", "unconsumed"]

#: Messages taken off a queue per step of a purge (one Lua call each).
PURGE_BATCH = 500

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")


def is_queue_name(name: str) -> bool:
    """Whether ``name`` can be a Dramatiq queue (and so is safe to build a key from)."""
    return bool(_QUEUE_NAME.match(name)) and not name.endswith((".DQ", ".XQ"))


@dataclass(frozen=True)
class QueueDepth:
    """How many messages of one queue are in each place."""

    name: str
    ready: int
    delayed: int
    dead_lettered: int
    in_progress: int

    def asdict(self) -> dict[str, Any]:
        return asdict(self)


def unconsumed(depths: list[QueueDepth], consumed: set[str] | frozenset[str]) -> list[str]:
    """The queues that hold work (ready or delayed) which none of the ``consumed`` queues' workers will take."""
    return [q.name for q in depths if q.ready + q.delayed > 0 and q.name not in consumed]


@dataclass(frozen=True)
class WaitingJob:
    """One message waiting in a queue: ``ready`` (in the order workers take them) or ``delayed`` (until ``eta``)."""

    redis_id: str
    task_id: str
    queue: str
    actor: str
    args: list[Any]
    kwargs: dict[str, Any]
    state: str
    position: int
    enqueued_at: float | None
    eta: float | None
    user: str | None

    def asdict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message, with the failure its task state recorded."""

    redis_id: str
    task_id: str
    queue: str
    actor: str
    args: list[Any]
    kwargs: dict[str, Any]
    enqueued_at: float | None
    dead_lettered_at: float
    state: str | None
    error: str | None
    exc_type: str | None
    traceback: str | None

    def asdict(self) -> dict[str, Any]:
        return asdict(self)


class QueueInspector:
    """Read and repair the broker's queues. Thread-safe; every call is a few Redis round trips."""

    def __init__(self, *, client: redis.Redis, namespace: str, store: TaskStore) -> None:
        self.client = client
        self.namespace = namespace
        self.store = store
        self.keys = DramatiqKeys(namespace)
        self._requeue = script(client, "requeue_dead_letter")
        self._purge = script(client, "purge_queue")

    def queue_names(self, known: tuple[str, ...] | list[str] = ()) -> list[str]:
        """Every queue with a key in the broker, plus ``known`` ones (those workers listen to)."""
        names = {name for name in known if is_queue_name(name)}
        prefix = self.keys.queue("")
        for raw in self.client.scan_iter(match=f"{prefix}*", count=500):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            name = key[len(prefix) :]
            if name.startswith("__"):  # __acks__, __heartbeats__
                continue
            for suffix in DramatiqKeys.SUFFIXES:
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
            if is_queue_name(name):
                names.add(name)
        return sorted(names)

    def depths(self, names: list[str]) -> list[QueueDepth]:
        """Depths of ``names`` from one pipeline. ``in_progress`` counts fetched but unacked messages."""
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.llen(self.keys.queue(name))
            pipe.hlen(self.keys.messages(name))
            pipe.hlen(self.keys.delayed_messages(name))
            pipe.zcard(self.keys.dead(name))
        values = pipe.execute()
        result = []
        for index, name in enumerate(names):
            ready, stored, delayed, dead = (int(v) for v in values[4 * index : 4 * index + 4])
            result.append(QueueDepth(name, ready, delayed, dead, max(stored - ready, 0)))
        return result

    def dead_letters(self, queue: str, *, limit: int = 50) -> list[DeadLetter]:
        """The newest ``limit`` dead letters of ``queue``, with error and traceback from the task state."""
        if not is_queue_name(queue):
            return []
        scored = cast(
            "list[tuple[bytes, float]]",
            self.client.zrevrange(self.keys.dead(queue), 0, max(limit, 1) - 1, withscores=True),
        )
        if not scored:
            return []
        ids = [member.decode() for member, _ in scored]
        payloads = cast("list[bytes | None]", self.client.hmget(self.keys.dead_messages(queue), ids))
        letters = []
        for (redis_id, (_, score)), payload in zip(zip(ids, scored, strict=True), payloads, strict=True):
            if payload is not None:
                letters.append(self._letter(queue, redis_id, float(score) / 1000, payload))
        return letters

    def dead_letter(self, queue: str, redis_id: str) -> DeadLetter | None:
        if not is_queue_name(queue):
            return None
        score = cast("float | None", self.client.zscore(self.keys.dead(queue), redis_id))
        payload = cast("bytes | None", self.client.hget(self.keys.dead_messages(queue), redis_id))
        if score is None or payload is None:
            return None
        return self._letter(queue, redis_id, float(score) / 1000, payload)

    def _letter(self, queue: str, redis_id: str, dead_at: float, payload: bytes) -> DeadLetter:
        try:
            doc = json.loads(payload)
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        task_id = str(doc.get("message_id") or "")
        meta = self.store.get(task_id) if task_id else None
        result = meta.get("result") if meta else None
        stamp = doc.get("message_timestamp")
        # Without meta, its state expired, or the payload could not even be decoded.
        error = (exception_message(result) or None) if meta else (None if doc else "undecodable payload")
        return DeadLetter(
            redis_id=redis_id,
            task_id=task_id,
            queue=queue,
            actor=str(doc.get("actor_name") or "?"),
            args=list(doc.get("args") or []),
            kwargs=dict(doc.get("kwargs") or {}),
            enqueued_at=stamp / 1000 if isinstance(stamp, int | float) else None,
            dead_lettered_at=dead_at,
            state=meta.get("status") if meta else None,
            error=error,
            exc_type=str(result.get("exc_type")) if isinstance(result, dict) else None,
            traceback=meta.get("traceback") if meta else None,
        )

    def waiting(self, queue: str, *, limit: int = 50) -> list[WaitingJob]:
        """The first ``limit`` ready messages of ``queue`` in the order workers take them, then its delayed ones.

        Delayed messages include those a worker holds in memory until their eta (Dramatiq's delay queue).
        """
        if not is_queue_name(queue):
            return []
        ids = [raw.decode() for raw in cast("list[bytes]", self.client.lrange(self.keys.queue(queue), 0, limit - 1))]
        payloads = cast("list[bytes | None]", self.client.hmget(self.keys.messages(queue), ids)) if ids else []
        jobs = [
            _waiting(queue, redis_id, payload, "ready", position)
            for position, (redis_id, payload) in enumerate(zip(ids, payloads, strict=True), start=1)
            if payload is not None
        ]
        left = limit - len(jobs)
        if left > 0:
            delayed = cast("dict[bytes, bytes]", self.client.hgetall(self.keys.delayed_messages(queue)))
            later = [_waiting(queue, k.decode(), v, "delayed", 0) for k, v in delayed.items()]
            later.sort(key=lambda job: job.eta or 0)
            jobs += [
                WaitingJob(**{**job.asdict(), "position": len(jobs) + n}) for n, job in enumerate(later[:left], start=1)
            ]
        return jobs

    def purge(self, queue: str) -> list[WaitingJob]:
        """Drop every message waiting in ``queue`` (ready and delayed) and write REVOKED for each, so pollers stop.

        What a worker already fetched is left alone, except delayed messages a worker holds until their
        eta: those are cancelled (REVOKED, and skipped when due). Returns the jobs purged, oldest first.
        """
        if not is_queue_name(queue):
            return []
        keys = [
            self.keys.queue(queue),
            self.keys.messages(queue),
            self.keys.delayed(queue),
            self.keys.delayed_messages(queue),
        ]
        # Bounded: what arrives while the purge runs is left for the workers (or the next purge).
        budget = int(cast("int", self.client.llen(keys[0]))) + int(cast("int", self.client.llen(keys[2])))
        purged: list[WaitingJob] = []
        while budget > 0:
            taken = cast("list[bytes]", self._purge(keys=keys, args=[min(budget, PURGE_BATCH)]))
            if not taken:
                break
            budget -= len(taken)
            for payload in taken:
                job = _waiting(queue, "", payload, "ready", len(purged) + 1)
                purged.append(job)
                if job.task_id:
                    self._revoke(job)
        held = cast("dict[bytes, bytes]", self.client.hgetall(self.keys.delayed_messages(queue)))
        for payload in held.values():
            job = _waiting(queue, "", payload, "delayed", len(purged) + 1)
            if job.task_id and self.store.cancel(job.task_id, known=True)["cancelled"]:
                purged.append(job)
        return purged

    def _revoke(self, job: WaitingJob) -> None:
        context = {"actor": job.actor, "queue": job.queue, "args": job.args, "kwargs": job.kwargs, "user": job.user,
                   "enqueued_at": job.enqueued_at}  # fmt: skip
        self.store.write(build_meta(job.task_id, REVOKED, revoked_exception("purged")), context=context)

    def requeue(self, queue: str, redis_id: str) -> bool:
        """Put one dead letter back at the end of its queue so that it runs again.

        Its task state is deleted first: ``TaskState`` skips a task whose state is already
        final, and a FAILURE is final. Retry count and eta are reset, and the timestamp is
        now, so the age limit and the queue-wait metric see a fresh message.
        """
        if not is_queue_name(queue):
            return False
        payload = cast("bytes | None", self.client.hget(self.keys.dead_messages(queue), redis_id))
        if payload is None:
            return False
        try:
            doc = json.loads(payload)
        except ValueError:
            return False  # an undecodable payload would only be dead-lettered again
        if not isinstance(doc, dict):
            return False
        options = dict(doc.get("options") or {})
        for option in ("retries", "eta", "traceback", "requeue_timestamp"):
            options.pop(option, None)
        options["redis_message_id"] = redis_id
        doc.update(options=options, message_timestamp=int(time.time() * 1000), queue_name=queue)
        if doc.get("message_id"):
            self.store.delete(str(doc["message_id"]))
        keys = [
            self.keys.dead(queue),
            self.keys.dead_messages(queue),
            self.keys.messages(queue),
            self.keys.queue(queue),
        ]
        encoded = json.dumps(doc, separators=(",", ":"))
        return bool(self._requeue(keys=keys, args=[redis_id, encoded]))

    def requeue_all(self, queue: str) -> int:
        """Requeue every dead letter of ``queue``, oldest first; returns how many moved."""
        if not is_queue_name(queue):
            return 0
        members = cast("list[bytes]", self.client.zrange(self.keys.dead(queue), 0, -1))
        ids = [member.decode() for member in members]
        return sum(self.requeue(queue, redis_id) for redis_id in ids)

    def delete(self, queue: str, redis_id: str) -> bool:
        """Drop one dead letter for good. Its task state (FAILURE) stays until it expires."""
        if not is_queue_name(queue):
            return False
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self.keys.dead(queue), redis_id)
        pipe.hdel(self.keys.dead_messages(queue), redis_id)
        removed, _ = pipe.execute()
        return bool(removed)


def _waiting(queue: str, redis_id: str, payload: bytes, state: str, position: int) -> WaitingJob:
    try:
        doc = json.loads(payload)
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    raw_options = doc.get("options")
    options: dict[str, Any] = raw_options if isinstance(raw_options, dict) else {}
    stamp, eta = doc.get("message_timestamp"), options.get("eta")
    user = options.get("user_id")
    return WaitingJob(
        redis_id=redis_id or str(options.get("redis_message_id") or ""),
        task_id=str(doc.get("message_id") or ""),
        queue=queue,
        actor=str(doc.get("actor_name") or "?"),
        args=list(doc.get("args") or []),
        kwargs=dict(doc.get("kwargs") or {}),
        state=state,
        position=position,
        enqueued_at=stamp / 1000 if isinstance(stamp, int | float) else None,
        eta=eta / 1000 if isinstance(eta, int | float) else None,
        user=str(user) if user is not None else None,
    )
