"""Moving from the Celery worker: its `.env` loads unchanged, each of its variables lands where
docs/migration.md says, and a Celery-era configuration runs a preview end to end.

The `.env` example is the Celery worker README's, copied byte for byte into tests/data (see the
README there); the variable tables are the spec's §4.1 table and that README's configuration table.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from dotenv import dotenv_values

from rosetta_jobs import configdoc
from rosetta_jobs.client import AsyncResult, JobClient
from rosetta_jobs.config import Settings, load_settings, parse_size

from .conftest import BROKER_DB, CACHE_DB, REDIS_HOST, REDIS_PORT, RESULTS_DB, TEST_KEY, WorkerProcess, redis_url
from .test_deploy import SeededDemo, compose, compose_default, drop_compose_demo, seed_compose_demo

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SHARED = ROOT.parent / "shared"
CELERY_ENV = DATA / "celery-worker.env"
SPEC_TABLE = DATA / "rosetta-worker-4.1-settings.md"
README_TABLE = DATA / "celery-worker-readme-configuration.md"
ROSETTA_VARS = {name for field, info in Settings.model_fields.items() for name in configdoc.env_names(field, info)} | {
    v.name for v in configdoc.CELERY_WORKER_ENV
}

#: A value for every Celery-era name that feeds a setting: none is the setting's default, so landing is visible.
SAMPLES = {
    "DATABASE_URL": ("postgresql+psycopg2://rosetta:secret@config-db:5433/rosetta", "postgresql://rosetta:secret@config-db:5433/rosetta"),
    "DB_POOL_SIZE": ("7", 7),
    "DB_POOL_TIMEOUT": ("45", 45),
    "REDIS_URL": ("redis://cache:6379/0", "redis://cache:6379/0"),
    "CELERY_BROKER_URL": ("redis://broker:6379/1", "redis://broker:6379/1"),
    "CELERY_RESULT_BACKEND": ("redis://results:6379/2", "redis://results:6379/2"),
    "CREDENTIAL_ENCRYPTION_KEY": (TEST_KEY, TEST_KEY),
    "TASK_SOFT_TIME_LIMIT": ("90", 90.0),
    "PREVIEW_ROW_LIMIT": ("250", 250),
    "ARROW_BATCH_SIZE": ("2048", 2048),
    "DUCKDB_MEMORY_LIMIT": ("768MB", "768MB"),
    "DUCKDB_THREADS": ("3", 3),
    "DUCKDB_MAX_CONCURRENT": ("6", 6),
    "SERVER_HOST": ("127.0.0.1", "127.0.0.1"),
    "SERVER_PORT": ("9002", 9002),
    "LOG_LEVEL": ("debug", "DEBUG"),
    "LOG_FORMAT": ("json", "json"),
    "LINKED_TASK_MAX_PARALLEL_STEPS": ("5", 5),
}  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No rosetta or Celery variable from the caller's environment, and an empty working directory."""
    for name in ROSETTA_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def table_rows(path: Path) -> dict[str, str]:
    """``{variable: default}`` of a Markdown table whose first two columns are `NAME` and its default."""
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        name = re.fullmatch(r"`([A-Z0-9_]+)`", cells[0])
        if name:
            rows[name.group(1)] = cells[1].strip("`*() ")
    return rows


# --- the copies are the originals -------------------------------------------------------------------------------


def _seed_readme() -> str:
    seeds = sorted((SHARED / "seeds").glob("000_*.txt"))
    if not seeds:
        pytest.skip("../shared/seeds is not beside this checkout; the copies in tests/data stand alone")
    return seeds[0].read_text(encoding="utf-8")


def test_env_example_is_the_celery_readmes_verbatim() -> None:
    readme = _seed_readme()
    block = re.search(r"^```env\n(.*?)^```$", readme, flags=re.MULTILINE | re.DOTALL)
    assert block is not None
    assert CELERY_ENV.read_text(encoding="utf-8") == block.group(1)


