//! The run log: one row per run attempt in the Delta table `system.runs` (`<warehouse>/system/runs`), written by
//! every command that runs sources or models (`ingest`, `transform`, `run`, `schedule`) and read by
//! `lakehouse status`. Shared by every process on the warehouse (appends never conflict).
//!
//! Errors are the ones the commands print: they name files, fields and rules, never values.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::{DateTime, Utc};
use deltalake::kernel::Action;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::TryStreamExt;

use crate::format::timestamp_type;
use crate::storage::Warehouse;

/// How a run attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Committed new data (or had nothing new to take).
    Succeeded,
    /// A model whose inputs and definition had not changed.
    UpToDate,
    Failed,
    /// Not run: an input failed, or another process was running the same target.
    Skipped,
    /// Stopped at shutdown before it could commit (nothing was published).
    Abandoned,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::UpToDate => "up_to_date",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Abandoned => "abandoned",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "succeeded" => Self::Succeeded,
            "up_to_date" => Self::UpToDate,
            "failed" => Self::Failed,
            "abandoned" => Self::Abandoned,
            _ => Self::Skipped,
        }
    }
    /// The run did its job (the table is as fresh as its inputs allow).
    pub fn is_success(self) -> bool {
        matches!(self, Self::Succeeded | Self::UpToDate)
    }
}

/// One run attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub run_id: String,
    /// `bronze.x`, `silver.y`, `gold.z`.
    pub target: String,
    /// `ingest` or `transform`.
    pub kind: String,
    /// `manual`, `schedule`, `missed`, `retry`, `data` (an input changed) or `startup`.
    pub trigger: String,
    /// 1 for the first attempt of a scheduled run, 2 for its first retry, …
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub status: Status,
    pub error: Option<String>,
    pub rows: Option<u64>,
    /// The Delta version committed, if any.
    pub version: Option<u64>,
    /// `host:pid` of the process that ran it.
    pub process: String,
}

impl RunRecord {
    pub fn new(target: impl Into<String>, kind: &str, trigger: &str, started_at: DateTime<Utc>) -> Self {
        Self {
            run_id: catalog::RunId::new().0,
            target: target.into(),
            kind: kind.to_string(),
            trigger: trigger.to_string(),
            attempt: 1,
            started_at,
            ended_at: Utc::now(),
            status: Status::Succeeded,
            error: None,
            rows: None,
            version: None,
            process: process_name(),
        }
    }
}

/// `host:pid`.
pub fn process_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    format!("{host}:{}", std::process::id())
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("target", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("trigger", DataType::Utf8, false),
        Field::new("attempt", DataType::Int32, false),
        Field::new("started_at", timestamp_type(), false),
        Field::new("ended_at", timestamp_type(), false),
        Field::new("status", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("rows", DataType::Int64, true),
        Field::new("version", DataType::Int64, true),
        Field::new("process", DataType::Utf8, false),
    ]))
}

/// Records as a batch of the `system.runs` schema.
pub fn batch(records: &[RunRecord]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let strings = |f: fn(&RunRecord) -> &str| Arc::new(StringArray::from_iter_values(records.iter().map(f)));
    let ts = |f: fn(&RunRecord) -> DateTime<Utc>| {
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(records.iter().map(|r| f(r).timestamp_micros()))
                .with_timezone("UTC"),
        )
    };
    RecordBatch::try_new(
        schema(),
        vec![
            strings(|r| &r.run_id),
            strings(|r| &r.target),
            strings(|r| &r.kind),
            strings(|r| &r.trigger),
            Arc::new(Int32Array::from_iter_values(records.iter().map(|r| r.attempt as i32))),
            ts(|r| r.started_at),
            ts(|r| r.ended_at),
            strings(|r| r.status.as_str()),
            Arc::new(StringArray::from_iter(records.iter().map(|r| r.error.as_deref()))),
            Arc::new(Int64Array::from_iter(records.iter().map(|r| r.rows.map(|v| v as i64)))),
            Arc::new(Int64Array::from_iter(records.iter().map(|r| r.version.map(|v| v as i64)))),
            strings(|r| &r.process),
        ],
    )
}

/// Appends records to `system.runs`, in one commit. Only attempts that did something are kept: a model found up
/// to date did nothing (the scheduler checks every model every minute), so it is not recorded. Failing to
/// record never fails a run: it is logged as a warning.
pub async fn record(warehouse: &Warehouse, records: &[RunRecord]) {
    let records: Vec<RunRecord> = records.iter().filter(|r| r.status != Status::UpToDate).cloned().collect();
    if records.is_empty() {
        return;
    }
    if let Err(e) = try_record(warehouse, &records).await {
        tracing::warn!(error = %e, "could not record the runs in system.runs");
    }
}

/// Rewrites `system.runs` into few files and removes the files no version needs any more (past the table's
/// deleted-file retention, 7 days by default): the scheduler's daily maintenance.
pub async fn compact(warehouse: &Warehouse) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url = warehouse.table_url("system", "runs");
    let Some(table) = warehouse.open(&url).await? else { return Ok(()) };
    let (table, metrics) = table.optimize().await?;
    tracing::info!(
        files_removed = metrics.num_files_removed,
        files_added = metrics.num_files_added,
        "compacted system.runs"
    );
    let (_, vacuumed) = table.vacuum().await?;
    tracing::info!(files_deleted = vacuumed.files_deleted.len(), "vacuumed system.runs");
    Ok(())
}

