"""Settings, read once from the environment and an optional ``.env`` file.

The Celery worker's variable names keep working (``CELERY_BROKER_URL``,
``CELERY_RESULT_BACKEND``, ...) next to clearer native names (``BROKER_URL``,
``RESULT_BACKEND_URL``). Unknown keys are ignored, and an invalid value fails at
start with a message that names the variable and says how to fix it.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .connection import ReplicaWait, SentinelOptions, replica_wait_for, validate_redis_url
from .errors import ConfigError

__all__ = ["Settings", "get_settings", "load_settings", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KIB|MB|MIB|GB|GIB|TB|TIB)?\s*$", re.IGNORECASE)
_UNITS = {
    "B": 1,
    "KB": 1000,
    "KIB": 1024,
    "MB": 1000**2,
    "MIB": 1024**2,
    "GB": 1000**3,
    "GIB": 1024**3,
    "TB": 1000**4,
    "TIB": 1024**4,
}


def parse_size(text: str) -> int:
    """Return the number of bytes of a DuckDB-style size such as ``512MB`` or ``2GiB``."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size; write it like 512MB or 2GB")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "B").upper()])


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Every setting of rosetta-jobs. ``docs/configuration.md`` is generated from this class."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        populate_by_name=True,
    )

    # Redis
    broker_url: str = Field(
        "redis://localhost:6379/1",
        validation_alias=_env("BROKER_URL", "CELERY_BROKER_URL"),
        description="Redis URL of the Dramatiq broker (queues).",
    )
    result_backend_url: str = Field(
        "redis://localhost:6379/2",
        validation_alias=_env("RESULT_BACKEND_URL", "CELERY_RESULT_BACKEND"),
        description="Redis URL where task state is kept as celery-task-meta-<id>.",
    )
    redis_url: str = Field(
        "redis://localhost:6379/0",
        validation_alias=_env("REDIS_URL"),
        description="Redis URL of the preview cache.",
    )
    result_expires: int = Field(
        600,
        ge=60,
        validation_alias=_env("RESULT_EXPIRES", "CELERY_RESULT_EXPIRES"),
        description="Seconds a task state stays readable after its last change.",
    )
    broker_namespace: str = Field(
        "dramatiq",
        pattern=r"^[A-Za-z0-9_.-]+$",
        validation_alias=_env("BROKER_NAMESPACE"),
        description="Key prefix of the broker's queues in Redis.",
    )
    # --- Redis Sentinel and replicated writes (issue 18: rosetta_jobs/connection.py) --------------------
    sentinel_master_name: str = Field(
        "mymaster",
        min_length=1,
        validation_alias=_env("SENTINEL_MASTER_NAME"),
        description="Name of the master the Sentinels of a sentinel:// URL monitor (Celery's master_name "
        "transport option); the same for every sentinel:// URL of the deployment.",
    )
    sentinel_password: str | None = Field(
        None,
        validation_alias=_env("SENTINEL_PASSWORD"),
        description="The Sentinels' own password (their requirepass; Celery's sentinel_kwargs={'password': ...}). "
        "The Redis master's password goes in the URL, as with Celery: sentinel://:password@host:26379.",
    )
    redis_wait_replicas: int | None = Field(
        None,
        ge=0,
        le=16,
        validation_alias=_env("REDIS_WAIT_REPLICAS"),
        description="Replicas that must hold a final task state and an enqueued message before the write "
        "counts as done (Redis WAIT), so that a failover cannot lose it. Unset: 1 for a sentinel:// URL, 0 "
        "otherwise. A shortfall is logged, never an error (docs/operations.md, HA with Redis Sentinel).",
    )
    redis_wait_timeout_ms: int = Field(
        500,
        ge=1,
        le=60_000,
        validation_alias=_env("REDIS_WAIT_TIMEOUT_MS"),
        description="Milliseconds a write waits for REDIS_WAIT_REPLICAS replicas; past it the write stands, "
        "a warning is logged, and writes do not wait for 30 s.",
    )
    # --- end of Redis Sentinel -----------------------------------------------------------------------

    # Config database and credentials
    database_url: str = Field(
        "postgresql://postgres@localhost:5432/rosetta",
        validation_alias=_env("DATABASE_URL"),
        description="PostgreSQL URL of the config database (tables sources, destinations).",
    )
    db_pool_size: int = Field(10, ge=1, le=50, validation_alias=_env("DB_POOL_SIZE"))
    db_pool_timeout: int = Field(30, ge=1, le=120, validation_alias=_env("DB_POOL_TIMEOUT"))
    credential_encryption_key: str | None = Field(
        None,
        validation_alias=_env("CREDENTIAL_ENCRYPTION_KEY"),
        description="The backend's AES-256-GCM key: 32 bytes, raw or base64. Needed by workers only.",
    )
    worker_api_url: str | None = Field(
        None,
        validation_alias=_env("WORKER_API_URL"),
        description="DMZ workers: the ops service's URL; a worker with it and without DATABASE_URL and "
        "CREDENTIAL_ENCRYPTION_KEY asks the service for the one source a preview needs (docs/security.md).",
    )
    worker_api_key: str | None = Field(
        None,
        validation_alias=_env("WORKER_API_KEY"),
        description="The key DMZ workers send (x-worker-key) and the ops service's /worker endpoints accept; "
        "unset on the service: those endpoints are off. Must differ from API_KEY and ADMIN_API_KEY.",
    )

    # Preview
    preview_row_limit: int = Field(500, ge=1, le=50_000, validation_alias=_env("PREVIEW_ROW_LIMIT"))
    preview_cache_ttl: int = Field(300, ge=0, validation_alias=_env("PREVIEW_CACHE_TTL"))
    preview_time_limit: float = Field(
        120.0,
        gt=0,
        validation_alias=_env("PREVIEW_TIME_LIMIT", "TASK_SOFT_TIME_LIMIT"),
        description="Seconds a preview may run before its query is interrupted.",
    )
    arrow_batch_size: int = Field(1024, ge=128, le=20_000, validation_alias=_env("ARROW_BATCH_SIZE"))
    duckdb_memory_limit: str = Field(
        "1GB",
        validation_alias=_env("DUCKDB_MEMORY_LIMIT"),
        description="memory_limit of each DuckDB session.",
    )
    duckdb_threads: int = Field(1, ge=1, le=16, validation_alias=_env("DUCKDB_THREADS"))
    preview_session_max_age: float = Field(
        60.0,
        ge=1.0,
        le=3600.0,
        validation_alias=_env("PREVIEW_SESSION_MAX_AGE"),
        description="Seconds a DuckDB session attached to a source serves previews: a change of the source's "
        "tables shows within this time. A source in use gets its next session opened in the background.",
    )
    duckdb_max_concurrent: int = Field(
        2,
        ge=1,
        le=16,
        validation_alias=_env("DUCKDB_MAX_CONCURRENT"),
        description="Previews (and flow runs) running at once in one worker process, each in an executor process "
        "of its own (~130 MB): with the default one worker process per CPU, two per CPU, so that a flow run, which "
        "may hold its executor for minutes, leaves one to the previews. A worker that takes previews only can run "
        "with 1 (docs/benchmarks.md: as fast in a burst, half the memory). The Celery worker's 4 were for all of its "
        "one process.",
    )
    worker_memory_budget: str = Field(
        "4GB",
        validation_alias=_env("WORKER_MEMORY_BUDGET"),
        description="Memory all DuckDB sessions of one worker process may use together; "
        "memory_limit is lowered to budget / DUCKDB_MAX_CONCURRENT when it would not fit.",
    )
    duckdb_temp_directory: str | None = Field(
        None,
        validation_alias=_env("DUCKDB_TEMP_DIRECTORY"),
        description="Directory where DuckDB spills what does not fit in memory_limit (big sorts, joins, "
        "aggregates); it must be writable by the worker's user and is created if missing. Unset: "
        "rosetta-jobs-duckdb in the system's temporary directory (TMPDIR, else /tmp), never DuckDB's own "
        "default (.tmp in the working directory, which a container's user may not be able to write).",
    )
    # --- preview bounds (issue 12: preview/executor.py, preview/bounds.py, preview/identity.py) ----------------
    preview_memory_headroom: str = Field(
        "512MB",
        validation_alias=_env("PREVIEW_MEMORY_HEADROOM"),
        description="Memory a preview's executor process may use beyond DuckDB's memory_limit (its interpreter, "
        "attached sessions, Arrow and the result's JSON): the process's hard bound is the two together, enforced by "
        "RLIMIT_DATA and an RSS watchdog; past it the preview ends with 'used more than N MB'.",
    )
    preview_max_result_bytes: str = Field(
        "4MB",
        validation_alias=_env("PREVIEW_MAX_RESULT_BYTES"),
        description="Largest preview result (its JSON, as stored in Redis); a larger one is a preview error "
        "naming this limit, and nothing of it is stored.",
    )
    preview_max_cell_bytes: str = Field(
        "1MB",
        validation_alias=_env("PREVIEW_MAX_CELL_BYTES"),
        description="Largest text or binary value in a preview result, at any depth of a nested value.",
    )
    preview_max_sql_bytes: str = Field(
        "100KB",
        validation_alias=_env("PREVIEW_MAX_SQL_BYTES"),
        description="Largest sql and filter_sql (UTF-8 bytes, each) a preview accepts; checked before any parsing.",
    )
    preview_schemas: str | None = Field(
        None,
        validation_alias=_env("PREVIEW_SCHEMAS"),
        description="Comma-separated schemas of a source whose tables and views may be previewed (exact names); "
        "unset: every schema but the system ones (pg_catalog, information_schema, pg_toast, pg_*), which are "
        "never previewable.",
    )
    # --- end of preview bounds ----------------------------------------------------------------------------------

    # Retries and time limits
    max_retries: int = Field(3, ge=0, le=20, validation_alias=_env("MAX_RETRIES"))
    retry_min_backoff_ms: int = Field(1000, ge=10, validation_alias=_env("RETRY_MIN_BACKOFF_MS"))
    retry_max_backoff_ms: int = Field(30_000, ge=100, validation_alias=_env("RETRY_MAX_BACKOFF_MS"))

    heartbeat_timeout_ms: int = Field(
        15_000,
        ge=2_000,
        validation_alias=_env("HEARTBEAT_TIMEOUT_MS"),
        description="A worker process silent this long is dead; its in-flight jobs are requeued.",
    )
    heartbeat_interval: float = Field(
        5.0,
        gt=0,
        validation_alias=_env("HEARTBEAT_INTERVAL", "ROSETTA_HEARTBEAT_INTERVAL"),
        description="Seconds between two heartbeats of a worker process (its record for /health and the CLI).",
    )
    heartbeat_ttl: float = Field(
        20.0,
        gt=0,
        validation_alias=_env("HEARTBEAT_TTL", "ROSETTA_HEARTBEAT_TTL"),
        description="Seconds after its last heartbeat when a worker process, and its tasks' leases, count as dead.",
    )
    worker_timezone: str | None = Field(
        None,
        validation_alias=_env("WORKER_TIMEZONE"),
        description="IANA time zone of the preview's DuckDB session (CAST(timestamptz AS DATE), hour(), "
        "date_trunc); default the process's zone (TZ, else /etc/localtime). The Celery image ran with "
        "TZ=Asia/Jakarta: set either to get its answers.",
    )
    max_worker_losses: int = Field(
        2,
        ge=0,
        le=20,
        validation_alias=_env("MAX_WORKER_LOSSES"),
        description="Times a job may lose its worker (crash, OOM kill) and run again before it ends FAILURE.",
    )

    # Ops service
    server_host: str = Field("0.0.0.0", validation_alias=_env("SERVER_HOST"))
    server_port: int = Field(8002, ge=1, le=65535, validation_alias=_env("SERVER_PORT"))
    api_key: str | None = Field(None, validation_alias=_env("API_KEY"))
    admin_api_key: str | None = Field(None, validation_alias=_env("ADMIN_API_KEY"))
    max_active_per_user: int = Field(10, ge=1, validation_alias=_env("MAX_ACTIVE_PER_USER"))
    max_streams_per_user: int = Field(
        5,
        ge=1,
        validation_alias=_env("MAX_STREAMS_PER_USER"),
        description="Open task streams (SSE) one user (x-user-id) may hold at once; the next is refused with 429.",
    )

    sse_keepalive: float = Field(
        15.0,
        gt=0,
        validation_alias=_env("SSE_KEEPALIVE", "ROSETTA_SSE_KEEPALIVE"),
        description="Seconds between keep-alive comments on a quiet task stream (proxies drop idle connections).",
    )
    sse_max_seconds: float = Field(
        3600.0,
        gt=0,
        validation_alias=_env("SSE_MAX_SECONDS", "ROSETTA_SSE_MAX_SECONDS"),
        description="Seconds after which the stream of a task that never finishes is closed; clients may reconnect.",
    )
    depth_sample_seconds: float = Field(
        10.0,
        gt=0,
        validation_alias=_env("DEPTH_SAMPLE_SECONDS", "ROSETTA_DEPTH_SAMPLE_SECONDS"),
        description="Seconds between two queue-depth samples of the dashboard's chart.",
    )
    # --- task history (issue 16: rosetta_jobs/history.py, lua/task_write.lua) ---------------------
    task_history_max: int = Field(
        10_000,
        ge=0,
        le=1_000_000,
        validation_alias=_env("TASK_HISTORY_MAX"),
        description="Finished tasks kept in the task history (rosetta-jobs history, the dashboard's Tasks tab); "
        "the oldest go first. 0 keeps none.",
    )
    task_history_max_age: int = Field(
        7 * 24 * 3600,
        ge=60,
        validation_alias=_env("TASK_HISTORY_MAX_AGE"),
        description="Seconds a finished task stays in the task history.",
    )
    sweep_interval: float = Field(
        3600.0,
        gt=0,
        validation_alias=_env("SWEEP_INTERVAL"),
        description="Seconds between two runs of the ops service's sweeper (one replica at a time, by a Redis lease).",
    )
    dead_letter_ttl: int = Field(
        7 * 24 * 3600,
        ge=60,
        validation_alias=_env("DEAD_LETTER_TTL"),
        description="Seconds a dead letter is kept; the sweeper removes older ones.",
    )
    task_meta_sql: Literal["hash", "clear"] = Field(
        "hash",
        validation_alias=_env("TASK_META_SQL"),
        description="hash: task meta and dead-letter listings keep a job's SQL arguments as sha256:<digest> plus "
        "sql_sha256 (the SQL lives only in the broker message); clear: the Celery worker's meta, args with the SQL.",
    )
    # --- end of task history -----------------------------------------------------------------------

    # --- Backend jobs (worker.backend_job.run, rosetta_jobs/backend_jobs.py) --------------------------
    backend_dir: str | None = Field(
        None,
        validation_alias=_env("BACKEND_DIR"),
        description="The Rosetta backend's directory (the one holding app/worker_bridge/runner.py; /app/backend "
        "in the Celery worker's image): worker.backend_job.run runs `python -m app.worker_bridge.runner` there. "
        "Unset: backend jobs end FAILURE with a message saying so.",
    )
    backend_python: str | None = Field(
        None,
        validation_alias=_env("BACKEND_PYTHON"),
        description="Interpreter of the backend runner; default BACKEND_DIR/.venv/bin/python if it exists, "
        "else the worker's own.",
    )
    backend_job_time_limit: float = Field(
        600.0,
        gt=0,
        validation_alias=_env("BACKEND_JOB_TIME_LIMIT"),
        description="Seconds a backend job may run before its runner is killed with all its children "
        "(the Celery worker had no limit).",
    )
    backend_extra_jobs: str | None = Field(
        None,
        validation_alias=_env("BACKEND_EXTRA_JOBS"),
        description="Comma-separated job names a newer backend runner knows, added to the 14 of the spec; "
        "any other name is refused before a runner is started.",
    )
    # --- end of backend jobs -----------------------------------------------------------------------

    # --- flow engine (rosetta_jobs/flows/) ------------------------------------------------------------
    linked_task_max_parallel_steps: int = Field(
        3,
        ge=1,
        le=8,
        validation_alias=_env("LINKED_TASK_MAX_PARALLEL_STEPS"),
        description="Steps of one linked-task run that run at once (the Celery worker's setting); the others "
        "wait in PENDING until a running one ends.",
    )
    # --- end of flow engine ----------------------------------------------------------------------------

    # --- Celery ingress (rosetta_jobs/ingress.py, rosetta_jobs/pidbox.py) -----------------------------
    celery_ingress: bool = Field(
        True,
        validation_alias=_env("CELERY_INGRESS"),
        description="Workers also run the messages an unchanged Celery producer (send_task) leaves in kombu's "
        "lists of CELERY_QUEUES on the broker database.",
    )
    celery_queues: str = Field(
        "preview,default,orchestration",
        pattern=r"^[^,\s]+(\s*,\s*[^,\s]+)*$",
        validation_alias=_env("CELERY_QUEUES"),
        description="Comma-separated kombu queues the Celery ingress consumes (the Celery worker's -Q); "
        "a worker started with --queues consumes only those among them.",
    )
    celery_fallback_queue: str | None = Field(
        None,
        validation_alias=_env("CELERY_FALLBACK_QUEUE"),
        description="Unset: a Celery task name no actor serves is FAILURE NotRegistered and dead-lettered, as a "
        "Celery worker does. Set: such messages are moved, unchanged, to this kombu queue for a Celery worker "
        "that still runs (``{queue}`` stands for the queue they came from, e.g. ``{queue}-celery``).",
    )
    celery_ingress_batch: int = Field(
        100,
        ge=1,
        le=1000,
        validation_alias=_env("CELERY_INGRESS_BATCH"),
        description="Celery messages moved per step when a kombu list has a backlog.",
    )
    celery_control: bool = Field(
        True,
        validation_alias=_env("CELERY_CONTROL"),
        description="Workers and the ops service listen to Celery's pidbox: control.revoke cancels, and "
        "inspect ping/active/reserved are answered by each worker process.",
    )
    # --- end of Celery ingress ----------------------------------------------------------------------

    # Logging
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", validation_alias=_env("LOG_LEVEL")
    )
    log_format: Literal["json", "console"] = Field("console", validation_alias=_env("LOG_FORMAT"))

    @field_validator("broker_url", "result_backend_url", "redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        return validate_redis_url(value)

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        # SQLAlchemy-style driver suffixes of the Celery era are accepted and dropped.
        value = re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql://", value)
        if not value.startswith("postgresql://"):
            raise ValueError(f"{value!r} is not a PostgreSQL URL; write it like postgresql://user@host:5432/db")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: Any) -> Any:
        # The Celery worker treated anything but "json" as the console renderer.
        if isinstance(value, str) and value.lower() != "json":
            return "console"
        return value.lower() if isinstance(value, str) else value

    @field_validator("duckdb_memory_limit", "worker_memory_budget")
    @classmethod
    def _size(cls, value: str) -> str:
        parse_size(value)
        return value

    @field_validator("preview_memory_headroom", "preview_max_result_bytes", "preview_max_cell_bytes",
                     "preview_max_sql_bytes")  # fmt: skip
    @classmethod
    def _preview_size(cls, value: str) -> str:
        if parse_size(value) < 1024:
            raise ValueError(f"{value!r} is too small; write it like 4MB or 100KB")
        return value

    @field_validator("credential_encryption_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value:
            from .keys import derive_key

            derive_key(value)
        return value or None

    @model_validator(mode="after")
    def _worker_key_apart(self) -> Settings:
        if self.worker_api_key and self.worker_api_key in (self.api_key, self.admin_api_key):
            raise ValueError("WORKER_API_KEY must differ from API_KEY and ADMIN_API_KEY: a worker key opens configs")
        return self

    @property
    def dmz_worker(self) -> bool:
        """Whether this worker reads configs from the ops service (``WORKER_API_URL``), holding no database key."""
        return (
            bool(self.worker_api_url)
            and "database_url" not in self.model_fields_set
            and not (self.credential_encryption_key)
        )

    @model_validator(mode="after")
    def _backoff(self) -> Settings:
        if self.retry_max_backoff_ms < self.retry_min_backoff_ms:
            raise ValueError("RETRY_MAX_BACKOFF_MS must be at least RETRY_MIN_BACKOFF_MS")
        return self

    @property
    def sentinel(self) -> SentinelOptions:
        """``SENTINEL_MASTER_NAME`` and ``SENTINEL_PASSWORD``, for every client of a ``sentinel://`` URL."""
        return SentinelOptions(master_name=self.sentinel_master_name, password=self.sentinel_password)

    def replica_wait(self, url: str, *, what: str) -> ReplicaWait | None:
        """The WAIT after the writes on ``url`` that must outlive a failover (``REDIS_WAIT_REPLICAS``)."""
        return replica_wait_for(url, replicas=self.redis_wait_replicas, timeout_ms=self.redis_wait_timeout_ms,
                                what=what)  # fmt: skip

    @property
    def backend_extra_job_names(self) -> tuple[str, ...]:
        """``BACKEND_EXTRA_JOBS`` as a tuple (backend jobs)."""
        return tuple(name.strip() for name in (self.backend_extra_jobs or "").split(",") if name.strip())

    @property
    def celery_queue_names(self) -> tuple[str, ...]:
        """``CELERY_QUEUES`` as a tuple (Celery ingress)."""
        return tuple(name.strip() for name in self.celery_queues.split(",") if name.strip())

    @property
    def preview_schema_names(self) -> tuple[str, ...]:
        """``PREVIEW_SCHEMAS`` as a tuple; empty: every schema but the system ones."""
        return tuple(name.strip() for name in (self.preview_schemas or "").split(",") if name.strip())

    @property
    def hash_task_sql(self) -> bool:
        """``TASK_META_SQL=hash``: a task's meta keeps its SQL argument's digest, never the SQL."""
        return self.task_meta_sql == "hash"

    @property
    def duckdb_temp_path(self) -> str:
        """``DUCKDB_TEMP_DIRECTORY``, or ``rosetta-jobs-duckdb`` in the system's temporary directory."""
        import os
        import tempfile

        return self.duckdb_temp_directory or os.path.join(tempfile.gettempdir(), "rosetta-jobs-duckdb")

    @property
    def duckdb_memory_limit_bytes(self) -> int:
        """The memory_limit each session really gets: fits the budget across all slots."""
        wanted = parse_size(self.duckdb_memory_limit)
        share = parse_size(self.worker_memory_budget) // self.duckdb_max_concurrent
        return min(wanted, share)


def _env_names(loc: str) -> str:
    """All the env names of the field pydantic reports as ``loc`` (a field name or one of its aliases)."""
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        choices = [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else [name.upper()]
        if loc.lower() in {name, *(c.lower() for c in choices)}:
            return " or ".join(choices)
    return loc.upper()


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning pydantic's report into one that names the env variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "settings"
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{_env_names(field)}: {message} (got {error.get('input')!r})")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use."""
    return load_settings()
