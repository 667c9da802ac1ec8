"""Celery's remote control (the *pidbox*): ``control.revoke`` and ``inspect ping/active/reserved``.

The backend cancels with ``control.revoke(task_id, terminate=True, signal="SIGTERM")``: a broadcast
PUBLISHed on ``/<db>.celery.pidbox`` (kombu's fanout over Redis pub/sub, ``../shared/spec/
rosetta-worker.md`` 11.3). Every worker process listens there and turns a revoke into rosetta-jobs'
cancel (``TaskStore.cancel``), with the Celery worker's meaning kept where it was sound:

- **queued** (or waiting for a retry): it never runs; REVOKED now. ``terminate`` does not matter.
- **running**: with ``terminate=True`` it is stopped (DuckDB interrupted) within a second and REVOKED
  stays; the signal name is not used, there is no process to signal. With ``terminate=False`` it is
  left to finish, as Celery leaves it.
- **finished**: nothing changes.
- **unknown** (no state, never submitted, not waiting in a kombu list): no state is written, but the
  cancel flag is set, silently, as Celery workers remember revoked ids: if a message with that id is
  still on its way (taken by an ingress, not yet queued), it is skipped when it arrives.

A broadcast reaches only the processes subscribed at that moment: a revoke sent while no worker and
no ops service listens is lost, as it is with Celery (docs/migration.md). The ops service
(``rosetta-jobs serve``) listens too, with the same handler, so that a revoke sent while the workers
are down or restarting still lands; it answers no inspection, since it runs no tasks.

``inspect ping`` / ``active`` / ``reserved`` are answered by each worker process as a node of its own
(``rosetta.<pid>@<host>``), so scripts and Flower-style checks that count nodes keep working. Replies
go where kombu's pidbox sends them: the reply exchange's binding table names the reply list.
Other commands are ignored (casts) or answered with an error (calls).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import dramatiq
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name
from dramatiq.middleware import Middleware
from loguru import logger

from .celery_wire import ControlMessage, MalformedMessage, decode_control, encode_envelope
from .errors import JobCancelled
from .job import RunningJobs
from .layout import DramatiqKeys, KombuKeys
from .states import FINAL_STATES, PENDING, PROGRESS, STARTED
from .store import TaskStore

__all__ = ["CeleryControl", "PidboxListener", "revoke", "waiting_in_kombu"]

Handler = Callable[[ControlMessage], None]


def revoke(
    store: TaskStore, task_id: str, *, terminate: bool = False, queued: Callable[[str], bool] | None = None
) -> dict[str, Any]:
    """Celery's revoke as rosetta-jobs' cancel (the rules in the module's docstring).

    ``queued(task_id)`` tells whether a message with that id waits in a kombu list, for an id with no
    state and no submitted record. Returns ``TaskStore.cancel``'s answer.
    """
    meta = store.get(task_id)
    state = str(meta.get("status", PENDING)) if meta else PENDING
    if state in FINAL_STATES:
        return {"task_id": task_id, "cancelled": False, "state": state, "reason": f"the task already ended {state}"}
    if state in (STARTED, PROGRESS) and not terminate:
        return {"task_id": task_id, "cancelled": False, "state": state,
                "reason": "running, and terminate=False leaves a running task to finish (as Celery does)"}  # fmt: skip
    known = meta is not None or store.is_submitted(task_id) or (queued is not None and queued(task_id))
    answer = store.cancel(task_id, known=known)
    if not known:
        store.request_cancel(task_id)  # silent: skips a message with this id that is still on its way
    return answer


def waiting_in_kombu(client: redis.Redis, queues: Iterable[str], task_id: str) -> bool:
    """Whether a message with ``task_id`` waits in the kombu lists of ``queues`` (a scan: revokes are rare)."""
    kombu = KombuKeys(int(client.connection_pool.connection_kwargs.get("db", 0)))
    needle = task_id.encode()
    for queue in queues:
        for key in kombu.queues(queue):
            if any(needle in item for item in cast("list[bytes]", client.lrange(key, 0, -1))):
                return True
    return False


class PidboxListener:
    """A thread subscribed to the pidbox channel; each decoded broadcast goes to ``handler``.

    It reconnects after a connection error. Pub/sub keeps nothing for a listener that is away: what
    was broadcast meanwhile is not seen.
    """

    def __init__(self, *, client: redis.Redis, handler: Handler, app: str = "celery", name: str = "pidbox") -> None:
        self.client = client
        self.handler = handler
        self.channel = KombuKeys(int(client.connection_pool.connection_kwargs.get("db", 0))).pidbox(app)
        self.name = name
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PidboxListener:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"rosetta-{self.name}", daemon=True)
        self._thread.start()
        return self

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Whether the subscription is in place (a broadcast sent from now on is seen)."""
        return self._ready.wait(timeout)

    def stop(self, *, wait: bool = True) -> None:
        """End the thread (its read waits up to a second); with ``wait``, return once it has ended."""
        self._stopping.set()
        if wait and self._thread is not None:
            self._thread.join(timeout=3)

    def _run(self) -> None:
        while not self._stopping.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                # kombu publishes on the bare channel; with a routing key it appends "/<key>".
                pubsub.subscribe(self.channel)
                pubsub.psubscribe(self.channel + "/*")
                self._ready.set()
                while not self._stopping.is_set():
                    event = pubsub.get_message(timeout=1.0)
                    if event is not None and event.get("type") in ("message", "pmessage"):
                        self._dispatch(cast("bytes", event["data"]))
            except redis.RedisError as exc:
                self._ready.clear()
                logger.warning("Celery pidbox listener: {}; reconnecting", exc)
                self._stopping.wait(1.0)
            finally:
                pubsub.close()

    def _dispatch(self, data: bytes) -> None:
        try:
            message = decode_control(data)
        except MalformedMessage as exc:
            logger.warning("Celery pidbox: ignored an undecodable broadcast ({})", exc)
            return
        try:
            self.handler(message)
        except Exception:  # one bad command must not end the listener
            logger.exception("Celery pidbox: {} failed", message.method)


class CeleryControl(Middleware):
    """Answers Celery's remote control in a worker process: revoke, and ping/active/reserved."""

    def __init__(
        self,
        *,
        store: TaskStore,
        jobs: RunningJobs | None = None,
        queues: Iterable[str] = (),
        app: str = "celery",
        node: str | None = None,
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.queues = tuple(queues)
        self.app = app
        self.node = node or ""
        self.kombu = KombuKeys()
        self._active: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._broker: RedisBroker | None = None
        self._listener: PidboxListener | None = None

    # --- worker life --------------------------------------------------------------------------------
    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.node = self.node or f"rosetta.{os.getpid()}@{socket.gethostname()}"
        self._broker = cast("RedisBroker", broker)
        client: redis.Redis = self._broker.client
        self.kombu = KombuKeys(int(client.connection_pool.connection_kwargs.get("db", 0)))
        self._listener = PidboxListener(client=client, handler=self.handle, app=self.app).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self._listener is not None:  # it ends while Dramatiq stops its threads, not before that starts
            self._listener.stop(wait=False)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self._listener is not None:
            self._listener.stop()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        entry = {
            "id": message.message_id,
            "name": message.actor_name,
            "args": list(message.args),
            "kwargs": dict(message.kwargs),
            "type": message.actor_name,
            "hostname": self.node,
            "time_start": time.time(),
            "acknowledged": False,
            "delivery_info": {
                "exchange": "",
                "routing_key": q_name(message.queue_name),
                "priority": 0,
                "redelivered": False,
            },
            "worker_pid": os.getpid(),
        }
        with self._lock:
            self._active[message.message_id] = entry

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        with self._lock:
            self._active.pop(message.message_id, None)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        with self._lock:
            self._active.pop(message.message_id, None)

    # --- commands -----------------------------------------------------------------------------------
    def handle(self, message: ControlMessage) -> None:
        if not message.addressed_to(self.node):
            return
        if message.method == "revoke":
            self._revoke(message)
            reply: Any = {"ok": "tasks flagged as revoked"}
        elif message.method == "ping":
            reply = {"ok": "pong"}
        elif message.method == "active":
            with self._lock:
                reply = list(self._active.values())
        elif message.method == "reserved":
            reply = self._reserved()
        else:
            reply = {"error": f"rosetta-jobs does not implement the {message.method!r} command"}
        if message.reply_to and not (message.expires and time.time() > message.expires):
            self._reply(message, {self.node: reply})

    def _revoke(self, message: ControlMessage) -> None:
        ids = message.arguments.get("task_id")
        terminate = bool(message.arguments.get("terminate"))
        for task_id in ids if isinstance(ids, list) else [ids]:
            if not isinstance(task_id, str) or not task_id:
                continue
            answer = revoke(self.store, task_id, terminate=terminate, queued=self._in_kombu)
            job = self.jobs.get(task_id) if self.jobs is not None else None
            if answer.get("cancelled") and job is not None:
                job.stop(JobCancelled)  # at once here; other processes stop theirs at their next flag poll
            logger.info("Celery revoke of {} (terminate={}): {}", task_id, terminate,
                        answer.get("reason") or answer["state"])  # fmt: skip

    def _in_kombu(self, task_id: str) -> bool:
        return self._broker is not None and waiting_in_kombu(self._broker.client, self.queues, task_id)

    def _reserved(self) -> list[dict[str, Any]]:
        """Fetched by this process and not running: Dramatiq's prefetch, Celery's "reserved"."""
        broker = self._broker
        if broker is None:
            return []
        keys = DramatiqKeys(broker.namespace)
        with self._lock:
            running = set(self._active)
        found = []
        for queue in sorted(broker.get_declared_queues()):
            ids = list(cast("set[bytes]", broker.client.smembers(keys.acks(broker.broker_id, queue))))
            payloads = cast("list[bytes | None]", broker.client.hmget(keys.messages(queue), ids)) if ids else []
            for payload in payloads:
                if payload is None:
                    continue
                try:
                    message = Message.decode(payload)
                except Exception:  # an undecodable payload is the consumer's to report
                    continue
                if message.message_id in running:
                    continue
                found.append({"id": message.message_id, "name": message.actor_name, "args": list(message.args),
                              "kwargs": dict(message.kwargs), "type": message.actor_name, "hostname": self.node,
                              "time_start": None, "acknowledged": False, "worker_pid": None,
                              "delivery_info": {"exchange": "", "routing_key": queue, "priority": 0,
                                                "redelivered": False}})  # fmt: skip
        return found

    def _reply(self, message: ControlMessage, body: dict[str, Any]) -> None:
        """LPUSH the reply on every list the reply exchange binds to its routing key (kombu's direct routing)."""
        if self._broker is None or message.reply_to is None:
            return
        exchange = message.reply_to.get("exchange") or KombuKeys.reply_exchange(self.app)
        routing_key = message.reply_to.get("routing_key") or ""
        client: redis.Redis = self._broker.client
        envelope = encode_envelope(body, exchange=exchange, routing_key=routing_key,
                                   headers={"ticket": message.ticket, "clock": 1})  # fmt: skip
        for member in cast("set[bytes]", client.smembers(self.kombu.binding(exchange))):
            bound_key, _, queue = self.kombu.parse_binding(member)
            if bound_key == routing_key and queue:
                client.lpush(self.kombu.queue(queue), envelope)
