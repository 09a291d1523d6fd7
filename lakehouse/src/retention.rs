//! Retention (GDPR storage limitation): `lakehouse retention` deletes the bronze and quarantine rows ingested
//! longer ago than the manifest's `retention`, then vacuums the data files no version needs any more.
//!
//! - Rows are selected by `_ingested_at`, compared with `now − retention` (calendar months and years).
//! - The delete is one Delta commit per table, with the run in its metadata (`kind: retention`). Older Delta
//!   versions keep the rows until VACUUM removes their files: files no longer referenced for longer than the
//!   table's `deletedFileRetentionDuration` (7 days by default, so time travel and readers in flight stay safe).
//! - Models follow: an incremental model whose input lost files is rebuilt in full at its next run, so the
//!   deleted rows leave silver and gold too.
//! - The file ledger (`__files`) is kept: it holds no personal data (paths, sizes, counts) and is what
//!   prevents a file still in the drop zone from being ingested again.
//! - The units an `http` or `postgres` source archived (`<warehouse>/archive/<source>/`: pages, rows) are deleted
//!   when they were archived before the cutoff, with the rows they gave.

use catalog::{RUN_COMMIT_KEY, RecordCounts, RunCommit, RunId, RunKind};
use chrono::{DateTime, Months, Utc};
use datafusion::logical_expr::{col, lit};
use datafusion::scalar::ScalarValue;
use deltalake::kernel::transaction::CommitProperties;

use crate::Lakehouse;
use crate::manifest::{LoadedSource, Retention};

/// What retention did (or would do) for one source.
#[derive(Debug, Clone)]
pub struct RetentionReport {
    pub source: String,
    /// Rows ingested before this are deleted; `None` for `retention: forever`.
    pub cutoff: Option<DateTime<Utc>>,
    /// Rows of bronze and of its child tables (`explode`).
    pub bronze_rows: u64,
    pub quarantine_rows: u64,
    /// Bronze version written by the delete.
    pub bronze_version: Option<u64>,
    /// Data files removed by VACUUM (bronze and quarantine).
    pub files_vacuumed: usize,
    /// Archived responses (`http` sources) past the cutoff: deleted, or counted in a dry run.
    pub archived_pages: u64,
    /// Stream sources (`mqtt`, `nats`): the small data files of their tables (one per micro-batch) rewritten into
    /// few by the compaction that precedes the deletion.
    pub files_compacted: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("retention of {source_name}: {message}")]
pub struct RetentionError {
    pub source_name: String,
    pub message: String,
}

/// The instant before which rows are deleted.
pub fn cutoff(retention: Retention, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match retention {
        Retention::Forever => None,
        Retention::Days(n) => now.checked_sub_signed(chrono::Duration::days(i64::from(n))),
        Retention::Months(n) => now.checked_sub_months(Months::new(n)),
        Retention::Years(n) => now.checked_sub_months(Months::new(n.saturating_mul(12))),
    }
}