def test_variable_tables_are_the_originals_verbatim() -> None:
    readme = _seed_readme()
    assert README_TABLE.read_text(encoding="utf-8") in readme
    spec = (SHARED / "spec" / "rosetta-worker.md").read_text(encoding="utf-8")
    assert SPEC_TABLE.read_text(encoding="utf-8") in spec


# --- every variable has a destination ---------------------------------------------------------------------------


def test_every_variable_of_the_celery_worker_is_accounted_for() -> None:
    ours = {v.name: v for v in configdoc.CELERY_WORKER_ENV}
    # Every variable the worker's settings read (spec 4.1), with the default the doc quotes
    spec = table_rows(SPEC_TABLE)
    assert spec, "no rows parsed from the spec table"
    assert {n for n, v in ours.items() if v.source == "settings"} == set(spec)
    for name, default in spec.items():
        assert ours[name].celery_default == default, name
    # Every name the README documented, right or wrong
    assert set(table_rows(README_TABLE)) <= set(ours)
    # Every name in the .env example
    assert set(dotenv_values(CELERY_ENV)) <= set(ours)


def test_the_celery_env_example_loads_unchanged(clean_env: Path) -> None:
    # Given the Celery README's .env, as it is (with the backend's WORKER_ENABLED in it)
    # When rosetta-jobs reads it
    settings = load_settings(_env_file=CELERY_ENV)
    # Then its Celery names land on the broker and the result backend, and the unknown key is ignored
    assert settings.broker_url == "redis://localhost:6379/1"
    assert settings.result_backend_url == "redis://localhost:6379/2"
    # And those are rosetta-jobs' own defaults too: the same Redis databases as the Celery worker
    defaults = Settings(_env_file=None)
    assert (settings.broker_url, settings.result_backend_url) == (defaults.broker_url, defaults.result_backend_url)


def test_each_celery_name_lands_on_its_setting(clean_env: Path) -> None:
    mapped = {v.name: v.setting for v in configdoc.CELERY_WORKER_ENV if v.setting}
    assert set(SAMPLES) == set(mapped), "give every mapped Celery name a sample value here"
    defaults = Settings(_env_file=None)
    # Given a .env that sets every Celery-era name, the ignored ones included
    ignored = [v.name for v in configdoc.CELERY_WORKER_ENV if v.setting is None]
    lines = [f"{name}={raw}" for name, (raw, _) in SAMPLES.items()] + [f"{name}=1" for name in ignored]
    (clean_env / ".env").write_text("\n".join(lines) + "\n")
    # When it is read from the working directory, as the worker does
    settings = load_settings()
    # Then each mapped name set its setting, to a value that is not the default
    for name, (_, expected) in SAMPLES.items():
        field = mapped[name]
        assert getattr(settings, field) == expected, name
        assert getattr(defaults, field) != expected, f"{name}: pick a sample that differs from the default"
    # And the ignored names changed nothing
    (clean_env / ".env").write_text("".join(f"{name}=1\n" for name in ignored))
    assert load_settings() == defaults


def test_the_celery_workers_defaults_load_and_fit_the_memory_budget(clean_env: Path) -> None:
    # Given a .env with every variable of the Celery worker at its Celery default (the key filled in)
    spec = table_rows(SPEC_TABLE)
    spec["CREDENTIAL_ENCRYPTION_KEY"] = TEST_KEY
    (clean_env / ".env").write_text("".join(f"{name}={value}\n" for name, value in spec.items()))
    # When it is read
    settings = load_settings()
    # Then it is valid, and the 2GB x 4 sessions that overran the Celery worker's 4G container are held to 4GB
    assert settings.duckdb_memory_limit == "2GB" and settings.duckdb_max_concurrent == 4
    assert settings.duckdb_memory_limit_bytes * 4 <= parse_size(settings.worker_memory_budget)
    assert settings.log_format == "json" and settings.preview_time_limit == 120


