"""Where rosetta-jobs keeps things in Redis: every key name and every Lua script, in one place.

Four families of keys, each with one owner:

- **Celery's** task meta, ``celery-task-meta-<id>`` on the result backend: the backend reads it, so its
  name is Celery's and carries no namespace (``TaskKeys.meta``).
- **Ours**, ``rosetta-jobs:<namespace>:<kind>:<...>`` (``Keys``): per-task flags and counters on the
  result backend, worker heartbeats, metrics, per-user limits, wake-up tokens on the broker. One
  deployment's keys (its ``BROKER_NAMESPACE``) never mix with another's.
- **Dramatiq's** queues, ``<namespace>:<queue>...`` on the broker (``DramatiqKeys``): written by Dramatiq,
  read (and in a few places repaired) by us, through the one adapter below, which names the Dramatiq
  version its layout was taken from; ``tests/test_layout.py`` fails when Dramatiq's own layout moves.
- **The backend's cache**, on ``REDIS_URL`` (db 0): keys the Rosetta backend reads and the worker fills,
  spelled as the backend spells them (``BackendKeys``).

Lua scripts live in ``lua/*.lua`` and are loaded with ``script(client, name)``. Each is prefixed with a
header generated from ``states.FINAL_STATES``, so the set of final states is written once, in Python.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import TYPE_CHECKING

from .states import FINAL_STATES

if TYPE_CHECKING:
    import redis
    from redis.commands.core import Script

__all__ = [
    "DRAMATIQ_LAYOUT_VERSION",
    "KOMBU_LAYOUT_VERSION",
    "META_PREFIX",
    "OPS_PREFIX",
    "BackendKeys",
    "DramatiqKeys",
    "Keys",
    "KombuKeys",
    "lua_source",
    "script",
]

#: Celery's key prefix for task meta; the channel of the same name carries every write.
META_PREFIX = "celery-task-meta-"
#: The first part of every key rosetta-jobs itself keeps.
OPS_PREFIX = "rosetta-jobs"
#: The Dramatiq release whose Redis layout ``DramatiqKeys`` spells (``brokers/redis/dispatch.lua``).
DRAMATIQ_LAYOUT_VERSION = "2.2"
#: The kombu release whose Redis transport ``KombuKeys`` spells (``kombu/transport/redis.py``).
KOMBU_LAYOUT_VERSION = "5.7"


class Keys:
    """The keys of one deployment, named by its broker namespace."""

    def __init__(self, namespace: str = "dramatiq") -> None:
        self.namespace = namespace
        self.prefix = f"{OPS_PREFIX}:{namespace}:"

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # --- task state (result backend) -------------------------------------------------------------
    @staticmethod
    def meta(task_id: str) -> str:
        """Celery's ``celery-task-meta-<id>``: the backend's ``AsyncResult`` reads it."""
        return META_PREFIX + task_id

    def cancel(self, task_id: str) -> str:
        """Set while a cancel of the task stands; outlives the REVOKED meta."""
        return self._key("cancel", task_id)

    def submitted(self, task_id: str) -> str:
        """The task was enqueued: lets ``cancel`` tell a queued task from an unknown id."""
        return self._key("submitted", task_id)

    def deliveries(self, task_id: str) -> str:
        """How many times the job started (the poison-message cap)."""
        return self._key("deliveries", task_id)

    def stopped(self, task_id: str) -> str:
        """When a cancelled running job really stopped (epoch ms)."""
        return self._key("stopped", task_id)

    def lease(self, task_id: str) -> str:
        """Exists while a live worker runs the task."""
        return self._key("lease", task_id)

    # --- workers and metrics (result backend) ------------------------------------------------------
    def workers(self) -> str:
        """Sorted set of worker process ids by last heartbeat."""
        return self._key("workers")

    def worker(self, worker_id: str) -> str:
        """One worker process's heartbeat hash."""
        return self._key("worker", worker_id)

    def metrics(self, family: str) -> str:
        """One metric family's hash: ``jobs``, ``failures``, ``dead_lettered``, ``duration``, ``wait``, ..."""
        return self._key("metrics", family)

    def depth_history(self, *parts: str) -> str:
        """Queue-depth samples of the dashboard's chart (and their sampling lock)."""
        return self._key("depth-history", *parts)

    # --- task history (result backend) -------------------------------------------------------------
    def history(self) -> str:
        """Sorted set of finished task ids by finish time (ms); written with the final state (``task_write``)."""
        return self._key("history")

    def history_entries(self) -> str:
        """Hash of finished task id -> its history entry (JSON), trimmed with ``history``."""
        return self._key("history-entries")

    # --- per-user limits (result backend) ----------------------------------------------------------
    def user(self, user_id: str) -> str:
        """The task ids a user submitted, scored by submit time."""
        return self._key("user", user_id)

    def user_where(self, user_id: str) -> str:
        """Where each of a user's tasks went: ``<queue> <redis message id>``."""
        return self._key("user-where", user_id)

    # --- housekeeping (result backend) --------------------------------------------------------------
    def sweeper(self) -> str:
        """Hash of the sweeper's runs: ``runs``, ``last_run_at``, ``last_duration``, ``holder``, ``removed:<kind>``."""
        return self._key("sweeper")

    def sweeper_lease(self) -> str:
        """Held (``lua/sweeper_lease.lua``) by the one process that sweeps; expires with it."""
        return self._key("sweeper-lease")

    def user_streams(self, user_id: str) -> str:
        """The user's open SSE streams, scored by the expiry of each one's lease (``lua/stream_slot.lua``)."""
        return self._key("user-streams", user_id)

    # --- broker ----------------------------------------------------------------------------------
    def wake(self, queue_name: str) -> str:
        """Wake-up tokens for the idle consumers of a queue (outside Dramatiq's ``<ns>:*`` on purpose)."""
        return self._key("wake", queue_name)

    # --- Celery ingress (broker) -------------------------------------------------------------------
    def celery_inflight(self, owner: str, queue_name: str) -> str:
        """The list of Celery messages one worker process took off a kombu list and has not handed on."""
        return self._key("celery-inflight", owner, queue_name)

    def celery_owners(self) -> str:
        """Sorted set of ``[inflight list, kombu queue]`` (JSON) by their process's last heartbeat (ms)."""
        return self._key("celery-owners")

    def celery_moved(self, task_id: str) -> str:
        """Set when a Celery task id was enqueued for Dramatiq: a second copy of it is not enqueued again."""
        return self._key("celery-moved", task_id)


