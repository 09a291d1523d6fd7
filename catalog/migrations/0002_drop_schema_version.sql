-- The hand-kept schema version table of the first catalogs: migrations are recorded in `_sqlx_migrations` now.
DROP TABLE IF EXISTS catalog_schema_version;
