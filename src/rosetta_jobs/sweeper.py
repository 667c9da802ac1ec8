"""The sweeper: periodic housekeeping on exactly one live process of the fleet at a time.

Key expiry covers most state, and Dramatiq's own maintenance is a 0.1 % lottery per fetch; what
neither removes is swept here: task state and cancel flags left without an expiry, per-user location
entries of finished jobs (``limits.UserLimits``), dead letters older than ``DEAD_LETTER_TTL``,
heartbeat entries of dead workers, and queue-depth samples beyond the dashboard's window.

Every ``reconcile_interval`` seconds (a minute; well inside ``RESULT_EXPIRES``) the lease holder also
*reconciles* (``reconcile``): a task a rosetta-jobs worker left STARTED whose message is nowhere (not
queued, delayed or in flight) and that no live worker holds (no lease) can never end by itself; its
final state was lost, which only a Redis failover that dropped unreplicated writes does
(``docs/operations.md``, HA with Redis Sentinel). It is ended FAILURE ``WorkerLost`` saying so, through
the same Lua write that never overwrites a final state, so the poller sees it end, and may submit again.

One process sweeps, by a lease (``lua/sweeper_lease.lua``), not a lottery: each ops service ticks every
``min(interval, LEASE_SECONDS / 3)``, takes or renews the lease, and sweeps when it holds it and the last
run (recorded in Redis, so a take-over does not sweep again at once) is ``interval`` old. A holder that
dies stops renewing and another takes over within ``LEASE_SECONDS``. Each removal is one atomic Redis
command whose answer is counted, so an item is counted once, by the process that removed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from loguru import logger

from . import codec
from .deployment import Deployment
from .errors import WorkerLost
from .layout import META_PREFIX, DramatiqKeys, Keys, script
from .states import FAILURE, FINAL_STATES, STARTED, build_meta, encode_exception

__all__ = [
    "KINDS",
    "LEASE_SECONDS",
    "RECONCILE_INTERVAL",
    "STRANDED_AFTER",
    "SweepReport",
    "Sweeper",
    "read_sweeper",
    "run_sweeper",
]

#: What the sweeper removes, as ``rosetta_jobs_sweeper_removed_total{kind}`` names it.
KINDS = ("task_state", "cancel_flags", "user_locations", "dead_letters", "dead_workers", "depth_samples")
#: Seconds the lease outlives its holder's last renewal.
LEASE_SECONDS = 60.0
#: Seconds a per-user location hash is kept after the sweeper saw it (``limits``' own keep period).
_USER_KEEP = 7 * 86400
_BATCH = 500
#: Seconds between two reconciliations (``Sweeper.reconcile``); a stranded STARTED must be seen before it expires.
RECONCILE_INTERVAL = 60.0
#: Seconds since its last write before a STARTED task with no message and no lease counts as stranded.
STRANDED_AFTER = 60.0
#: The ``worker`` of the task meta rosetta-jobs workers write (``TaskState``); a Celery worker's is ``celery@``.
_OUR_WORKERS = "rosetta@"


@dataclass(frozen=True)
class SweepReport:
    """One run: what it removed, by kind, and how long it took."""

    holder: str
    started_at: float
    duration: float
    removed: dict[str, int] = field(default_factory=dict)


def _batches(keys: Iterator[bytes]) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for key in keys:
        batch.append(key)
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _loads(raw: bytes | None) -> dict[str, Any] | None:
    try:
        doc = codec.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _done_before(meta: Any, cutoff: float) -> bool:
    """Whether ``meta`` is a final state whose ``date_done`` is before ``cutoff`` (epoch seconds)."""
    if not isinstance(meta, dict) or meta.get("status") not in FINAL_STATES:
        return False
    try:
        done = dt.datetime.fromisoformat(str(meta.get("date_done")))
    except ValueError:
        return True  # final without a readable date: nothing can say it is fresh
    if done.tzinfo is None:
        done = done.replace(tzinfo=dt.UTC)
    return done.timestamp() < cutoff


class Sweeper:
    """Sweep one deployment's Redis when this process holds the lease and a run is due."""

    def __init__(
        self,
        deployment: Deployment,
        *,
        interval: float,
        dead_letter_ttl: float,
        result_expires: float,
        depth_window: float,
        holder: str | None = None,
        lease: float = LEASE_SECONDS,
        reconcile_interval: float = RECONCILE_INTERVAL,
        stranded_after: float = STRANDED_AFTER,
    ) -> None:
        self.deployment = deployment
        self.results = deployment.results
        self.broker = deployment.broker
        self.keys = Keys(deployment.namespace)
        self.queues = DramatiqKeys(deployment.namespace)
        self.interval = interval
        self.dead_letter_ttl = dead_letter_ttl
        self.result_expires = result_expires
        self.depth_window = depth_window
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = lease
        self.reconcile_interval = reconcile_interval
        self.stranded_after = stranded_after
        self._lease = script(self.results, "sweeper_lease")

    @property
    def tick_seconds(self) -> float:
        """How often to renew the lease and look whether a run is due."""
        return min(self.interval, self.lease / 3, self.reconcile_interval)

    def hold(self) -> bool:
        """Take or renew the lease; whether this process holds it now."""
        return bool(self._lease(keys=[self.keys.sweeper_lease()], args=["hold", self.holder, int(self.lease * 1000)]))

    def release(self) -> None:
        """Give the lease back (a clean shutdown), so another process takes over at its next tick."""
        with contextlib.suppress(redis.RedisError):
            self._lease(keys=[self.keys.sweeper_lease()], args=["drop", self.holder, 0])

    def due(self, now: float | None = None) -> bool:
        last = cast("bytes | None", self.results.hget(self.keys.sweeper(), "last_run_at"))
        return last is None or (now or time.time()) - float(last) >= self.interval

    def tick(self) -> SweepReport | None:
        """One tick: sweep if this process holds the lease and a run is due; reconcile when that is due."""
        if not self.hold():
            return None
        now = time.time()
        last = cast("bytes | None", self.results.hget(self.keys.sweeper(), "last_reconcile_at"))
        if last is None or now - float(last) >= self.reconcile_interval:
            self.results.hset(self.keys.sweeper(), "last_reconcile_at", str(now))
            self.reconcile(now)
        return self.sweep() if self.due(now) else None

    def reconcile(self, now: float | None = None) -> list[str]:
        """End FAILURE each stranded task (the module's docstring); returns their ids.

        The messages are listed first and the task states read after, so a job that ends meanwhile is
        read final (its state is written before its message is acknowledged) and left alone.
        """
        now = now or time.time()
        live = self._live_message_ids()
        ended: list[str] = []
        for batch in _batches(self.results.scan_iter(match=META_PREFIX + "*", count=_BATCH)):
            pipe = self.results.pipeline(transaction=False)
            for key in batch:
                pipe.get(key)
                pipe.ttl(key)
            answers = pipe.execute()
            for i in range(len(batch)):
                raw, ttl = answers[2 * i], answers[2 * i + 1]
                meta = _loads(raw)
                if meta is None or meta.get("status") != STARTED:
                    continue
                task_id = str(meta.get("task_id") or batch[i].decode()[len(META_PREFIX) :])
                age = self.result_expires - ttl if ttl >= 0 else self.stranded_after
                if (
                    task_id in live
                    or age < self.stranded_after
                    or not str(meta.get("worker") or "").startswith(_OUR_WORKERS)
                    or self.results.exists(self.keys.lease(task_id))
                ):
                    continue
                if self._end_stranded(task_id, meta):
                    ended.append(task_id)
        if ended:
            self.results.hincrby(self.keys.sweeper(), "reconciled", len(ended))
        return ended

    def _live_message_ids(self) -> set[str]:
        """The ids of every message queued, delayed or in flight (Dramatiq keeps each in ``<queue>.msgs``
        until it is acknowledged); dead letters do not count: nothing runs them again."""
        ids: set[str] = set()
        suffix = DramatiqKeys.MESSAGES_SUFFIX
        dead = ".XQ" + suffix
        for key in self.broker.scan_iter(match=f"{self.queues.namespace}:*{suffix}", count=_BATCH):
            if key.decode().endswith(dead):
                continue
            for _, payload in self.broker.hscan_iter(key, count=_BATCH):
                message = _loads(payload)
                if message is not None and isinstance(message.get("message_id"), str):
                    ids.add(message["message_id"])
        return ids

    def _end_stranded(self, task_id: str, meta: dict[str, Any]) -> bool:
        error = WorkerLost(
            "the task was left STARTED with no message and no live worker: its final state was lost "
            "(a Redis failover that dropped unreplicated writes); it is not run again, submit it again"
        )
        failure = build_meta(task_id, FAILURE, encode_exception(error), name=meta.get("name"), args=meta.get("args"),
                             kwargs=meta.get("kwargs"), worker=meta.get("worker"), queue=meta.get("queue"))  # fmt: skip
        written = self.deployment.store.write(failure, context={"actor": meta.get("name"), "queue": meta.get("queue")})
        if written:
            logger.warning("reconcile: task {} ({}) was stranded STARTED; ended FAILURE WorkerLost",
                           task_id, meta.get("name"))  # fmt: skip
        return written

    def sweep(self) -> SweepReport:
        """Run every kind of housekeeping once and record it."""
        started = time.time()
        removed = {
            "task_state": self._task_state(started),
            "cancel_flags": self._cancel_flags(),
            "user_locations": self._user_locations(),
            "dead_letters": self._dead_letters(started),
            "dead_workers": self._dead_workers(),
            "depth_samples": self._depth_samples(started),
        }
        report = SweepReport(holder=self.holder, started_at=started, duration=time.time() - started, removed=removed)
        pipe = self.results.pipeline(transaction=False)
        key = self.keys.sweeper()
        for kind, count in removed.items():
            pipe.hincrby(key, f"removed:{kind}", count)
        pipe.hincrby(key, "runs", 1)
        pipe.hset(key, mapping={"last_run_at": started, "last_duration": round(report.duration, 3),
                                "holder": self.holder})  # fmt: skip
        pipe.execute()
        logger.info("sweeper: run by {} removed {} in {:.3f} s", self.holder, removed, report.duration)
        return report

    # --- the kinds -----------------------------------------------------------------------------------
    def _task_state(self, now: float) -> int:
        """Final task meta that lost its expiry (a PERSIST, a legacy writer) and is older than RESULT_EXPIRES."""
        removed = 0
        for batch in _batches(self.results.scan_iter(match=META_PREFIX + "*", count=_BATCH)):
            pipe = self.results.pipeline(transaction=False)
            for key in batch:
                pipe.ttl(key)
            lasting = [key for key, ttl in zip(batch, pipe.execute(), strict=True) if ttl == -1]
            for key in lasting:
                raw = cast("bytes | None", self.results.get(key))
                try:
                    meta = codec.loads(raw) if raw is not None else None
                except ValueError:
                    meta = None
                if raw is not None and (meta is None or _done_before(meta, now - self.result_expires)):
                    removed += int(cast("int", self.results.delete(key)))
        return removed

    def _cancel_flags(self) -> int:
        """Cancel flags without an expiry whose task is gone: no state and no submit record."""
        prefix = self.keys.cancel("")
        removed = 0
        for batch in _batches(self.results.scan_iter(match=prefix + "*", count=_BATCH)):
            pipe = self.results.pipeline(transaction=False)
            for key in batch:
                task_id = key.decode()[len(prefix) :]
                pipe.ttl(key)
                pipe.exists(self.keys.meta(task_id), self.keys.submitted(task_id))
            answers = pipe.execute()
            for i, key in enumerate(batch):
                if answers[2 * i] == -1 and answers[2 * i + 1] == 0:
                    removed += int(cast("int", self.results.delete(key)))
        return removed

    def _user_locations(self) -> int:
        """Location entries of users' finished jobs (``UserLimits.active`` forgets them); the hashes get an expiry."""
        prefix = self.keys.user_where("")
        limits = self.deployment.client.limits
        removed = 0
        for key in list(self.results.scan_iter(match=prefix + "*", count=_BATCH)):
            user_id = key.decode()[len(prefix) :]
            before = int(cast("int", self.results.hlen(key)))
            try:
                limits.active(user_id)
            except ValueError:
                continue
            if int(cast("int", self.results.zcard(self.keys.user(user_id)))) == 0:
                self.results.delete(key)
                after = 0
            else:
                after = int(cast("int", self.results.hlen(key)))
                if after and self.results.ttl(key) == -1:
                    self.results.expire(key, _USER_KEEP)
            removed += max(before - after, 0)
        return removed

    def _dead_letters(self, now: float) -> int:
        """Dead letters older than ``DEAD_LETTER_TTL``, in every queue of the broker's namespace."""
        cutoff_ms = int((now - self.dead_letter_ttl) * 1000)
        removed = 0
        suffix = ".XQ"
        for key in list(self.broker.scan_iter(match=f"{self.queues.namespace}:*{suffix}", count=_BATCH)):
            queue = key.decode()[len(self.queues.namespace) + 1 : -len(suffix)]
            old = cast("list[bytes]", self.broker.zrangebyscore(key, "-inf", cutoff_ms))
            for start in range(0, len(old), _BATCH):
                chunk = old[start : start + _BATCH]
                pipe = self.broker.pipeline(transaction=False)
                for redis_id in chunk:
                    pipe.zrem(key, redis_id)
                    pipe.hdel(self.queues.dead_messages(queue), redis_id.decode())
                answers = pipe.execute()
                removed += sum(int(answers[2 * i]) for i in range(len(chunk)))
        return removed

    def _dead_workers(self) -> int:
        """Entries of the workers' index whose heartbeat hash expired with the process."""
        index = self.keys.workers()
        ids = cast("list[bytes]", self.results.zrange(index, 0, -1))
        if not ids:
            return 0
        pipe = self.results.pipeline(transaction=False)
        for worker_id in ids:
            pipe.exists(self.keys.worker(worker_id.decode()))
        gone = [worker_id for worker_id, alive in zip(ids, pipe.execute(), strict=True) if not alive]
        return int(cast("int", self.results.zrem(index, *gone))) if gone else 0

    def _depth_samples(self, now: float) -> int:
        """Queue-depth samples older than the dashboard's window."""
        return int(cast("int", self.results.zremrangebyscore(self.keys.depth_history(), 0, now - self.depth_window)))


