"""The task history: a bounded, time-ordered record of the tasks that ended, for operators.

A task's meta (``celery-task-meta-<id>``) lives ``RESULT_EXPIRES`` seconds, which is what the backend's
poller needs, not what an operator asking "what ran an hour ago, and who sent it?" needs. So each final
state (SUCCESS, FAILURE, REVOKED) is also recorded here, by the same Lua call that writes it
(``lua/task_write.lua``, through ``TaskStore.write``): a task is in the history exactly when it ended,
once (a requeued task's later end replaces its entry).

Two keys on the result backend (``Keys.history``: task ids by finish time; ``Keys.history_entries``: the
entries), trimmed on every write to ``TASK_HISTORY_MAX`` entries and ``TASK_HISTORY_MAX_AGE`` seconds. An
entry holds what identifies and times the task, never its arguments or result: the SQL as its digest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis

from .contracts import contract_for
from .layout import Keys
from .redact import SQL_DIGEST_LENGTH
from .states import EXCEPTION_STATES, REVOKED, exception_message

__all__ = ["HISTORY_FIELDS", "HistoryFilter", "TaskHistory", "history_entry"]

#: The fields of an entry, in the order the CLI and the dashboard show them.
HISTORY_FIELDS = (
    "task_id",
    "actor",
    "queue",
    "state",
    "user",
    "sql_digest",
    "enqueued_at",
    "started_at",
    "finished_at",
    "error_type",
    "reason",
    "worker",
)
_PAGE = 500


def history_entry(
    meta: Mapping[str, Any], context: Mapping[str, Any] | None = None, *, now: float | None = None
) -> dict[str, Any]:
    """The history entry of a final ``meta``, finished at ``now``; ``context`` fills what the meta does not say.

    ``context`` keys: ``actor``, ``queue``, ``args``, ``kwargs`` (a REVOKED written by a cancel carries
    none of them), ``user``, ``enqueued_at`` and ``started_at`` (epoch seconds), ``worker`` (the process,
    ``host:pid`` as its heartbeat names it).
    """
    context = context or {}
    actor = meta.get("name") or context.get("actor")
    args = meta.get("args") if meta.get("args") is not None else context.get("args")
    kwargs = meta.get("kwargs") if meta.get("kwargs") is not None else context.get("kwargs")
    contract = contract_for(str(actor)) if actor else None
    result = meta.get("result")
    state = str(meta.get("status"))
    error_type = reason = None
    if state in EXCEPTION_STATES and isinstance(result, Mapping):
        # A REVOKED task's "exception" is Celery's TaskRevokedError whatever happened: its message says why.
        if state == REVOKED:
            reason = exception_message(result)
        else:
            error_type = result.get("exc_type")
    return {
        "task_id": meta["task_id"],
        "actor": actor,
        "queue": meta.get("queue") or context.get("queue"),
        "state": state,
        "user": context.get("user"),
        "sql_digest": _digest(meta, context, contract, args, kwargs),
        "enqueued_at": _seconds(context.get("enqueued_at")),
        "started_at": _seconds(context.get("started_at")),
        "finished_at": round(time.time() if now is None else now, 3),
        "error_type": error_type,
        "reason": reason,
        "worker": context.get("worker") or meta.get("worker"),
    }


def _digest(meta: Mapping[str, Any], context: Mapping[str, Any], contract: Any, args: Any, kwargs: Any) -> str | None:
    """The SQL's digest: from ``sql_sha256`` when the meta's arguments are already hashed (``TASK_META_SQL``)."""
    whole = meta.get("sql_sha256") or context.get("sql_sha256")
    if isinstance(whole, str) and whole:
        return whole[:SQL_DIGEST_LENGTH]
    return contract.sql_digest(args or (), kwargs) if contract is not None else None


def _seconds(value: Any) -> float | None:
    return round(float(value), 3) if isinstance(value, int | float) and value > 0 else None


@dataclass(frozen=True, kw_only=True)
class HistoryFilter:
    """Which entries to list; every field left ``None`` matches all."""

    actor: str | None = None
    state: str | None = None
    user: str | None = None
    queue: str | None = None
    #: Epoch seconds: only tasks that finished at or after it.
    since: float | None = None

    def matches(self, entry: Mapping[str, Any]) -> bool:
        return (
            (self.actor is None or entry.get("actor") == self.actor)
            and (self.state is None or entry.get("state") == self.state.upper())
            and (self.user is None or entry.get("user") == self.user)
            and (self.queue is None or entry.get("queue") == self.queue)
        )


class TaskHistory:
    """Read the task history of one deployment (its ``BROKER_NAMESPACE``) on the result backend."""

    def __init__(self, *, client: redis.Redis, namespace: str = "dramatiq") -> None:
        self.client = client
        self.keys = Keys(namespace)

    def get(self, task_id: str) -> dict[str, Any] | None:
        """The entry of one task, or ``None`` if it did not end within the retention (or at all)."""
        raw = cast("bytes | None", self.client.hget(self.keys.history_entries(), task_id))
        return _decode(raw) if raw is not None else None

    def count(self) -> int:
        return int(cast("int", self.client.zcard(self.keys.history())))

    def recent(self, where: HistoryFilter | None = None, *, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` entries that match ``where``, newest first."""
        where = where or HistoryFilter()
        found: list[dict[str, Any]] = []
        for entry in self._newest_first(where.since):
            if where.matches(entry):
                found.append(entry)
                if len(found) >= limit:
                    break
        return found

    def _newest_first(self, since: float | None) -> Iterator[dict[str, Any]]:
        """Entries newest first, a page of ids at a time (the index and the entries are read separately)."""
        # Before the epoch (or not a number) is no bound at all.
        low = f"{int(since * 1000)}" if since is not None and 0 < since < float("inf") else "-inf"
        offset = 0
        while True:
            ids = cast(
                "list[bytes]",
                self.client.zrevrangebyscore(self.keys.history(), "+inf", low, start=offset, num=_PAGE),
            )
            if not ids:
                return
            raws = cast("list[bytes | None]", self.client.hmget(self.keys.history_entries(), ids))
            for raw in raws:
                if raw is not None:  # trimmed between the two reads
                    yield _decode(raw)
            offset += len(ids)


def _decode(raw: bytes) -> dict[str, Any]:
    doc = json.loads(raw)
    return doc if isinstance(doc, dict) else {}
