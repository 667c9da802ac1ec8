"""``rosetta-jobs demo``: the main job end to end on this machine.

Seeds a config database (``sources``, ``destinations``) with an encrypted password and a source
database with an ``orders`` table, starts a real worker, submits a preview through the client,
prints the states it went through and the rows as a table, and stops the worker.

It leaves other people's data alone: its two databases have names of their own
(``rosetta_demo_<random>_config``/``_source``, created, never dropped-and-recreated), its jobs run in a
``BROKER_NAMESPACE`` of their own (so no other worker on the same Redis takes them, and they take
nobody's), and at the end it removes exactly what it made: those databases and that namespace's keys.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from .catalog import config_schema_sql
from .client import JobClient
from .config import Settings, get_settings
from .connection import redis_client
from .crypto import Cipher
from .errors import ConfigError
from .layout import OPS_PREFIX
from .redact import redact
from .states import FINAL_STATES

__all__ = ["DEMO_PREFIX", "DemoDatabases", "run_demo", "seed"]

#: The start of every name the demo makes: databases, and its broker namespace.
DEMO_PREFIX = "rosetta_demo_"
DEMO_SQL = (
    "SELECT status, count(*) AS orders, sum(amount) AS total, max(created_at) AS latest FROM orders"
    " GROUP BY status ORDER BY status"
)


def _admin_url(database_url: str) -> str:
    return database_url.rsplit("/", 1)[0] + "/postgres"


@dataclass(frozen=True)
class DemoDatabases:
    """The databases one demo run made (and will drop): names unique to the run."""

    admin_url: str
    run: str

    @property
    def config(self) -> str:
        return f"{DEMO_PREFIX}{self.run}_config"

    @property
    def source(self) -> str:
        return f"{DEMO_PREFIX}{self.run}_source"

    def url(self, name: str) -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + name

    def create(self, name: str) -> str:
        """Create ``name`` (a fresh name: CREATE fails rather than touch a database that exists)."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop(self) -> None:
        """Drop the run's own databases, and nothing else."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in (self.config, self.source):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(databases: DemoDatabases, key: str, *, rows: int = 1000) -> tuple[str, int, int]:
    """Create the demo databases; return (config database URL, source id, destination id)."""
    admin_url = databases.admin_url
    source_url = databases.create(databases.source)
    with psycopg.connect(source_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.orders (id int PRIMARY KEY, customer text, status text, amount numeric(12,2),"
            " created_at timestamptz, shipped boolean)"
        )
        conn.execute(
            "INSERT INTO public.orders SELECT g, 'customer ' || mod(g, 37),"
            " (ARRAY['NEW','PAID','SHIPPED'])[1 + mod(g, 3)], round(mod(g * 7.31, 1000), 2),"
            " timestamptz '2026-01-01 00:00+00' + g * interval '37 minutes', mod(g, 4) = 0"
            " FROM generate_series(1, %s) g",
            (rows,),
        )
    config_url = databases.create(databases.config)
    params = psycopg.conninfo.conninfo_to_dict(admin_url)
    password = str(params.get("password") or "")
    with psycopg.connect(config_url, autocommit=True) as conn:
        conn.execute(config_schema_sql())
        source_id = conn.execute(
            "INSERT INTO sources (name, pg_host, pg_port, pg_database, pg_username, pg_password)"
            " VALUES ('demo', %s, %s, %s, %s, %s) RETURNING id",
            (
                params.get("host") or "127.0.0.1",
                int(params.get("port") or 5432),
                databases.source,
                params.get("user") or "postgres",
                Cipher(key).encrypt(password) if password else "",
            ),
        ).fetchone()[0]  # type: ignore[index]
        destination_id = conn.execute(
            "INSERT INTO destinations (name, type, config) VALUES ('demo-warehouse', 'POSTGRES', %s) RETURNING id",
            (json.dumps({"host": "localhost", "database": "warehouse"}),),
        ).fetchone()[0]  # type: ignore[index]
    return config_url, int(source_id), int(destination_id)


def _print_table(result: dict[str, Any], limit: int) -> None:
    columns = result["columns"]
    rows = [[_cell(row.get(c)) for c in columns] for row in result["data"][:limit]]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    print(f"({len(result['data'])} rows, types: {', '.join(result['column_types'])})")


def _cell(value: Any) -> str:
    return "NULL" if value is None else str(value)


def _start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "rosetta_jobs.cli", "worker", "-p", "1", "-t", "2"]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _forget_namespace(settings: Settings, namespace: str) -> None:
    """Delete the keys of the demo's own namespace (queues, heartbeats, metrics, history); its task
    states (``celery-task-meta-<id>``) expire with ``RESULT_EXPIRES``, as every task's do."""
    patterns = [(settings.broker_url, f"{namespace}:*"), (settings.broker_url, f"{OPS_PREFIX}:{namespace}:*"),
                (settings.result_backend_url, f"{OPS_PREFIX}:{namespace}:*")]  # fmt: skip
    for url, pattern in patterns:
        client = redis_client(url, sentinel=settings.sentinel)
        keys = list(client.scan_iter(match=pattern, count=500))
        if keys:
            client.delete(*keys)


