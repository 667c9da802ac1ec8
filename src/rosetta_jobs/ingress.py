"""Celery ingress: the unchanged backend's ``send_task`` messages, run as Dramatiq messages.

A worker consumes, besides its Dramatiq queues, the kombu lists of the same names (``preview``,
``default``, ``orchestration`` and their priority lists). Each Celery message becomes the Dramatiq
message of the actor named by its ``task`` header, with ``message_id`` = the Celery task id, so the id
the backend stored is the id that runs and that ``AsyncResult`` reads.

**Nothing lost, nothing doubled.** A message is never copied, only moved, and each move is one Redis
step:

1. *Wait*: ``BLMOVE list list RIGHT RIGHT`` blocks until the kombu list is not empty and leaves it as
   it was (it pops the consuming end and pushes it back): waiting moves nothing.
2. *Take* (``lua/celery_take.lua``): the process's heartbeat and ``LMOVE``s of up to ``batch``
   messages into its own in-flight list, in one script. An in-flight list therefore never holds a
   message unless its owner is registered with a heartbeat.
3. *Decode and decide* in Python (served actor, unknown name, expired, malformed), writing what must
   be written on the result backend first (``submitted`` record, FAILURE or REVOKED meta: all
   idempotent, and never over a final state).
4. *Hand over* (``lua/celery_hand_over.lua``): per message, ``LREM`` the in-flight copy and, only if it
   was there, enqueue it in Dramatiq's layout (or dead-letter it, or forward it to the fallback list)
   in the same script. A replay of the batch, or a batch whose list was given back meanwhile, finds
   no in-flight copy and does nothing; a second copy of a task id already handed over is dropped.
5. *Give back* (``lua/celery_give_back.lua``): every live process checks every two seconds for owners
   whose heartbeat is older than ``HEARTBEAT_TIMEOUT_MS`` and moves their in-flight messages back to
   the consuming end of their kombu list; a stopping process gives back its own at once.

A process killed between 2 and 4 loses nothing (its messages come back after the timeout); killed
after 4, it handed them over whole. A process that only *looked* dead (paused longer than the
timeout) finds its in-flight copies gone at 4 and hands over nothing: the live process that took
them again does. Several processes and hosts can drain one list: each message is taken by one.

**Task names no actor serves** are written FAILURE ``NotRegistered`` (``celery.exceptions``), as a
Celery worker does, and dead-lettered (Dramatiq's ``<queue>.XQ``, inspectable and requeueable from the
ops service); with ``CELERY_FALLBACK_QUEUE`` they are moved, untouched, to that kombu list instead,
for a Celery worker that still runs beside rosetta-jobs. Whether a name is served is decided by this
process's broker (``broker.actors``): every worker of a deployment must load the same actors.

**Celery's headers** are honoured as a Celery worker would: ``eta`` (and ``countdown``, which the
producer turns into ``eta``) becomes a Dramatiq delay; ``expires`` in the past means the task never
runs and is REVOKED (checked here and again when the message starts, since it may wait in a queue);
``timelimit`` becomes the ``time_limit`` option (ms), enforced for every actor by the job context.
Arguments are bound to the job's contract (``contracts.py``): kwargs-only calls (the linked task)
become positional, and a wrong call fails FAILURE ``TypeError`` before it is queued.

Latency: the wait wakes on the producer's LPUSH; the move costs three round trips (take, submitted
record, hand over) and pushes the same wake-up token on the Dramatiq queue as a native enqueue.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import dramatiq
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name, q_name
from dramatiq.middleware import Middleware, SkipMessage
from loguru import logger

from . import contracts
from .broker import WAKE_TOKENS
from .celery_wire import CeleryTask, MalformedMessage, decode_task, reroute
from .config import Settings
from .connection import own_pool
from .door import Door
from .job import RunningJobs
from .layout import DramatiqKeys, Keys, KombuKeys, script
from .states import FAILURE, REVOKED, build_meta, celery_exception, revoked_exception
from .store import TaskStore

__all__ = ["MOVED_TTL", "CeleryIngress", "celery_middleware"]

#: Seconds a handed-over task id is remembered, so that a second copy of it is not run: longer than
#: kombu's ``visibility_timeout`` (3600 s), after which a Celery worker beside us would restore one.
MOVED_TTL = 2 * 3600
#: Seconds a consumer waits on an empty kombu list before it looks at the priority lists again.
BLOCK_SECONDS = 1.0
#: Seconds between two checks for the in-flight lists of dead processes.
GIVE_BACK_INTERVAL = 2.0


@dataclass
class _Step:
    """What to do with one taken message: the Redis half (``argv``) and the result-backend half."""

    raw: bytes
    action: str  # enqueue | delay | dead | forward | drop
    task_id: str | None = None
    list_key: str = ""
    hash_key: str = ""
    member: str = ""
    payload: bytes = b""
    wake: str = ""
    marker: str = ""
    submitted_queue: str | None = None
    meta: dict[str, Any] | None = None
    note: str = ""

    def argv(self) -> list[bytes | str]:
        return [self.raw, self.action, self.marker, self.list_key, self.hash_key, self.member, self.payload,
                self.wake]  # fmt: skip


class CeleryIngress(Middleware):
    """Moves Celery messages from kombu's lists into this worker's Dramatiq queues."""

    def __init__(
        self,
        *,
        store: TaskStore,
        namespace: str = "dramatiq",
        queues: Sequence[str] = contracts.QUEUES,
        fallback_queue: str | None = None,
        batch: int = 100,
        heartbeat_timeout_ms: int = 15_000,
        hostname: str | None = None,
        door: Door | None = None,
    ) -> None:
        self.store = store
        #: Answers a cached preview here, as the native client does (``door``): it never reaches a queue.
        self.door = door
        self.namespace = namespace
        self.queues = tuple(queues)
        self.fallback_queue = fallback_queue
        self.batch = max(batch, 1)
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.hostname = hostname or f"rosetta@{socket.gethostname()}"
        self.keys = Keys(namespace)
        self.dramatiq = DramatiqKeys(namespace)
        self.kombu = KombuKeys()
        self.owner = ""
        self.consumed: tuple[str, ...] = ()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- worker life --------------------------------------------------------------------------------
    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        wanted = worker.consumer_whitelist
        self.consumed = tuple(q for q in self.queues if not wanted or q in wanted)
        if not self.consumed:
            return
        redis_broker = cast("RedisBroker", broker)
        client: redis.Redis = redis_broker.client
        self.kombu = KombuKeys(int(client.connection_pool.connection_kwargs.get("db", 0)))
        self.owner = f"{socket.gethostname()}:{redis_broker.broker_id}"
        self._stopping.clear()
        for queue in self.consumed:
            mover = _Mover(self, redis_broker, queue)
            thread = threading.Thread(target=mover.run, name=f"rosetta-celery-ingress-{queue}", daemon=True)
            thread.start()
            self._threads.append(thread)
        thread = threading.Thread(target=self._give_back_dead, args=(client,), name="rosetta-celery-give-back",
                                  daemon=True)  # fmt: skip
        thread.start()
        self._threads.append(thread)
        logger.info("Celery ingress: consuming kombu lists {} on db {}", ", ".join(self.consumed), self.kombu.db)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # No new message is moved from now on; the movers end within BLOCK_SECONDS, while Dramatiq stops its
        # own threads (a second too), and are joined after that: a worker stops a second sooner.
        self._stopping.set()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if not self._threads:
            return
        for thread in self._threads:
            thread.join(timeout=BLOCK_SECONDS * 3)
        self._threads.clear()
        give_back = script(cast("RedisBroker", broker).client, "celery_give_back")
        for queue in self.consumed:  # whatever is still in flight goes back to kombu, not to the next boot
            try:
                given = give_back(keys=[self.keys.celery_owners()], args=[0, 0, self.member(queue)])
            except redis.RedisError as exc:
                logger.warning("Celery ingress: could not give back the in-flight list of {}: {}", queue, exc)
                continue
            if given:
                logger.info("Celery ingress: gave {} in-flight message(s) back to kombu list {}", given, queue)

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        expires = message.options.get("celery_expires")
        if expires is not None and expires <= time.time() * 1000:
            meta = self._meta(message.message_id, REVOKED, revoked_exception("expired"), name=message.actor_name,
                              args=message.args, kwargs=message.kwargs, queue=q_name(message.queue_name))  # fmt: skip
            self.store.write(meta)
            logger.info("task {} expired while queued; not run (REVOKED, as Celery does)", message.message_id)
            raise SkipMessage("the Celery task expired")

    # --- the move -----------------------------------------------------------------------------------
    def inflight(self, queue: str) -> str:
        return self.keys.celery_inflight(self.owner, queue)

    def member(self, queue: str) -> str:
        """This process's entry for ``queue`` in the owners zset: where its in-flight messages go back to."""
        return json.dumps([self.inflight(queue), self.kombu.queue(queue)])

    def hand_over(self, broker: RedisBroker, queue: str, raws: Sequence[bytes]) -> list[int]:
        """Decide, write the result-backend half, then hand the batch over in one script."""
        now = time.time()
        steps = [self.plan(broker, queue, raw, now) for raw in raws]
        for step in steps:
            if step.submitted_queue is not None and step.task_id is not None:
                self.store.mark_submitted(step.task_id, step.submitted_queue)
            if step.meta is not None:
                self.store.write(step.meta, wait=30.0)
        argv: list[bytes | str | int | float] = [int(now * 1000), MOVED_TTL, WAKE_TOKENS]
        for step in steps:
            argv.extend(step.argv())
        codes = script(broker.client, "celery_hand_over")(keys=[self.inflight(queue)], args=argv)
        for step, code in zip(steps, cast("list[int]", codes), strict=True):
            if code == 2:
                logger.warning("Celery ingress: task {} was already handed over; this copy is dropped", step.task_id)
            elif code == 1 and step.note:
                log = logger.error if step.action == "dead" else logger.info
                log("Celery ingress: {}", step.note)
        return [int(code) for code in codes]

    def plan(self, broker: RedisBroker, queue: str, raw: bytes, now: float) -> _Step:
        """What to do with one message taken off kombu list ``queue``."""
        try:
            task = decode_task(raw)
        except MalformedMessage as exc:
            return self._malformed(queue, raw, exc)
        actor = broker.actors.get(task.name)
        if actor is None:
            return self._unknown(queue, raw, task, now)
        meta_fields: dict[str, Any] = {"name": task.name, "args": task.args, "kwargs": task.kwargs,
                                       "queue": actor.queue_name}  # fmt: skip
        contract = contracts.contract_for(task.name)
        try:
            args = list(contract.bind(task.args, task.kwargs)) if contract else task.args
        except TypeError as exc:
            meta = self._meta(task.id, FAILURE, {"exc_type": "TypeError", "exc_message": [str(exc)],
                                                 "exc_module": "builtins"}, **meta_fields)  # fmt: skip
            return self._dead(actor.queue_name, raw, task, meta=meta, now=now,
                              note=f"task {task.id} ({task.name}) called wrongly: {exc}; dead-lettered")  # fmt: skip
        kwargs = {} if contract else task.kwargs
        if task.expires is not None and task.expires.timestamp() <= now:
            meta = self._meta(task.id, REVOKED, revoked_exception("expired"), **meta_fields)
            return _Step(raw, "drop", task.id, meta=meta, note=f"task {task.id} expired before it ran (REVOKED)")
        options: dict[str, Any] = {"redis_message_id": str(uuid.uuid4())}
        if task.time_limit_ms:
            options["time_limit"] = task.time_limit_ms
        if task.expires is not None:
            options["celery_expires"] = int(task.expires.timestamp() * 1000)
        delay = int((task.eta.timestamp() - now) * 1000) if task.eta is not None else 0
        door = self.door if contract is contracts.PREVIEW and delay <= 0 else None
        if door is not None and door.answer(task.id, args, kwargs, queue=actor.queue_name):
            return _Step(raw, "drop", task.id)  # answered from the preview cache: its SUCCESS is stored
        queue_name = actor.queue_name
        if delay > 0:
            options["eta"] = int(now * 1000) + delay
            queue_name = dq_name(actor.queue_name)
        message: Message[Any] = Message(queue_name=queue_name, actor_name=task.name, args=tuple(args), kwargs=kwargs,
                          options=options, message_id=task.id, message_timestamp=int(now * 1000))  # fmt: skip
        common = {"task_id": task.id, "member": options["redis_message_id"], "payload": message.encode(),
                  "marker": self.keys.celery_moved(task.id), "submitted_queue": actor.queue_name}  # fmt: skip
        if delay > 0:
            return _Step(raw, "delay", list_key=self.dramatiq.delayed(actor.queue_name),
                         hash_key=self.dramatiq.delayed_messages(actor.queue_name), **common)  # fmt: skip
        return _Step(raw, "enqueue", list_key=self.dramatiq.queue(actor.queue_name),
                     hash_key=self.dramatiq.messages(actor.queue_name), wake=self.keys.wake(actor.queue_name),
                     **common)  # fmt: skip

    def _unknown(self, queue: str, raw: bytes, task: CeleryTask, now: float) -> _Step:
        if self.fallback_queue:
            target = self.fallback_queue.format(queue=queue)
            note = f"task {task.id} ({task.name}) is served by no actor here; moved to kombu list {target}"
            return _Step(raw, "forward", task.id, list_key=self.kombu.queue(target, task.priority),
                         payload=reroute(raw, target), note=note)  # fmt: skip
        meta = self._meta(task.id, FAILURE, celery_exception("NotRegistered", task.name))
        note = f"task {task.id}: no actor is named {task.name!r} (NotRegistered); dead-lettered"
        return self._dead(queue, raw, task, meta=meta, now=now, note=note)

    def _dead(self, queue: str, raw: bytes, task: CeleryTask, *, meta: dict[str, Any], now: float, note: str) -> _Step:
        redis_id = str(uuid.uuid4())
        message: Message[Any] = Message(
            queue_name=queue,
            actor_name=task.name,
            args=tuple(task.args),
            kwargs=task.kwargs,
            options={"redis_message_id": redis_id},
            message_id=task.id,
            message_timestamp=int(now * 1000),
        )
        return _Step(raw, "dead", task.id, list_key=self.dramatiq.dead(queue),
                     hash_key=self.dramatiq.dead_messages(queue), member=redis_id, payload=message.encode(),
                     meta=meta, note=note)  # fmt: skip

    def _malformed(self, queue: str, raw: bytes, exc: MalformedMessage) -> _Step:
        redis_id = str(uuid.uuid4())
        meta = self._meta(exc.task_id, FAILURE, celery_exception("InvalidTaskError", str(exc))) if exc.task_id else None
        return _Step(raw, "dead", exc.task_id, list_key=self.dramatiq.dead(queue),
                     hash_key=self.dramatiq.dead_messages(queue), member=redis_id, payload=raw, meta=meta,
                     note=f"undecodable Celery message on kombu list {queue} ({exc}); dead-lettered as {redis_id} in "
                          f"{self.dramatiq.dead(queue)}")  # fmt: skip

    def _meta(self, task_id: str, status: str, result: Any, **fields: Any) -> dict[str, Any]:
        return build_meta(task_id, status, result, worker=self.hostname, **fields)

    # --- dead processes -----------------------------------------------------------------------------
    def _give_back_dead(self, client: redis.Redis) -> None:
        give_back = script(client, "celery_give_back")
        not_before = 0.0
        while not self._stopping.wait(GIVE_BACK_INTERVAL):
            if time.monotonic() < not_before:
                continue
            try:
                given = give_back(keys=[self.keys.celery_owners()],
                                  args=[int(time.time() * 1000), self.heartbeat_timeout_ms])  # fmt: skip
            except redis.RedisError as exc:
                # After an outage every process looks dead for a moment: let them heartbeat first.
                logger.warning("Celery ingress: give-back check failed: {}", exc)
                not_before = time.monotonic() + self.heartbeat_timeout_ms / 1000
                continue
            if given:
                logger.warning("Celery ingress: gave {} in-flight message(s) of dead processes back to kombu", given)