async fn try_record(warehouse: &Warehouse, records: &[RunRecord]) -> Result<(), Box<dyn std::error::Error>> {
    let url = warehouse.table_url("system", "runs");
    let table = warehouse.open_or_create(&url, &schema(), "Run attempts of sources and models", &[], &[]).await?;
    let mut writer = RecordBatchWriter::for_table(&table)?;
    writer.write(batch(records)?).await?;
    let adds = writer.flush().await?;
    let op = DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None };
    CommitBuilder::from(CommitProperties::default())
        .with_actions(adds.into_iter().map(Action::Add).collect())
        .build(Some(table.snapshot()?), table.log_store(), op)
        .await?;
    Ok(())
}

/// Every recorded run, oldest first (empty when nothing was recorded yet).
pub async fn read(warehouse: &Warehouse) -> Result<Vec<RunRecord>, Box<dyn std::error::Error + Send + Sync>> {
    read_since(warehouse, None).await
}

/// The records that started at or after `since` (all when `None`), oldest first: what the catalog has not
/// indexed yet.
pub async fn read_since(
    warehouse: &Warehouse,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<RunRecord>, Box<dyn std::error::Error + Send + Sync>> {
    let url = warehouse.table_url("system", "runs");
    let Some(table) = warehouse.open(&url).await? else { return Ok(Vec::new()) };
    let ctx = datafusion::prelude::SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    ctx.register_table("runs", table.table_provider().await?)?;
    // File statistics on `started_at` skip the files entirely before `since`.
    let filter =
        since.map_or(String::new(), |t| format!("WHERE started_at >= to_timestamp_micros({})", t.timestamp_micros()));
    let sql = format!(
        "SELECT run_id, target, kind, trigger, attempt, started_at, ended_at, status, error, rows, version, process \
         FROM runs {filter} ORDER BY started_at, ended_at"
    );
    let batches: Vec<RecordBatch> =
        crate::session::sql(&ctx, &sql).await?.execute_stream().await?.try_collect().await?;
    let mut out = Vec::new();
    for b in &batches {
        let text = |i: usize| arrow::compute::cast(b.column(i), &DataType::Utf8);
        let cols: Vec<_> = [0, 1, 2, 3, 7, 8, 11].into_iter().map(text).collect::<Result<_, _>>()?;
        let s = |c: usize, r: usize| {
            let a = cols[c].as_string::<i32>();
            a.is_valid(r).then(|| a.value(r).to_string())
        };
        let attempt = b.column(4).as_primitive::<arrow::datatypes::Int32Type>();
        let started = b.column(5).as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        let ended = b.column(6).as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        let rows = b.column(9).as_primitive::<arrow::datatypes::Int64Type>();
        let version = b.column(10).as_primitive::<arrow::datatypes::Int64Type>();
        for r in 0..b.num_rows() {
            out.push(RunRecord {
                run_id: s(0, r).unwrap_or_default(),
                target: s(1, r).unwrap_or_default(),
                kind: s(2, r).unwrap_or_default(),
                trigger: s(3, r).unwrap_or_default(),
                attempt: attempt.value(r) as u32,
                started_at: DateTime::from_timestamp_micros(started.value(r)).unwrap_or_default(),
                ended_at: DateTime::from_timestamp_micros(ended.value(r)).unwrap_or_default(),
                status: Status::parse(&s(4, r).unwrap_or_default()),
                error: s(5, r),
                rows: rows.is_valid(r).then(|| rows.value(r) as u64),
                version: version.is_valid(r).then(|| version.value(r) as u64),
                process: s(6, r).unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

impl RunRecord {
    /// The record of an ingest run that started at `started_at`.
    pub fn ingest(
        source: &str,
        result: Result<&crate::ingest::IngestReport, &crate::ingest::IngestError>,
        trigger: &str,
        started_at: DateTime<Utc>,
    ) -> Self {
        let mut r = Self::new(format!("bronze.{source}"), "ingest", trigger, started_at);
        match result {
            Ok(report) => {
                r.run_id = report.run_id.0.clone();
                r.rows = Some(report.records.written);
                r.version = report.bronze_version;
                if !report.failed.is_empty() {
                    r.status = Status::Failed;
                    let files: Vec<String> =
                        report.failed.iter().map(|f| format!("{}: {}", f.path, f.reason)).collect();
                    r.error = Some(format!("files not taken: {}", files.join("; ")));
                }
            }
            Err(e) => {
                r.status = Status::Failed;
                r.error = Some(e.to_string());
            }
        }
        r
    }

    /// The record of a model's run.
    pub fn transform(report: &crate::transform::TransformReport, trigger: &str, started_at: DateTime<Utc>) -> Self {
        use crate::transform::Outcome;
        let mut r = Self::new(report.target.clone(), "transform", trigger, started_at);
        // The same id as the run in the commit metadata and in the OpenLineage events.
        r.run_id = report.run_id.0.clone();
        r.ended_at = started_at + chrono::Duration::from_std(report.elapsed).unwrap_or_default();
        match &report.outcome {
            Outcome::Built { version, rows, .. } => {
                r.rows = Some(*rows);
                r.version = Some(*version);
            }
            Outcome::UpToDate { version } => {
                r.status = Status::UpToDate;
                r.version = Some(*version);
            }
            Outcome::Skipped { because } => {
                r.status = Status::Skipped;
                r.error = Some(because.clone());
            }
            Outcome::Failed { error, .. } => {
                r.status = Status::Failed;
                r.error = Some(error.clone());
            }
        }
        r
    }
}