def _watch(client: JobClient, task_id: str, timeout: float) -> list[str]:
    """Follow the task's channel and return the states seen, ending with a final one."""
    pubsub = client.store.client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(client.store.key(task_id))
    seen = [client.get_task_status(task_id)["state"]]
    deadline = time.monotonic() + timeout
    try:
        while seen[-1] not in FINAL_STATES and time.monotonic() < deadline:
            event = pubsub.get_message(timeout=1.0)
            if event is not None:
                state = json.loads(event["data"])["status"]
                if state != seen[-1]:
                    seen.append(state)
    finally:
        pubsub.close()
    return seen


def run_demo(*, sql: str | None = None, rows: int = 10, timeout: float = 60.0) -> int:
    run = secrets.token_hex(4)
    namespace = f"{DEMO_PREFIX}{run}"
    settings = get_settings().model_copy(update={"broker_namespace": namespace})
    key = settings.credential_encryption_key or secrets.token_urlsafe(24)[:32]
    databases = DemoDatabases(_admin_url(settings.database_url), run)
    try:
        config_url, source_id, destination_id = seed(databases, key)
    except psycopg.Error as exc:
        databases.drop()
        raise ConfigError(
            f"cannot prepare the demo databases through {redact(databases.admin_url)}: {redact(str(exc))}. "
            "Start PostgreSQL or set DATABASE_URL."
        ) from None
    # Its own namespace, and no Celery ingress or pidbox: the demo's worker must not take anybody's Celery messages.
    env = dict(os.environ, DATABASE_URL=config_url, CREDENTIAL_ENCRYPTION_KEY=key, BROKER_NAMESPACE=namespace,
               CELERY_INGRESS="false", CELERY_CONTROL="false")  # fmt: skip
    client = JobClient.from_settings(settings)
    worker = _start_worker(env)
    try:
        sql = sql or DEMO_SQL
        started = time.monotonic()
        task_id = client.submit_preview(sql, source_id, destination_id, "orders")
        print(f"submitted preview {task_id} at {dt.datetime.now(dt.UTC):%H:%M:%S} UTC")
        states = _watch(client, task_id, timeout)
        print("states: " + " -> ".join(states) + f"  ({time.monotonic() - started:.2f} s)")
        status = client.get_task_status(task_id)
        if status["state"] != "SUCCESS":
            print(f"preview did not succeed: {status}", file=sys.stderr)
            return 1
        result = status["result"]
        if result.get("error"):
            print(f"preview error: {result['error']}", file=sys.stderr)
            return 1
        _print_table(result, rows)
        return 0
    finally:
        worker.terminate()
        worker.wait(30)
        databases.drop()
        _forget_namespace(settings, namespace)
