//! The catalog database: SQLite (a file, embedded, the default) or PostgreSQL (shared deployments), with the same
//! SQL and migrations for both (sqlx's `Any` driver).
//!
//! The catalog is an index of what the lake records (Delta commit metadata, file ledgers, the models' column
//! lineage): it is filled by [`Catalog::replace_all`] with a [`Snapshot`] built from the lake, so it can always be
//! deleted and rebuilt (`lakehouse catalog rebuild`).

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("catalog: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("catalog URL `{0}`: use sqlite://path or postgres://user@host/db")]
    Url(String),
}

/// A table of the lake.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TableRow {
    pub name: String,
    pub layer: String,
    pub location: String,
    pub owner: Option<String>,
    pub description: Option<String>,
    pub version: i64,
}

/// A run, as recorded in the commit that wrote `target` at `output_version`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RunRow {
    pub target: String,
    pub output_version: i64,
    pub run_id: String,
    pub kind: String,
    pub started_at: String,
    pub batch: i64,
    pub manifest_hash: String,
    pub sql_hash: Option<String>,
    pub mode: Option<String>,
    /// The rendered SQL (transform runs).
    pub sql: Option<String>,
    pub records_read: i64,
    pub records_written: i64,
    pub records_quarantined: i64,
}

/// A column of a table: type, privacy class (bronze) and documentation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ColumnRow {
    pub table_name: String,
    pub position: i64,
    pub name: String,
    pub data_type: String,
    pub privacy_class: Option<String>,
    pub description: Option<String>,
}

/// An attempt of a run as the commands and the scheduler record it (`system.runs`): trigger, end, status, error.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AttemptRow {
    pub started_at: String,
    pub run_id: String,
    pub target: String,
    pub kind: String,
    pub trigger: String,
    pub attempt: i64,
    pub ended_at: String,
    pub status: String,
    pub error: Option<String>,
    pub rows: Option<i64>,
    pub version: Option<i64>,
}

/// An input of a run: a table at a version, or a file (`input_version` null).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineageRow {
    pub target: String,
    pub output_version: i64,
    pub input: String,
    pub input_version: Option<i64>,
}

/// An output column and an input column it depends on (`output_column` null: an indirect use).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ColumnLineageRow {
    pub output_table: String,
    pub output_column: Option<String>,
    pub input_table: String,
    pub input_column: String,
    pub kind: String,
    pub masked: bool,
}

/// Everything the catalog holds, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub tables: Vec<TableRow>,
    pub columns: Vec<ColumnRow>,
    pub attempts: Vec<AttemptRow>,
    pub runs: Vec<RunRow>,
    pub lineage: Vec<LineageRow>,
    pub column_lineage: Vec<ColumnLineageRow>,
}

impl Snapshot {
    pub fn sort(&mut self) {
        self.tables.sort();
        self.columns.sort();
        self.attempts.sort();
        self.runs.sort();
        self.lineage.sort();
        self.column_lineage.sort();
    }
}

