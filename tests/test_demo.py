"""The README's main command, end to end, as a new user runs it; and it leaves other people's data alone."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import redis

from rosetta_jobs.demo import DEMO_PREFIX

from .conftest import BROKER_DB, PG_ADMIN_URL, REDIS_HOST, REDIS_PORT, RESULTS_DB, ROOT, worker_env

#: The fixed names earlier versions of the demo dropped and recreated, whoever was using them.
OLD_NAMES = ("rosetta_demo_config", "rosetta_demo_source")


def _demo_databases() -> set[str]:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (DEMO_PREFIX + "%",)).fetchall()
    return {str(row[0]) for row in rows}


def test_demo_runs_a_preview_end_to_end_and_leaves_other_data_alone(redis_dbs: None) -> None:
    # Given a machine with Redis and PostgreSQL, where someone uses a database of the demo's old name
    env = worker_env(DATABASE_URL=PG_ADMIN_URL)
    env.pop("CREDENTIAL_ENCRYPTION_KEY")  # the demo makes its own key when none is set
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        for name in OLD_NAMES:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
    before = _demo_databases()
    busy = psycopg.connect(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + OLD_NAMES[0], autocommit=True)
    try:
        # When the demo command runs
        out = subprocess.run([sys.executable, "-m", "rosetta_jobs.cli", "demo"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=180)  # fmt: skip

        # Then it printed the states the preview went through and its rows as a table
        assert out.returncode == 0, out.stdout + out.stderr
        assert "-> SUCCESS" in out.stdout
        lines = out.stdout.splitlines()
        header = next(i for i, line in enumerate(lines) if line.startswith("status"))
        assert lines[header].split() == ["status", "orders", "total", "latest"]
        assert [line.split()[0] for line in lines[header + 2 : header + 5]] == ["NEW", "PAID", "SHIPPED"]
        assert "(3 rows, types: text, number, number, date)" in out.stdout
        # And the database someone was using is still there, their connection alive
        assert busy.execute("SELECT 1").fetchone() == (1,)
        # And the demo removed what it made, and only that: no database of its own, no key of its namespace
        assert _demo_databases() == before
        for db in (BROKER_DB, RESULTS_DB):
            keys = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db).keys("*")
            assert [k for k in keys if DEMO_PREFIX.encode() in k] == []
        # And its job never went through the default namespace's queues
        assert not redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=BROKER_DB).exists("dramatiq:preview.msgs")
    finally:
        busy.close()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            for name in OLD_NAMES:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