def test_names_and_places_resolve_as_the_configuration_doc_says(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both names in .env: the native one wins
    (clean_env / ".env").write_text("CELERY_BROKER_URL=redis://celery:6379/1\nBROKER_URL=redis://native:6379/1\n")
    assert load_settings().broker_url == "redis://native:6379/1"
    # The environment beats .env, even under the Celery name
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://from-env:6379/1")
    assert load_settings().broker_url == "redis://from-env:6379/1"
    # A keyword argument beats both
    assert load_settings(broker_url="redis://kw:6379/1").broker_url == "redis://kw:6379/1"


# --- a Celery-era configuration, end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_databases() -> Iterator[SeededDemo]:
    """The compose stack's demo source and config databases, made by its own init script."""
    demo = seed_compose_demo()
    yield demo
    drop_compose_demo(demo)


def test_a_celery_era_env_runs_a_preview_beside_a_celery_producer(
    demo_databases: SeededDemo, redis_dbs: None, tmp_path: Path
) -> None:
    from celery import Celery
    from celery.result import AsyncResult as CeleryAsyncResult

    # Given the README's .env, its URLs pointed at the test databases, plus the other Celery-era names a worker needs
    text = CELERY_ENV.read_text(encoding="utf-8")
    for old, new in (
        ("redis://localhost:6379/1", redis_url(BROKER_DB)),
        ("redis://localhost:6379/2", redis_url(RESULTS_DB)),
    ):
        assert text.count(old) == 1
        text = text.replace(old, new)
    key = compose_default(compose()["services"]["worker"]["environment"]["CREDENTIAL_ENCRYPTION_KEY"])
    text += f"REDIS_URL={redis_url(CACHE_DB)}\nDATABASE_URL={demo_databases.worker_database_url}\n"
    text += f"CREDENTIAL_ENCRYPTION_KEY={key}\nWORKER_CONCURRENCY=10\nTASK_SOFT_TIME_LIMIT=60\n"
    env_file = tmp_path / ".env"
    env_file.write_text(text)
    # And a worker started in that directory with none of these variables in its environment
    env = {k: v for k, v in os.environ.items() if k not in ROSETTA_VARS}
    log = tmp_path / "worker.log"
    args = [sys.executable, "-m", "dramatiq", "rosetta_jobs.actors", "-p", "1", "-t", "2"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    worker = WorkerProcess(proc, log, args)
    try:
        worker.wait_ready(1)
        # When the backend, configured from the same .env, submits a preview of the compose demo source
        values = dotenv_values(env_file)
        client = JobClient.from_settings(load_settings(_env_file=env_file))
        sql = "SELECT status, count(*) AS orders FROM orders GROUP BY status ORDER BY status"
        task_id = client.submit_preview(sql, 1, 1, "orders")
        # And, side by side, the unchanged Celery producer sends the old way into the same broker database
        celery = Celery("backend", broker=values["CELERY_BROKER_URL"], backend=values["CELERY_RESULT_BACKEND"])
        celery_id = celery.send_task("worker.preview.execute", args=[sql, 1, 1, "orders", None], queue="preview").id
        result = AsyncResult(task_id, client=client).get(timeout=60)
        # Then the preview reads the demo table through the read-only roles and the decrypted password
        assert result["error"] is None, result["error"]
        assert result["columns"] == ["status", "orders"]
        assert [row["status"] for row in result["data"]] == ["NEW", "PAID", "SHIPPED"]
        # (the SQL sees PREVIEW_ROW_LIMIT rows of the table, as with the Celery worker: 500 of the 1000)
        assert sum(row["orders"] for row in result["data"]) == 500
        # And the backend's unchanged Celery poller reads the same state from the same result database
        polled = CeleryAsyncResult(task_id, app=celery)
        assert polled.state == "SUCCESS" and polled.result == result
        # And the Celery producer's own message runs too, moved off its kombu list by the Celery ingress
        celery_result = CeleryAsyncResult(celery_id, app=celery).get(timeout=60)
        assert (celery_result["columns"], celery_result["data"]) == (result["columns"], result["data"])
        broker = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=BROKER_DB)
        assert broker.llen("preview") == 0
        celery.close()
    finally:
        if worker.stop() not in (0, None):
            pytest.fail(f"the worker did not stop cleanly:\n{worker.output()}")
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
