//! Warehouse URL → Delta tables: `<warehouse>/<layer>/<table>` on `file://` or `s3://`.
//!
//! S3 credentials and endpoint come from the standard `AWS_*` environment variables (`AWS_ENDPOINT_URL`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`). Commits rely on the store's
//! conditional PUT (`If-None-Match: *`); no lock service is used. Storage options may hold secrets: they are
//! never logged. Timeouts and retries come from `storage:` in `lakehouse.yaml`; a store that cannot be reached is
//! [`StorageError::Unreachable`], a user error naming the URL and what to check.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use deltalake::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::{DeltaTable, DeltaTableError};
use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use url::Url;

use crate::manifest::StorageSettings;

mod commit;
pub mod rows;
pub use commit::{
    DataFiles, TARGET_FILE_BYTES, Write, append_batch, commit_write, file_writer, is_conflict, merge_on_keys, run_at,
    run_of,
};

/// The Arrow type of every timestamp we store: microseconds, UTC (Delta's `timestamp`).
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The environment variables passed to the S3 object store.
const AWS_VARIABLES: [&str; 8] = [
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_ALLOW_HTTP",
    "AWS_CONDITIONAL_PUT",
    "AWS_EC2_METADATA_DISABLED",
];

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("table {table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: Box<DeltaTableError>,
    },
    #[error("table {table} has columns {found} but the manifest declares {declared}")]
    SchemaMismatch { table: String, found: String, declared: String },
    #[error(
        "table {table} holds pseudonyms made with the `{domain}` key {recorded}, but the key loaded now is \
         {loaded}: another key under the same id (another key file, or one created by `create_if_missing`). \
         Pseudonyms of two keys cannot be linked, so nothing was written: use the key file this table was written \
         with, or give a new key a new id to rotate it"
    )]
    KeyMismatch { table: String, domain: String, recorded: String, loaded: String },
    #[error("storage at {location} failed: {reason}. {UNREACHABLE_HINT}")]
    Unreachable { location: String, reason: String },
}

/// What to check when the store cannot be reached.
pub const UNREACHABLE_HINT: &str = "Check that the store is up and reachable (for S3: AWS_ENDPOINT_URL, the network, \
     the credentials); timeouts and retries are set under `storage:` in lakehouse.yaml";

impl StorageError {
    /// Errors the user can act on (configuration, keys, an unreachable store), as opposed to internal ones.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, Self::Delta { .. } | Self::CreateDir { .. })
    }
}

/// `e` as [`StorageError::Unreachable`] at `location` when it is a failure to reach the store.
pub fn as_unreachable(e: &(dyn std::error::Error + 'static), location: &Url) -> Option<StorageError> {
    unreachable(e).map(|reason| StorageError::Unreachable { location: location.to_string(), reason })
}

/// A Delta error on the table at `url`: [`StorageError::Unreachable`] when the store could not be reached.
pub fn delta_error(url: &Url, source: DeltaTableError) -> StorageError {
    as_unreachable(&source, url)
        .unwrap_or_else(|| StorageError::Delta { table: url.to_string(), source: Box::new(source) })
}

/// A table's Delta properties (its metadata's configuration).
fn properties(table: &DeltaTable) -> Result<HashMap<String, String>, StorageError> {
    table.snapshot().map(|s| s.metadata().configuration().clone()).map_err(|e| delta_error(table.table_url(), e))
}

/// Sets `properties` (ours or Delta's) in one commit; the table as it is when there are none.
async fn set_properties(table: DeltaTable, properties: HashMap<String, String>) -> Result<DeltaTable, StorageError> {
    if properties.is_empty() {
        return Ok(table);
    }
    let url = table.table_url().clone();
    table
        .set_tbl_properties()
        .with_properties(properties)
        .with_raise_if_not_exists(false)
        .await
        .map_err(|e| delta_error(&url, e))
}

/// Brings an existing table's `wanted` properties (Delta's or ours) up to date: one commit when any differs
/// (logged, naming `what` they are), none otherwise.
pub async fn keep_properties(
    table: DeltaTable,
    wanted: &[(&str, &str)],
    what: &str,
) -> Result<DeltaTable, StorageError> {
    let configuration = properties(&table)?;
    let stale: HashMap<String, String> = wanted
        .iter()
        .filter(|(k, v)| configuration.get(*k).map(String::as_str) != Some(*v))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if !stale.is_empty() {
        tracing::info!(table = %table.table_url(), "setting the table's {what}");
    }
    set_properties(table, stale).await
}

/// A failure to reach object storage in `e` or the errors it wraps (a refused connection, a timeout, an error
/// answer after the retries), as a short reason; `None` for any other error (a missing object, a lost
/// conditional write, a bad configuration).
pub fn unreachable(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(StorageError::Unreachable { reason, .. }) = err.downcast_ref::<StorageError>() {
            return Some(reason.clone());
        }
        if let Some(os) = err.downcast_ref::<object_store::Error>() {
            return match os {
                object_store::Error::NotFound { .. }
                | object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotModified { .. }
                | object_store::Error::NotSupported { .. }
                | object_store::Error::NotImplemented { .. }
                | object_store::Error::InvalidPath { .. }
                | object_store::Error::UnknownConfigurationKey { .. } => None,
                other => Some(other.to_string().lines().next().unwrap_or_default().to_string()),
            };
        }
        current = err.source();
    }
    // Some layers (the Parquet writer) keep only the text of the object store's error.
    let text = e.to_string();
    ["Error performing", "error sending request", "Generic S3 error"]
        .iter()
        .find_map(|m| text.find(m))
        .map(|at| text[at..].lines().next().unwrap_or_default().to_string())
}

