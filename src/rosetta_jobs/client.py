"""The backend's side: enqueue jobs and read their state, with the light dependencies only.

``JobClient`` replaces the backend's Celery ``WorkerClient``; ``AsyncResult`` reads
the same states ``celery.result.AsyncResult`` does. Nothing here imports DuckDB,
pyarrow or the preview pipeline.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from dramatiq import Message

from . import codec
from .broker import RosettaBroker
from .config import Settings, get_settings
from .connection import DEFAULT_SENTINEL, SentinelOptions, replica_wait_for
from .contracts import PREVIEW, QUEUES, JobContract
from .door import Door
from .errors import BrokerUnavailable, TaskFailed, TaskTimeout, UnknownQueue
from .limits import UserLimits
from .redact import redact
from .states import FAILURE, FINAL_STATES, PENDING, SUCCESS, exception_message, status_dict
from .store import HISTORY_MAX, HISTORY_MAX_AGE, TaskStore
from .subscriptions import subscriptions

__all__ = ["AsyncResult", "JobClient"]


class JobClient:
    """Submit jobs and read their state. One per process; it is thread-safe."""

    def __init__(
        self,
        *,
        broker_url: str,
        result_backend_url: str,
        result_expires: int = 600,
        namespace: str = "dramatiq",
        max_active_per_user: int = 10,
        history_max: int = HISTORY_MAX,
        history_max_age: int = HISTORY_MAX_AGE,
        sentinel: SentinelOptions = DEFAULT_SENTINEL,
        wait_replicas: int | None = None,
        wait_timeout_ms: int = 500,
        preview_cache_url: str | None = None,
        preview_cache_ttl: int = 300,
        preview_row_limit: int = 500,
        hash_sql: bool = True,
    ) -> None:
        """``sentinel``, ``wait_replicas``, ``wait_timeout_ms``: ``SENTINEL_*`` and ``REDIS_WAIT_*`` (``config``).

        With ``preview_cache_url`` (the workers' ``REDIS_URL``; ``preview_row_limit`` and ``hash_sql`` as theirs:
        ``PREVIEW_ROW_LIMIT``, ``TASK_META_SQL``), a preview whose answer is cached is answered here (``door``).
        """
        self.broker_url = broker_url
        enqueue_wait = replica_wait_for(broker_url, replicas=wait_replicas, timeout_ms=wait_timeout_ms,
                                        what="enqueued messages")  # fmt: skip
        final_wait = replica_wait_for(result_backend_url, replicas=wait_replicas, timeout_ms=wait_timeout_ms,
                                      what="final task states")  # fmt: skip
        self.broker = RosettaBroker(url=broker_url, sentinel=sentinel, replica_wait=enqueue_wait, namespace=namespace,
                                    middleware=[])  # fmt: skip
        self.store = TaskStore.from_url(result_backend_url, expires=result_expires, namespace=namespace,
                                        history_max=history_max, history_max_age=history_max_age, sentinel=sentinel,
                                        replica_wait=final_wait)  # fmt: skip
        self.limits = UserLimits(
            store=self.store, broker_client=self.broker.client, namespace=namespace, max_active=max_active_per_user
        )
        self.door = Door.for_cache(preview_cache_url or "", ttl=preview_cache_ttl, sentinel=sentinel, store=self.store,
                                   row_limit=preview_row_limit, hash_sql=hash_sql)  # fmt: skip

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> JobClient:
        settings = settings or get_settings()
        return cls(
            broker_url=settings.broker_url,
            result_backend_url=settings.result_backend_url,
            result_expires=settings.result_expires,
            namespace=settings.broker_namespace,
            max_active_per_user=settings.max_active_per_user,
            history_max=settings.task_history_max,
            history_max_age=settings.task_history_max_age,
            sentinel=settings.sentinel,
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
            preview_cache_url=settings.redis_url,
            preview_cache_ttl=settings.preview_cache_ttl,
            preview_row_limit=settings.preview_row_limit,
            hash_sql=settings.hash_task_sql,
        )

    def send(
        self,
        actor_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue_name: str = "default",
        *,
        task_id: str | None = None,
        options: Mapping[str, Any] | None = None,
        user_id: str | None = None,
    ) -> str:
        """Enqueue ``actor_name(*args, **kwargs)`` and return its task id (the message id).

        With ``user_id``, the job counts against that user's ``MAX_ACTIVE_PER_USER``;
        ``UserLimitExceeded`` is raised, and nothing enqueued, when the user is at the limit. The user
        travels with the message (option ``user_id``), so that the task history can name it.

        A queue that no job contract declares (``contracts.QUEUES``) is refused with ``UnknownQueue``:
        no worker would ever consume it, and the job would wait there without a word.
        """
        if queue_name not in QUEUES:
            raise UnknownQueue(
                f"no job is declared on queue {queue_name!r}, so no worker would consume it; "
                f"the queues are: {', '.join(QUEUES)}"
            )
        message_options = dict(options or {})
        if user_id is not None:
            message_options["user_id"] = user_id
        message: Message[Any] = Message(
            queue_name=queue_name,
            actor_name=actor_name,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            options=message_options,
            message_id=task_id or str(uuid.uuid4()),
        )
        json.dumps(message.asdict(), allow_nan=False)  # a clear error here, not a dead message later
        if (
            self.door is not None
            and actor_name == PREVIEW.name
            and self.door.answer(message.message_id, message.args, message.kwargs, queue=queue_name, user=user_id)
        ):
            return message.message_id  # answered from the preview cache: nothing to enqueue
        if user_id is not None:
            self.limits.reserve(user_id, message.message_id)
        try:
            self.store.mark_submitted(message.message_id, queue_name)
            enqueued = self.broker.enqueue(message)
        except redis.RedisError as exc:
            if user_id is not None:
                self.limits.release(user_id, message.message_id)
            where = redact(self.broker_url)
            raise BrokerUnavailable(
                f"cannot reach the broker at {where}: {redact(str(exc))}. Start Redis or set BROKER_URL."
            ) from exc
        if user_id is not None:
            self.limits.locate(user_id, message.message_id, queue_name, enqueued.options["redis_message_id"])
        return message.message_id

    def submit(
        self,
        contract: JobContract,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        task_id: str | None = None,
        options: Mapping[str, Any] | None = None,
        user_id: str | None = None,
    ) -> str:
        """Enqueue the job of ``contract``, its arguments checked and put in the contract's order."""
        bound = contract.bind(args, kwargs)
        return self.send(contract.name, bound, queue_name=contract.queue, task_id=task_id, options=options,
                         user_id=user_id)  # fmt: skip

    def submit_preview(
        self,
        sql: str | None,
        source_id: int,
        destination_id: int,
        table_name: str,
        filter_sql: str | None = None,
        include_profiling: bool = False,
        *,
        time_limit: float | None = None,
        user_id: str | None = None,
    ) -> str:
        """Enqueue a SQL preview with the Celery worker's positional arguments (``contracts.PREVIEW``)."""
        options = {"time_limit": int(time_limit * 1000)} if time_limit else None
        args = (sql, source_id, destination_id, table_name, filter_sql, include_profiling)
        return self.submit(PREVIEW, args, options=options, user_id=user_id)

    def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel a job: if queued it never starts; if running, its query is interrupted.

        The state becomes REVOKED and stays so. An unknown or finished id is left as it is, and the
        answer says why: ``{"task_id", "cancelled": bool, "state", "reason"?}``.
        """
        return self.store.cancel(task_id)

    def result(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, client=self)

    def get_task_status(self, task_id: str) -> dict[str, Any]:
        """The backend's status dict (its ``WorkerClient.get_task_status``), from one read."""
        try:
            meta = self.store.get(task_id)
        except BrokerUnavailable as exc:
            return {"task_id": task_id, "state": "UNKNOWN", "status": "error", "error": f"Worker unavailable: {exc}"}
        return status_dict(task_id, meta)


