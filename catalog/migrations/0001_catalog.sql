-- The catalog's tables (version 1). `IF NOT EXISTS`: a catalog created before migrations were recorded keeps its
-- rows. Every statement runs on SQLite and PostgreSQL alike.
CREATE TABLE IF NOT EXISTS catalog_columns (table_name TEXT NOT NULL, position BIGINT NOT NULL, name TEXT NOT NULL,
    data_type TEXT NOT NULL, privacy_class TEXT, description TEXT, PRIMARY KEY (table_name, position));
CREATE TABLE IF NOT EXISTS catalog_attempts (started_at TEXT NOT NULL, run_id TEXT NOT NULL, target TEXT NOT NULL,
    kind TEXT NOT NULL, trigger_kind TEXT NOT NULL, attempt BIGINT NOT NULL, ended_at TEXT NOT NULL, status TEXT NOT NULL,
    error TEXT, rows_written BIGINT, version BIGINT);
CREATE TABLE IF NOT EXISTS catalog_tables (name TEXT PRIMARY KEY, layer TEXT NOT NULL, location TEXT NOT NULL,
    owner TEXT, description TEXT, version BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS catalog_runs (target TEXT NOT NULL, output_version BIGINT NOT NULL, run_id TEXT NOT NULL,
    kind TEXT NOT NULL, started_at TEXT NOT NULL, batch BIGINT NOT NULL, manifest_hash TEXT NOT NULL, sql_hash TEXT,
    mode TEXT, rendered_sql TEXT, records_read BIGINT NOT NULL, records_written BIGINT NOT NULL,
    records_quarantined BIGINT NOT NULL, PRIMARY KEY (target, output_version));
CREATE TABLE IF NOT EXISTS catalog_lineage (target TEXT NOT NULL, output_version BIGINT NOT NULL, input TEXT NOT NULL,
    input_version BIGINT);
CREATE TABLE IF NOT EXISTS catalog_column_lineage (output_table TEXT NOT NULL, output_column TEXT,
    input_table TEXT NOT NULL, input_column TEXT NOT NULL, kind TEXT NOT NULL, masked BIGINT NOT NULL);