def read_sweeper(client: redis.Redis, namespace: str) -> dict[str, Any]:
    """The sweeper's record, for ``/metrics`` and the dashboard: runs, last run, holder, removed by kind."""
    keys = Keys(namespace)
    raw = cast("dict[bytes, bytes]", client.hgetall(keys.sweeper()))
    doc = {k.decode(): v.decode() for k, v in raw.items()}
    lease = cast("bytes | None", client.get(keys.sweeper_lease()))
    return {
        "runs": int(doc.get("runs", 0)),
        "last_run_at": float(doc["last_run_at"]) if "last_run_at" in doc else None,
        "last_duration": float(doc["last_duration"]) if "last_duration" in doc else None,
        "last_holder": doc.get("holder"),
        "lease_holder": lease.decode() if lease is not None else None,
        "removed": {kind: int(doc.get(f"removed:{kind}", 0)) for kind in KINDS},
    }


async def run_sweeper(sweeper: Sweeper) -> None:
    """Tick until cancelled (the ops service's lifespan starts and cancels it); the lease is given back at the end."""
    try:
        while True:
            try:
                await asyncio.to_thread(sweeper.tick)
            except redis.RedisError as exc:
                logger.warning("sweeper: tick failed: {}", exc)
            await asyncio.sleep(sweeper.tick_seconds)
    finally:
        await asyncio.to_thread(sweeper.release)
