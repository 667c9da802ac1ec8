"""The producer's broker: Dramatiq's ``RedisBroker`` whose enqueue also wakes idle consumers.

An enqueue and its wake-up token go to Redis in one round trip: the message through Dramatiq's own
``dispatch`` script, called with the arguments ``RedisBroker._dispatch`` gives it (it uses ``scripts``,
``broker_id``, ``heartbeat_timeout``, ``dead_message_ttl``, ``_should_do_maintenance`` and
``_max_unpack_size``, Dramatiq 2.2's), the token in the same pipeline. A consumer is woken a round trip
sooner (a send took 0.25 ms less here).

Its Redis client comes from ``connection.redis_client`` (a ``sentinel://`` URL gives a client that follows
a failover). With ``replica_wait``, an enqueue returns once that many replicas hold the message.

This is all a backend needs to enqueue (``client.JobClient``): it carries no middleware and imports
nothing of the worker's side. The worker's broker, with its consumer and middleware, is built in
``rosetta_jobs.stack``.
"""

from __future__ import annotations

import uuid
from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, q_name
from loguru import logger

from .connection import DEFAULT_SENTINEL, ReplicaWait, SentinelOptions, redis_client
from .layout import DramatiqKeys, Keys

__all__ = ["WAKE_TOKENS", "RosettaBroker"]

#: Wake-up tokens kept per queue: enough to wake every idle consumer of a fleet, bounded so that a
#: queue with no consumer does not grow a list.
WAKE_TOKENS = 64


class RosettaBroker(RedisBroker):
    """Enqueue as Dramatiq does, then push a wake-up token for the queue's idle consumers."""

    def __init__(
        self,
        *,
        url: str | None = None,
        sentinel: SentinelOptions = DEFAULT_SENTINEL,
        replica_wait: ReplicaWait | None = None,
        **options: Any,
    ) -> None:
        """``RedisBroker``'s keyword options (``namespace``, ``middleware``, ``client``, ...); ``url`` (any form
        ``connection`` reads, ``sentinel://`` too) gives the process's shared client of that URL."""
        if url is not None and options.get("client") is None:
            options["client"] = redis_client(url, sentinel=sentinel)
        #: ``WAIT`` after each enqueue (``REDIS_WAIT_REPLICAS``), so that a failover cannot lose the message.
        self.replica_wait = replica_wait
        # RedisBroker.__init__ is unannotated.
        super().__init__(**options)  # type: ignore[no-untyped-call]

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        """Enqueue and push a wake-up token, in one round trip (``_enqueue_and_wake``); with ``replica_wait``, also
        WAIT for the replicas.

        WAIT counts the writes of its own connection; the token is pushed on the WAIT's connection after
        the message was stored, and a replica applies writes in order, so a replica that holds the token
        holds the message, as long as both went to the same master. The same pipeline checks that the
        message is there: if a failover fell between the enqueue and the WAIT, the message went to the old
        master and is gone, and it is enqueued once more (a job that ran and ended meanwhile would only be
        skipped: its final state is written before its message leaves). A delayed message gets a token too
        when WAIT is on (an idle consumer then looks once and sleeps again).
        """
        wait = self.replica_wait
        if delay is None and (wait is None or not wait.active):
            return self._enqueue_and_wake(message)
        enqueued = super().enqueue(message, delay=delay)
        if not self._after_enqueue(enqueued, delay):
            logger.warning("task {}: its message vanished in a Redis failover as it was enqueued; enqueuing it again",
                           message.message_id)  # fmt: skip
            enqueued = super().enqueue(message, delay=delay)
            self._after_enqueue(enqueued, delay)
        return enqueued

    def _enqueue_and_wake(self, message: Any) -> Any:
        """``RedisBroker.enqueue`` of a message without a delay (a Redis id of its own, the middleware's hooks,
        the ``dispatch`` script), with the queue's wake-up token in the same pipeline."""
        message = message.copy(options={"redis_message_id": str(uuid.uuid4())})
        self.logger.debug("Enqueueing message %r on queue %r.", message.message_id, message.queue_name)
        self.emit_before("enqueue", message, None)
        script = self.scripts["dispatch"]
        args = [
            "enqueue", current_millis(), message.queue_name, self.broker_id, self.heartbeat_timeout,
            self.dead_message_ttl, self._should_do_maintenance("enqueue"),
            self._max_unpack_size(),  # type: ignore[no-untyped-call]
            message.options["redis_message_id"], message.encode(),
        ]  # fmt: skip
        key = Keys(self.namespace).wake(q_name(message.queue_name))
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            pipe.evalsha(script.sha, 1, self.namespace, *args)
            pipe.lpush(key, 1)
            pipe.ltrim(key, 0, WAKE_TOKENS - 1)
            try:
                pipe.execute()
                break
            except redis.exceptions.NoScriptError:  # a Redis restarted or failed over since: load it there
                if attempt == 2:
                    raise
                self.client.script_load(script.script)
        self.emit_after("enqueue", message, None)
        return message

    def _after_enqueue(self, enqueued: Any, delay: int | None) -> bool:
        """The wake-up token and the WAIT; ``False`` only when the master that answered lacks the message."""
        wait = self.replica_wait
        waiting = wait is not None and wait.active
        if delay is not None and not waiting:
            return True
        key = Keys(self.namespace).wake(q_name(enqueued.queue_name))
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(key, 1)
        pipe.ltrim(key, 0, WAKE_TOKENS - 1)
        if waiting:
            pipe.hexists(
                DramatiqKeys(self.namespace).messages(enqueued.queue_name), enqueued.options["redis_message_id"]
            )
        waited = wait.add(pipe) if wait is not None and waiting else False
        try:
            answers = pipe.execute()
        except redis.RedisError as exc:  # the job is queued; idle workers still find it by polling
            logger.warning("could not wake the consumers of {}{}: {}", enqueued.queue_name,
                           " nor wait for a replica" if waiting else "", exc)  # fmt: skip
            return True
        if waited and wait is not None:
            wait.check(answers[-1])
        return bool(answers[2]) if waiting else True
