"""Job contracts: for each job, the one place that says how it is called.

A contract is what the backend, the client, the Celery ingress, the ops API and the actor agree on:
the Celery task name (which is also the Dramatiq actor name), the queue, the argument names in the
Celery worker's positional order with their defaults, the default time limit and the retry policy.
Nothing here imports Dramatiq's worker side, so the light producer install can read it.

Adding a job: one ``JobContract`` below, one actor module in ``actors/`` declared with
``rosetta_jobs.actor.job_actor(CONTRACT)``, one test module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .redact import sql_digest, sql_sha256

__all__ = [
    "BACKEND_JOB",
    "CONTRACTS",
    "DESTINATION_TABLE_LIST",
    "ECHO",
    "FLOW_EXECUTE",
    "FLOW_PREVIEW",
    "FLOW_SCHEMA",
    "LINEAGE",
    "LINKED_STEP",
    "LINKED_TASK",
    "PREVIEW",
    "QUEUES",
    "REQUIRED",
    "JobContract",
    "Param",
    "contract_for",
    "masked_arguments",
]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of a parameter the caller must pass.
REQUIRED: Any = _Required()

#: ``none``: run once. ``transient``: retry ``TransientError`` with backoff (``retrying.py``).
RetryPolicy = Literal["none", "transient"]


@dataclass(frozen=True)
class Param:
    name: str
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class JobContract:
    """How one job is called. ``name`` is the Celery task name and the Dramatiq actor name."""

    name: str
    queue: str
    params: tuple[Param, ...]
    #: Milliseconds a job may run when neither the message nor a setting says otherwise.
    time_limit_ms: int = 600_000
    retry: RetryPolicy = "none"
    #: Settings field whose value (seconds) overrides ``time_limit_ms``, e.g. ``preview_time_limit``.
    time_limit_setting: str | None = None
    description: str = field(default="", compare=False)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def sql_params(self) -> tuple[str, ...]:
        """The parameters that carry a user's SQL (``sql``, ``*_sql``): shown only as a digest outside the job."""
        return tuple(name for name in self.param_names if name == "sql" or name.endswith("_sql"))

    def arguments(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The arguments by parameter name, as far as they were given (nothing is checked or filled in)."""
        named = dict(zip(self.param_names, args, strict=False))
        named.update(kwargs or {})
        return named

    def sql_digest(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> str | None:
        """The digest of the first SQL argument given (``redact.sql_digest``), or ``None`` without one."""
        named = self.arguments(args, kwargs)
        sql = next((named[name] for name in self.sql_params if isinstance(named.get(name), str) and named[name]), None)
        return sql_digest(sql) if sql is not None else None

    def sql_sha256(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> str | None:
        """The whole SHA-256 of the first SQL argument given (``redact.sql_sha256``), or ``None`` without one."""
        named = self.arguments(args, kwargs)
        sql = next((named[name] for name in self.sql_params if isinstance(named.get(name), str) and named[name]), None)
        return sql_sha256(sql) if sql is not None else None

    def masked(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> tuple[list[Any], dict[str, Any]]:
        """``args`` and ``kwargs`` with every SQL argument replaced by ``sha256:<digest>``."""
        hidden = set(self.sql_params)

        def mask(name: str, value: Any) -> Any:
            if name not in hidden or not isinstance(value, str) or value.startswith("sha256:"):
                return value  # not SQL, or already its digest (task meta under TASK_META_SQL=hash)
            return f"sha256:{sql_digest(value)}"

        masked_args = [mask(name, value) for name, value in zip(self.param_names, args, strict=False)]
        masked_args += list(args[len(masked_args) :])
        return masked_args, {name: mask(name, value) for name, value in (kwargs or {}).items()}

    def bind(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
        """The positional arguments for ``args``/``kwargs`` in contract order, defaults filled in.

        Raises ``TypeError`` with the message Python gives for a wrong call, so that a bad call fails
        at the door (client, ingress) the way it would have failed in the worker.
        """
        kwargs = dict(kwargs or {})
        if len(args) > len(self.params):
            raise TypeError(f"{self.name}() takes {len(self.params)} positional arguments but {len(args)} were given")
        bound: list[Any] = list(args)
        for param in self.params[len(args) :]:
            if param.name in kwargs:
                bound.append(kwargs.pop(param.name))
            elif param.required:
                raise TypeError(f"{self.name}() missing required argument: '{param.name}'")
            else:
                bound.append(param.default)
        for name in kwargs:
            if name in self.param_names:
                raise TypeError(f"{self.name}() got multiple values for argument '{name}'")
            raise TypeError(f"{self.name}() got an unexpected keyword argument '{name}'")
        return tuple(bound)


def _params(*names: str, **defaults: Any) -> tuple[Param, ...]:
    return tuple(Param(n) for n in names) + tuple(Param(n, d) for n, d in defaults.items())


# The Celery worker's seven tasks (../shared/spec/rosetta-worker.md 1.1) and the smoke-test job.
PREVIEW = JobContract(
    "worker.preview.execute",
    "preview",
    _params("sql", "source_id", "destination_id", "table_name", filter_sql=None, include_profiling=False),
    time_limit_ms=120_000,
    retry="transient",
    time_limit_setting="preview_time_limit",
    description="SQL preview of one table of a Postgres source, in DuckDB.",
)
FLOW_EXECUTE = JobContract(
    "worker.flow_task.execute",
    "default",
    _params("flow_task_id", "run_history_id", "graph_json"),
    time_limit_ms=900_000,
)
FLOW_PREVIEW = JobContract(
    "worker.flow_task.preview",
    "preview",
    _params("flow_task_id", "node_id", "graph_snapshot", limit=500, include_profiling=True),
    time_limit_ms=120_000,
)
#: Not a Celery task: the ops service's ``POST /schema`` asks a worker for a flow node's columns this way,
#: so the graph's SQL runs in a worker's bounded executor, never in the ops service.
FLOW_SCHEMA = JobContract(
    "worker.flow_task.schema",
    "preview",
    _params("node_id", "nodes", "edges"),
    time_limit_ms=30_000,
    description="The output columns of one node of a flow graph (POST /schema).",
)
DESTINATION_TABLE_LIST = JobContract(
    "worker.destination_table_list.fetch",
    "default",
    _params("destination_id"),
    time_limit_ms=120_000,
    retry="transient",
)
LINEAGE = JobContract(
    "worker.lineage.generate",
    "default",
    _params("table_sync_id", "custom_sql", "source_table", source_columns=None),
    time_limit_ms=60_000,
)
LINKED_TASK = JobContract(
    "worker.linked_task.execute", "default", _params("linked_task_id", "run_history_id"), time_limit_ms=3_600_000
)
#: Not a Celery task: one step of a linked-task run, enqueued by the run's coordinator (``flows/linked.py``).
LINKED_STEP = JobContract(
    "worker.linked_task.step",
    "default",
    _params("run_history_id", "step_id"),
    time_limit_ms=900_000,
    description="One step (a flow run) of a linked-task run; the next steps are enqueued when it ends.",
)
BACKEND_JOB = JobContract(
    "worker.backend_job.run",
    "default",
    _params("job_name", payload=None),
    time_limit_ms=600_000,
    retry="transient",
    time_limit_setting="backend_job_time_limit",
)
ECHO = JobContract(
    "worker.test.echo",
    "default",
    _params("message", steps=0, step_seconds=0.0),
    description="The smallest real job, for smoke tests and health probes.",
)

#: Every contract by name.
CONTRACTS: Mapping[str, JobContract] = {
    c.name: c
    for c in (
        PREVIEW,
        FLOW_EXECUTE,
        FLOW_PREVIEW,
        FLOW_SCHEMA,
        DESTINATION_TABLE_LIST,
        LINEAGE,
        LINKED_TASK,
        LINKED_STEP,
        BACKEND_JOB,
        ECHO,
    )
}
#: The queues the contracts declare, plus ``orchestration``, which the Celery worker consumed too.
QUEUES: tuple[str, ...] = tuple(sorted({c.queue for c in CONTRACTS.values()} | {"orchestration"}))


def contract_for(name: str) -> JobContract | None:
    return CONTRACTS.get(name)


def masked_arguments(
    actor: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
) -> tuple[list[Any], dict[str, Any]]:
    """A job's arguments as an operator may see them: the SQL of a contract's job as its digest."""
    contract = CONTRACTS.get(actor)
    if contract is None:
        return list(args), dict(kwargs or {})
    return contract.masked(args, kwargs)
