//! The two side tables of every bronze table: the file ledger and the quarantine.

use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryBuilder, Int64Array, StringArray, StringBuilder, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use catalog::RecordCounts;

use crate::connector::FileEntry;
use crate::format::{BadRecord, timestamp_type};
use crate::privacy::Encryptor;

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
    ]))
}

pub struct LedgerRow<'a> {
    pub entry: &'a FileEntry,
    pub counts: RecordCounts,
}

pub fn ledger_batch(
    batch: i64,
    location: &str,
    run_id: &str,
    taken_at: i64,
    rows: &[LedgerRow<'_>],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = rows.len();
    let ts = |v: Vec<i64>| Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) as ArrayRef;
    let i64s =
        |f: &dyn Fn(&LedgerRow<'_>) -> i64| Arc::new(Int64Array::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![batch; n])),
        Arc::new(StringArray::from(vec![location; n])),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.entry.path.as_str()))),
        i64s(&|r| r.entry.size as i64),
        ts(rows.iter().map(|r| r.entry.last_modified.timestamp_micros()).collect()),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.entry.etag.as_deref()))),
        Arc::new(StringArray::from(vec![run_id; n])),
        ts(vec![taken_at; n]),
        i64s(&|r| r.counts.read as i64),
        i64s(&|r| r.counts.written as i64),
        i64s(&|r| r.counts.quarantined as i64),
    ];
    RecordBatch::try_new(ledger_schema(), columns)
}

/// `bronze.<name>__quarantine`: the records that did not parse or pass the checks. `raw` is encrypted
/// (AES-256-GCM, key of domain `quarantine`, key id in `raw_key_id`); `reason` names fields, never values.
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
    ]))
}

pub fn quarantine_batch(
    bad: &[BadRecord],
    run_id: &str,
    ingested_at: i64,
    source_file: &str,
    enc: &Encryptor,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = bad.len();
    let mut raw = BinaryBuilder::new();
    let mut column = StringBuilder::new();
    for b in bad {
        raw.append_value(enc.encrypt(&b.raw));
        column.append_option(b.error.column.as_deref());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(vec![ingested_at; n]).with_timezone("UTC")),
        Arc::new(StringArray::from(vec![run_id; n])),
        Arc::new(StringArray::from(vec![source_file; n])),
        Arc::new(Int64Array::from_iter(bad.iter().map(|b| b.line.map(|l| l as i64)))),
        Arc::new(Int64Array::from_iter_values(bad.iter().map(|b| b.record as i64))),
        Arc::new(column.finish()),
        Arc::new(StringArray::from_iter_values(bad.iter().map(|b| b.error.reason.as_str()))),
        Arc::new(raw.finish()),
        Arc::new(StringArray::from(vec![enc.key_id(); n])),
    ];
    RecordBatch::try_new(quarantine_schema(), columns)
}
