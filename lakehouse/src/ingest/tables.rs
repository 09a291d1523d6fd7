//! The two side tables of every bronze table, as typed rows ([`crate::storage::rows`]): the file ledger and the
//! quarantine.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use catalog::RecordCounts;
use chrono::{DateTime, Utc};
use deltalake::DeltaTable;
use serde::{Deserialize, Serialize};

use crate::connector::FileEntry;
use crate::format::BadRecord;
use crate::privacy::Encryptor;
use crate::storage::rows::{self, RowsError};
use crate::storage::timestamp_type;

/// `bronze.<name>__files`: one row per file taken, with its batch number and counts.
pub fn ledger_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("batch", DataType::Int64, false),
        Field::new("location", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("size", DataType::Int64, false),
        Field::new("last_modified", timestamp_type(), false),
        Field::new("etag", DataType::Utf8, true),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("taken_at", timestamp_type(), false),
        Field::new("records_read", DataType::Int64, false),
        Field::new("records_written", DataType::Int64, false),
        Field::new("records_quarantined", DataType::Int64, false),
        // Added after the first version: nullable, so older ledgers gain it (null in their rows).
        Field::new("records_superseded", DataType::Int64, true),
        Field::new("read_as", DataType::Utf8, true),
        Field::new("content_hash", DataType::Utf8, true),
        Field::new("position", DataType::Utf8, true),
        Field::new("new_fields", DataType::Utf8, true),
    ]))
}

/// A row of the file ledger: a file taken, in which batch, by which run, and what became of its records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerRow {
    pub batch: i64,
    /// The drop zone's URL; `path` is relative to it.
    pub location: String,
    pub path: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    pub etag: Option<String>,
    pub run_id: String,
    pub taken_at: DateTime<Utc>,
    pub records_read: u64,
    pub records_written: u64,
    pub records_quarantined: u64,
    /// `upsert`: the file's records replaced by a later record of the same key in the batch.
    pub records_superseded: Option<u64>,
    /// Columns the file held under another accepted name than their first (`accident_id ← Accident_Id; …`).
    pub read_as: Option<String>,
    /// The hash of the bytes taken (`xxh3-128:<hex>`): tells a changed file from one only touched.
    pub content_hash: Option<String>,
    /// The connector's position once the batch is taken (an API's cursor), on each row of the batch.
    #[serde(default)]
    pub position: Option<String>,
    /// Fields of the file no column declares (`on_new_field: warn`), comma separated.
    #[serde(default)]
    pub new_fields: Option<String>,
}

impl LedgerRow {
    pub fn new(
        batch: i64,
        location: &str,
        run_id: &str,
        taken_at: DateTime<Utc>,
        file: &FileEntry,
        counts: RecordCounts,
    ) -> Self {
        Self {
            batch,
            location: location.to_string(),
            path: file.path.clone(),
            size: file.size,
            last_modified: file.last_modified,
            etag: file.etag.clone(),
            run_id: run_id.to_string(),
            taken_at,
            records_read: counts.read,
            records_written: counts.written,
            records_quarantined: counts.quarantined,
            records_superseded: Some(counts.superseded),
            read_as: None,
            content_hash: None,
            position: None,
            new_fields: None,
        }
    }

    /// The file as the connector listed it when it was taken.
    pub fn entry(&self) -> FileEntry {
        FileEntry {
            path: self.path.clone(),
            size: self.size,
            last_modified: self.last_modified,
            etag: self.etag.clone(),
            refused: None,
        }
    }
}

pub fn ledger_batch(rows: &[LedgerRow]) -> Result<RecordBatch, RowsError> {
    rows::to_batch(&ledger_schema(), rows)
}

/// The ledger's rows by path (the last batch that took a path, when a changed file was taken again).
/// The ledger's rows (of batch `since` and later only, when given: a stream's ledger grows by a row a second and
/// its runs need only the last batch; the data files of older batches are skipped by their statistics).
pub async fn read_ledger(ledger: &DeltaTable, since: Option<i64>) -> Result<BTreeMap<String, LedgerRow>, RowsError> {
    use datafusion::prelude::{col, lit};
    let filter = since.map(|b| col("batch").gt_eq(lit(b)));
    let rows: Vec<LedgerRow> = rows::read_table(ledger, filter, &["batch"]).await?;
    Ok(rows.into_iter().map(|r| (r.path.clone(), r)).collect())
}

/// The position committed with the last batch that has one.
pub fn last_position(taken: &BTreeMap<String, LedgerRow>) -> Option<&str> {
    taken.values().filter(|r| r.position.is_some()).max_by_key(|r| r.batch).and_then(|r| r.position.as_deref())
}

/// `bronze.<name>__quarantine`: the records that did not parse or pass the checks. `raw` is encrypted
/// (AES-256-GCM, key of domain `quarantine`, key id in `raw_key_id`); `reason` names fields, never values;
/// `subjects` holds the pseudonyms of the record's identifiers, never clear values.
pub fn quarantine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("_ingested_at", timestamp_type(), false),
        Field::new("_run_id", DataType::Utf8, false),
        Field::new("source_file", DataType::Utf8, false),
        Field::new("line", DataType::Int64, true),
        Field::new("record", DataType::Int64, false),
        Field::new("column", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("raw", DataType::Binary, false),
        Field::new("raw_key_id", DataType::Utf8, false),
        // Added after the first version: nullable, so older quarantines gain it (null in their rows).
        Field::new("subjects", DataType::Utf8, true),
    ]))
}

/// A row of the quarantine: where the record was, why it was refused, and its encrypted raw text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuarantineRow {
    #[serde(rename = "_ingested_at")]
    pub ingested_at: DateTime<Utc>,
    #[serde(rename = "_run_id")]
    pub run_id: String,
    pub source_file: String,
    pub line: Option<u64>,
    pub record: u64,
    pub column: Option<String>,
    pub reason: String,
    /// Encrypted with the key `raw_key_id`.
    #[serde(with = "crate::storage::rows::bytes")]
    pub raw: Vec<u8>,
    pub raw_key_id: String,
    /// The pseudonyms of the record's direct identifiers, space-separated (`lakehouse erase` finds the record by
    /// them); null when the record could not be split into fields.
    pub subjects: Option<String>,
}

pub fn quarantine_batch(
    bad: &[BadRecord],
    run_id: &str,
    ingested_at: DateTime<Utc>,
    source_file: &str,
    enc: &Encryptor,
) -> Result<RecordBatch, RowsError> {
    let rows: Vec<QuarantineRow> = bad
        .iter()
        .map(|b| QuarantineRow {
            ingested_at,
            run_id: run_id.to_string(),
            source_file: source_file.to_string(),
            line: b.line,
            record: b.record,
            column: b.error.column.clone(),
            reason: b.error.reason.clone(),
            raw: enc.encrypt(&b.raw),
            raw_key_id: enc.key_id().to_string(),
            subjects: b.subjects.clone(),
        })
        .collect();
    rows::to_batch(&quarantine_schema(), &rows)
}
