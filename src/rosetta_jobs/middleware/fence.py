"""A worker cut off from Redis stops its jobs, and checks on its return that what it holds is still its own.

When a worker host is partitioned from Redis, the other workers judge its processes dead after
``HEARTBEAT_TIMEOUT_MS`` and requeue their messages (``Recovery``); the jobs run again elsewhere. The cut-off
process cannot know that, so once its lease is lost (``rosetta_jobs.lease``: no heartbeat acknowledged for
the lease timeout, counted on its own monotonic clock) it assumes the worst:

- every running job is stopped as a shutdown abandons it (``JobAbandoned``: DuckDB interrupted, a subprocess
  group killed, Python interrupted): no state is written for it, and its message is neither acknowledged nor
  dead-lettered but given back (``Consumer``), which is a no-op if another process already requeued it;
- a message that reaches a worker thread while the lease is lost is not run (given back the same way);
- the consumer fetches nothing until a heartbeat reaches Redis again;
- once the lease is regained, a message fetched before the loss runs only if it is still in this process's
  in-flight set (``__acks__``): otherwise ``Recovery`` requeued it and another process owns it now.

Whatever the process was writing when the link went (a final state in a socket buffer) arrives after the
heal and meets the Lua guard of ``task_write.lua``: it never replaces the final state of the re-run.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import redis
from dramatiq.middleware import Middleware, SkipMessage
from loguru import logger

from ..errors import JobAbandoned
from ..job import RunningJobs
from ..layout import DramatiqKeys
from ..lease import FETCHED_AT, GIVE_BACK, Lease

__all__ = ["Fence"]


class Fence(Middleware):
    """Stops this process's jobs when its lease is lost; runs nothing it may no longer own."""

    def __init__(self, *, lease: Lease, jobs: RunningJobs, interval: float = 0.25) -> None:
        self.lease = lease
        self.jobs = jobs
        self.interval = interval
        self._stopping = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.lease.renewed()  # booted: the heartbeat just reached Redis (or will, within the timeout)
        threading.Thread(target=self._watch, name="rosetta-fence", daemon=True).start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stopping.set()

    def _watch(self) -> None:
        # No I/O here: the heartbeat thread may be stuck on a socket of the partitioned link.
        while not self._stopping.wait(self.interval):
            if self.lease.declare_lost():
                self.abandon_running()

    def abandon_running(self) -> list[str]:
        """Stop every job of the process that is not over; return the ids of those whose work was running.

        A job whose work is done but whose final state still waits for Redis is stopped too (harmless: its
        write meets the Lua guard after the heal); a job not begun yet does not begin (``Job.call``).
        """
        jobs = [job for job in self.jobs.snapshot() if not job.finished]
        working = [job.id for job in jobs if job.in_actor]
        for job in jobs:
            job.stop(JobAbandoned)
        logger.warning(
            "lease lost: no heartbeat reached Redis for {:.1f} s (timeout {:g} s); stopped {} running job(s) {}"
            " ({} more waiting to write their state); they run again on a live worker, and this process takes"
            " no work until Redis answers",
            self.lease.silent_for(),
            self.lease.timeout,
            len(working),
            working,
            len(jobs) - len(working),
        )
        return working

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        # Runs after Heartbeat's hook, which beats whole when no beat reached Redis lately: renewed if it answered.
        if self.lease.lost:
            logger.warning("task {}: not run, this process's lease is lost; it is given back", message.message_id)
            raise JobAbandoned(message.message_id)
        fetched_at = getattr(message, FETCHED_AT, None)
        if fetched_at is None or not self.lease.stale(fetched_at):
            return
        if not self._still_ours(broker, message):
            logger.warning(
                "task {}: fetched before this process lost its lease and requeued since; not run here",
                message.message_id,
            )
            raise SkipMessage("requeued while this process was cut off")  # its ack is a no-op: not ours

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if isinstance(exception, JobAbandoned):
            # Another process runs it (or will): neither an ack (which deletes the payload) nor a nack (a dead
            # letter, and TaskState's FAILURE). ``Retries``, whose after hook runs before this one, failed it;
            # the consumer gives it back instead, which is a no-op if it was requeued meanwhile.
            message.failed = False
            setattr(message, GIVE_BACK, True)

    @staticmethod
    def _still_ours(broker: Any, message: dramatiq.MessageProxy) -> bool:
        keys = DramatiqKeys(broker.namespace)
        acks = keys.acks(broker.broker_id, message.queue_name)
        try:
            return bool(broker.client.sismember(acks, message.options["redis_message_id"]))
        except redis.RedisError as exc:
            logger.warning(
                "task {}: cannot tell whether it is still ours ({}); giving it back", message.message_id, exc
            )
            raise JobAbandoned(message.message_id) from None