/// The table property that records which key (id with fingerprint) a table's pseudonyms of `domain` are made
/// with.
pub fn key_property(domain: &str) -> String {
    format!("lakehouse.key.{domain}")
}

/// Checks that the table records the same keys (`domain` → key id with fingerprint) as `keys`, and records the
/// ones it does not hold yet (a new table or pseudonymized column) or that were rotated (a new key id). A
/// different key under the same id is [`StorageError::KeyMismatch`]: nothing may be written with it.
pub async fn check_keys(table: DeltaTable, keys: &[(String, String)]) -> Result<DeltaTable, StorageError> {
    let name = table.table_url().to_string();
    let configuration = properties(&table)?;
    let mut missing = HashMap::new();
    for (domain, id) in keys {
        let property = key_property(domain);
        match configuration.get(&property) {
            Some(recorded) if recorded == id => {}
            Some(recorded) if crate::privacy::key_name(recorded) == crate::privacy::key_name(id) => {
                return Err(StorageError::KeyMismatch {
                    table: name,
                    domain: domain.clone(),
                    recorded: recorded.clone(),
                    loaded: id.clone(),
                });
            }
            Some(recorded) => {
                tracing::info!(table = %name, domain = %domain, from = %recorded, to = %id, "key rotated: new pseudonyms use the new key id");
                missing.insert(property, id.clone());
            }
            None => {
                missing.insert(property, id.clone());
            }
        }
    }
    if !missing.is_empty() {
        tracing::info!(table = %name, "recording the key fingerprints in the table properties");
    }
    set_properties(table, missing).await
}

/// Where the tables of a deployment live.
#[derive(Clone)]
pub struct Warehouse {
    /// Base URL, ending with `/`.
    root: Url,
    settings: StorageSettings,
    options: HashMap<String, String>,
    log_retention: crate::manifest::Retention,
}

impl std::fmt::Debug for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Options may hold secrets: show their names only.
        f.debug_struct("Warehouse").field("root", &self.root.as_str()).field("options", &self.options.keys()).finish()
    }
}

