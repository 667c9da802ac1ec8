"""A small preview source (``orders``, 2,000 rows) and a config database pointing at it, for tests that
run real previews through the Celery protocol."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from rosetta_jobs.catalog import config_schema_sql
from rosetta_jobs.crypto import Cipher


@dataclass
class PreviewDatabases:
    config_url: str
    source_url: str
    source_id: int
    destination_id: int


def seed(config_url: str, source_url: str, key: str) -> PreviewDatabases:
    """Fill two empty databases: the source's ``orders`` table and the config rows that reach it."""
    with psycopg.connect(source_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.orders (id int PRIMARY KEY, status text, amount numeric(10,2))")
        conn.execute(
            "INSERT INTO public.orders SELECT g, (ARRAY['NEW','PAID'])[1 + g % 2], g * 1.5"
            " FROM generate_series(1, 2000) g"
        )
    with psycopg.connect(config_url, autocommit=True) as conn:
        conn.execute(config_schema_sql())
        source = conn.execute(
            "INSERT INTO sources (name, pg_host, pg_port, pg_database, pg_username, pg_password)"
            " VALUES ('Main DB', '127.0.0.1', 5432, %s, 'postgres', %s) RETURNING id",
            (source_url.rsplit("/", 1)[1], Cipher(key).encrypt("unused-with-trust-auth")),
        ).fetchone()
        destination = conn.execute(
            "INSERT INTO destinations (name, type, config) VALUES ('wh', 'POSTGRES', '{}') RETURNING id"
        ).fetchone()
    assert source is not None and destination is not None
    return PreviewDatabases(config_url, source_url, int(source[0]), int(destination[0]))
