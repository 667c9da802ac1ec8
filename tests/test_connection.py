"""Redis URLs to clients (``connection.py``): Celery's Sentinel forms, the settings that go with them, bad URLs.

These build clients without connecting (redis-py connects on the first command); the failover itself is
exercised against a real Sentinel topology in ``test_sentinel.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from redis.sentinel import MasterNotFoundError, SentinelConnectionPool, SentinelManagedConnection

from rosetta_jobs.config import load_settings
from rosetta_jobs.connection import (
    SentinelOptions,
    SentinelURL,
    async_redis_client,
    connect,
    own_pool,
    parse_sentinel_url,
    redis_client,
    replica_wait_for,
)
from rosetta_jobs.errors import ConfigError
from rosetta_jobs.retrying import should_retry

THREE = "sentinel://:s3cret@10.0.0.1:26379/1;sentinel://10.0.0.2:26380/1;sentinel://10.0.0.3/1"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("BROKER_URL", "CELERY_BROKER_URL", "RESULT_BACKEND_URL", "CELERY_RESULT_BACKEND", "REDIS_URL",
                 "SENTINEL_MASTER_NAME", "SENTINEL_PASSWORD", "REDIS_WAIT_REPLICAS"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_several_sentinels_with_password_and_db_are_parsed() -> None:
    # When Celery's form with three Sentinels (one without a port) is parsed
    parsed = parse_sentinel_url(THREE)
    # Then every Sentinel is kept in order, 26379 filling the missing port, with the first's db and password
    assert parsed == SentinelURL(
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379)), db=1, password="s3cret"
    )


def test_db_and_password_come_from_the_first_sentinel_as_in_kombu() -> None:
    # Given the db and password written on the first Sentinel only, and a trailing ';'
    parsed = parse_sentinel_url("sentinel://user:p%40ss@h1:26379/4;sentinel://h2:26379;")
    # Then they apply to the whole list (kombu's and Celery's reading), the password URL-decoded
    assert (parsed.db, parsed.username, parsed.password) == (4, "user", "p@ss")
    assert parsed.sentinels == (("h1", 26379), ("h2", 26379))
    # And a single Sentinel without a db means db 0
    assert parse_sentinel_url("sentinel://h1").db == 0


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("sentinel://h1:26379;sentinel://h2:26379/1", "read the database from the first Sentinel only"),
        ("sentinel://:a@h1/1;sentinel://:b@h2/1", "read the password from the first Sentinel only"),
        ("sentinel://h1:26379;redis://h2:6379", "every Sentinel of the list starts with sentinel://"),
        ("sentinel://h1:port/1", "'h1:port' is not host:port"),
        ("sentinel://h1/one", "the database must be a number"),
        ("sentinel://h1/1?master_name=x", "SENTINEL_MASTER_NAME"),
        ("sentinel://", "a Sentinel has no host"),
    ],
)
def test_a_bad_sentinel_url_says_what_is_wrong_and_how_to_write_it(url: str, reason: str) -> None:
    # When a malformed Sentinel URL is parsed
    with pytest.raises(ValueError) as info:
        parse_sentinel_url(url)
    # Then the error names the problem and shows the form to write
    assert reason in str(info.value)
    assert "write it like sentinel://host1:26379/1;sentinel://host2:26379/1" in str(info.value)


def test_a_bad_sentinel_password_is_not_echoed() -> None:
    # When a URL with a password is refused
    with pytest.raises(ValueError) as info:
        parse_sentinel_url("sentinel://:hunter2@h1/1;sentinel://h2/2")
    # Then the message does not carry the password
    assert "hunter2" not in str(info.value)


def test_settings_accept_sentinel_urls_and_pass_master_name_and_sentinel_password(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a Celery deployment's Sentinel settings
    monkeypatch.setenv("CELERY_BROKER_URL", THREE)
    monkeypatch.setenv("CELERY_RESULT_BACKEND", THREE.replace("/1", "/2"))
    monkeypatch.setenv("SENTINEL_MASTER_NAME", "rosetta")
    monkeypatch.setenv("SENTINEL_PASSWORD", "sentinel-pw")
    # When they are read
    settings = load_settings()
    # Then the URLs are kept and the options name the master and the Sentinels' password
    assert settings.broker_url == THREE
    assert settings.sentinel == SentinelOptions(master_name="rosetta", password="sentinel-pw")
    # And a client built with them asks the Sentinels (with their password) for that master, on db 2,
    # authenticating to the master with the URL's password
    client = connect(settings.result_backend_url, sentinel=settings.sentinel)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "rosetta"
    assert issubclass(pool.connection_class, SentinelManagedConnection)
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (2, "s3cret")
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [26379, 26380, 26379]
    assert {s.connection_pool.connection_kwargs.get("password") for s in sentinels} == {"sentinel-pw"}


def test_settings_refuse_a_bad_url_naming_the_variable_and_the_fix(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a Sentinel list whose db is written on the last Sentinel only
    monkeypatch.setenv("CELERY_BROKER_URL", "sentinel://h1:26379;sentinel://h2:26379/1")
    # When the settings are read, then the error names the variable, the rule and the form to write
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "BROKER_URL or CELERY_BROKER_URL" in message and "first Sentinel only" in message
    # And a URL of no Redis kind names both forms
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://guest@rabbit//")
    with pytest.raises(ConfigError, match=r"redis://localhost:6379/1 \(or, with Redis Sentinel, sentinel://"):
        load_settings()


def test_one_client_per_url_and_options() -> None:
    # Given the same Sentinel URL asked for twice with the same options, and once with another master
    first = redis_client(THREE, sentinel=SentinelOptions(master_name="a"))
    again = redis_client(THREE, sentinel=SentinelOptions(master_name="a"))
    other = redis_client(THREE, sentinel=SentinelOptions(master_name="b"))
    # Then the first two share one client (one pool per process), the third has its own
    assert first is again and other is not first
    # And the default options are the same whether they are named or not
    assert redis_client(THREE) is redis_client(THREE, sentinel=SentinelOptions())


def test_own_pool_keeps_the_kind_of_connection() -> None:
    # Given a Sentinel-managed client and a Unix-socket client
    managed = connect(THREE, sentinel=SentinelOptions(master_name="m"))
    unix = connect("unix:///run/redis.sock?db=3")
    # When each gets a client with a pool of its own (a consumer's blocking waits)
    managed_own, unix_own = own_pool(managed), own_pool(unix)
    # Then the Sentinel one still asks the same Sentinels for the same master, with the same credentials
    pool = managed_own.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool is not managed.connection_pool
    assert pool.service_name == "m" and pool.sentinel_manager is managed.connection_pool.sentinel_manager
    assert pool.connection_kwargs["password"] == "s3cret" and pool.connection_kwargs["db"] == 1
    # And the Unix one keeps its socket connection class and path (a copy of the kwargs alone lost them)
    assert unix_own.connection_pool.connection_class is redis.UnixDomainSocketConnection
    assert unix_own.connection_pool.connection_kwargs["path"] == "/run/redis.sock"


def test_the_async_client_of_a_sentinel_url_is_sentinel_managed() -> None:
    # When the ops service's asyncio client is built for a Sentinel URL
    client = async_redis_client(THREE, sentinel=SentinelOptions(master_name="m", password="pw"))
    # Then it is redis.asyncio's Sentinel-managed client of that master and db
    pool = client.connection_pool
    assert type(pool).__name__ == "SentinelConnectionPool" and pool.service_name == "m"  # type: ignore[attr-defined]
    assert pool.connection_kwargs["db"] == 1


def test_wait_for_replicas_defaults_to_one_with_sentinel_and_none_without() -> None:
    # Then a Sentinel URL waits for one replica unless told otherwise, a plain URL for none
    sentinel_wait = replica_wait_for(THREE, replicas=None, timeout_ms=500, what="x")
    assert sentinel_wait is not None and sentinel_wait.replicas == 1
    assert replica_wait_for("redis://h:6379/1", replicas=None, timeout_ms=500, what="x") is None
    assert replica_wait_for(THREE, replicas=0, timeout_ms=500, what="x") is None
    plain_wait = replica_wait_for("redis://h:6379/1", replicas=2, timeout_ms=50, what="x")
    assert plain_wait is not None and (plain_wait.replicas, plain_wait.timeout_ms) == (2, 50)


@pytest.mark.parametrize(
    "error",
    [
        redis.ConnectionError("Error 111 connecting to 10.0.0.1:6379. Connection refused."),
        MasterNotFoundError("No master found for 'mymaster'"),
        redis.ReadOnlyError("You can't write against a read only replica."),
        redis.TimeoutError("Timeout reading from socket"),
    ],
)
def test_a_redis_failover_met_by_a_job_is_retried_like_any_infrastructure_error(error: Exception) -> None:
    # When an actor that opted into retries meets Redis failing over, then it is retried (not failed at once)
    assert should_retry(0, error)
    # And a Redis error that is not an outage (a bug, a refused command) is not
    assert not should_retry(0, redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"))