/// Resolves `file://./x` or a bare relative path against `base`; passes `s3://` and absolute `file://` through.
pub fn resolve_url(base: &Path, location: &str) -> Result<Url, StorageError> {
    let invalid = |reason: &str| StorageError::InvalidUrl { url: location.to_string(), reason: reason.to_string() };
    if location.starts_with("s3://") {
        let mut url = Url::parse(location).map_err(|e| invalid(&e.to_string()))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no bucket"));
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        return Ok(url);
    }
    let path = location.strip_prefix("file://").unwrap_or(location);
    let path = if Path::new(path).is_absolute() { Path::new(path).to_path_buf() } else { base.join(path) };
    let path = std::path::absolute(&path).map_err(|e| invalid(&e.to_string()))?;
    // Normalize `./` and `../` without requiring the directory to exist.
    let mut clean = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    Url::from_directory_path(&clean).map_err(|()| invalid("not an absolute path"))
}

impl Warehouse {
    pub fn new(
        project_dir: &Path,
        url: &str,
        settings: &StorageSettings,
        log_retention: crate::manifest::Retention,
    ) -> Result<Self, StorageError> {
        let root = resolve_url(project_dir, url)?;
        Ok(Self { options: storage_options(&root, settings), settings: settings.clone(), root, log_retention })
    }

    /// The Delta properties that keep every table's log as long as the deployment's `log_retention`: delta-rs
    /// otherwise deletes log entries older than 30 days after a checkpoint, and lineage, time travel, `reproduce`,
    /// incremental models and `catalog rebuild` read each version's entry.
    pub fn log_properties(&self) -> Vec<(&'static str, String)> {
        match self.log_retention.max_days() {
            Some(days) => vec![
                ("delta.logRetentionDuration", format!("interval {days} days")),
                ("delta.enableExpiredLogCleanup", "true".into()),
            ],
            None => vec![
                ("delta.logRetentionDuration", "interval 36600 days".into()),
                ("delta.enableExpiredLogCleanup", "false".into()),
            ],
        }
    }

    /// Brings an existing table's log retention up to [`Self::log_properties`] (one commit, once).
    pub async fn keep_log(&self, table: DeltaTable) -> Result<DeltaTable, StorageError> {
        let log = self.log_properties();
        let log: Vec<(&str, &str)> = log.iter().map(|(k, v)| (*k, v.as_str())).collect();
        keep_properties(table, &log, "log retention").await
    }

    /// Timeouts, retries and lock lease of this deployment.
    pub fn settings(&self) -> &StorageSettings {
        &self.settings
    }

    /// The storage options of any URL (a table, a drop zone) with this deployment's timeouts and retries.
    pub fn storage_options(&self, url: &Url) -> HashMap<String, String> {
        storage_options(url, &self.settings)
    }

    /// The object store of any URL and the path in it, with this deployment's timeouts and retries.
    pub fn object_store(&self, url: &Url) -> Result<(Arc<dyn ObjectStore>, StorePath), object_store::Error> {
        object_store_for(url, &self.settings)
    }

