//! The one way data reaches a Delta table: data files are written first (no commit references them yet), then
//! published by one commit ([`commit_write`], or [`merge_on_keys`] for an upsert). Every commit of a run carries
//! its [`catalog::RunCommit`] in the commit metadata and its run number as a Delta application transaction, so a
//! crash between writing and committing leaves only unreferenced files, and two writers racing for the same run
//! number cannot both publish.

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, MetadataExt, StructType};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use url::Url;

/// Data files are cut at about this size.
pub const TARGET_FILE_BYTES: u64 = 256 << 20;
/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 262_144;

/// Parquet settings of every data file we write: Snappy, column-chunk statistics only (what Delta's data
/// skipping reads; page-level ones would only cost time).
pub fn parquet_properties() -> parquet::file::properties::WriterProperties {
    parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build()
}

/// A writer of data files for the table at `url` with our file size and Parquet settings; its files are
/// published by [`commit_write`]. `storage_options` are the warehouse's ([`super::Warehouse::storage_options`]).
pub fn file_writer(
    url: &Url,
    schema: SchemaRef,
    partition_by: &[String],
    storage_options: std::collections::HashMap<String, String>,
) -> Result<RecordBatchWriter, DeltaTableError> {
    let partitions = (!partition_by.is_empty()).then(|| partition_by.to_vec());
    Ok(RecordBatchWriter::try_new(url.as_str(), schema, partitions, Some(storage_options))?
        .with_target_file_size(TARGET_FILE_BYTES)
        .with_writer_properties(parquet_properties()))
}

/// A writer of data files for an existing table (its schema and partitioning).
pub fn table_writer(table: &DeltaTable) -> Result<RecordBatchWriter, DeltaTableError> {
    Ok(RecordBatchWriter::for_table(table)?
        .with_target_file_size(TARGET_FILE_BYTES)
        .with_writer_properties(parquet_properties()))
}

/// What a write commit does to the table's data files.
pub enum Write {
    /// Adds files to the table (none: a commit that only records a run, its metadata and application
    /// transaction).
    Append(Vec<Add>),
    /// Replaces every current file by these; with the new schema when the table's changes (the table keeps its
    /// other metadata: description, partitioning, properties).
    Overwrite { adds: Vec<Add>, schema: Option<SchemaRef> },
}

/// Publishes a write in one commit on the table's loaded version; returns the version committed. A concurrent
/// writer's commit is a conflict ([`is_conflict`]), never retried into a different result.
pub async fn commit_write(table: &DeltaTable, write: Write, props: CommitProperties) -> Result<u64, DeltaTableError> {
    let snapshot = table.snapshot()?;
    let partition_by = snapshot.metadata().partition_columns().to_vec();
    let mut actions: Vec<Action> = Vec::new();
    let mode = match write {
        Write::Append(adds) => {
            actions.extend(adds.into_iter().map(Action::Add));
            SaveMode::Append
        }
        Write::Overwrite { adds, schema } => {
            actions.extend(snapshot.log_data().iter().map(|f| Action::Remove(f.remove_action(true))));
            if let Some(schema) = schema {
                let delta_schema: StructType = schema.as_ref().try_into_kernel()?;
                actions.push(Action::Metadata(snapshot.metadata().clone().with_schema(&delta_schema)?));
            }
            actions.extend(adds.into_iter().map(Action::Add));
            SaveMode::Overwrite
        }
    };
    let op = DeltaOperation::Write {
        mode,
        partition_by: (!partition_by.is_empty()).then_some(partition_by),
        predicate: None,
    };
    Ok(CommitBuilder::from(props).with_actions(actions).build(Some(snapshot), table.log_store(), op).await?.version())
}

/// Writes `batch` into new files of the table and appends them in one commit; returns the version.
pub async fn append_batch(
    table: &DeltaTable,
    batch: RecordBatch,
    props: CommitProperties,
) -> Result<u64, DeltaTableError> {
    let mut writer = table_writer(table)?;
    writer.write(batch).await?;
    let adds = writer.flush().await?;
    commit_write(table, Write::Append(adds), props).await
}

/// Merges `source` into `table` on the `keys` columns: rows with a matching key replace the table's row (every
/// column), the others are inserted; one commit with `props`. A merge that changes nothing makes no commit, so
/// an empty commit then records the run (its metadata and application transaction) anyway. Returns the version.
pub async fn merge_on_keys(
    table: &DeltaTable,
    source: datafusion::prelude::DataFrame,
    keys: &[String],
    props: CommitProperties,
) -> Result<u64, DeltaTableError> {
    let q = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
    let before = table.version().unwrap_or(0);
    let predicate = keys.iter().map(|k| format!("t.{c} = s.{c}", c = q(k))).collect::<Vec<_>>().join(" AND ");
    let columns: Vec<String> = table.snapshot()?.schema().fields().map(|f| q(f.name())).collect();
    let (merged, _metrics) = table
        .clone()
        .merge(source, predicate)
        .with_source_alias("s")
        .with_target_alias("t")
        .with_commit_properties(props.clone())
        .when_matched_update(|u| columns.iter().fold(u, |u, c| u.update(c.clone(), format!("s.{c}"))))?
        .when_not_matched_insert(|i| columns.iter().fold(i, |i, c| i.set(c.clone(), format!("s.{c}"))))?
        .await?;
    match merged.version() {
        Some(v) if v > before => Ok(v),
        _ => commit_write(table, Write::Append(Vec::new()), props).await,
    }
}

/// A commit that lost a race with another writer of the same table (the same run number, or files the other
/// commit removed).
pub fn is_conflict(e: &DeltaTableError) -> bool {
    matches!(e, DeltaTableError::Transaction { source: TransactionError::CommitConflict(_) })
        || matches!(e, DeltaTableError::VersionAlreadyExists(_))
}

/// The run metadata ([`catalog::RunCommit`]) of the commit that wrote `version` of the table, read from that
/// commit's log entry; `None` for commits not made by a run (the table's creation).
pub async fn run_at(table: &DeltaTable, version: u64) -> Option<catalog::RunCommit> {
    let bytes = table.log_store().read_commit_entry(version).await.ok()??;
    for line in bytes.split(|b| *b == b'\n') {
        let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
        if let Some(run) = action.get("commitInfo").and_then(|c| c.get(catalog::RUN_COMMIT_KEY)) {
            return serde_json::from_value(run.clone()).ok();
        }
    }
    None
}

/// The run of the commit that made the table's loaded version.
pub async fn run_of(table: &DeltaTable) -> Option<catalog::RunCommit> {
    run_at(table, table.version()?).await
}