class BackendKeys:
    """Keys of the Rosetta backend's cache (``REDIS_URL``): the backend reads them, so the names are its own."""

    @staticmethod
    def preview(digest: str) -> str:
        """A cached preview result, by the digest of its request (``preview.cache.cache_key``); the Celery
        worker's prefix, a different digest, so the two never share an entry."""
        return f"preview:{digest}"

    @staticmethod
    def destination_tables(destination_id: int) -> str:
        """The JSON list of a destination's tables; ``DestinationService.get_table_list`` prefers it to the DB."""
        return f"destination:{destination_id}:tables"


class DramatiqKeys:
    """Dramatiq's own broker keys (layout of ``DRAMATIQ_LAYOUT_VERSION``), for reading and repair only."""

    def __init__(self, namespace: str = "dramatiq") -> None:
        self.namespace = namespace

    def queue(self, queue_name: str) -> str:
        """The list of ready redis message ids."""
        return f"{self.namespace}:{queue_name}"

    #: ``messages(q) == queue(q) + MESSAGES_SUFFIX``.
    MESSAGES_SUFFIX = ".msgs"

    def messages(self, queue_name: str) -> str:
        """Payloads of ready *and* fetched-but-unacked messages, by redis message id."""
        return self.queue(queue_name) + self.MESSAGES_SUFFIX

    def delayed(self, queue_name: str) -> str:
        return self.queue(f"{queue_name}.DQ")

    def delayed_messages(self, queue_name: str) -> str:
        return self.messages(f"{queue_name}.DQ")

    def dead(self, queue_name: str) -> str:
        """Dead-lettered ids, scored by the time of the nack (ms)."""
        return f"{self.namespace}:{queue_name}.XQ"

    def dead_messages(self, queue_name: str) -> str:
        return f"{self.namespace}:{queue_name}.XQ.msgs"

    def acks(self, broker_id: str, queue_name: str) -> str:
        """What one broker (worker process) fetched from a queue and has not acknowledged."""
        return f"{self.acks_prefix()}{broker_id}.{queue_name}"

    def acks_prefix(self) -> str:
        """``acks(broker_id, queue) == acks_prefix() + broker_id + "." + queue`` (the Lua of recovery relies on it)."""
        return f"{self.namespace}:__acks__."

    def heartbeats(self) -> str:
        """Dramatiq's own heartbeats: broker id -> last call (ms); producers write them too."""
        return f"{self.namespace}:__heartbeats__"

    #: Suffixes of the per-queue keys, longest first (to find a queue's name from a key).
    SUFFIXES = (".DQ.msgs", ".XQ.msgs", ".msgs", ".DQ", ".XQ")


