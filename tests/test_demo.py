"""The README's main command, end to end, as a new user runs it."""

from __future__ import annotations

import subprocess
import sys

import psycopg

from rosetta_jobs.demo import DEMO_CONFIG_DB, DEMO_SOURCE_DB

from .conftest import PG_ADMIN_URL, ROOT, worker_env


def test_demo_runs_a_preview_end_to_end(redis_dbs: None) -> None:
    # Given a machine with Redis and PostgreSQL (the test's Redis databases)
    env = worker_env(DATABASE_URL=PG_ADMIN_URL)
    env.pop("CREDENTIAL_ENCRYPTION_KEY")  # the demo makes its own key when none is set
    try:
        # When the demo command runs
        out = subprocess.run([sys.executable, "-m", "rosetta_jobs.cli", "demo"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=180)  # fmt: skip
        # Then it printed the states the preview went through and its rows as a table
        assert out.returncode == 0, out.stdout + out.stderr
        assert "states: PENDING -> STARTED -> PROGRESS -> SUCCESS" in out.stdout or "-> SUCCESS" in out.stdout
        lines = out.stdout.splitlines()
        header = next(i for i, line in enumerate(lines) if line.startswith("status"))
        assert lines[header].split() == ["status", "orders", "total", "latest"]
        assert [line.split()[0] for line in lines[header + 2 : header + 5]] == ["NEW", "PAID", "SHIPPED"]
        assert "(3 rows, types: text, number, number, date)" in out.stdout
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            for name in (DEMO_CONFIG_DB, DEMO_SOURCE_DB):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