    /// Deletes data files written under `table_url` but not committed (after a failed read, audit or commit).
    /// Works before the table exists (a first run that fails).
    pub async fn discard(&self, table_url: &Url, adds: &[deltalake::kernel::Add]) {
        use object_store::ObjectStoreExt;
        if adds.is_empty() {
            return;
        }
        let (store, base) = match self.object_store(table_url) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(table = %table_url, error = %e, "could not delete uncommitted files (VACUUM will)");
                return;
            }
        };
        for add in adds {
            let path = StorePath::from(format!("{}/{}", base.as_ref().trim_end_matches('/'), add.path));
            if let Err(e) = store.delete(&path).await {
                tracing::warn!(file = %add.path, error = %e, "could not delete an uncommitted file (VACUUM will)");
            }
        }
    }

    pub fn root(&self) -> &Url {
        &self.root
    }

    /// `<warehouse>/<layer>/<name>/`.
    pub fn table_url(&self, layer: &str, name: &str) -> Url {
        // Layer and name are checked identifiers: joining cannot fail.
        self.root.join(&format!("{layer}/{name}/")).unwrap_or_else(|_| self.root.clone())
    }

    /// Opens a table; `None` when there is none at that location yet.
    pub async fn open(&self, url: &Url) -> Result<Option<DeltaTable>, StorageError> {
        let err = |source| delta_error(url, source);
        if url.scheme() == "file" && url.to_file_path().is_ok_and(|p| !p.join("_delta_log").is_dir()) {
            return Ok(None);
        }
        let table =
            DeltaTable::try_from_url_with_storage_options(url.clone(), self.options.clone()).await.map_err(err)?;
        Ok(table.version().is_some().then_some(table))
    }

    /// Opens the table named `layer.name` (a bare name is a bronze table); `None` when it does not exist yet.
    pub async fn open_table(&self, table: &str) -> Result<Option<DeltaTable>, StorageError> {
        let (layer, name) = table.split_once('.').unwrap_or(("bronze", table));
        self.open(&self.table_url(layer, name)).await
    }

    /// The tables of a layer, sorted: the directories under `<warehouse>/<layer>/` (on disk or in the bucket).
    pub async fn list_tables(&self, layer: &str) -> Result<Vec<String>, StorageError> {
        let url = self.table_url(layer, "x").join("..").unwrap_or_else(|_| self.root.clone());
        let Some(listed) = self.list_directory(&url).await? else { return Ok(Vec::new()) };
        let mut names: Vec<String> =
            listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
        names.sort();
        Ok(names)
    }

    /// The latest version of the table at `url`, from the names of its log's files alone (one listing, no log
    /// entry read); `None` when there is no table there.
    pub async fn latest_version(&self, url: &Url) -> Result<Option<u64>, StorageError> {
        let log = url.join("_delta_log/").unwrap_or_else(|_| url.clone());
        let Some(listed) = self.list_directory(&log).await? else { return Ok(None) };
        // `<20 digits>.json` (a commit) and `<20 digits>.checkpoint….parquet`; not the temporary commit files,
        // the compacted logs (`<v>.<v>.compacted.json`) or the checksums.
        let version = |name: &str| {
            let mut parts = name.split('.');
            let (digits, kind) = (parts.next()?, parts.next()?);
            let numeric = digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit());
            (numeric && matches!(kind, "json" | "checkpoint")).then(|| digits.parse::<u64>().ok()).flatten()
        };
        Ok(listed.objects.iter().filter_map(|o| version(o.location.filename()?)).max())
    }

    /// The objects and subdirectories directly under `url`; `None` when there is no such directory.
    async fn list_directory(&self, url: &Url) -> Result<Option<object_store::ListResult>, StorageError> {
        use object_store::ObjectStore;
        let failed = |e: object_store::Error| match unreachable(&e) {
            Some(reason) => StorageError::Unreachable { location: url.to_string(), reason },
            None => StorageError::InvalidUrl { url: url.to_string(), reason: e.to_string() },
        };
        let (store, base) = self.object_store(url).map_err(failed)?;
        match store.list_with_delimiter(Some(&base)).await {
            Ok(l) => Ok(Some(l)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(failed(e)),
        }
    }

    /// Opens the table if it exists, as [`Self::open_or_create`] does: new trailing nullable columns of `schema`
    /// added, any other difference refused, the log retention brought up to date.
    pub async fn open_existing(&self, url: &Url, schema: &SchemaRef) -> Result<Option<DeltaTable>, StorageError> {
        let Some(table) = self.open(url).await? else { return Ok(None) };
        let table = add_new_columns(url, table, schema).await?;
        check_schema(url, &table, schema)?;
        Ok(Some(self.keep_log(table).await?))
    }

    /// Opens the table, creating it with `schema` (partitioned by `partition_by`) when it does not exist. An
    /// existing table must have the same column names and types. `configuration` is set at creation (Delta
    /// properties such as `delta.dataSkippingStatsColumns`, and ours, `lakehouse.*`); the deployment's log
    /// retention ([`Self::log_properties`]) is set at creation and brought up to date on an existing table.
    pub async fn open_or_create(
        &self,
        url: &Url,
        schema: &SchemaRef,
        description: &str,
        partition_by: &[String],
        configuration: &[(&str, &str)],
    ) -> Result<DeltaTable, StorageError> {
        let err = |source| delta_error(url, source);
        if let Some(table) = self.open_existing(url, schema).await? {
            return Ok(table);
        }
        if url.scheme() == "file"
            && let Ok(path) = url.to_file_path()
        {
            std::fs::create_dir_all(&path)
                .map_err(|source| StorageError::CreateDir { path: path.display().to_string(), source })?;
        }
        let delta_schema: StructType = schema.as_ref().try_into_kernel().map_err(|e| err(e.into()))?;
        let table =
            DeltaTable::try_from_url_with_storage_options(url.clone(), self.options.clone()).await.map_err(err)?;
        // No commit retries: when another writer creates the table at the same time, delta-rs would otherwise
        // commit our create as version 1 on top of theirs (a second protocol action that fails every
        // concurrent writer). Losing the race is fine: open the winner's table.
        let log = self.log_properties();
        let create = table
            .create()
            .with_columns(delta_schema.fields().cloned())
            .with_partition_columns(partition_by.to_vec())
            .with_comment(description)
            .with_commit_properties(CommitProperties::default().with_max_retries(0))
            .with_configuration(log.iter().map(|(k, v)| (*k, Some(v.as_str()))))
            .with_configuration(configuration.iter().map(|(k, v)| (*k, Some(*v))))
            // Our own properties (`lakehouse.*`) are not Delta's: do not refuse them.
            .with_raise_if_key_not_exists(false);
        let error = match create.await {
            Ok(t) => return Ok(t),
            Err(e) => e,
        };
        // The other writer's first commit may not be visible yet (its log file is being written): wait for it.
        for attempt in 0..20 {
            if let Some(t) = self.open(url).await? {
                tracing::debug!(table = %url, "another writer created the table first");
                check_schema(url, &t, schema)?;
                return Ok(t);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50 * (attempt + 1))).await;
        }
        Err(err(error))
    }
}

