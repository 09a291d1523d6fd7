//! The catalog database: SQLite (a file, embedded, the default) or PostgreSQL (shared deployments), with the same
//! SQL and migrations for both (sqlx's `Any` driver).
//!
//! The catalog is an index of what the lake records (Delta commit metadata, file ledgers, the models' column
//! lineage): it is filled by [`Catalog::replace_all`] with a [`Snapshot`] built from the lake, so it can always be
//! deleted and rebuilt (`lakehouse catalog rebuild`). The one exception is the users of the query server
//! ([`UserRow`]: roles and SCRAM verifiers), which the lake does not record and a rebuild keeps.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, FromRow, Row};

/// How long opening the catalog waits for a connection before the command goes on with a warning.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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
    #[error("catalog schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A table of the lake.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, FromRow)]
pub struct TableRow {
    pub name: String,
    pub layer: String,
    pub location: String,
    pub owner: Option<String>,
    pub description: Option<String>,
    pub version: i64,
}

/// A run, as recorded in the commit that wrote `target` at `output_version`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, FromRow)]
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
    #[sqlx(rename = "rendered_sql")]
    #[serde(rename = "rendered_sql")]
    pub sql: Option<String>,
    pub records_read: i64,
    pub records_written: i64,
    pub records_quarantined: i64,
    pub records_superseded: i64,
}

/// A column of a table: type, privacy class (bronze) and documentation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, FromRow)]
pub struct ColumnRow {
    pub table_name: String,
    pub position: i64,
    pub name: String,
    pub data_type: String,
    pub privacy_class: Option<String>,
    pub description: Option<String>,
}

/// An attempt of a run as the commands and the scheduler record it (`system.runs`): trigger, end, status, error.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, FromRow)]
pub struct AttemptRow {
    pub started_at: String,
    pub run_id: String,
    pub target: String,
    pub kind: String,
    #[sqlx(rename = "trigger_kind")]
    pub trigger: String,
    pub attempt: i64,
    pub ended_at: String,
    pub status: String,
    pub error: Option<String>,
    #[sqlx(rename = "rows_written")]
    pub rows: Option<i64>,
    pub version: Option<i64>,
}

/// An input of a run: a table at a version, or a file (`input_version` null).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, FromRow)]
pub struct LineageRow {
    pub target: String,
    pub output_version: i64,
    pub input: String,
    pub input_version: Option<i64>,
}

/// An output column and an input column it depends on (`output_column` null: an indirect use).
/// (`FromRow` by hand: `masked` is a BIGINT flag, which the `Any` driver does not decode as `bool` on SQLite.)
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ColumnLineageRow {
    pub output_table: String,
    pub output_column: Option<String>,
    pub input_table: String,
    pub input_column: String,
    pub kind: String,
    pub masked: bool,
}

/// A user of the query server: roles of the access policy (comma-separated) and a SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, FromRow)]
pub struct UserRow {
    pub name: String,
    pub roles: String,
    pub verifier: String,
    pub created_at: String,
    pub updated_at: String,
}

/// The verifier stays out of logs.
impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow").field("name", &self.name).field("roles", &self.roles).finish_non_exhaustive()
    }
}

impl UserRow {
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.roles.split(',').filter(|r| !r.is_empty())
    }
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

