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

-- The flow engine's tables (../shared/spec/rosetta-tasks.md 9.1, 9.2): flow tasks, their graphs, runs,
-- node logs and watermarks; linked tasks, their steps and edges, runs and step logs.

CREATE TABLE IF NOT EXISTS flow_tasks (
    id SERIAL PRIMARY KEY,
    name VARCHAR(255) NOT NULL UNIQUE,
    description TEXT,
    status VARCHAR(20) NOT NULL DEFAULT 'IDLE', -- IDLE, RUNNING, SUCCESS, FAILED
    trigger_type VARCHAR(20) NOT NULL DEFAULT 'MANUAL',
    last_run_at TIMESTAMPTZ,
    last_run_status VARCHAR(20),
    last_run_record_count BIGINT,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_flow_tasks_status ON flow_tasks(status);

CREATE TABLE IF NOT EXISTS flow_task_graph (
    id SERIAL PRIMARY KEY,
    flow_task_id INTEGER NOT NULL UNIQUE REFERENCES flow_tasks(id) ON DELETE CASCADE,
    nodes_json JSONB NOT NULL DEFAULT '[]'::jsonb,
    edges_json JSONB NOT NULL DEFAULT '[]'::jsonb,
    version INTEGER NOT NULL DEFAULT 1,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS flow_task_run_history (
    id SERIAL PRIMARY KEY,
    flow_task_id INTEGER NOT NULL REFERENCES flow_tasks(id) ON DELETE CASCADE,
    trigger_type VARCHAR(20) NOT NULL DEFAULT 'MANUAL', -- MANUAL, SCHEDULED
    status VARCHAR(20) NOT NULL DEFAULT 'RUNNING',       -- RUNNING, SUCCESS, FAILED, CANCELLED
    celery_task_id VARCHAR(255),
    started_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    finished_at TIMESTAMPTZ,
    error_message TEXT,
    total_input_records BIGINT DEFAULT 0,
    total_output_records BIGINT DEFAULT 0,
    run_metadata JSONB,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_flow_task_run_history_flow_task_id ON flow_task_run_history(flow_task_id);
CREATE INDEX IF NOT EXISTS idx_flow_task_run_history_celery_task_id ON flow_task_run_history(celery_task_id);

CREATE TABLE IF NOT EXISTS flow_task_run_node_log (
    id SERIAL PRIMARY KEY,
    run_history_id INTEGER NOT NULL REFERENCES flow_task_run_history(id) ON DELETE CASCADE,
    flow_task_id INTEGER NOT NULL REFERENCES flow_tasks(id) ON DELETE CASCADE,
    node_id VARCHAR(255) NOT NULL,
    node_type VARCHAR(50) NOT NULL,
    node_label VARCHAR(255),
    row_count_in BIGINT DEFAULT 0,
    row_count_out BIGINT DEFAULT 0,
    duration_ms INTEGER,
    status VARCHAR(20) NOT NULL DEFAULT 'PENDING', -- PENDING, RUNNING, SUCCESS, FAILED, SKIPPED
    error_message TEXT,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_flow_task_run_node_log_run_history_id ON flow_task_run_node_log(run_history_id);

CREATE TABLE IF NOT EXISTS flow_task_watermarks (
    id SERIAL PRIMARY KEY,
    flow_task_id INTEGER NOT NULL REFERENCES flow_tasks(id) ON DELETE CASCADE,
    node_id VARCHAR(255) NOT NULL,
    watermark_column VARCHAR(255) NOT NULL,
    last_watermark_value TEXT,
    watermark_type VARCHAR(50) DEFAULT 'TIMESTAMP', -- TIMESTAMP, INTEGER, UUID
    last_run_at TIMESTAMPTZ,
    record_count BIGINT DEFAULT 0,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW(),
    CONSTRAINT uq_flow_task_watermark UNIQUE (flow_task_id, node_id)
);

CREATE TABLE IF NOT EXISTS linked_tasks (
    id SERIAL PRIMARY KEY,
    name VARCHAR(255) NOT NULL UNIQUE,
    description TEXT,
    status VARCHAR(20) NOT NULL DEFAULT 'IDLE', -- IDLE, RUNNING, SUCCESS, FAILED
    last_run_at TIMESTAMPTZ,
    last_run_status VARCHAR(20),
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS linked_task_steps (
    id SERIAL PRIMARY KEY,
    linked_task_id INTEGER NOT NULL REFERENCES linked_tasks(id) ON DELETE CASCADE,
    flow_task_id INTEGER NOT NULL REFERENCES flow_tasks(id) ON DELETE CASCADE,
    pos_x DOUBLE PRECISION NOT NULL DEFAULT 0,
    pos_y DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_linked_task_steps_linked_task_id ON linked_task_steps(linked_task_id);

CREATE TABLE IF NOT EXISTS linked_task_edges (
    id SERIAL PRIMARY KEY,
    linked_task_id INTEGER NOT NULL REFERENCES linked_tasks(id) ON DELETE CASCADE,
    source_step_id INTEGER NOT NULL REFERENCES linked_task_steps(id) ON DELETE CASCADE,
    target_step_id INTEGER NOT NULL REFERENCES linked_task_steps(id) ON DELETE CASCADE,
    condition VARCHAR(20) NOT NULL DEFAULT 'ON_SUCCESS', -- ON_SUCCESS, ALWAYS
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW(),
    UNIQUE (source_step_id, target_step_id)
);

CREATE TABLE IF NOT EXISTS linked_task_run_history (
    id SERIAL PRIMARY KEY,
    linked_task_id INTEGER NOT NULL REFERENCES linked_tasks(id) ON DELETE CASCADE,
    trigger_type VARCHAR(20) NOT NULL DEFAULT 'MANUAL',
    status VARCHAR(20) NOT NULL DEFAULT 'RUNNING', -- RUNNING, SUCCESS, FAILED, CANCELLED
    celery_task_id VARCHAR(255),
    started_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    finished_at TIMESTAMPTZ,
    error_message TEXT,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_linked_task_run_history_linked_task_id ON linked_task_run_history(linked_task_id);

CREATE TABLE IF NOT EXISTS linked_task_run_step_log (
    id SERIAL PRIMARY KEY,
    run_history_id INTEGER NOT NULL REFERENCES linked_task_run_history(id) ON DELETE CASCADE,
    linked_task_id INTEGER NOT NULL REFERENCES linked_tasks(id) ON DELETE CASCADE,
    step_id INTEGER NOT NULL REFERENCES linked_task_steps(id) ON DELETE CASCADE,
    flow_task_id INTEGER NOT NULL REFERENCES flow_tasks(id) ON DELETE CASCADE,
    flow_task_run_history_id INTEGER REFERENCES flow_task_run_history(id) ON DELETE SET NULL,
    status VARCHAR(20) NOT NULL DEFAULT 'PENDING', -- PENDING, RUNNING, SUCCESS, FAILED, SKIPPED
    celery_task_id VARCHAR(255),
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    error_message TEXT,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_linked_task_run_step_log_run_history_id ON linked_task_run_step_log(run_history_id);