/// Version 1 of the schema; every statement runs on SQLite and PostgreSQL alike.
const MIGRATION_1: [&str; 7] = [
    "CREATE TABLE IF NOT EXISTS catalog_columns (table_name TEXT NOT NULL, position BIGINT NOT NULL, name TEXT NOT NULL, \
     data_type TEXT NOT NULL, privacy_class TEXT, description TEXT, PRIMARY KEY (table_name, position))",
    "CREATE TABLE IF NOT EXISTS catalog_attempts (started_at TEXT NOT NULL, run_id TEXT NOT NULL, target TEXT NOT NULL, \
     kind TEXT NOT NULL, trigger_kind TEXT NOT NULL, attempt BIGINT NOT NULL, ended_at TEXT NOT NULL, status TEXT NOT NULL, \
     error TEXT, rows_written BIGINT, version BIGINT)",
    "CREATE TABLE IF NOT EXISTS catalog_tables (name TEXT PRIMARY KEY, layer TEXT NOT NULL, location TEXT NOT NULL, \
     owner TEXT, description TEXT, version BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS catalog_runs (target TEXT NOT NULL, output_version BIGINT NOT NULL, run_id TEXT NOT NULL, \
     kind TEXT NOT NULL, started_at TEXT NOT NULL, batch BIGINT NOT NULL, manifest_hash TEXT NOT NULL, sql_hash TEXT, \
     mode TEXT, rendered_sql TEXT, records_read BIGINT NOT NULL, records_written BIGINT NOT NULL, records_quarantined BIGINT NOT NULL, \
     PRIMARY KEY (target, output_version))",
    "CREATE TABLE IF NOT EXISTS catalog_lineage (target TEXT NOT NULL, output_version BIGINT NOT NULL, input TEXT NOT NULL, \
     input_version BIGINT)",
    "CREATE TABLE IF NOT EXISTS catalog_column_lineage (output_table TEXT NOT NULL, output_column TEXT, \
     input_table TEXT NOT NULL, input_column TEXT NOT NULL, kind TEXT NOT NULL, masked BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS catalog_schema_version (version BIGINT NOT NULL)",
];

/// A connection to the catalog database.
pub struct Catalog {
    pool: AnyPool,
}