class _Mover:
    """One kombu queue of one process: wait, take a batch, hand it over; after a failure, retry it."""

    def __init__(self, ingress: CeleryIngress, broker: RedisBroker, queue: str) -> None:
        self.ingress = ingress
        self.broker = broker
        self.queue = queue
        self.lists = ingress.kombu.queues(queue)
        self.take = script(broker.client, "celery_take")
        # Its own connection: a blocking wait holds one.
        self.waiter = own_pool(broker.client)

    def run(self) -> None:
        stopping, retry = self.ingress._stopping, False
        while not stopping.is_set():
            try:
                if retry:  # a failed hand-over left messages in flight: they go first, nothing new is taken
                    self._taken(0)
                    raws = list(reversed(cast("list[bytes]", self.broker.client.lrange(self.inflight, 0, -1))))
                else:
                    self.waiter.blmove(self.lists[0], self.lists[0], BLOCK_SECONDS, "RIGHT", "RIGHT")  # type: ignore[arg-type]
                    raws = self._taken(self.ingress.batch)
                if raws:
                    self.ingress.hand_over(self.broker, self.queue, raws)
                retry = False
            except Exception as exc:  # the consumer must keep going; the messages stay in flight
                logger.warning("Celery ingress on {}: {}: {}; retrying", self.queue, type(exc).__name__, exc)
                retry = True
                stopping.wait(1.0)
        self.waiter.close()

    @property
    def inflight(self) -> str:
        return self.ingress.inflight(self.queue)

    def _taken(self, count: int) -> list[bytes]:
        keys = [self.inflight, self.ingress.keys.celery_owners(), *self.lists]
        args: list[str | int] = [count, int(time.time() * 1000), self.ingress.member(self.queue)]
        return cast("list[bytes]", self.take(keys=keys, args=args))


def celery_middleware(settings: Settings, *, store: TaskStore, jobs: RunningJobs | None = None) -> list[Middleware]:
    """The Celery-compatibility middleware the settings ask for (ingress, pidbox), for ``stack.py``."""
    from .pidbox import CeleryControl

    middleware: list[Middleware] = []
    if settings.celery_ingress:
        door = Door.for_cache(settings.redis_url, ttl=settings.preview_cache_ttl, sentinel=settings.sentinel,
                              store=store, row_limit=settings.preview_row_limit,
                              hash_sql=settings.hash_task_sql)  # fmt: skip
        middleware.append(
            CeleryIngress(
                store=store,
                namespace=settings.broker_namespace,
                queues=settings.celery_queue_names,
                fallback_queue=settings.celery_fallback_queue,
                batch=settings.celery_ingress_batch,
                heartbeat_timeout_ms=settings.heartbeat_timeout_ms,
                door=door,
            )
        )
    if settings.celery_control:
        middleware.append(CeleryControl(store=store, jobs=jobs, queues=settings.celery_queue_names))
    return middleware