/// The catalog's schema migrations (`catalog/migrations/`, applied in order and recorded in `_sqlx_migrations`);
/// every statement runs on SQLite and PostgreSQL alike.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

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
        // A catalog that cannot be reached is a warning after a few seconds (the lake is the source of truth),
        // not sqlx's 30-second wait for a connection on every command.
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect(&url)
            .await
            .map_err(|source| CatalogError::Connect { url: redact(&url), source })?;
        let catalog = Self { pool };
        catalog.migrate().await?;
        Ok(catalog)
    }

    async fn migrate(&self) -> Result<(), CatalogError> {
        // Two processes opening a new catalog at once race to apply the same migration; the loser's insert into
        // `_sqlx_migrations` fails, and its second try finds the migration applied.
        match MIGRATOR.run(&self.pool).await {
            Ok(()) => Ok(()),
            Err(_) => Ok(MIGRATOR.run(&self.pool).await?),
        }
    }

    /// Replaces the catalog's content with `snapshot`, in one transaction.
    pub async fn replace_all(&self, snapshot: &Snapshot) -> Result<(), CatalogError> {
        self.write(snapshot, None, None).await
    }

    /// The tables and columns as last indexed (both empty for a new catalog): the next update reads only the
    /// tables whose version moved since.
    pub async fn indexed(&self) -> Result<(Vec<TableRow>, Vec<ColumnRow>), CatalogError> {
        Ok((self.all("catalog_tables").await?, self.all("catalog_columns").await?))
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
        // Tables, columns and column lineage are replaced when they changed: an update after a command that
        // wrote nothing writes no row of them.
        replace_if_changed(&mut tx, "catalog_tables", &snapshot.tables, keep_runs.is_some()).await?;
        replace_if_changed(&mut tx, "catalog_columns", &snapshot.columns, keep_runs.is_some()).await?;
        replace_if_changed(&mut tx, "catalog_column_lineage", &snapshot.column_lineage, keep_runs.is_some()).await?;
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
        for t in ["catalog_runs", "catalog_lineage"] {
            match keep_runs {
                None => {
                    sqlx::query(&format!("DELETE FROM {t}")).execute(&mut *tx).await?;
                }
                Some(rewritten) => {
                    for target in rewritten {
                        let delete = format!("DELETE FROM {t} WHERE target = $1");
                        sqlx::query(&delete).bind(target).execute(&mut *tx).await?;
                    }
                }
            }
        }
        insert(&mut tx, &snapshot.attempts).await?;
        insert(&mut tx, &snapshot.runs).await?;
        insert(&mut tx, &snapshot.lineage).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The users, by name.
    pub async fn users(&self) -> Result<Vec<UserRow>, CatalogError> {
        Ok(sqlx::query_as("SELECT * FROM catalog_users ORDER BY name").fetch_all(&self.pool).await?)
    }

    pub async fn user(&self, name: &str) -> Result<Option<UserRow>, CatalogError> {
        let query = sqlx::query_as("SELECT * FROM catalog_users WHERE name = $1").bind(name);
        Ok(query.fetch_optional(&self.pool).await?)
    }

    /// Adds a user; false when the name is taken.
    pub async fn add_user(&self, user: &UserRow) -> Result<bool, CatalogError> {
        let mut tx = self.pool.begin().await?;
        let taken = sqlx::query("SELECT name FROM catalog_users WHERE name = $1").bind(&user.name);
        if taken.fetch_optional(&mut *tx).await?.is_some() {
            return Ok(false);
        }
        user.bind(sqlx::query(UserRow::INSERT)).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Replaces a user's roles and verifier (those given); false when there is no such user.
    pub async fn update_user(
        &self,
        name: &str,
        roles: Option<&str>,
        verifier: Option<&str>,
        updated_at: &str,
    ) -> Result<bool, CatalogError> {
        let Some(mut user) = self.user(name).await? else { return Ok(false) };
        user.roles = roles.map_or(user.roles, str::to_string);
        user.verifier = verifier.map_or(user.verifier, str::to_string);
        let update = "UPDATE catalog_users SET roles = $1, verifier = $2, updated_at = $3 WHERE name = $4";
        let query = sqlx::query(update).bind(&user.roles).bind(&user.verifier).bind(updated_at).bind(name);
        Ok(query.execute(&self.pool).await?.rows_affected() == 1)
    }

    /// Removes a user; false when there is none.
    pub async fn remove_user(&self, name: &str) -> Result<bool, CatalogError> {
        let query = sqlx::query("DELETE FROM catalog_users WHERE name = $1").bind(name);
        Ok(query.execute(&self.pool).await?.rows_affected() == 1)
    }

    /// Everything in the catalog, sorted.
    pub async fn dump(&self) -> Result<Snapshot, CatalogError> {
        let mut s = Snapshot {
            tables: self.all("catalog_tables").await?,
            columns: self.all("catalog_columns").await?,
            attempts: self.all("catalog_attempts").await?,
            runs: self.all("catalog_runs").await?,
            lineage: self.all("catalog_lineage").await?,
            column_lineage: self.all("catalog_column_lineage").await?,
        };
        s.sort();
        Ok(s)
    }

    /// Every row of one of our tables.
    async fn all<T: for<'r> FromRow<'r, AnyRow> + Send + Unpin>(&self, table: &str) -> Result<Vec<T>, CatalogError> {
        Ok(sqlx::query_as(&format!("SELECT * FROM {table}")).fetch_all(&self.pool).await?)
    }
}

impl FromRow<'_, AnyRow> for ColumnLineageRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            output_table: row.try_get("output_table")?,
            output_column: row.try_get("output_column")?,
            input_table: row.try_get("input_table")?,
            input_column: row.try_get("input_column")?,
            kind: row.try_get("kind")?,
            masked: row.try_get::<i64, _>("masked")? != 0,
        })
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// A row type of one of our tables: its insert statement and how its fields bind to it.
trait Stored {
    const INSERT: &'static str;
    fn bind<'q>(&'q self, query: AnyQuery<'q>) -> AnyQuery<'q>;
}

