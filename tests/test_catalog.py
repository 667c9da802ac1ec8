"""Connection configs from a real config database created from ``sql/config_schema.sql``."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from rosetta_jobs.catalog import Catalog, DestinationConfig, SourceConfig, config_schema_sql
from rosetta_jobs.config import load_settings
from rosetta_jobs.crypto import Cipher
from rosetta_jobs.errors import ConfigError, PreviewError, TransientError

from .conftest import TEST_KEY, create_database, drop_database

#: Vector 1 of the spec: this token under TEST_KEY is "s3cr3t-P@ss".
VECTOR_1_TOKEN = "AAECAwQFBgcICQoLNDG1afaR70vNMuSrdunvhT3AI4jnVzTVY+Jg"
NASTY_PASSWORDS = [
    "it's",
    "a@b:c/d%e\\f g",
    "\\",
    "ends with backslash\\",
    "\\'",
    "' OR '1'='1",
    "key=value other=thing",
    "pässwörd ü 🙂",
    "  spaces  ",
    "",
]


@pytest.fixture(scope="module")
def config_url(pg_database: str) -> str:
    """This module's database, with the config tables of the schema file."""
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(config_schema_sql())  # type: ignore[arg-type]
    return pg_database


@pytest.fixture
def db(config_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to seed rows; every row a test adds is deleted after it."""
    with psycopg.connect(config_url, autocommit=True) as conn:
        yield conn
        conn.execute("DELETE FROM sources")
        conn.execute("DELETE FROM destinations")


@pytest.fixture
def catalog(config_url: str) -> Iterator[Catalog]:
    with Catalog(config_url, cipher=Cipher(TEST_KEY), pool_size=2, pool_timeout=5) as cat:
        yield cat


def add_source(conn: psycopg.Connection[Any], **columns: Any) -> int:
    values = {"name": f"src-{uuid.uuid4().hex[:8]}", "pg_host": "db.example", "pg_port": 5433,
              "pg_database": "sales", "pg_username": "reader", "pg_password": None} | columns  # fmt: skip
    names = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    row = conn.execute(f"INSERT INTO sources ({names}) VALUES ({marks}) RETURNING id", list(values.values())).fetchone()
    assert row is not None
    return int(row[0])


def add_destination(conn: psycopg.Connection[Any], name: str, kind: str, config: str = "{}") -> int:
    row = conn.execute(
        "INSERT INTO destinations (name, type, config) VALUES (%s, %s, %s::jsonb) RETURNING id", (name, kind, config)
    ).fetchone()
    assert row is not None
    return int(row[0])


# -- lookups -------------------------------------------------------------------


def test_source_is_read_and_decrypted(db: psycopg.Connection[Any], catalog: Catalog) -> None:
    # Given a source whose password is the spec's vector-1 token
    source_id = add_source(db, name="Sales DB", pg_password=VECTOR_1_TOKEN)
    # When the catalog reads it
    source = catalog.source(source_id)
    # Then every field is the row's, the password decrypted
    assert source == SourceConfig(
        id=source_id, name="Sales DB", host="db.example", port=5433, database="sales", user="reader",
        password="s3cr3t-P@ss",
    )  # fmt: skip
    assert source.alias == "pg_src_sales_db"


def test_unknown_source_and_destination(catalog: Catalog, config_url: str) -> None:
    # Given ids that are in neither table
    # When they are looked up
    # Then the messages are the Celery worker's
    with pytest.raises(PreviewError) as source_error:
        catalog.source(987654)
    with pytest.raises(PreviewError) as destination_error:
        catalog.destination(987655)
    assert str(source_error.value) == "Source 987654 not found"
    assert str(destination_error.value) == "Destination 987655 not found"


def test_destination_is_read_without_its_secrets(db: psycopg.Connection[Any], catalog: Catalog) -> None:
    # Given a destination whose config holds an encrypted password
    secret = Cipher(TEST_KEY).encrypt("dest-secret")
    destination_id = add_destination(db, "warehouse", "SNOWFLAKE", f'{{"user": "u", "password": "{secret}"}}')
    # When the catalog reads it
    destination = catalog.destination(destination_id)
    # Then name and type come back, and nothing of the config
    assert destination == DestinationConfig(id=destination_id, name="warehouse", type="SNOWFLAKE")
    assert "dest-secret" not in repr(destination) and secret not in repr(destination)


def test_wrong_key_is_decryption_failed(db: psycopg.Connection[Any], config_url: str) -> None:
    # Given a source encrypted with the test key and a catalog holding another key
    source_id = add_source(db, pg_password=VECTOR_1_TOKEN)
    # When the source is read
    with Catalog(config_url, cipher=Cipher("k" * 32)) as other, pytest.raises(PreviewError) as info:
        other.source(source_id)
    # Then the user sees the worker's message with an empty detail
    assert str(info.value) == "Decryption failed: "


def test_password_without_key_says_how_to_fix(db: psycopg.Connection[Any], config_url: str) -> None:
    # Given a catalog with no cipher, a source with and one without a password
    with_password = add_source(db, pg_password=VECTOR_1_TOKEN)
    without_password = add_source(db, pg_password=None)
    with Catalog(config_url, cipher=None) as keyless:
        # When both are read
        with pytest.raises(PreviewError) as info:
            keyless.source(with_password)
        plain = keyless.source(without_password)
    # Then the first names the missing variable and the fix, the second has an empty password
    assert "CREDENTIAL_ENCRYPTION_KEY is not set" in str(info.value)
    assert "backend's key" in str(info.value)
    assert plain.password == ""


def test_null_port_is_5432_and_null_host_is_refused(db: psycopg.Connection[Any], catalog: Catalog) -> None:
    # Given a source with no port and one with no host (a non-PostgreSQL source, say)
    no_port = add_source(db, pg_port=None)
    no_host = add_source(db, name="kafka-in", pg_host=None, pg_password=Cipher(TEST_KEY).encrypt("hunter2"))
    # When they are read
    port = catalog.source(no_port).port
    with pytest.raises(PreviewError) as info:
        catalog.source(no_host)
    # Then the port defaults, and the hostless source is refused without revealing its password
    assert port == 5432
    assert str(info.value).startswith(f"Source {no_host} (kafka-in) has no pg_host")
    assert "hunter2" not in str(info.value)


def test_ids_must_be_integers(catalog: Catalog) -> None:
    # Given ids of the wrong type
    # When they are looked up
    # Then the preview is told, and the database is not asked
    with pytest.raises(PreviewError, match="Source id must be an integer"):
        catalog.source("1")  # type: ignore[arg-type]
    with pytest.raises(PreviewError, match="Destination id must be an integer"):
        catalog.destination(True)


def test_from_settings(db: psycopg.Connection[Any], config_url: str) -> None:
    # Given settings naming the config database and the test key
    source_id = add_source(db, pg_password=VECTOR_1_TOKEN)
    settings = load_settings(database_url=config_url, credential_encryption_key=TEST_KEY, db_pool_size=3)
    # When a catalog is made from them
    with Catalog.from_settings(settings) as cat:
        source = cat.source(source_id)
    # Then it reads and decrypts
    assert source.password == "s3cr3t-P@ss"


# -- cache ---------------------------------------------------------------------


def test_cache_serves_the_old_row_within_ttl(db: psycopg.Connection[Any], config_url: str) -> None:
    # Given a catalog with a short TTL that has read a source
    source_id = add_source(db, name="before", pg_password=Cipher(TEST_KEY).encrypt("old-pass"))
    with Catalog(config_url, cipher=Cipher(TEST_KEY), cache_ttl=0.5) as cat:
        assert cat.source(source_id).name == "before"
        # When the row changes in the database
        db.execute(
            "UPDATE sources SET name = 'after', pg_password = %s WHERE id = %s",
            (Cipher(TEST_KEY).encrypt("new-pass"), source_id),
        )
        within = cat.source(source_id)
        time.sleep(0.6)
        after = cat.source(source_id)
    # Then the cached row is served within the TTL, the new one after it
    assert (within.name, within.password) == ("before", "old-pass")
    assert (after.name, after.password) == ("after", "new-pass")


def test_a_miss_is_not_cached(db: psycopg.Connection[Any], catalog: Catalog) -> None:
    # Given a destination id that was just looked up and not found
    with pytest.raises(PreviewError):
        catalog.destination(424242)
    # When a destination with that id is created
    db.execute("INSERT INTO destinations (id, name, type) VALUES (424242, 'fresh', 'POSTGRES')")
    # Then it is found at once
    assert catalog.destination(424242).name == "fresh"


def test_cache_is_bounded_and_evicts_the_oldest(db: psycopg.Connection[Any], config_url: str) -> None:
    # Given a catalog that caches at most two rows, having read three sources in order
    ids = [add_source(db, name=f"v1-{n}") for n in range(3)]
    with Catalog(config_url, cipher=None, cache_size=2, cache_ttl=60) as cat:
        for source_id in ids:
            cat.source(source_id)
        # When every row changes
        db.execute("UPDATE sources SET name = replace(name, 'v1-', 'v2-')")
        oldest, newest = cat.source(ids[0]).name, cat.source(ids[2]).name
    # Then the oldest was evicted (fresh read) while the newest is still cached
    assert oldest == "v2-0"
    assert newest == "v1-2"


def test_concurrent_lookups(db: psycopg.Connection[Any], config_url: str) -> None:
    # Given sources with distinct passwords and a catalog with a tiny pool and a TTL that keeps expiring
    cipher = Cipher(TEST_KEY)
    expected = {add_source(db, name=f"t{n}", pg_password=cipher.encrypt(f"pw-{n}")): f"pw-{n}" for n in range(5)}
    errors: list[BaseException] = []
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()

    with Catalog(config_url, cipher=cipher, pool_size=2, cache_ttl=0.005, cache_size=3) as cat:

        def work() -> None:
            try:
                for round_ in range(40):
                    source_id = list(expected)[round_ % len(expected)]
                    result = (source_id, cat.source(source_id).password)
                    with lock:
                        seen.append(result)
            except BaseException as exc:
                with lock:
                    errors.append(exc)

        # When eight threads look them up at once
        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

    # Then every answer is right and no thread failed
    assert errors == []
    assert len(seen) == 8 * 40
    assert all(password == expected[source_id] for source_id, password in seen)


# -- infrastructure failures ---------------------------------------------------


def test_unreachable_database_is_transient_and_redacted() -> None:
    # Given a catalog on a port where nothing listens: constructing it does not connect
    cat = Catalog("postgresql://postgres:hunter2-secret@127.0.0.1:1/rosetta", cipher=None, pool_timeout=1)
    try:
        started = time.monotonic()
        # When a source is looked up
        with pytest.raises(TransientError) as info:
            cat.source(1)
        elapsed = time.monotonic() - started
    finally:
        cat.close()
    # Then the error names the redacted URL and what to check, quickly
    message = str(info.value)
    assert "postgresql://postgres:***@127.0.0.1:1/rosetta" in message
    assert "hunter2-secret" not in message
    assert "check that PostgreSQL is running" in message
    assert elapsed < 5
    assert "hunter2-secret" not in repr(cat)


def test_database_without_tables_is_a_config_error() -> None:
    # Given a database that is not a Rosetta config database
    url = create_database()
    try:
        # When a source is looked up
        with Catalog(url, cipher=None) as cat, pytest.raises(ConfigError) as info:
            cat.source(1)
    finally:
        drop_database(url)
    # Then the operator is told to check DATABASE_URL
    assert "check that DATABASE_URL" in str(info.value)


def test_killed_connection_is_replaced(db: psycopg.Connection[Any], config_url: str) -> None:
    # Given a catalog whose pooled connection the server has terminated (as a restart would)
    source_id = add_source(db, name="survivor")
    with Catalog(config_url, cipher=None, pool_size=1, cache_ttl=0) as cat:
        assert cat.source(source_id).name == "survivor"
        killed = db.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'rosetta-jobs-catalog'"
        ).fetchone()
        # When the next lookup runs
        result = cat.source(source_id)
    # Then it gets a fresh connection and succeeds
    assert killed is not None and killed[0] >= 1
    assert result.name == "survivor"


# -- SourceConfig --------------------------------------------------------------


def make_source(password: str, *, database: str = "sales") -> SourceConfig:
    return SourceConfig(id=7, name="My-Source.1", host="127.0.0.1", port=5432, database=database, user="postgres",
                        password=password)  # fmt: skip


@pytest.mark.parametrize("password", NASTY_PASSWORDS)
def test_conninfo_round_trips(password: str) -> None:
    # Given a source whose password is full of quoting hazards
    source = make_source(password)
    # When its conninfo is parsed by libpq's rules
    parsed = conninfo_to_dict(source.conninfo())
    # Then every value comes back unchanged
    assert parsed == {
        "host": "127.0.0.1", "port": "5432", "dbname": "sales", "user": "postgres", "password": password,
        "connect_timeout": "10", "application_name": "rosetta-jobs-preview",
    }  # fmt: skip


@pytest.mark.parametrize("password", ["a@b:c/d%e\\f g", "' OR '1'='1", "pässwörd ü 🙂"])
def test_conninfo_connects(config_url: str, password: str) -> None:
    # Given a source on the local server with a nasty password. The local server uses trust
    # auth, so the password is not checked: this proves libpq parses the whole string.
    source = make_source(password, database=config_url.rsplit("/", 1)[1])
    # When psycopg connects with its conninfo
    with psycopg.connect(source.conninfo()) as conn:
        row = conn.execute("SELECT current_database(), current_setting('application_name')").fetchone()
    # Then it reaches the named database with the named application
    assert row == (source.database, "rosetta-jobs-preview")


def test_source_repr_and_fingerprint_hide_the_password() -> None:
    # Given two sources that differ only in their password
    first, second = make_source("hunter2"), make_source("hunter3")
    # When they are shown and fingerprinted
    # Then the password is in neither, and the fingerprints tell them apart
    assert "hunter2" not in repr(first) and "password" not in repr(first)
    assert "hunter2" not in first.fingerprint()
    assert first.fingerprint() == make_source("hunter2").fingerprint()
    assert first.fingerprint() != second.fingerprint()
    assert len(first.fingerprint()) == 64
    assert first.alias == "pg_src_my_source_1"