/// Applies the retention of `src` as of `now` (`dry_run`: count only).
pub async fn apply(
    lh: &Lakehouse,
    src: &LoadedSource,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<RetentionReport, RetentionError> {
    let name = src.manifest.name.to_string();
    let err = |message: String| RetentionError { source_name: name.clone(), message };
    let mut report = RetentionReport {
        source: name.clone(),
        cutoff: cutoff(src.manifest.retention, now),
        bronze_rows: 0,
        quarantine_rows: 0,
        bronze_version: None,
        files_vacuumed: 0,
        archived_pages: 0,
        files_compacted: 0,
    };
    if src.manifest.is_stream() && !dry_run {
        report.files_compacted = compact(lh, src).await.map_err(err)?;
    }
    let Some(cut) = report.cutoff else { return Ok(report) };
    let old = col("_ingested_at")
        .lt(lit(ScalarValue::TimestampMicrosecond(Some(cut.timestamp_micros()), Some("UTC".into()))));
    // Bronze, its child tables (whose rows carry their record's `_ingested_at`), the quarantine.
    let mut tables: Vec<(String, bool)> = src.manifest.tables().into_iter().map(|t| (t.name, true)).collect();
    tables.push((format!("{name}__quarantine"), false));
    for (table_name, is_bronze) in tables {
        let url = lh.warehouse.table_url("bronze", &table_name);
        let Some(table) = lh.warehouse.open(&url).await.map_err(|e| err(e.to_string()))? else { continue };
        let n = crate::storage::rows::count_table(&table, Some(old.clone())).await.map_err(|e| err(e.to_string()))?;
        if is_bronze {
            report.bronze_rows += n;
        } else {
            report.quarantine_rows = n;
        }
        if dry_run {
            continue;
        }
        let table = if n > 0 {
            let run = RunCommit {
                run_id: RunId::new(),
                kind: RunKind::Retention,
                target: format!("bronze.{table_name}"),
                manifest_hash: src.content_hash.clone(),
                batch: 0,
                started_at: Utc::now(),
                records: RecordCounts { read: n, ..Default::default() },
                inputs: Vec::new(),
                read: Vec::new(),
                sql_hash: None,
                sql: None,
                mode: Some(format!("delete rows ingested before {}", cut.to_rfc3339())),
            };
            let props = CommitProperties::default()
                .with_metadata([(RUN_COMMIT_KEY.to_string(), serde_json::to_value(&run).unwrap_or_default())]);
            let (table, _) = table
                .delete()
                .with_predicate(old.clone())
                .with_commit_properties(props)
                .await
                .map_err(|e| err(format!("delete: {e}")))?;
            if table_name == name {
                report.bronze_version = table.version();
            }
            tracing::info!(table = %table_name, rows = n, cutoff = %cut, "deleted rows past retention");
            table
        } else {
            table
        };
        let (_, metrics) = table.vacuum().await.map_err(|e| err(format!("vacuum: {e}")))?;
        report.files_vacuumed += metrics.files_deleted.len();
    }
    report.archived_pages = expire_archive(lh, &name, cut, dry_run).await.map_err(err)?;
    Ok(report)
}

/// A table with at least this many data files is compacted.
const COMPACT_FROM_FILES: usize = 32;

/// Rewrites the small files of a stream source's tables (bronze, its ledger and its quarantine: a file or two per
/// micro-batch each) into few, as one commit each that changes no row (`dataChange: false`). Checkpoints are
/// Delta's own (one every 100 commits): with both, a table read after a day of one-second batches opens a
/// checkpoint and a few dozen files, not 86,400. An incremental model reading the table rebuilds in full once
/// after a compaction (its last input files were rewritten), as after a deletion. Returns the files removed.
async fn compact(lh: &Lakehouse, src: &LoadedSource) -> Result<usize, String> {
    let name = src.manifest.name.as_str();
    let mut removed = 0;
    for table_name in [name.to_string(), format!("{name}__files"), format!("{name}__quarantine")] {
        let url = lh.warehouse.table_url("bronze", &table_name);
        let Some(table) = lh.warehouse.open(&url).await.map_err(|e| e.to_string())? else { continue };
        let files = table.snapshot().map_err(|e| e.to_string())?.log_data().num_files();
        if files < COMPACT_FROM_FILES {
            continue;
        }
        let (_, metrics) = table.optimize().await.map_err(|e| format!("compacting {table_name}: {e}"))?;
        tracing::info!(table = %table_name, files_removed = metrics.num_files_removed,
            files_added = metrics.num_files_added, "compacted");
        removed += metrics.num_files_removed as usize;
    }
    Ok(removed)
}

/// Deletes (or counts) the responses archived under `archive/<name>/` before `cut`.
async fn expire_archive(lh: &Lakehouse, name: &str, cut: DateTime<Utc>, dry_run: bool) -> Result<u64, String> {
    use object_store::ObjectStoreExt;
    let url = crate::connector::archive_url(&lh.warehouse, name);
    let (store, prefix) = lh.warehouse.object_store(&url).map_err(|e| format!("{url}: {e}"))?;
    let listed = crate::connector::list_archive(store.as_ref(), &prefix).await;
    let old: Vec<_> = listed
        .map_err(|e| format!("listing {url}: {e}"))?
        .into_iter()
        .filter(|m| m.last_modified < cut)
        .map(|m| m.location)
        .collect();
    if !dry_run {
        for location in &old {
            store.delete(location).await.map_err(|e| format!("deleting {location}: {e}"))?;
        }
        if !old.is_empty() {
            tracing::info!(source = name, pages = old.len(), cutoff = %cut, "deleted archived units past retention");
        }
    }
    Ok(old.len() as u64)
}