/// Replaces the rows of `table` by `rows` (sorted), unless `compare` and they are the rows it holds.
async fn replace_if_changed<T>(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    table: &str,
    rows: &[T],
    compare: bool,
) -> Result<(), CatalogError>
where
    T: Stored + Ord + for<'r> FromRow<'r, AnyRow> + Send + Unpin,
{
    if compare {
        let mut held: Vec<T> = sqlx::query_as(&format!("SELECT * FROM {table}")).fetch_all(&mut **tx).await?;
        held.sort();
        if held == rows {
            return Ok(());
        }
    }
    sqlx::query(&format!("DELETE FROM {table}")).execute(&mut **tx).await?;
    insert(tx, rows).await
}

/// Inserts rows, one statement each (in the caller's transaction).
async fn insert<T: Stored>(tx: &mut sqlx::Transaction<'_, sqlx::Any>, rows: &[T]) -> Result<(), CatalogError> {
    for row in rows {
        row.bind(sqlx::query(T::INSERT)).execute(&mut **tx).await?;
    }
    Ok(())
}

impl Stored for TableRow {
    const INSERT: &'static str = "INSERT INTO catalog_tables (name, layer, location, owner, description, version) \
                                  VALUES ($1, $2, $3, $4, $5, $6)";
    fn bind<'q>(&'q self, q: AnyQuery<'q>) -> AnyQuery<'q> {
        q.bind(&self.name)
            .bind(&self.layer)
            .bind(&self.location)
            .bind(self.owner.clone())
            .bind(self.description.clone())
            .bind(self.version)
    }
}

impl Stored for ColumnRow {
    const INSERT: &'static str = "INSERT INTO catalog_columns (table_name, position, name, data_type, privacy_class, \
                                  description) VALUES ($1, $2, $3, $4, $5, $6)";
    fn bind<'q>(&'q self, q: AnyQuery<'q>) -> AnyQuery<'q> {
        q.bind(&self.table_name)
            .bind(self.position)
            .bind(&self.name)
            .bind(&self.data_type)
            .bind(self.privacy_class.clone())
            .bind(self.description.clone())
    }
}

impl Stored for AttemptRow {
    const INSERT: &'static str = "INSERT INTO catalog_attempts (started_at, run_id, target, kind, trigger_kind, attempt, \
                                  ended_at, status, error, rows_written, version) \
                                  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
    fn bind<'q>(&'q self, q: AnyQuery<'q>) -> AnyQuery<'q> {
        q.bind(&self.started_at)
            .bind(&self.run_id)
            .bind(&self.target)
            .bind(&self.kind)
            .bind(&self.trigger)
            .bind(self.attempt)
            .bind(&self.ended_at)
            .bind(&self.status)
            .bind(self.error.clone())
            .bind(self.rows)
            .bind(self.version)
    }
}