/// Adds to an existing table the nullable columns a newer version of its schema declares after its own (a
/// system table that gained a column); any other difference is left to [`check_schema`].
async fn add_new_columns(url: &Url, table: DeltaTable, declared: &SchemaRef) -> Result<DeltaTable, StorageError> {
    let err = |source| delta_error(url, source);
    let found: Vec<String> = table.snapshot().map_err(err)?.schema().fields().map(|f| f.name().to_string()).collect();
    let declared_delta: StructType = declared.as_ref().try_into_kernel().map_err(|e| err(e.into()))?;
    let fields: Vec<_> = declared_delta.fields().collect();
    let extends = fields.len() > found.len() && fields.iter().zip(&found).all(|(f, n)| f.name() == n);
    let new: Vec<_> = fields[found.len().min(fields.len())..].iter().map(|f| (*f).clone()).collect();
    if !extends || new.iter().any(|f| !f.is_nullable()) {
        return Ok(table);
    }
    tracing::info!(table = %url, columns = new.len(), "adding the columns of the newer schema");
    table.add_columns().with_fields(new).await.map_err(err)
}

fn check_schema(url: &Url, table: &DeltaTable, declared: &SchemaRef) -> Result<(), StorageError> {
    let err = |source| delta_error(url, source);
    let found = table.snapshot().map_err(err)?.schema();
    let found_cols: Vec<(String, String)> =
        found.fields().map(|f| (f.name().to_string(), f.data_type().to_string())).collect();
    let declared_delta: StructType = declared.as_ref().try_into_kernel().map_err(|e| err(e.into()))?;
    let declared_cols: Vec<(String, String)> =
        declared_delta.fields().map(|f| (f.name().to_string(), f.data_type().to_string())).collect();
    if found_cols != declared_cols {
        let show = |c: &[(String, String)]| c.iter().map(|(n, t)| format!("{n} {t}")).collect::<Vec<_>>().join(", ");
        return Err(StorageError::SchemaMismatch {
            table: url.to_string(),
            found: format!("({})", show(&found_cols)),
            declared: format!("({})", show(&declared_cols)),
        });
    }
    Ok(())
}

