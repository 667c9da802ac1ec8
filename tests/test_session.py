"""DuckDB sessions: secrets never survive in an error text; the session's time zone is the one asked for; the
extension's signature is checked once per file, and a changed file is checked again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from rosetta_jobs.catalog import SourceConfig
from rosetta_jobs.errors import ConfigError, JobTimedOut, PreviewError
from rosetta_jobs.preview import session as session_module
from rosetta_jobs.preview.serialize import serialize
from rosetta_jobs.preview.session import Session, SessionPool, check_timezone

# -- time zone ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def events_source(pg_database: str) -> SourceConfig:
    """A source whose table ``events`` holds one timestamptz, 2024-01-01 20:00 UTC (03:00 the next day in Jakarta)."""
    with psycopg.connect(pg_database, autocommit=True) as pg:
        pg.execute("CREATE TABLE public.events (id integer, ts timestamptz)")
        pg.execute("INSERT INTO public.events VALUES (1, '2024-01-01 20:00:00+00')")
    parts = conninfo_to_dict(pg_database)
    return SourceConfig(id=1, name="tz source", host=str(parts["host"]), port=int(parts["port"] or 5432),
                        database=str(parts["dbname"]), user=str(parts["user"]), password="")  # fmt: skip


@pytest.fixture
def open_session(events_source: SourceConfig) -> Iterator[Any]:
    """``open_session(**options)`` attaches ``events_source``; every session opened is closed afterwards."""
    sessions: list[Session] = []

    def open_one(**options: Any) -> Session:
        sessions.append(Session(events_source, memory_limit=256 * 2**20, threads=1, **options))
        return sessions[-1]

    yield open_one
    for session in sessions:
        session.close()


IN_UTC = {"day": "2024-01-01", "hour": 20, "trunc": "2024-01-01T00:00:00+00:00", "ts": "2024-01-01T20:00:00+00:00"}
IN_JAKARTA = {"day": "2024-01-02", "hour": 3, "trunc": "2024-01-02T00:00:00+07:00", "ts": "2024-01-02T03:00:00+07:00"}


@pytest.mark.parametrize(
    ("options", "expected"),
    [({}, IN_UTC), ({"timezone": "UTC"}, IN_UTC), ({"timezone": "Asia/Jakarta"}, IN_JAKARTA)],
    ids=["default", "utc", "jakarta"],
)
def test_session_time_zone_drives_dates_and_keeps_offsets(
    open_session: Any, events_source: SourceConfig, options: dict[str, str], expected: dict[str, Any]
) -> None:
    # Given a session on a real PostgreSQL table, in the zone asked for (UTC by default)
    session = open_session(**options)
    table = f'"{events_source.alias}".public.events'
    # When custom SQL takes the date, hour and day of a timestamptz, and the result is serialised
    arrow = session.run(
        f"SELECT CAST(ts AS DATE) AS day, hour(ts) AS hour, date_trunc('day', ts) AS trunc, ts FROM {table}", timeout=30
    )
    result = serialize(arrow)
    # Then they are the zone's local answers, and each timestamptz carries that zone's offset for the same instant
    assert result["data"] == [expected]


def test_session_time_zone_is_quoted_and_spelled_as_duckdb_does(open_session: Any) -> None:
    # Given a zone written in lower case
    # When a session is opened with it
    session = open_session(timezone="asia/jakarta")
    # Then DuckDB's own spelling is kept and set
    assert session.timezone == "Asia/Jakarta"
    assert session.con.execute("SELECT current_setting('TimeZone')").fetchone() == ("Asia/Jakarta",)


@pytest.mark.parametrize("zone", ["Asia/Jakartaa", "+07:00", "", "UTC'; SET threads = 1; --", "Etc/UTC\x00"])
def test_unknown_time_zone_is_a_config_error_naming_the_setting(zone: str) -> None:
    # Given a zone DuckDB does not know (or text that is not a zone at all)
    # When a session pool is configured with it
    with pytest.raises(ConfigError) as info:
        SessionPool(memory_limit=2**20, threads=1, slots=1, timezone=zone)
    # Then the worker stops there with a message naming the setting and a valid example
    message = str(info.value)
    assert repr(zone) in message
    assert "WORKER_TIMEZONE" in message and "TZ" in message and "Asia/Jakarta" in message


def test_a_near_miss_time_zone_gets_suggestions() -> None:
    # Given a misspelt zone
    # When it is checked
    with pytest.raises(ConfigError) as info:
        check_timezone("Asia/Jakartaa")
    # Then DuckDB's close names are offered
    assert "Asia/Jakarta" in str(info.value).partition("close names:")[2]


# -- time limit ------------------------------------------------------------------------------------------------


def test_a_query_past_its_time_limit_is_interrupted_in_duckdb_and_the_session_stays_usable(open_session: Any) -> None:
    # Given a session and a query that would run for minutes
    session = open_session()
    started = time.monotonic()
    # When it runs with a 0.3 s limit
    with pytest.raises(JobTimedOut):
        session.run("SELECT count(*) FROM range(100000000000) AS t(x) WHERE x % 7 = 3", timeout=0.3)
    # Then DuckDB stopped it at the limit, and the session answers the next query (its deadline disarmed)
    assert time.monotonic() - started < 5
    assert session.run("SELECT count(*) AS n FROM pg_src_tz_source.public.events", timeout=5).to_pylist() == [{"n": 1}]


# -- the extension's signature ------------------------------------------------------------------------------------


def _unsigned_allowed(con: Any) -> bool:
    return bool(con.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone()[0])


def test_the_extension_signature_is_checked_once_per_file_and_never_for_a_jobs_load(
    open_session: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a session opened (its LOAD checked the shipped file's signature, or an earlier one in this process did)
    first = open_session()
    shipped = session_module.extension_path()
    # When another session opens
    second = open_session()
    # Then the file is known as checked, the setting that skipped the check is off again, and a LOAD is refused
    assert session_module._identity(shipped) in session_module._verified
    assert not _unsigned_allowed(second.con)
    copy = tmp_path / "other.duckdb_extension"
    copy.write_bytes(shipped.read_bytes())
    with pytest.raises(duckdb.PermissionException, match="disabled"):
        second.con.execute(f"LOAD '{copy}'")
    with pytest.raises(duckdb.Error):
        second.con.execute("SET allow_unsigned_extensions = true")
    assert first.run("SELECT count(*) AS n FROM pg_src_tz_source.public.events", timeout=5).to_pylist() == [{"n": 1}]

    # Given a copy of the extension whose bytes were changed after the genuine file was checked
    tampered = tmp_path / "postgres_scanner.duckdb_extension"
    data = bytearray(shipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(session_module, "extension_path", lambda: tampered)
    # When a session loads it
    with pytest.raises(PreviewError, match="signature") as info:
        open_session()
    # Then its signature was checked (another file) and it was refused, saying what to reinstall
    assert "reinstall duckdb-extension-postgres-scanner" in str(info.value)
    assert session_module._identity(tampered) not in session_module._verified


# -- refresh ahead of expiry -------------------------------------------------------------------------------------


def test_a_source_in_use_gets_its_next_session_in_the_background(events_source: SourceConfig) -> None:
    # Given a pool whose sessions live 1.5 s, warmed by a callback, and a source previewed now and then
    warmed: list[Session] = []

    def warm(session: Session) -> None:
        session.run("SELECT * FROM pg_src_tz_source.public.events", timeout=5)
        warmed.append(session)

    pool = SessionPool(memory_limit=256 * 2**20, threads=1, slots=2, max_age=1.5, warm=warm)
    try:
        with pool.session(events_source, wait=5) as first:
            first.run("SELECT * FROM pg_src_tz_source.public.events", timeout=5)
        born = first.created
        # When the source is used again across the first session's expiry
        seen = []
        for _ in range(8):
            time.sleep(0.3)
            with pool.session(events_source, wait=5) as session:
                session.run("SELECT * FROM pg_src_tz_source.public.events", timeout=5)
                seen.append((session, session.created))
        # Then newer sessions took over, each opened and warmed off the request path (none opened by a preview)
        replacements = {session for session, created in seen if created > born}
        assert replacements, "no session was replaced"
        assert replacements <= set(warmed)
    finally:
        pool.close()


def test_a_source_nobody_uses_is_not_refreshed(events_source: SourceConfig) -> None:
    # Given a pool whose sessions live 1 s and a source used once
    warmed: list[Session] = []
    pool = SessionPool(memory_limit=256 * 2**20, threads=1, slots=2, max_age=1.0, warm=warmed.append)
    try:
        with pool.session(events_source, wait=5):
            pass
        # When nobody uses it for twice its age
        time.sleep(2.2)
        # Then at most the one refresh due while it was still in use ran, and nothing is kept idle
        assert len(warmed) <= 1
        assert pool._idle == []
    finally:
        pool.close()


# -- the source's connections ------------------------------------------------------------------------------------


def test_a_connection_the_source_drops_is_replaced_without_a_failed_query(
    events_source: SourceConfig, open_session: Any, pg_database: str
) -> None:
    # Given a session that has read the source (the extension's pool keeps the connection; its health-check
    # query, "SELECT 1" on each use, is what notices a dead one: without it this test fails)
    session = open_session()
    table = "pg_src_tz_source.public.events"
    assert session.run(f"SELECT id FROM {table}", timeout=5).num_rows == 1
    # When the source ends that connection (a restart, an idle timeout, an operator's pg_terminate_backend)
    with psycopg.connect(pg_database, autocommit=True) as pg:
        ended = pg.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchone()
    assert ended is not None and ended[0] >= 1
    # Then the next queries read the source as before
    for _ in range(3):
        assert session.run(f"SELECT id FROM {table}", timeout=5).column("id").to_pylist() == [1]