impl Stored for RunRow {
    const INSERT: &'static str = "INSERT INTO catalog_runs (target, output_version, run_id, kind, started_at, batch, \
                                  manifest_hash, sql_hash, mode, rendered_sql, records_read, records_written, \
                                  records_quarantined, records_superseded) \
                                  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
    fn bind<'q>(&'q self, q: AnyQuery<'q>) -> AnyQuery<'q> {
        q.bind(&self.target)
            .bind(self.output_version)
            .bind(&self.run_id)
            .bind(&self.kind)
            .bind(&self.started_at)
            .bind(self.batch)
            .bind(&self.manifest_hash)
            .bind(self.sql_hash.clone())
            .bind(self.mode.clone())
            .bind(self.sql.clone())
            .bind(self.records_read)
            .bind(self.records_written)
            .bind(self.records_quarantined)
            .bind(self.records_superseded)
    }
}

impl Stored for LineageRow {
    const INSERT: &'static str =
        "INSERT INTO catalog_lineage (target, output_version, input, input_version) VALUES ($1, $2, $3, $4)";
    fn bind<'q>(&'q self, q: AnyQuery<'q>) -> AnyQuery<'q> {
        q.bind(&self.target).bind(self.output_version).bind(&self.input).bind(self.input_version)
    }
}

impl Stored for UserRow {
    const INSERT: &'static str =
        "INSERT INTO catalog_users (name, roles, verifier, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)";
    fn bind<'q>(&'q self, q: AnyQuery<'q>) -> AnyQuery<'q> {
        q.bind(&self.name).bind(&self.roles).bind(&self.verifier).bind(&self.created_at).bind(&self.updated_at)
    }
}

impl Stored for ColumnLineageRow {
    const INSERT: &'static str = "INSERT INTO catalog_column_lineage (output_table, output_column, input_table, \
                                  input_column, kind, masked) VALUES ($1, $2, $3, $4, $5, $6)";
    fn bind<'q>(&'q self, q: AnyQuery<'q>) -> AnyQuery<'q> {
        q.bind(&self.output_table)
            .bind(self.output_column.clone())
            .bind(&self.input_table)
            .bind(&self.input_column)
            .bind(&self.kind)
            // 0/1: sqlx's Any driver decodes no SQLite boolean.
            .bind(i64::from(self.masked))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema of the first catalogs, created before migrations were recorded (by hand, with a version table).
    const BEFORE_MIGRATIONS: [&str; 3] = [
        "CREATE TABLE catalog_tables (name TEXT PRIMARY KEY, layer TEXT NOT NULL, location TEXT NOT NULL, \
         owner TEXT, description TEXT, version BIGINT NOT NULL)",
        "CREATE TABLE catalog_schema_version (version BIGINT NOT NULL)",
        "INSERT INTO catalog_schema_version (version) VALUES (1)",
    ];

    #[tokio::test]
    async fn a_catalog_made_before_migrations_were_recorded_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("catalog.db").display());
        install_default_drivers();
        let old = AnyPoolOptions::new().connect(&format!("{url}?mode=rwc")).await.unwrap();
        for statement in BEFORE_MIGRATIONS {
            sqlx::query(statement).execute(&old).await.unwrap();
        }
        let table = TableRow {
            name: "bronze.x".into(),
            layer: "bronze".into(),
            location: "file:///w/bronze/x/".into(),
            owner: Some("ddsp".into()),
            description: None,
            version: 3,
        };
        table.bind(sqlx::query(TableRow::INSERT)).execute(&old).await.unwrap();
        old.close().await;

        let catalog = Catalog::open(&url).await.unwrap();
        assert_eq!(catalog.dump().await.unwrap().tables, vec![table]);
        let applied: i64 =
            sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(&catalog.pool).await.unwrap().get(0);
        assert_eq!(applied, MIGRATOR.iter().count() as i64);
        assert!(sqlx::query("SELECT * FROM catalog_schema_version").fetch_all(&catalog.pool).await.is_err());
        // Opened again: nothing left to apply, the rows stay.
        let again = Catalog::open(&url).await.unwrap();
        assert_eq!(again.dump().await.unwrap().tables.len(), 1);
    }
}
