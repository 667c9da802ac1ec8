-- The part of the Rosetta config database that rosetta-jobs reads: tables
-- sources and destinations with the columns of the backend's migration
-- 001_create_table.sql (April 2026). The backend owns this schema; this file
-- creates it for the demo and for tests, and changes nothing that exists.

CREATE TABLE IF NOT EXISTS sources (
    id SERIAL PRIMARY KEY,
    name VARCHAR(255) UNIQUE NOT NULL,
    type VARCHAR(50) DEFAULT 'POSTGRES',
    config JSONB DEFAULT '{}'::jsonb,
    pg_host VARCHAR(255),
    pg_port INTEGER DEFAULT 5432,
    pg_database VARCHAR(255),
    pg_username VARCHAR(255),
    pg_password VARCHAR(255), -- AES-256-GCM token, see rosetta_jobs.crypto
    publication_name VARCHAR(255),
    replication_name VARCHAR(255),
    is_publication_enabled BOOLEAN DEFAULT FALSE,
    is_replication_enabled BOOLEAN DEFAULT FALSE,
    last_check_replication_publication TIMESTAMPTZ,
    total_tables INTEGER DEFAULT 0,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS destinations (
    id SERIAL PRIMARY KEY,
    name VARCHAR(255) UNIQUE,
    type VARCHAR(50) DEFAULT 'SNOWFLAKE', -- POSTGRES, SNOWFLAKE or KAFKA
    config JSONB DEFAULT '{}'::jsonb,     -- password, sasl_password, private_key_passphrase are tokens
    list_tables JSONB DEFAULT '[]'::jsonb,
    total_tables INTEGER DEFAULT 0,
    last_table_check_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);
