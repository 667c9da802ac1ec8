"""Settings: Celery-era names, native names, .env handling and errors that name the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from rosetta_jobs.config import load_settings, parse_size
from rosetta_jobs.errors import ConfigError

CELERY_VARS = ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "BROKER_URL", "RESULT_BACKEND_URL", "DUCKDB_MEMORY_LIMIT")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No rosetta variables from the caller's environment, and a private working directory for .env."""
    for name in (*CELERY_VARS, "REDIS_URL", "DATABASE_URL", "CREDENTIAL_ENCRYPTION_KEY", "PREVIEW_ROW_LIMIT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_celery_names_are_read(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the Celery worker's variable names
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://broker:6379/1")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "redis://results:6379/2")
    # When the settings are read
    settings = load_settings()
    # Then they land on the native fields
    assert settings.broker_url == "redis://broker:6379/1"
    assert settings.result_backend_url == "redis://results:6379/2"


def test_native_name_wins_over_celery_name(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://old:6379/1")
    monkeypatch.setenv("BROKER_URL", "redis://new:6379/1")
    assert load_settings().broker_url == "redis://new:6379/1"


def test_unknown_dotenv_keys_are_ignored(clean_env: Path) -> None:
    # Given a .env with keys rosetta-jobs does not know (the Celery worker refused to start on these)
    (clean_env / ".env").write_text("WORKER_CONCURRENCY=10\nSOMETHING_ELSE=1\nPREVIEW_ROW_LIMIT=250\n")
    # When the settings are read, Then the known key is used and the others are ignored
    assert load_settings().preview_row_limit == 250


def test_invalid_value_names_the_variable_and_the_fix(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://guest@localhost//")
    monkeypatch.setenv("DUCKDB_MEMORY_LIMIT", "lots")
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "BROKER_URL or CELERY_BROKER_URL" in text and "redis://" in text
    assert "DUCKDB_MEMORY_LIMIT" in text and "512MB" in text


def test_bad_encryption_key_fails_at_start(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIAL_ENCRYPTION_KEY", "00" * 32)
    with pytest.raises(ConfigError, match=r"CREDENTIAL_ENCRYPTION_KEY.*Got 64 bytes"):
        load_settings()


def test_duckdb_memory_fits_the_budget(clean_env: Path) -> None:
    # Given the Celery-era sizing: 2GB per session x 4 slots against a 4GB budget
    settings = load_settings(duckdb_memory_limit="2GB", duckdb_max_concurrent=4, worker_memory_budget="4GB")
    # Then each session is held to a quarter of the budget, so all slots together fit
    assert settings.duckdb_memory_limit_bytes * settings.duckdb_max_concurrent <= parse_size("4GB")
    assert load_settings(duckdb_memory_limit="256MB").duckdb_memory_limit_bytes == parse_size("256MB")


def test_sqlalchemy_style_database_url_is_accepted(clean_env: Path) -> None:
    settings = load_settings(database_url="postgresql+psycopg2://u:p@db:5433/rosetta")
    assert settings.database_url == "postgresql://u:p@db:5433/rosetta"
