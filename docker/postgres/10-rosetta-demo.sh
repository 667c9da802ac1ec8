#!/bin/sh
# Seeds the compose stack's PostgreSQL on its first start (the postgres image runs the scripts of
# /docker-entrypoint-initdb.d once, on an empty data directory):
# - a source database with a table `orders`, readable by a read-only role: the least privilege a
#   preview source needs (the sandbox denies postgres_query and raw SQL; the role is the last line);
# - the config database with the backend's tables `sources` and `destinations` (the schema is the
#   package's src/rosetta_jobs/sql/config_schema.sql, mounted at /rosetta/config_schema.sql), one
#   source pointing at that database with the reader's password encrypted under the demo
#   CREDENTIAL_ENCRYPTION_KEY of compose.yaml, and one destination;
# - a worker role that can only read those two tables.
# tests/test_deploy.py and tests/test_migration.py run this same script against a local PostgreSQL
# with other names (the ROSETTA_* variables below), so what compose seeds is what the tests preview.
set -eu

config_db="${ROSETTA_CONFIG_DB:-rosetta}"
source_db="${ROSETTA_SOURCE_DB:-rosetta_source}"
reader="${ROSETTA_READER_ROLE:-rosetta_reader}"
worker="${ROSETTA_WORKER_ROLE:-rosetta_worker}"
worker_password="${ROSETTA_WORKER_PASSWORD:-rosetta-demo-worker}"
source_host="${ROSETTA_SOURCE_HOST:-postgres}"
source_port="${ROSETTA_SOURCE_PORT:-5432}"
schema_sql="${ROSETTA_CONFIG_SCHEMA:-/rosetta/config_schema.sql}"

# The reader's password, and the same password encrypted (AES-256-GCM, base64 of nonce || ciphertext || tag)
# under compose.yaml's demo key G20SwEuhQjR3isvu/zu+RFgu8zL1pjAbIdjMet3OoU4= . A real deployment's
# sources are written by the backend with its own key.
reader_password="rosetta-demo-reader"
reader_token="52WP4G1n1wwuBtK8E3Dt2ltvvjIRPPGfXXSzH74l4cuAkZVYER5TQNcjfSypnmI="

run() { psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "${POSTGRES_USER:-postgres}" "$@"; }

echo "rosetta-demo: roles $reader, $worker; databases $source_db, $config_db"
run --dbname "${POSTGRES_DB:-postgres}" \
  -v reader="$reader" -v reader_password="$reader_password" \
  -v worker="$worker" -v worker_password="$worker_password" \
  -v source_db="$source_db" -v config_db="$config_db" <<'SQL'
CREATE ROLE :"reader" LOGIN PASSWORD :'reader_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
ALTER ROLE :"reader" SET default_transaction_read_only = on;
CREATE ROLE :"worker" LOGIN PASSWORD :'worker_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
ALTER ROLE :"worker" SET default_transaction_read_only = on;
CREATE DATABASE :"source_db";
CREATE DATABASE :"config_db";
REVOKE ALL ON DATABASE :"source_db" FROM PUBLIC;
REVOKE ALL ON DATABASE :"config_db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"source_db" TO :"reader";
GRANT CONNECT ON DATABASE :"config_db" TO :"worker";
SQL

run --dbname "$source_db" -v reader="$reader" <<'SQL'
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE TABLE public.orders (
    id int PRIMARY KEY,
    customer text,
    status text,
    amount numeric(12, 2),
    created_at timestamptz,
    shipped boolean
);
INSERT INTO public.orders
SELECT g, 'customer ' || (g % 37), (ARRAY['NEW', 'PAID', 'SHIPPED'])[1 + g % 3], round((g * 7.31) % 1000, 2),
       timestamptz '2026-01-01 00:00+00' + g * interval '37 minutes', g % 4 = 0
FROM generate_series(1, 1000) AS g;
GRANT USAGE ON SCHEMA public TO :"reader";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"reader";
SQL

run --dbname "$config_db" --file "$schema_sql"
run --dbname "$config_db" \
  -v worker="$worker" -v reader="$reader" -v reader_token="$reader_token" \
  -v source_db="$source_db" -v source_host="$source_host" -v source_port="$source_port" <<'SQL'
INSERT INTO sources (name, pg_host, pg_port, pg_database, pg_username, pg_password)
VALUES ('demo', :'source_host', :'source_port', :'source_db', :'reader', :'reader_token');
INSERT INTO destinations (name, type, config)
VALUES ('demo-warehouse', 'POSTGRES', '{"host": "localhost", "database": "warehouse"}');
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"worker";
GRANT SELECT ON sources, destinations TO :"worker";
SQL
echo "rosetta-demo: source 1 (table orders) and destination 1 are ready"