class KombuKeys:
    """Kombu's Redis transport (``KOMBU_LAYOUT_VERSION``): what a Celery producer writes and reads.

    A queue is a list the producer LPUSHes and a consumer BRPOPs (FIFO); priorities 3, 6 and 9 have
    lists of their own, consumed after the bare one (priority 0). Fanout exchanges (the pidbox) are
    pub/sub channels prefixed with the database number, because Redis channels span databases.
    """

    #: kombu's ``Channel.sep`` and ``priority_steps``.
    SEP = "\x06\x16"
    PRIORITY_STEPS = (0, 3, 6, 9)

    def __init__(self, db: int = 0) -> None:
        self.db = db

    def queue(self, name: str, priority: int = 0) -> str:
        """The list of one priority step of a queue (kombu's ``_q_for_pri``)."""
        step = max(s for s in self.PRIORITY_STEPS if s <= max(priority, 0))
        return f"{name}{self.SEP}{step}" if step else name

    def queues(self, name: str) -> list[str]:
        """Every list of a queue, in the order a kombu consumer takes from them."""
        return [self.queue(name, step) for step in self.PRIORITY_STEPS]

    def binding(self, exchange: str) -> str:
        """The set of ``routing_key SEP pattern SEP queue`` bound to an exchange."""
        return f"_kombu.binding.{exchange}"

    def binding_member(self, routing_key: str, queue: str) -> str:
        return self.SEP.join([routing_key, "", queue])

    def parse_binding(self, member: bytes | str) -> tuple[str, str, str]:
        """``(routing_key, pattern, queue)`` of a binding member."""
        text = member.decode() if isinstance(member, bytes) else member
        routing_key, pattern, queue = [*text.split(self.SEP), "", "", ""][:3]
        return routing_key, pattern, queue

    def fanout(self, exchange: str) -> str:
        """The pub/sub channel of a fanout exchange (``keyprefix_fanout`` + exchange)."""
        return f"/{self.db}.{exchange}"

    def pidbox(self, app: str = "celery") -> str:
        """Where ``control.revoke``, ``inspect ping``, ... are broadcast: ``/<db>.celery.pidbox``."""
        return self.fanout(f"{app}.pidbox")

    @staticmethod
    def reply_exchange(app: str = "celery") -> str:
        """The direct exchange that carries replies to ``inspect`` calls."""
        return f"reply.{app}.pidbox"


def _header() -> str:
    states = ", ".join(f"[{state!r}] = true" for state in sorted(FINAL_STATES))
    return (
        "-- generated by rosetta_jobs.layout from states.FINAL_STATES\n"
        f"local FINAL_STATES = {{{states}}}\n"
        "local function final_status(key)\n"
        "  local current = redis.call('GET', key)\n"
        "  if not current then return nil end\n"
        "  local ok, doc = pcall(cjson.decode, current)\n"
        "  if ok and type(doc) == 'table' and FINAL_STATES[doc['status']] then return doc['status'] end\n"
        "  return nil\n"
        "end\n"
    )


@functools.cache
def lua_source(name: str) -> str:
    """The source of ``lua/<name>.lua`` with the shared header; read once per process."""
    body = resources.files(__package__).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    return _header() + body


def script(client: redis.Redis, name: str) -> Script:
    """``lua/<name>.lua`` registered on ``client`` (EVALSHA, loaded on first call)."""
    return client.register_script(lua_source(name))
