"""Render ``docs/configuration.md`` from ``Settings.model_fields``, so the reference cannot drift from the code.

Every setting comes out with all the names it is read from (the Celery worker's included), its
default, its allowed values and its description. One table that is not in the settings class lives
here because it describes what the class cannot: what became of each variable the Celery worker read
(``CELERY_WORKER_ENV``, from ``rosetta-worker.md`` 4.1 and the worker's README).

``rosetta-jobs config-docs --output docs/configuration.md`` (``make docs``) writes the file;
``tests/test_configdoc.py`` fails when the committed file differs from what this renders.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from .config import Settings

__all__ = [
    "CELERY_WORKER_ENV",
    "DOC_PATH",
    "CeleryVariable",
    "Source",
    "constraint",
    "default_text",
    "description",
    "env_names",
    "render",
]

#: Where the generated reference lives, relative to the repository root.
DOC_PATH = Path("docs") / "configuration.md"


#: Descriptions of the fields that have none in ``Settings`` yet. A ``description=`` on the field wins.
_DESCRIPTIONS = {
    "db_pool_size": "Connections of the config-database pool of one worker process.",
    "db_pool_timeout": "Seconds a job waits for a free config-database connection before it fails.",
    "preview_row_limit": "Rows a preview returns at most (applied inside the query, before serialisation).",
    "preview_cache_ttl": "Seconds a successful preview result is cached in REDIS_URL; 0 turns the cache off.",
    "arrow_batch_size": "Accepted so that the Celery worker's .env loads; not used: a preview is fetched as one "
    "Arrow table, capped by PREVIEW_ROW_LIMIT.",
    "duckdb_threads": "Threads of one DuckDB session (DuckDB's SET threads). A preview reads at most "
    "PREVIEW_ROW_LIMIT rows of its table, and a second thread doubled its CPU and slowed it (docs/benchmarks.md); "
    "raise it for flows over big tables.",
    "max_retries": "Retries of a job that failed on the infrastructure (TransientError); user errors never retry.",
    "retry_min_backoff_ms": "Milliseconds before the first retry; doubles on each retry, with jitter.",
    "retry_max_backoff_ms": "Milliseconds between two retries at most.",
    "server_host": "Address the ops HTTP service (rosetta-jobs serve) listens on.",
    "server_port": "Port of the ops HTTP service; the Celery worker's health API used the same one.",
    "api_key": "Key of the task API (x-api-key header). Unset: the task API answers 403 to everyone.",
    "admin_api_key": "Key of the /admin dashboard (x-admin-key header or login). Unset: the dashboard is denied.",
    "max_active_per_user": "Jobs one user_id may have queued or running at once (JobClient.send(user_id=...)).",
    "log_level": "Lowest level logged: TRACE, DEBUG, INFO, WARNING, ERROR or CRITICAL (any case).",
    "log_format": "json for one JSON object per line; anything else is readable text (the Celery worker's rule).",
}

#: What the field validators of ``Settings`` accept, for the fields whose rule is code, not metadata.
_FORMATS = {
    "broker_url": "`redis://`, `rediss://`, `unix://` or `sentinel://` URL",
    "result_backend_url": "`redis://`, `rediss://`, `unix://` or `sentinel://` URL",
    "redis_url": "`redis://`, `rediss://`, `unix://` or `sentinel://` URL",
    "database_url": "`postgresql://` URL; `postgres://` and SQLAlchemy's `postgresql+driver://` are accepted",
    "duckdb_memory_limit": "a size: `512MB`, `2GB`, `1.5GiB`",
    "worker_memory_budget": "a size: `512MB`, `2GB`, `1.5GiB`",
    "preview_memory_headroom": "a size of at least 1KB: `512MB`, `1GB`",
    "preview_max_result_bytes": "a size of at least 1KB: `4MB`, `500KB`",
    "preview_max_cell_bytes": "a size of at least 1KB: `1MB`, `64KB`",
    "preview_max_sql_bytes": "a size of at least 1KB: `100KB`, `1MB`",
    "credential_encryption_key": "32 bytes: base64 of 32 bytes, or 32 raw UTF-8 bytes (the backend's rule)",
    "log_level": "case-insensitive",
    "log_format": "anything but `json` means `console`",
    "backend_extra_jobs": "comma-separated job names",
}


Source = Literal["settings", "readme", "backend", "process"]


@dataclass(frozen=True)
class CeleryVariable:
    """A variable the Celery worker (or its README, or the backend's .env) used, and what it does here."""

    name: str
    celery_default: str
    source: Source
    setting: str | None
    note: str = ""


_S: Source = "settings"
_R: Source = "readme"
_B: Source = "backend"
_P: Source = "process"

#: Every variable of ``rosetta-worker.md`` 4.1 (``source="settings"``, with the Celery worker's default), the
#: names its README documented but the worker never read (``"readme"``), the backend's switch (``"backend"``)
#: and the process variables the worker's image set (``"process"``). ``setting`` is the field it feeds, if any.
CELERY_WORKER_ENV: tuple[CeleryVariable, ...] = (
    CeleryVariable("DATABASE_URL", "postgresql://postgres:postgres@localhost:5433/postgres", _S, "database_url"),
    CeleryVariable("DB_POOL_SIZE", "10", _S, "db_pool_size"),
    CeleryVariable("DB_MAX_OVERFLOW", "10", _S, None, "ignored: the pool has a fixed size, DB_POOL_SIZE"),
    CeleryVariable("DB_POOL_TIMEOUT", "30", _S, "db_pool_timeout"),
    CeleryVariable("DB_POOL_RECYCLE", "1800", _S, None, "ignored: broken connections are detected on checkout"),
    CeleryVariable("REDIS_URL", "redis://localhost:6379/0", _S, "redis_url"),
    CeleryVariable("CELERY_BROKER_URL", "redis://localhost:6379/1", _S, "broker_url"),
    CeleryVariable("CELERY_RESULT_BACKEND", "redis://localhost:6379/2", _S, "result_backend_url"),
    CeleryVariable("CREDENTIAL_ENCRYPTION_KEY", "required", _S, "credential_encryption_key"),
    CeleryVariable(
        "WORKER_CONCURRENCY",
        "10",
        _S,
        None,
        "ignored: concurrency is `dramatiq --processes P --threads T` (the image: WORKER_PROCESSES, WORKER_THREADS)",
    ),
    CeleryVariable("TASK_SOFT_TIME_LIMIT", "120", _S, "preview_time_limit", "now enforced: the query is interrupted"),
    CeleryVariable(
        "TASK_HARD_TIME_LIMIT", "180", _S, None, "ignored: one limit, PREVIEW_TIME_LIMIT, really stops the query"
    ),
    CeleryVariable("PREVIEW_ROW_LIMIT", "500", _S, "preview_row_limit"),
    CeleryVariable("ARROW_BATCH_SIZE", "1024", _S, "arrow_batch_size", "accepted, not used"),
    CeleryVariable("DUCKDB_MEMORY_LIMIT", "2GB", _S, "duckdb_memory_limit", "now held within WORKER_MEMORY_BUDGET"),
    CeleryVariable("DUCKDB_THREADS", "4", _S, "duckdb_threads"),
    CeleryVariable("DUCKDB_MAX_CONCURRENT", "4", _S, "duckdb_max_concurrent"),
    CeleryVariable("REDIS_MAX_CONNECTIONS", "20", _S, None, "ignored: connection pools grow with the threads"),
    CeleryVariable(
        "MEMORY_WARNING_MB", "4096", _S, None, "ignored: WORKER_MEMORY_BUDGET is a hard limit, not a warning"
    ),
    CeleryVariable("LINKED_TASK_MAX_PARALLEL_STEPS", "3", _S, "linked_task_max_parallel_steps"),
    CeleryVariable("SERVER_HOST", "0.0.0.0", _S, "server_host"),
    CeleryVariable("SERVER_PORT", "8002", _S, "server_port"),
    CeleryVariable("LOG_LEVEL", "INFO", _S, "log_level"),
    CeleryVariable("LOG_FORMAT", "json", _S, "log_format", "the default is now console; set json in containers"),
    CeleryVariable(
        "WORKER_TASK_SOFT_TIME_LIMIT", "120", _R, None, "never read by the Celery worker either: use PREVIEW_TIME_LIMIT"
    ),
    CeleryVariable("WORKER_TASK_HARD_TIME_LIMIT", "180", _R, None, "never read by the Celery worker either: drop it"),
    CeleryVariable(
        "WORKER_PREVIEW_ROW_LIMIT", "100", _R, None, "never read by the Celery worker either: use PREVIEW_ROW_LIMIT"
    ),
    CeleryVariable(
        "WORKER_DUCKDB_MEMORY_LIMIT", "1GB", _R, None, "never read by the Celery worker either: use DUCKDB_MEMORY_LIMIT"
    ),
    CeleryVariable("WORKER_ENABLED", "false", _B, None, "the backend's switch; a worker's .env may carry it, ignored"),
    CeleryVariable(
        "WORKER_HEALTH_URL", "http://rosetta-worker:8002", _B, None, "the backend's; point it at the ops service"
    ),
    CeleryVariable("SNOWFLAKE_ADBC_DRIVER_PATH", "(set by start.sh)", _P, None, "ignored: no Snowflake in 0.1"),
    CeleryVariable("TZ", "Asia/Jakarta (image)", _P, None, "not needed: every timestamp is UTC"),
    CeleryVariable("C_FORCE_ROOT", "true (image)", _P, None, "not needed: the image runs as a non-root user"),
)


def env_names(name: str, info: FieldInfo) -> list[str]:
    """The variable names a field is read from, in the order pydantic tries them."""
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    if isinstance(alias, str):
        return [alias]
    return [name.upper()]


def description(name: str, info: FieldInfo) -> str:
    return info.description or _DESCRIPTIONS.get(name, "")


def _plain(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def default_text(info: FieldInfo) -> str:
    value = info.get_default(call_default_factory=True)
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return "unset" if value is None else f"`{_plain(value)}`"


def _literal_choices(annotation: Any) -> list[str]:
    if typing.get_origin(annotation) is Literal:
        return [str(a) for a in typing.get_args(annotation)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return [c for arg in typing.get_args(annotation) for c in _literal_choices(arg)]
    return []


_TYPE_WORDS: dict[Any, str] = {
    bool: "boolean: `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`)",
    int: "integer",
    float: "number",
}


def constraint(name: str, info: FieldInfo) -> str:
    """The allowed values, from the field's metadata, its type and the validator notes above."""
    parts: list[str] = []
    low = high = None
    for item in info.metadata:
        if isinstance(item, Ge):
            low = f"{item.ge} ≤"
        elif isinstance(item, Gt):
            low = f"{item.gt} <"
        elif isinstance(item, Le):
            high = f"≤ {item.le}"
        elif isinstance(item, Lt):
            high = f"< {item.lt}"
        elif isinstance(item, MinLen):
            parts.append(f"at least {item.min_length} characters")
        elif isinstance(item, MaxLen):
            parts.append(f"at most {item.max_length} characters")
        elif getattr(item, "pattern", None):
            parts.append(f"matches `{item.pattern}`")
    if low or high:
        parts.insert(0, " ".join(p for p in (low, "value", high) if p))
    choices = _literal_choices(info.annotation)
    if choices:
        parts.insert(0, "one of " + ", ".join(f"`{c}`" for c in choices))
    elif info.annotation in _TYPE_WORDS:
        parts.insert(0, _TYPE_WORDS[info.annotation])
    if name in _FORMATS:
        parts.append(_FORMATS[name])
    return "; ".join(parts) or "text"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _settings_table() -> list[str]:
    celery_names = {v.name for v in CELERY_WORKER_ENV if v.source == "settings"}
    lines = [
        "| Variable | Also read as | Default | Allowed | What it does |",
        "|---|---|---|---|---|",
    ]
    for name, info in Settings.model_fields.items():
        first, *others = env_names(name, info)
        marked = [f"`{n}`" + (" (Celery)" if n in celery_names else "") for n in others]
        head = f"`{first}`" + (" (Celery)" if first in celery_names else "")
        lines.append(
            f"| {head} | {', '.join(marked) or ''} | {_cell(default_text(info))} | {_cell(constraint(name, info))} "
            f"| {_cell(description(name, info))} |"
        )
    return lines


def _celery_table() -> list[str]:
    fields = Settings.model_fields
    where = {"settings": "worker", "readme": "README only", "backend": "backend", "process": "image/start.sh"}
    lines = [
        "| Celery-era variable | Where it was | Celery default | rosetta-jobs | Note |",
        "|---|---|---|---|---|",
    ]
    for var in CELERY_WORKER_ENV:
        target = f"`{env_names(var.setting, fields[var.setting])[0]}`" if var.setting else "ignored"
        if var.setting and var.setting in fields:
            ours = fields[var.setting].get_default(call_default_factory=True)
            if ours is not None and _plain(ours) != var.celery_default:
                target += f" (default now {default_text(fields[var.setting])})"
        lines.append(
            f"| `{var.name}` | {where[var.source]} | `{_cell(var.celery_default)}` | {target} | {_cell(var.note)} |"
        )
    return lines


_HEADER = """\
<!-- GENERATED by `rosetta-jobs config-docs` (make docs) from rosetta_jobs.config.Settings and
     rosetta_jobs.configdoc. Do not edit: tests/test_configdoc.py fails when this file is stale. -->

# Configuration

rosetta-jobs reads its settings from environment variables and from a `.env` file in the working
directory (the worker's and the ops service's: in the image, `/app`). Names are case-insensitive.
Unknown keys are ignored, so the Celery worker's `.env` loads as it is. An invalid value stops the
process at start with a message that names the variable and the fix, for example
`BROKER_URL or CELERY_BROKER_URL: 'amqp://…' is not a Redis URL; write it like redis://localhost:6379/1`.

Where a value comes from, first match wins: a keyword argument to `Settings(...)` / `load_settings(...)`,
then the process environment, then `.env`. When one place holds several names of the same setting,
the name listed first in the table wins (`BROKER_URL` over `CELERY_BROKER_URL`).

Producers (the backend) need only `BROKER_URL`, `RESULT_BACKEND_URL`, `RESULT_EXPIRES`,
`BROKER_NAMESPACE` and, for per-user limits, `MAX_ACTIVE_PER_USER`. Workers need
`CREDENTIAL_ENCRYPTION_KEY` and `DATABASE_URL` besides.
"""

_CELERY_INTRO = """\
## From the Celery worker

Every variable the Celery worker read (`rosetta-worker.md` §4.1), the names its README documented
but the worker never read, the backend's switches, and what the worker's image set. "(Celery)" in
the table above marks a name the Celery worker read. See `docs/migration.md` for the whole move.
"""

_PROCESS_INTRO = """\
## Process variables

Nothing in the package reads the environment outside the settings above, except `TZ` (through
`WORKER_TIMEZONE`'s default); `tests/test_configdoc.py` keeps it so.

The container image adds `WORKER_PROCESSES` (default `2`) and `WORKER_THREADS` (default `4`), read by
its default command `rosetta-jobs worker --processes $WORKER_PROCESSES --threads $WORKER_THREADS`
and by its health check (`rosetta-jobs check --min-processes $WORKER_PROCESSES`).
"""


def render() -> str:
    """The whole of ``docs/configuration.md``."""
    parts = [
        _HEADER,
        "## Settings\n",
        "\n".join(_settings_table()) + "\n",
        _CELERY_INTRO,
        "\n".join(_celery_table()) + "\n",
        _PROCESS_INTRO,
    ]
    return "\n".join(parts)