/// Storage options for a URL: for `s3://`, the `AWS_*` variables and the client's timeouts and retries (read by
/// object_store as `connect_timeout` and `timeout`, by delta-rs as `max_retries` and `retry_timeout`).
pub fn storage_options(url: &Url, settings: &StorageSettings) -> HashMap<String, String> {
    let mut options = HashMap::new();
    if url.scheme() == "s3" {
        let secs = |d: &crate::manifest::Duration| format!("{}s", d.0.as_secs());
        options.insert("connect_timeout".into(), secs(&settings.connect_timeout));
        options.insert("timeout".into(), secs(&settings.request_timeout));
        options.insert("max_retries".into(), settings.retries.to_string());
        options.insert("retry_timeout".into(), secs(&settings.retry_timeout));
        for var in AWS_VARIABLES {
            if let Ok(v) = std::env::var(var) {
                options.insert(var.to_string(), v);
            }
        }
    }
    options
}

/// The object store of a URL and the path in it; for `s3://`, with the settings' timeouts and retries.
pub fn object_store_for(
    url: &Url,
    settings: &StorageSettings,
) -> Result<(Arc<dyn ObjectStore>, StorePath), object_store::Error> {
    let options = storage_options(url, settings);
    if url.scheme() == "s3" {
        let (_, path) = object_store::ObjectStoreScheme::parse(url)?;
        let builder = options.iter().fold(
            object_store::aws::AmazonS3Builder::new().with_url(url.as_str()),
            |builder, (key, value)| match key.to_ascii_lowercase().parse() {
                Ok(k) => builder.with_config(k, value),
                Err(_) => builder,
            },
        );
        let retry = object_store::RetryConfig {
            max_retries: settings.retries as usize,
            retry_timeout: settings.retry_timeout.0,
            ..Default::default()
        };
        return Ok((Arc::new(builder.with_retry(retry).build()?), path));
    }
    let (store, path) = object_store::parse_url_opts(url, options)?;
    Ok((Arc::from(store), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_and_s3_urls() {
        let base = Path::new("/srv/city");
        assert_eq!(resolve_url(base, "file://./warehouse").unwrap().as_str(), "file:///srv/city/warehouse/");
        assert_eq!(resolve_url(base, "drops/../data").unwrap().as_str(), "file:///srv/city/data/");
        assert_eq!(resolve_url(base, "/abs/x").unwrap().as_str(), "file:///abs/x/");
        assert_eq!(resolve_url(base, "s3://lake/prod").unwrap().as_str(), "s3://lake/prod/");
        assert!(resolve_url(base, "s3:///nobucket").is_err());
    }
}

#[cfg(test)]
mod evolution_tests {
    use deltalake::arrow::datatypes::{Field, Schema};

    use super::*;

    /// A system table whose newer schema adds nullable columns at the end gains them; any other difference is
    /// refused.
    #[tokio::test]
    async fn a_newer_schema_adds_its_trailing_nullable_columns() {
        let dir = tempfile::tempdir().unwrap();
        let wh =
            Warehouse::new(dir.path(), "file://./w", &Default::default(), crate::manifest::Retention::Forever).unwrap();
        let url = wh.table_url("bronze", "t__files");
        let v1 = Arc::new(Schema::new(vec![Field::new("path", DataType::Utf8, false)]));
        wh.open_or_create(&url, &v1, "t", &[], &[]).await.unwrap();
        let v2 = Arc::new(Schema::new(vec![
            Field::new("path", DataType::Utf8, false),
            Field::new("records_superseded", DataType::Int64, true),
        ]));
        let t = wh.open_or_create(&url, &v2, "t", &[], &[]).await.unwrap();
        let names: Vec<String> = t.snapshot().unwrap().schema().fields().map(|f| f.name().to_string()).collect();
        assert_eq!(names, ["path", "records_superseded"]);
        // Opened again with the same schema: nothing to add.
        wh.open_or_create(&url, &v2, "t", &[], &[]).await.unwrap();
        let required = Arc::new(Schema::new(vec![
            Field::new("path", DataType::Utf8, false),
            Field::new("records_superseded", DataType::Int64, true),
            Field::new("required", DataType::Int64, false),
        ]));
        let e = wh.open_or_create(&url, &required, "t", &[], &[]).await.unwrap_err();
        assert!(matches!(e, StorageError::SchemaMismatch { .. }), "{e}");
    }
}
