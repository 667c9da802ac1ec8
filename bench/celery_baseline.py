"""A stand-in for the Celery worker rosetta-jobs replaces, for side-by-side benchmarks only.

Built from the behaviour the spec records (``shared/spec/rosetta-worker.md`` 1.2, 2.1-2.7, 4.2), not
from its code: Celery with ``--pool=threads``, ``task_track_started``, ``result_extended``,
``acks_late`` and prefetch 1; a regex validator; a per-process cache of encrypted config rows;
a fresh DuckDB connection per task with the source and the destination attached; a 4-slot
semaphore; a batch stream serialised row by row; the result cached in Redis for 300 s. The one
difference: the postgres extension is loaded from the same wheel as ours (the original downloads
it at start), so neither side pays for the network.

Run by ``bench/run.py`` as ``celery -A celery_baseline worker --pool=threads -c 10 -Q preview``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import duckdb
import psycopg
import redis
from celery import Celery

from rosetta_jobs.crypto import Cipher
from rosetta_jobs.preview.session import extension_path

app = Celery("rosetta_worker", broker=os.environ["CELERY_BROKER_URL"], backend=os.environ["CELERY_RESULT_BACKEND"])
app.conf.update(
    task_serializer="json", result_serializer="json", accept_content=["json"], result_expires=600,
    result_extended=True, task_track_started=True, task_acks_late=True, worker_prefetch_multiplier=1,
)  # fmt: skip

_cache = redis.Redis.from_url(os.environ["REDIS_URL"])
_cipher = Cipher(os.environ["CREDENTIAL_ENCRYPTION_KEY"])
_slots = threading.Semaphore(4)
_configs: dict[tuple[int, int], tuple[float, Any]] = {}
_configs_lock = threading.Lock()
_log = logging.getLogger("celery_baseline")
_FORBIDDEN = re.compile(r"\b(INSERT|UPDATE|DELETE|DROP|ALTER|TRUNCATE|CREATE|GRANT|REVOKE|EXEC|EXECUTE|CALL|INTO|"
                        r"MERGE|REPLACE|COPY|EXPORT)\b", re.IGNORECASE)  # fmt: skip


def _configs_for(source_id: int, destination_id: int) -> Any:
    key, now = (source_id, destination_id), time.monotonic()
    with _configs_lock:
        hit = _configs.get(key)
        if hit and now - hit[0] < 60:
            return hit[1]
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        source = conn.execute("SELECT name, pg_host, pg_port, pg_database, pg_username, pg_password FROM sources"
                              " WHERE id = %s", (source_id,)).fetchone()  # fmt: skip
        dest = conn.execute("SELECT name, config FROM destinations WHERE id = %s", (destination_id,)).fetchone()
    with _configs_lock:
        _configs[key] = (now, (source, dest))
    return source, dest


def _where(filter_sql: str | None) -> str:
    if not filter_sql:
        return ""
    doc = json.loads(filter_sql)
    parts = [f"{c['column']} {c['operator']} {c['value']}" for g in doc["groups"] for c in g["conditions"]]
    return " WHERE " + " AND ".join(parts)


def _cell(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Decimal):
        return float(value)
    return value


@app.task(name="worker.preview.execute", bind=True)
def execute(self: Any, sql: str | None, source_id: int, destination_id: int, table_name: str,
            filter_sql: str | None = None, include_profiling: bool = False) -> dict[str, Any]:  # fmt: skip
    clock = _Clock()
    self.update_state(state="PROGRESS", meta={"status": "executing", "table_name": table_name})
    clock.mark("progress")
    if sql and _FORBIDDEN.search(sql):
        return {"columns": [], "column_types": [], "data": [], "error": "forbidden"}
    text = f"sql:{sql or ''}|source:{source_id}|dest:{destination_id}|table:{table_name}|filter:{filter_sql or ''}"
    key = "preview:" + hashlib.sha256(text.encode()).hexdigest()
    cached = _cache.get(key)
    if cached:
        answer = json.loads(cached)
        clock.mark("cache")
        _log.info("task %s stages [%s]", self.request.id, clock)
        return answer  # type: ignore[no-any-return]
    clock.mark("cache")
    source, dest = _configs_for(source_id, destination_id)
    password = _cipher.decrypt(source[5]) if source[5] else ""
    dconf = dest[1] if isinstance(dest[1], dict) else json.loads(dest[1])
    clock.mark("catalog")
    with _slots:
        clock.mark("slot")
        con = duckdb.connect(":memory:")
        try:
            con.execute("SET memory_limit='2GB'")
            con.execute("SET threads=4")
            con.execute(f"LOAD '{extension_path()}'")
            con.execute(f"ATTACH 'postgresql://{source[4]}:{password}@{source[1]}:{source[2]}/{source[3]}' AS "
                        f"pg_src_{source[0]} (TYPE postgres, READ_ONLY)")  # fmt: skip
            dest_uri = (
                f"postgresql://{dconf.get('user', '')}:@{dconf.get('host')}:{dconf.get('port')}/{dconf.get('database')}"
            )
            with contextlib.suppress(duckdb.Error):  # the destination attach is best effort
                con.execute(f"ATTACH '{dest_uri}' AS pg_{dest[0]} (TYPE postgres, READ_ONLY)")
            clock.mark("session")
            table = re.sub(r"[^A-Za-z0-9_]", "_", table_name)
            query = f"SELECT * FROM pg_src_{source[0]}.{table}{_where(filter_sql)} LIMIT 500"
            if sql:  # the user's SELECT over the filtered table, as the worker's CTE rewrite ran it
                query = f"WITH {table} AS ({query}) SELECT * FROM ({sql}) AS result_sql LIMIT 500"
            reader = con.execute(query).fetch_record_batch(1024)
            columns = reader.schema.names
            types = ["number" if any(t in str(f.type).lower() for t in ("int", "float", "decimal", "double"))
                     else "date" if any(t in str(f.type).lower() for t in ("date", "time")) else "text"
                     for f in reader.schema]  # fmt: skip
            data = [{c: _cell(v) for c, v in row.items()} for batch in reader for row in batch.to_pylist()]
            clock.mark("duckdb+serialise")
        finally:
            con.close()
    result = {"columns": columns, "column_types": types, "data": data, "error": None}
    _cache.setex(key, 300, json.dumps(result, default=str))
    clock.mark("cache_put")
    _log.info("task %s stages [%s]", self.request.id, clock)
    return result


class _Clock:
    """Milliseconds per stage, each from the end of the one before (parsed by ``bench/bench_stages.py``)."""

    def __init__(self) -> None:
        self.took: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.took[stage] = round((now - self._last) * 1000, 3)
        self._last = now

    def __str__(self) -> str:
        return " ".join(f"{stage}={ms:g}" for stage, ms in self.took.items())