class AsyncResult:
    """The state of one task, read the way ``celery.result.AsyncResult`` reads it."""

    def __init__(self, task_id: str, *, client: JobClient | None = None) -> None:
        self.id = self.task_id = task_id
        self.store = client.store if client is not None else _default_store()
        self._meta: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._meta is not None:  # only final meta is kept, as Celery does
            return self._meta
        meta = self.store.get(self.task_id) or {"status": PENDING, "result": None}
        if meta.get("status") in FINAL_STATES:
            self._meta = meta
        return meta

    @property
    def state(self) -> str:
        return str(self._load()["status"])

    status = state

    @property
    def info(self) -> Any:
        return self._load().get("result")

    result = info

    @property
    def traceback(self) -> str | None:
        return self._load().get("traceback")

    @property
    def date_done(self) -> dt.datetime | None:
        done = self._load().get("date_done")
        return dt.datetime.fromisoformat(done) if done else None

    def ready(self) -> bool:
        return self.state in FINAL_STATES

    def successful(self) -> bool:
        return self.state == SUCCESS

    def failed(self) -> bool:
        return self.state == FAILURE

    def get(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """Block until a final state arrives on the task's channel; return or raise its result."""
        meta = self._wait(timeout)
        if meta["status"] == SUCCESS or not propagate:
            return meta.get("result")
        raise _exception(meta.get("result"))

    def _wait(self, timeout: float | None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        meta = self._load()
        if meta.get("status") in FINAL_STATES:  # over already: no subscription to make and take down
            return meta
        with subscriptions(self.store.client).channel(self.store.key(self.task_id)) as channel:
            meta = self._load()  # read again after subscribing, so no write can fall in between
            while meta.get("status") not in FINAL_STATES:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TaskTimeout(f"task {self.task_id} is still {meta.get('status')} after {timeout} s")
                data = channel.get(timeout=min(remaining or 5.0, 5.0))
                if data is not None:
                    meta = codec.loads(data)
                elif channel.lost or remaining is None or remaining > 5.0:
                    channel.lost = False
                    meta = self._load()  # a periodic re-read guards against a lost subscription
        self._meta = meta
        return meta

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.task_id}>"


def _exception(encoded: Any) -> BaseException:
    """Rebuild a builtin exception; anything else becomes ``TaskFailed``."""
    if not isinstance(encoded, dict):
        return TaskFailed("Exception", str(encoded))
    exc_type, module = str(encoded.get("exc_type")), encoded.get("exc_module")
    message = exception_message(encoded)
    cls = getattr(builtins, exc_type, None) if module == "builtins" else None
    if isinstance(cls, type) and issubclass(cls, Exception):
        args = encoded.get("exc_message")
        return cls(*args) if isinstance(args, list) else cls(args)
    return TaskFailed(exc_type, message, module)


def _default_store() -> TaskStore:
    """The settings' result backend; its Redis client is shared per URL (``connection.redis_client``)."""
    settings = get_settings()
    return TaskStore.from_url(
        settings.result_backend_url,
        expires=settings.result_expires,
        namespace=settings.broker_namespace,
        history_max=settings.task_history_max,
        history_max_age=settings.task_history_max_age,
        sentinel=settings.sentinel,
    )
