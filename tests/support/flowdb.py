"""Databases for the flow engine's tests: a source (``shop``), a destination (``warehouse``) and a config
database whose rows reach them with the ids the spec's worked examples use (sources 1 and 2, destination 3).

The tables hold the same rows as the in-process tables of ``test_flows_compiler.py``, so the worked examples
give the same answers through a real worker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import psycopg

from rosetta_jobs.catalog import config_schema_sql
from rosetta_jobs.crypto import Cipher

from ..conftest import TEST_KEY, create_database, drop_database

#: The destination's password as stored (trust auth ignores it): it must never show anywhere.
DESTINATION_PASSWORD = "s3cret 'pw' \\ with spaces"

_SHOP = """
CREATE TABLE public.orders (id int, customer_id int, amount numeric(10,2), status text, updated_at timestamptz);
INSERT INTO public.orders VALUES (1, 10, 5.0, 'paid', '2024-01-01 10:00+00'),
  (2, 11, 20.0, 'paid', '2024-01-02 10:00+00'), (2, 11, 20.0, 'paid', '2024-01-02 10:00+00'),
  (3, 12, 30.0, 'void', '2024-01-03 10:00+00'),
  (4, NULL, 40.0, 'paid', '2024-01-04 10:00+00'), (5, 13, 50.0, 'paid', '2024-01-05 10:00+00');
CREATE TABLE public.customers (id int, name text, jan int, feb int);
INSERT INTO public.customers VALUES (10, 'Ann', 1, 2), (11, 'Bob', 3, 4), (12, 'Cy', 5, 6), (99, 'Nobody', 7, 8);
CREATE SCHEMA sales;
CREATE TABLE sales.orders AS SELECT * FROM public.orders;
CREATE TABLE public.sales_2023 (region text, quarter text, amount int);
INSERT INTO public.sales_2023 VALUES ('north', 'Q1', 1), ('north', 'Q2', 2), ('south', 'Q1', 3), ('south', 'Q1', 3);
CREATE TABLE public.sales_2024 (region text, quarter text, amount int);
INSERT INTO public.sales_2024 VALUES ('north', 'Q1', 100), ('north', 'Q2', 101), ('south', 'Q1', 102),
  ('south', 'Q1', 102);
CREATE TABLE public.unused (x int);
CREATE TABLE public.t1 (k int, jan int, feb int);
INSERT INTO public.t1 VALUES (1, 10, 11), (2, 20, 21);
CREATE TABLE public.t2 (k int, v text);
INSERT INTO public.t2 VALUES (1, 'a'), (2, 'b');
CREATE TABLE public.payroll (id int, salary int);
INSERT INTO public.payroll VALUES (1, 100000);
CREATE TABLE public.measures (id int, x double precision, meta jsonb, tags text[]);
INSERT INTO public.measures VALUES (1, 'NaN', '{"a": 1}', ARRAY['x', 'y']), (2, 2.5, NULL, NULL);
"""

_WAREHOUSE = """
CREATE TABLE public.customers (id int, region text);
INSERT INTO public.customers VALUES (10, 'north'), (11, 'south'), (12, 'north'), (13, 'south');
"""


@dataclass
class FlowDatabases:
    config_url: str
    shop_url: str
    warehouse_url: str
    #: The destination (``warehouse``) and one whose server cannot be reached, both POSTGRES.
    warehouse: int = 3
    unreachable: int = 4
    snowflake: int = 5

    def drop(self) -> None:
        for url in (self.config_url, self.shop_url, self.warehouse_url):
            drop_database(url)


def create_flow_databases() -> FlowDatabases:
    shop, warehouse, config = create_database("rj_shop"), create_database("rj_wh"), create_database("rj_flowcfg")
    with psycopg.connect(shop, autocommit=True) as conn:
        conn.execute(_SHOP)
    with psycopg.connect(warehouse, autocommit=True) as conn:
        conn.execute(_WAREHOUSE)
    cipher = Cipher(TEST_KEY)
    dbs = FlowDatabases(config, shop, warehouse)
    with psycopg.connect(config, autocommit=True) as conn:
        conn.execute(config_schema_sql())
        for source_id in (1, 2):
            conn.execute(
                "INSERT INTO sources (id, name, pg_host, pg_port, pg_database, pg_username, pg_password)"
                " VALUES (%s, %s, '127.0.0.1', 5432, %s, 'postgres', %s)",
                (source_id, f"shop-{source_id}", shop.rsplit("/", 1)[1], cipher.encrypt("shop password")),
            )

        def destination(row_id: int, kind: str, **config: object) -> None:
            settings = {"host": "127.0.0.1", "port": 5432, "database": warehouse.rsplit("/", 1)[1], "user": "postgres",
                        "password": cipher.encrypt(DESTINATION_PASSWORD), **config}  # fmt: skip
            conn.execute("INSERT INTO destinations (id, name, type, config) VALUES (%s, %s, %s, %s)",
                         (row_id, f"dest-{row_id}", kind, json.dumps(settings)))  # fmt: skip

        destination(dbs.warehouse, "POSTGRES")
        destination(dbs.unreachable, "POSTGRES", port=1)
        destination(dbs.snowflake, "SNOWFLAKE", account="acme")
    return dbs
