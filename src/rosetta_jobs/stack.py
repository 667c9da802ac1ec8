"""The worker's broker and its middleware stack, declared in one place before any actor.

``build_broker`` is what ``rosetta_jobs.actors`` calls. The order of the stack matters: Dramatiq runs
``before_*`` hooks in list order and ``after_*`` hooks in reverse, so ``JobContext`` (first) sees a
message before anyone else and after everyone else, and ``TaskState`` and ``Metrics`` (before
``Retries``) see the retry decision.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import redis
from dramatiq.middleware import AgeLimit, Middleware, Retries, ShutdownNotifications

from .broker import RosettaBroker
from .config import Settings, get_settings
from .connection import own_pool
from .consumer import Consumer
from .contracts import CONTRACTS, JobContract
from .ingress import celery_middleware
from .job import RunningJobs
from .lease import Lease
from .middleware import Callbacks, Cancellation, Fence, JobContext, Pipelines, Recovery, TaskState, TimeLimit
from .middleware.heartbeat import Heartbeat
from .middleware.metrics import Metrics
from .store import TaskStore

__all__ = ["WorkerBroker", "build_broker", "build_middleware", "heartbeat_interval", "lease_timeout", "time_limits"]


class WorkerBroker(RosettaBroker):
    """The worker's broker: consumers that wake on enqueue and survive undecodable payloads."""

    #: The process's lease (``rosetta_jobs.lease``): its consumers fetch nothing while it is lost.
    lease: Lease | None = None

    @property
    def consumer_class(self) -> type:
        return Consumer

    @functools.cached_property
    def waiter(self) -> redis.Redis:
        """A client of its own for consumers' blocking waits (each holds a connection while it waits)."""
        return own_pool(self.client)


def time_limits(settings: Settings, contracts: Mapping[str, JobContract] = CONTRACTS) -> dict[str, int]:
    """Time limits (ms) that settings give jobs, over their contracts' (``PREVIEW_TIME_LIMIT``, ...)."""
    return {
        contract.name: int(getattr(settings, contract.time_limit_setting) * 1000)
        for contract in contracts.values()
        if contract.time_limit_setting
    }


def lease_timeout(settings: Settings) -> float:
    """Seconds without an acknowledged heartbeat after which a process stops its jobs (``Fence``).

    The lease TTL, or the broker's heartbeat timeout if shorter: past either, another process may requeue
    the jobs (``Recovery``) or count their leases dead (the per-user limits).
    """
    ttl = max(settings.heartbeat_ttl, settings.heartbeat_interval * 2)  # as ``Heartbeat`` keeps it
    return min(ttl, settings.heartbeat_timeout_ms / 1000)


def heartbeat_interval(settings: Settings) -> float:
    """Seconds between two heartbeats: ``HEARTBEAT_INTERVAL``, or a third of the lease timeout if that is shorter.

    A process that beats less often than its lease runs out would lose its lease between two beats of a
    healthy link (``HEARTBEAT_TIMEOUT_MS=2000`` with the default 5 s interval stopped every job at 2 s).
    """
    return min(settings.heartbeat_interval, lease_timeout(settings) / 3)


def build_middleware(settings: Settings, *, lease: Lease | None = None) -> list[Middleware]:
    """The worker's middleware, in order (see the module's docstring)."""
    lease = lease or Lease(lease_timeout(settings))
    store = TaskStore.from_url(
        settings.result_backend_url,
        expires=settings.result_expires,
        namespace=settings.broker_namespace,
        history_max=settings.task_history_max,
        history_max_age=settings.task_history_max_age,
        sentinel=settings.sentinel,
        replica_wait=settings.replica_wait(settings.result_backend_url, what="final task states"),
    )
    jobs = RunningJobs()
    task_state = TaskState(store=store, jobs=jobs, max_worker_losses=settings.max_worker_losses,
                           hash_sql=settings.hash_task_sql)  # fmt: skip
    return [
        JobContext(jobs=jobs, time_limits=time_limits(settings), progress_writer=task_state.write_progress),
        AgeLimit(),
        ShutdownNotifications(),
        Callbacks(jobs=jobs),
        Pipelines(jobs=jobs),
        # Heartbeat before TaskState: it hands a task's lease to its STARTED write (one step), and removes it after
        # the final state.
        Heartbeat(
            client=store.client,
            namespace=settings.broker_namespace,
            jobs=jobs,
            interval=heartbeat_interval(settings),
            ttl=settings.heartbeat_ttl,
            lease=lease,
        ),
        # Right after Heartbeat, whose hook renews the lease (a whole beat) when none reached Redis lately.
        Fence(lease=lease, jobs=jobs),
        Metrics(client=store.client, namespace=settings.broker_namespace, jobs=jobs),
        # Celery ingress and pidbox (before TaskState: a Celery task that expired while queued never starts).
        *celery_middleware(settings, store=store, jobs=jobs),
        # A message TaskState skips (already final, e.g. cancelled) never runs.
        task_state,
        Cancellation(store=store, jobs=jobs),
        TimeLimit(jobs=jobs),
        Recovery(),
        # Retries are off unless an actor opts in (Dramatiq's default is 20 for everything).
        Retries(max_retries=0),
    ]


def build_broker(settings: Settings | None = None, *, middleware: list[Middleware] | None = None) -> WorkerBroker:
    """Build the worker's broker from ``settings``; the global Dramatiq broker is left to the caller."""
    settings = settings or get_settings()
    lease = Lease(lease_timeout(settings))
    broker = WorkerBroker(
        url=settings.broker_url,
        sentinel=settings.sentinel,
        replica_wait=settings.replica_wait(settings.broker_url, what="enqueued messages"),
        namespace=settings.broker_namespace,
        middleware=build_middleware(settings, lease=lease) if middleware is None else middleware,
        heartbeat_timeout=settings.heartbeat_timeout_ms,
    )
    if middleware is None:
        broker.lease = lease
    return broker
