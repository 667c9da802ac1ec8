-- The part of the Rosetta config database that rosetta-jobs reads and writes:
-- sources and destinations, the table syncs lineage writes to, and the
-- notification log, with the columns of the backend's migration
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

-- The tables worker.lineage.generate and the notifications touch
-- (../shared/spec/rosetta-tasks.md 9.3, 9.4): table syncs and what they hang from,
-- the notification log, and the setting that says how often a key repeats.

CREATE TABLE IF NOT EXISTS pipelines (
    id SERIAL PRIMARY KEY,
    name VARCHAR(255) NOT NULL UNIQUE,
    source_id INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
    status VARCHAR(20) NOT NULL DEFAULT 'PAUSE',
    ready_refresh BOOLEAN NOT NULL DEFAULT FALSE,
    last_refresh_at TIMESTAMPTZ NULL,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS pipelines_destination (
    id SERIAL PRIMARY KEY,
    pipeline_id INTEGER NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    destination_id INTEGER NOT NULL REFERENCES destinations(id) ON DELETE CASCADE,
    is_error BOOLEAN NOT NULL DEFAULT FALSE,
    error_message TEXT NULL,
    last_error_at TIMESTAMPTZ NULL,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS pipelines_destination_table_sync (
    id SERIAL PRIMARY KEY,
    pipeline_destination_id INTEGER NOT NULL REFERENCES pipelines_destination(id) ON DELETE CASCADE,
    table_name VARCHAR(255) NOT NULL,
    table_name_target VARCHAR(255) NOT NULL,
    custom_sql TEXT NULL,
    filter_sql TEXT NULL,
    primary_key_column_target TEXT NULL,
    is_exists_table_landing BOOLEAN DEFAULT FALSE,
    is_exists_stream BOOLEAN DEFAULT FALSE,
    is_exists_task BOOLEAN DEFAULT FALSE,
    is_exists_table_destination BOOLEAN DEFAULT FALSE,
    is_error BOOLEAN NOT NULL DEFAULT FALSE,
    error_message TEXT NULL,
    lineage_metadata JSONB NULL,
    lineage_status VARCHAR(20) DEFAULT 'PENDING', -- PENDING, GENERATING (set by the backend), COMPLETED, FAILED
    lineage_error TEXT NULL,
    lineage_generated_at TIMESTAMPTZ NULL,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW(),
    catalog_database_name VARCHAR(255) NULL
);
CREATE INDEX IF NOT EXISTS idx_pipelines_destination_table_sync_lineage_status
    ON pipelines_destination_table_sync(lineage_status);

CREATE TABLE IF NOT EXISTS notification_log (
    id SERIAL PRIMARY KEY,
    key_notification VARCHAR(255) NOT NULL,
    title VARCHAR(255) NOT NULL,
    message TEXT NOT NULL,
    type VARCHAR(255) NOT NULL,
    is_read BOOLEAN DEFAULT FALSE,
    is_deleted BOOLEAN DEFAULT FALSE,
    iteration_check INTEGER DEFAULT 0,
    is_sent BOOLEAN DEFAULT FALSE,
    is_force_sent BOOLEAN DEFAULT FALSE,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_notification_log_key ON notification_log(key_notification);
CREATE INDEX IF NOT EXISTS idx_notification_log_iteration_check ON notification_log(iteration_check);
CREATE INDEX IF NOT EXISTS idx_notification_log_created_at ON notification_log(created_at DESC);

CREATE TABLE IF NOT EXISTS rosetta_setting_configuration (
    id SERIAL PRIMARY KEY,
    config_key VARCHAR(255) NOT NULL UNIQUE,
    config_value VARCHAR(255) NOT NULL,
    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO rosetta_setting_configuration (config_key, config_value)
    VALUES ('NOTIFICATION_ITERATION_DEFAULT', '3') ON CONFLICT (config_key) DO NOTHING;