impl Catalog {
    /// Opens (creating a SQLite file and its directory when needed) and migrates the catalog at `url`.
    pub async fn open(url: &str) -> Result<Self, CatalogError> {
        install_default_drivers();
        let url = if let Some(path) = url.strip_prefix("sqlite://") {
            let path = std::path::Path::new(path.split('?').next().unwrap_or(path));
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| CatalogError::Connect { url: url.to_string(), source: sqlx::Error::Io(e) })?;
            }
            format!("sqlite://{}?mode=rwc", path.display())
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url.to_string()
        } else {
            return Err(CatalogError::Url(url.to_string()));
        };
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .map_err(|source| CatalogError::Connect { url: redact(&url), source })?;
        let catalog = Self { pool };
        catalog.migrate().await?;
        Ok(catalog)
    }

    async fn migrate(&self) -> Result<(), CatalogError> {
        for statement in MIGRATION_1 {
            sqlx::query(statement).execute(&self.pool).await?;
        }
        let n: i64 =
            sqlx::query("SELECT COUNT(*) FROM catalog_schema_version").fetch_one(&self.pool).await?.try_get(0)?;
        if n == 0 {
            sqlx::query("INSERT INTO catalog_schema_version (version) VALUES (1)").execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Replaces the catalog's content with `snapshot`, in one transaction.
    pub async fn replace_all(&self, snapshot: &Snapshot) -> Result<(), CatalogError> {
        self.write(snapshot, None, None).await
    }

    /// The Delta version each table was indexed at (empty for a new catalog).
    pub async fn indexed_versions(&self) -> Result<std::collections::BTreeMap<String, i64>, CatalogError> {
        let mut out = std::collections::BTreeMap::new();
        for row in sqlx::query("SELECT name, version FROM catalog_tables").fetch_all(&self.pool).await? {
            out.insert(row.try_get(0)?, row.try_get(1)?);
        }
        Ok(out)
    }

    /// Adds the runs and lineage of `snapshot` (the versions written since the last update) and the attempts
    /// that started at or after `attempts_since` ([`Self::last_attempt`]; all when `None`), and replaces the
    /// tables, columns and column lineage; the runs of the `rewritten` tables (recreated, so their versions
    /// restarted) are replaced too. One transaction.
    pub async fn update(
        &self,
        snapshot: &Snapshot,
        rewritten: &[String],
        attempts_since: Option<&str>,
    ) -> Result<(), CatalogError> {
        self.write(snapshot, Some(rewritten), attempts_since).await
    }

    /// The start (RFC 3339) of the latest attempt indexed, from which the next update reads `system.runs`.
    pub async fn last_attempt(&self) -> Result<Option<String>, CatalogError> {
        Ok(sqlx::query("SELECT MAX(started_at) FROM catalog_attempts").fetch_one(&self.pool).await?.try_get(0)?)
    }

    /// `keep_runs`: `None` replaces everything; `Some(rewritten)` keeps the runs and lineage already indexed
    /// except those of the rewritten tables, and the attempts that started before `attempts_since`.
    async fn write(
        &self,
        snapshot: &Snapshot,
        keep_runs: Option<&[String]>,
        attempts_since: Option<&str>,
    ) -> Result<(), CatalogError> {
        let mut tx = self.pool.begin().await?;
        for t in ["catalog_tables", "catalog_columns", "catalog_column_lineage"] {
            sqlx::query(&format!("DELETE FROM {t}")).execute(&mut *tx).await?;
        }
        match (keep_runs, attempts_since) {
            (Some(_), Some(since)) => {
                sqlx::query("DELETE FROM catalog_attempts WHERE started_at >= $1")
                    .bind(since)
                    .execute(&mut *tx)
                    .await?;
            }
            _ => {
                sqlx::query("DELETE FROM catalog_attempts").execute(&mut *tx).await?;
            }
        }
        match keep_runs {
            None => {
                for t in ["catalog_runs", "catalog_lineage"] {
                    sqlx::query(&format!("DELETE FROM {t}")).execute(&mut *tx).await?;
                }
            }
            Some(rewritten) => {
                for target in rewritten {
                    for t in ["catalog_runs", "catalog_lineage"] {
                        sqlx::query(&format!("DELETE FROM {t} WHERE target = $1"))
                            .bind(target)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
        }
        for t in &snapshot.tables {
            sqlx::query(
                "INSERT INTO catalog_tables (name, layer, location, owner, description, version) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&t.name)
            .bind(&t.layer)
            .bind(&t.location)
            .bind(t.owner.clone())
            .bind(t.description.clone())
            .bind(t.version)
            .execute(&mut *tx)
            .await?;
        }
        for c in &snapshot.columns {
            sqlx::query(
                "INSERT INTO catalog_columns (table_name, position, name, data_type, privacy_class, description) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&c.table_name)
            .bind(c.position)
            .bind(&c.name)
            .bind(&c.data_type)
            .bind(c.privacy_class.clone())
            .bind(c.description.clone())
            .execute(&mut *tx)
            .await?;
        }
        for a in &snapshot.attempts {
            sqlx::query(
                "INSERT INTO catalog_attempts (started_at, run_id, target, kind, trigger_kind, attempt, ended_at, status, error, \
                 rows_written, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&a.started_at)
            .bind(&a.run_id)
            .bind(&a.target)
            .bind(&a.kind)
            .bind(&a.trigger)
            .bind(a.attempt)
            .bind(&a.ended_at)
            .bind(&a.status)
            .bind(a.error.clone())
            .bind(a.rows)
            .bind(a.version)
            .execute(&mut *tx)
            .await?;
        }
        for r in &snapshot.runs {
            sqlx::query(
                "INSERT INTO catalog_runs (target, output_version, run_id, kind, started_at, batch, manifest_hash, sql_hash, \
                 mode, rendered_sql, records_read, records_written, records_quarantined) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(&r.target)
            .bind(r.output_version)
            .bind(&r.run_id)
            .bind(&r.kind)
            .bind(&r.started_at)
            .bind(r.batch)
            .bind(&r.manifest_hash)
            .bind(r.sql_hash.clone())
            .bind(r.mode.clone())
            .bind(r.sql.clone())
            .bind(r.records_read)
            .bind(r.records_written)
            .bind(r.records_quarantined)
            .execute(&mut *tx)
            .await?;
        }
        for l in &snapshot.lineage {
            sqlx::query(
                "INSERT INTO catalog_lineage (target, output_version, input, input_version) VALUES ($1, $2, $3, $4)",
            )
            .bind(&l.target)
            .bind(l.output_version)
            .bind(&l.input)
            .bind(l.input_version)
            .execute(&mut *tx)
            .await?;
        }
        for c in &snapshot.column_lineage {
            sqlx::query(
                "INSERT INTO catalog_column_lineage (output_table, output_column, input_table, input_column, kind, masked) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&c.output_table)
            .bind(c.output_column.clone())
            .bind(&c.input_table)
            .bind(&c.input_column)
            .bind(&c.kind)
            // 0/1: sqlx's Any driver decodes no SQLite boolean.
            .bind(i64::from(c.masked))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Everything in the catalog, sorted.
    pub async fn dump(&self) -> Result<Snapshot, CatalogError> {
        let mut s = Snapshot::default();
        for row in sqlx::query("SELECT name, layer, location, owner, description, version FROM catalog_tables")
            .fetch_all(&self.pool)
            .await?
        {
            s.tables.push(TableRow {
                name: row.try_get(0)?,
                layer: row.try_get(1)?,
                location: row.try_get(2)?,
                owner: row.try_get(3)?,
                description: row.try_get(4)?,
                version: row.try_get(5)?,
            });
        }
        for row in
            sqlx::query("SELECT table_name, position, name, data_type, privacy_class, description FROM catalog_columns")
                .fetch_all(&self.pool)
                .await?
        {
            s.columns.push(ColumnRow {
                table_name: row.try_get(0)?,
                position: row.try_get(1)?,
                name: row.try_get(2)?,
                data_type: row.try_get(3)?,
                privacy_class: row.try_get(4)?,
                description: row.try_get(5)?,
            });
        }
        for row in sqlx::query(
            "SELECT started_at, run_id, target, kind, trigger_kind, attempt, ended_at, status, error, rows_written, version \
             FROM catalog_attempts",
        )
        .fetch_all(&self.pool)
        .await?
        {
            s.attempts.push(AttemptRow {
                started_at: row.try_get(0)?,
                run_id: row.try_get(1)?,
                target: row.try_get(2)?,
                kind: row.try_get(3)?,
                trigger: row.try_get(4)?,
                attempt: row.try_get(5)?,
                ended_at: row.try_get(6)?,
                status: row.try_get(7)?,
                error: row.try_get(8)?,
                rows: row.try_get(9)?,
                version: row.try_get(10)?,
            });
        }
        for row in sqlx::query(
            "SELECT target, output_version, run_id, kind, started_at, batch, manifest_hash, sql_hash, mode, \
             rendered_sql, records_read, records_written, records_quarantined FROM catalog_runs",
        )
        .fetch_all(&self.pool)
        .await?
        {
            s.runs.push(RunRow {
                target: row.try_get(0)?,
                output_version: row.try_get(1)?,
                run_id: row.try_get(2)?,
                kind: row.try_get(3)?,
                started_at: row.try_get(4)?,
                batch: row.try_get(5)?,
                manifest_hash: row.try_get(6)?,
                sql_hash: row.try_get(7)?,
                mode: row.try_get(8)?,
                sql: row.try_get(9)?,
                records_read: row.try_get(10)?,
                records_written: row.try_get(11)?,
                records_quarantined: row.try_get(12)?,
            });
        }
        for row in sqlx::query("SELECT target, output_version, input, input_version FROM catalog_lineage")
            .fetch_all(&self.pool)
            .await?
        {
            s.lineage.push(LineageRow {
                target: row.try_get(0)?,
                output_version: row.try_get(1)?,
                input: row.try_get(2)?,
                input_version: row.try_get(3)?,
            });
        }
        for row in sqlx::query(
            "SELECT output_table, output_column, input_table, input_column, kind, masked FROM catalog_column_lineage",
        )
        .fetch_all(&self.pool)
        .await?
        {
            s.column_lineage.push(ColumnLineageRow {
                output_table: row.try_get(0)?,
                output_column: row.try_get(1)?,
                input_table: row.try_get(2)?,
                input_column: row.try_get(3)?,
                kind: row.try_get(4)?,
                masked: row.try_get::<i64, _>(5)? != 0,
            });
        }
        s.sort();
        Ok(s)
    }
}

/// The URL without its password.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
