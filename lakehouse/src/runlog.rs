//! The run log: one row per run attempt in the Delta table `system.runs` (`<warehouse>/system/runs`), written by
//! every command that runs sources or models (`ingest`, `transform`, `run`, `schedule`) and read by
//! `lakehouse status`. Shared by every process on the warehouse (appends never conflict).
//!
//! Errors are the ones the commands print: they name files, fields and rules, never values.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::{DateTime, Utc};

use crate::storage::Warehouse;
use crate::storage::rows;
use crate::storage::timestamp_type;

/// How a run attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// The run did its job (the table is as fresh as its inputs allow).
    pub fn is_success(self) -> bool {
        matches!(self, Self::Succeeded | Self::UpToDate)
    }
}

/// One run attempt: a row of `system.runs`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// The columns of `system.runs`.
pub fn schema() -> SchemaRef {
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

/// `system.runs`.
pub const RUNS: rows::RowTable =
    rows::RowTable { layer: "system", name: "runs", description: "Run attempts of sources and models", schema };

async fn try_record(
    warehouse: &Warehouse,
    records: &[RunRecord],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    RUNS.append(warehouse, records).await
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
    // File statistics on `started_at` skip the files entirely before `since`.
    let filter = since.map(|t| {
        let at = datafusion::scalar::ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), Some("UTC".into()));
        datafusion::prelude::ident("started_at").gt_eq(datafusion::prelude::lit(at))
    });
    RUNS.read(warehouse, filter, &["started_at", "ended_at"]).await
}
