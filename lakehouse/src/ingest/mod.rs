//! Ingestion into bronze: exactly once, nothing lost, direct identifiers pseudonymized before landing.
//!
//! # Semantics
//!
//! A run of a source takes the drop-zone files not yet taken, parses them (streaming, in a blocking thread,
//! while the async side writes Parquet files to the table location), and commits one **batch**:
//!
//! 1. the file ledger `bronze.<name>__files` gets one row per file taken, with its counts;
//! 2. the quarantine `bronze.<name>__quarantine` gets the bad records, if any;
//! 3. the bronze table `bronze.<name>` gets the rows (append, replace or upsert).
//!
//! Each of the three commits carries the Delta application transaction (`txn`) `lakehouse/ingest/<name>` with
//! the batch number as its version, and the run's [`catalog::RunCommit`] in its commit metadata. The bronze
//! commit is the one that makes the batch visible. A crash or `kill -9` before it leaves either nothing
//! committed (the files are taken again by the next run) or a ledger batch newer than bronze's txn version: the
//! next run then **replays** exactly the files of that batch, skips the commits already made (their txn version
//! tells), and completes the batch. Parquet files written by an interrupted run are never referenced by a
//! commit; `VACUUM` removes them. Two runs racing on one source both prepare the same batch number; Delta's
//! conflict check on the txn app id lets one commit and fails the other with a clear error.
//!
//! A file that cannot be read at all (truncated gzip, missing header columns, not JSON) is not taken: its rows
//! are discarded, it is reported, and the next run tries it again. A file already taken that later changes is
//! not taken again (a warning says so): partners send corrections as new files.

mod tables;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use catalog::{InputFile, RUN_COMMIT_KEY, RecordCounts, RunCommit, RunId, RunKind};
use datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::{CommitBuilder, CommitConflictError, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

pub use tables::{ledger_schema, quarantine_schema};

use crate::Lakehouse;
use crate::connector::{self, ConnectorError, FileEntry};
use crate::format::{self, BadRecord, ReadContext, ReadError, RecordSink, TablePlan};
use crate::manifest::{LoadMode, LoadedSource};
use crate::privacy::{Encryptor, KeyError, QUARANTINE_DOMAIN};
use crate::storage::StorageError;

/// Largest Parquet file written to bronze.
const TARGET_FILE_BYTES: u64 = 256 << 20;
/// Rows per Parquet row group (bounds the writer's memory).
const ROW_GROUP_ROWS: usize = 262_144;
/// Bad records buffered before they are encrypted and written.
const QUARANTINE_CHUNK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: DeltaTableError,
    },
    #[error("{0}")]
    BadRecord(String),
    #[error(
        "another run of `{source_name}` committed batch {batch} to {table} at the same time; this run committed nothing there. Run again to take what is left"
    )]
    Concurrent { source_name: String, table: String, batch: i64 },
    #[error("internal error: {0}")]
    Internal(String),
}

impl IngestError {
    /// Errors the user can fix (configuration, keys, data, concurrency) as opposed to internal failures.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Keys(_) | Self::Connector(_) | Self::BadRecord(_) | Self::Concurrent { .. } => true,
            Self::Storage(e) => matches!(e, StorageError::SchemaMismatch { .. } | StorageError::InvalidUrl { .. }),
            Self::Delta { .. } | Self::Internal(_) => false,
        }
    }
}

fn internal(e: impl std::fmt::Display) -> IngestError {
    IngestError::Internal(e.to_string())
}

/// What one run of one source did.
#[derive(Debug, Clone)]
pub struct IngestReport {
    pub source: String,
    pub run_id: RunId,
    /// The batch committed; `None` when there was nothing new.
    pub batch: Option<i64>,
    /// Whether the run completed a batch left pending by an interrupted run.
    pub replayed: bool,
    pub files: Vec<InputFile>,
    pub failed: Vec<FailedFile>,
    pub records: RecordCounts,
    pub bronze_version: Option<u64>,
    pub quarantine_version: Option<u64>,
    pub elapsed: Duration,
}

/// A file that could not be read; it was not taken and will be tried again.
#[derive(Debug, Clone)]
pub struct FailedFile {
    pub path: String,
    pub reason: String,
}

/// The application-transaction id of a source's batches.
pub fn app_id(source: &str) -> String {
    format!("lakehouse/ingest/{source}")
}

/// Crash points for tests of the exactly-once protocol: `LAKEHOUSE_FAULT=<point>` aborts the process there.
fn fault_point(point: &str) {
    if std::env::var("LAKEHOUSE_FAULT").is_ok_and(|v| v == point) {
        tracing::error!(point, "LAKEHOUSE_FAULT: aborting the process");
        std::process::abort();
    }
}

struct Tables {
    bronze: DeltaTable,
    ledger: DeltaTable,
    quarantine: Option<DeltaTable>,
}

/// Runs one source once.
pub async fn ingest_source(lh: &Lakehouse, src: &LoadedSource) -> Result<IngestReport, IngestError> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let m = &src.manifest;
    let name = m.name.as_str();
    let run_id = RunId::new();
    let span = tracing::info_span!("ingest", source = name, run_id = %run_id);
    let _guard = span.enter();

    let plan = Arc::new(TablePlan::new(m, lh.project.file.timezone.0));
    for domain in plan.domains() {
        lh.keys.get(domain)?;
    }
    let encryptor = Encryptor::new(lh.keys.get(QUARANTINE_DOMAIN)?);
    let conn = connector::open(&m.connector, &lh.project.dir)?;

    let wh = &lh.warehouse;
    let bronze_url = wh.table_url("bronze", name);
    let ledger_url = wh.table_url("bronze", &format!("{name}__files"));
    let quarantine_url = wh.table_url("bronze", &format!("{name}__quarantine"));
    let mut t = Tables {
        bronze: wh.open_or_create(&bronze_url, &plan.schema, &m.description, None).await?,
        ledger: wh
            .open_or_create(&ledger_url, &ledger_schema(), &format!("Files taken by bronze.{name}"), None)
            .await?,
        quarantine: wh.open(&quarantine_url).await?,
    };
    let app = app_id(name);
    let b = txn_version(&t.bronze, &app).await?;
    let l = txn_version(&t.ledger, &app).await?;
    let q = match &t.quarantine {
        Some(qt) => txn_version(qt, &app).await?,
        None => 0,
    };

    // Which files, and which batch.
    let taken = read_ledger(&t.ledger).await?;
    let (batch, replayed, entries) = if l > b {
        let pending: Vec<FileEntry> = taken.values().filter(|r| r.batch == l).map(|r| r.entry.clone()).collect();
        tracing::warn!(batch = l, files = pending.len(), "completing a batch left pending by an interrupted run");
        (l, true, pending)
    } else {
        let mut new = Vec::new();
        for e in conn.list().await? {
            match taken.get(&e.path) {
                None => new.push(e),
                Some(r) if r.entry.size != e.size => {
                    tracing::warn!(file = %e.path, "file changed after it was taken in batch {}; ignored (send corrections as a new file)", r.batch)
                }
                Some(_) => {}
            }
        }
        (b + 1, false, new)
    };

    let mut report = IngestReport {
        source: name.to_string(),
        run_id: run_id.clone(),
        batch: None,
        replayed,
        files: Vec::new(),
        failed: Vec::new(),
        records: RecordCounts::default(),
        bronze_version: t.bronze.version(),
        quarantine_version: t.quarantine.as_ref().and_then(DeltaTable::version),
        elapsed: Duration::ZERO,
    };
    if entries.is_empty() {
        tracing::info!("up to date: no new files");
        report.elapsed = started.elapsed();
        return Ok(report);
    }

    // Parse every file, writing uncommitted Parquet files.
    let ingested_at = started_at.timestamp_micros();
    let mut bronze_w = writer(&t.bronze)?;
    let mut quarantine_w: Option<RecordBatchWriter> = None;
    let mut bronze_adds: Vec<Add> = Vec::new();
    let mut quarantine_adds: Vec<Add> = Vec::new();
    let mut upsert_rows: Vec<RecordBatch> = Vec::new();
    let mut ledger_rows: Vec<(FileEntry, RecordCounts)> = Vec::new();
    for entry in &entries {
        let source_file = format!("{}{}", conn.location(), entry.path);
        let ctx = ReadContext {
            plan: plan.clone(),
            keys: lh.keys.clone(),
            run_id: run_id.0.clone(),
            ingested_at_micros: ingested_at,
            source_file: source_file.clone(),
            on_bad_record: m.on_bad_record,
        };
        let input = match conn.open(entry).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(file = %entry.path, error = %e, "cannot open the file; it is not taken");
                report.failed.push(FailedFile { path: entry.path.clone(), reason: e.to_string() });
                continue;
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(4);
        let format = m.format.clone();
        let file_name = entry.path.clone();
        let reader = tokio::task::spawn_blocking(move || {
            let mut sink = ChannelSink { tx };
            format::read_file(&format, &file_name, input, &ctx, &mut sink)
        });
        let mut bad: Vec<BadRecord> = Vec::new();
        let mut write_result: Result<(), IngestError> = Ok(());
        while let Some(msg) = rx.recv().await {
            let step = async {
                match msg {
                    Msg::Batch(batch) if m.load.mode == LoadMode::Upsert => upsert_rows.push(batch),
                    Msg::Batch(batch) => bronze_w.write(batch).await.map_err(|e| delta_err(&t.bronze, e))?,
                    Msg::Bad(record) => {
                        bad.push(record);
                        if bad.len() >= QUARANTINE_CHUNK {
                            write_bad(
                                lh,
                                &quarantine_url,
                                &mut t,
                                &mut quarantine_w,
                                &mut bad,
                                &run_id,
                                ingested_at,
                                &source_file,
                                &encryptor,
                            )
                            .await?;
                        }
                    }
                }
                Ok::<(), IngestError>(())
            };
            if let Err(e) = step.await {
                write_result = Err(e);
                break;
            }
        }
        drop(rx);
        let read_result = reader.await.map_err(internal)?;
        if write_result.is_ok() && !bad.is_empty() {
            write_result = write_bad(
                lh,
                &quarantine_url,
                &mut t,
                &mut quarantine_w,
                &mut bad,
                &run_id,
                ingested_at,
                &source_file,
                &encryptor,
            )
            .await;
        }
        let file_bronze = bronze_w.flush().await.map_err(|e| delta_err(&t.bronze, e))?;
        let file_quarantine = match quarantine_w.as_mut() {
            Some(w) => w.flush().await.map_err(|e| delta_err(&t.bronze, e))?,
            None => Vec::new(),
        };
        match (write_result, read_result) {
            (Ok(()), Ok(counts)) => {
                let counts =
                    RecordCounts { read: counts.read, written: counts.written, quarantined: counts.quarantined };
                tracing::info!(file = %entry.path, read = counts.read, written = counts.written, quarantined = counts.quarantined, "file parsed");
                bronze_adds.extend(file_bronze);
                quarantine_adds.extend(file_quarantine);
                report.records.add(counts);
                ledger_rows.push((entry.clone(), counts));
            }
            (Ok(()), Err(e @ (ReadError::Io(_) | ReadError::Malformed(_)))) => {
                tracing::error!(file = %entry.path, error = %e, "the file is not taken; it will be tried again");
                report.failed.push(FailedFile { path: entry.path.clone(), reason: e.to_string() });
                if m.load.mode == LoadMode::Upsert {
                    upsert_rows.retain(|b| !batch_from(b, &source_file));
                }
                discard(&t.bronze, &file_bronze).await;
                if let Some(qt) = &t.quarantine {
                    discard(qt, &file_quarantine).await;
                }
            }
            (write_result, read_result) => {
                discard(&t.bronze, &bronze_adds).await;
                discard(&t.bronze, &file_bronze).await;
                if let Some(qt) = &t.quarantine {
                    discard(qt, &quarantine_adds).await;
                    discard(qt, &file_quarantine).await;
                }
                write_result?;
                return Err(match read_result {
                    Err(e @ ReadError::BadRecordFail { .. }) => {
                        IngestError::BadRecord(format!("{}: {e}; nothing was committed", src.path.display()))
                    }
                    Err(e) => internal(e),
                    Ok(_) => internal("reader stopped"),
                });
            }
        }
    }
    report.files = ledger_rows
        .iter()
        .map(|(e, c)| InputFile {
            location: conn.location().to_string(),
            path: e.path.clone(),
            size: e.size,
            records: *c,
        })
        .collect();
    if ledger_rows.is_empty() {
        report.elapsed = started.elapsed();
        return Ok(report);
    }
    debug_assert!(report.records.balanced());

    let run = RunCommit {
        run_id: run_id.clone(),
        kind: RunKind::Ingest,
        target: format!("bronze.{name}"),
        manifest_hash: src.content_hash.clone(),
        batch,
        started_at,
        records: report.records,
        inputs: report.files.clone(),
    };
    let props = || {
        CommitProperties::default()
            .with_application_transaction(Transaction::new(&app, batch))
            .with_metadata([(RUN_COMMIT_KEY.to_string(), serde_json::to_value(&run).unwrap_or_default())])
    };
    let append = DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None };
    let conflict = |table: &DeltaTable| {
        let table = table_name(table);
        move |e: IngestError| match e {
            IngestError::Delta {
                source:
                    DeltaTableError::Transaction {
                        source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction),
                    },
                ..
            } => IngestError::Concurrent { source_name: name.to_string(), table, batch },
            other => other,
        }
    };

    // 1. Ledger.
    if l < batch {
        let rows: Vec<tables::LedgerRow<'_>> =
            ledger_rows.iter().map(|(entry, counts)| tables::LedgerRow { entry, counts: *counts }).collect();
        let lb =
            tables::ledger_batch(batch, conn.location().as_str(), &run_id.0, ingested_at, &rows).map_err(internal)?;
        let mut w = writer(&t.ledger)?;
        w.write(lb).await.map_err(|e| delta_err(&t.ledger, e))?;
        let adds = w.flush().await.map_err(|e| delta_err(&t.ledger, e))?;
        commit(&t.ledger, adds.into_iter().map(Action::Add).collect(), append.clone(), props())
            .await
            .map_err(conflict(&t.ledger))?;
        fault_point("after-ledger-commit");
    }
    // 2. Quarantine.
    if let Some(qt) = &t.quarantine {
        if q < batch && !quarantine_adds.is_empty() {
            let v = commit(qt, quarantine_adds.into_iter().map(Action::Add).collect(), append.clone(), props())
                .await
                .map_err(conflict(qt))?;
            report.quarantine_version = Some(v);
            fault_point("after-quarantine-commit");
        } else {
            // Committed by the interrupted run whose batch this is: these files are duplicates.
            discard(qt, &quarantine_adds).await;
        }
    }
    // 3. Bronze.
    let version = match m.load.mode {
        LoadMode::Append => {
            commit(&t.bronze, bronze_adds.into_iter().map(Action::Add).collect(), append, props()).await
        }
        LoadMode::Replace => {
            let snapshot = t.bronze.snapshot().map_err(|e| delta_err(&t.bronze, e))?;
            let mut actions: Vec<Action> =
                snapshot.log_data().iter().map(|f| Action::Remove(f.remove_action(true))).collect();
            actions.extend(bronze_adds.into_iter().map(Action::Add));
            let op = DeltaOperation::Write { mode: SaveMode::Overwrite, partition_by: None, predicate: None };
            commit(&t.bronze, actions, op, props()).await
        }
        LoadMode::Upsert => upsert(&t.bronze, m, upsert_rows, props()).await,
    }
    .map_err(conflict(&t.bronze))?;
    report.bronze_version = Some(version);
    report.batch = Some(batch);
    report.elapsed = started.elapsed();
    tracing::info!(
        batch,
        version,
        read = report.records.read,
        written = report.records.written,
        quarantined = report.records.quarantined,
        "committed"
    );
    Ok(report)
}

enum Msg {
    Batch(RecordBatch),
    Bad(BadRecord),
}

struct ChannelSink {
    tx: tokio::sync::mpsc::Sender<Msg>,
}

impl RecordSink for ChannelSink {
    fn batch(&mut self, batch: RecordBatch) -> Result<(), ReadError> {
        self.tx.blocking_send(Msg::Batch(batch)).map_err(|_| ReadError::Stopped)
    }
    fn bad(&mut self, bad: BadRecord) -> Result<(), ReadError> {
        self.tx.blocking_send(Msg::Bad(bad)).map_err(|_| ReadError::Stopped)
    }
}

fn batch_from(batch: &RecordBatch, source_file: &str) -> bool {
    batch
        .column_by_name("_source_file")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>().map(|a| !a.is_empty() && a.value(0) == source_file))
        .unwrap_or(false)
}

#[allow(clippy::too_many_arguments)]
async fn write_bad(
    lh: &Lakehouse,
    url: &url::Url,
    t: &mut Tables,
    w: &mut Option<RecordBatchWriter>,
    bad: &mut Vec<BadRecord>,
    run_id: &RunId,
    ingested_at: i64,
    source_file: &str,
    enc: &Encryptor,
) -> Result<(), IngestError> {
    if t.quarantine.is_none() {
        let desc = "Records that could not be parsed or checked; raw text encrypted";
        let stats = "_ingested_at,_run_id,source_file,line,record,column,reason";
        t.quarantine = Some(lh.warehouse.open_or_create(url, &quarantine_schema(), desc, Some(stats)).await?);
    }
    let qt = t.quarantine.as_ref().ok_or_else(|| internal("quarantine table"))?;
    if w.is_none() {
        *w = Some(writer(qt)?);
    }
    let batch = tables::quarantine_batch(bad, &run_id.0, ingested_at, source_file, enc).map_err(internal)?;
    bad.clear();
    if let Some(w) = w.as_mut() {
        w.write(batch).await.map_err(|e| delta_err(qt, e))?;
    }
    Ok(())
}

fn writer(table: &DeltaTable) -> Result<RecordBatchWriter, IngestError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    Ok(RecordBatchWriter::for_table(table)
        .map_err(|e| delta_err(table, e))?
        .with_target_file_size(TARGET_FILE_BYTES)
        .with_writer_properties(props))
}

/// Deletes Parquet files written but not committed.
async fn discard(table: &DeltaTable, adds: &[Add]) {
    use object_store::ObjectStoreExt;
    let store = table.log_store().object_store(None);
    for add in adds {
        let path = object_store::path::Path::from(add.path.as_str());
        if let Err(e) = store.delete(&path).await {
            tracing::warn!(file = %add.path, error = %e, "could not delete an uncommitted file (VACUUM will)");
        }
    }
}

fn table_name(table: &DeltaTable) -> String {
    table.table_url().to_string()
}

fn delta_err(table: &DeltaTable, source: DeltaTableError) -> IngestError {
    IngestError::Delta { table: table_name(table), source }
}

async fn txn_version(table: &DeltaTable, app: &str) -> Result<i64, IngestError> {
    let snapshot = table.snapshot().map_err(|e| delta_err(table, e))?;
    let v = snapshot.transaction_version(table.log_store().as_ref(), app).await.map_err(|e| delta_err(table, e))?;
    Ok(v.unwrap_or(0))
}

async fn commit(
    table: &DeltaTable,
    actions: Vec<Action>,
    op: DeltaOperation,
    props: CommitProperties,
) -> Result<u64, IngestError> {
    let snapshot = table.snapshot().map_err(|e| delta_err(table, e))?;
    let done = CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), op)
        .await
        .map_err(|e| delta_err(table, e))?;
    Ok(done.version())
}

async fn upsert(
    table: &DeltaTable,
    m: &crate::manifest::SourceManifest,
    rows: Vec<RecordBatch>,
    props: CommitProperties,
) -> Result<u64, IngestError> {
    let before = table.version().unwrap_or(0);
    let n: usize = rows.iter().map(RecordBatch::num_rows).sum();
    if n == 0 {
        let op = DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None };
        return commit(table, Vec::new(), op, props).await;
    }
    let df_err = |e: datafusion::error::DataFusionError| internal(format!("upsert: {e}"));
    let ctx = SessionContext::new();
    // Tag rows with their arrival order so the last record of a key wins.
    let mut ordered = Vec::with_capacity(rows.len());
    let mut offset = 0i64;
    for b in rows {
        let ord = Int64Array::from_iter_values(offset..offset + b.num_rows() as i64);
        offset += b.num_rows() as i64;
        let mut fields: Vec<_> = b.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(arrow::datatypes::Field::new("__ord", arrow::datatypes::DataType::Int64, false)));
        let mut cols = b.columns().to_vec();
        cols.push(Arc::new(ord));
        ordered.push(RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), cols).map_err(internal)?);
    }
    let schema = ordered[0].schema();
    let mem = datafusion::datasource::MemTable::try_new(schema, vec![ordered]).map_err(df_err)?;
    ctx.register_table("incoming", Arc::new(mem)).map_err(df_err)?;
    let keys: Vec<String> = m.columns.iter().filter(|(_, c)| c.key).map(|(n, _)| format!("\"{n}\"")).collect();
    let sql = format!(
        "SELECT * EXCLUDE (__ord, __rn) FROM (SELECT *, row_number() OVER (PARTITION BY {} ORDER BY __ord DESC) AS __rn FROM incoming) WHERE __rn = 1",
        keys.join(", ")
    );
    let source = ctx.sql(&sql).await.map_err(df_err)?;
    let predicate = keys.iter().map(|k| format!("t.{k} = s.{k}")).collect::<Vec<_>>().join(" AND ");
    let columns: Vec<String> =
        table.snapshot().map_err(|e| delta_err(table, e))?.schema().fields().map(|f| f.name().to_string()).collect();
    let (merged, _metrics) = table
        .clone()
        .merge(source, predicate)
        .with_source_alias("s")
        .with_target_alias("t")
        .with_commit_properties(props.clone())
        .when_matched_update(|u| columns.iter().fold(u, |u, c| u.update(format!("\"{c}\""), format!("s.\"{c}\""))))
        .map_err(|e| delta_err(table, e))?
        .when_not_matched_insert(|i| columns.iter().fold(i, |i, c| i.set(format!("\"{c}\""), format!("s.\"{c}\""))))
        .map_err(|e| delta_err(table, e))?
        .await
        .map_err(|e| delta_err(table, e))?;
    match merged.version() {
        Some(v) if v > before => Ok(v),
        // A merge that changes nothing makes no commit: record the batch anyway.
        _ => {
            let op = DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None };
            commit(table, Vec::new(), op, props).await
        }
    }
}

/// A ledger row: a file taken and its batch.
struct Taken {
    batch: i64,
    entry: FileEntry,
}

async fn read_ledger(ledger: &DeltaTable) -> Result<BTreeMap<String, Taken>, IngestError> {
    let df_err = |e: datafusion::error::DataFusionError| internal(format!("reading the file ledger: {e}"));
    let ctx = SessionContext::new();
    let provider = ledger.table_provider().await.map_err(df_err)?;
    ctx.register_table("ledger", provider).map_err(df_err)?;
    let batches = ctx
        .sql("SELECT batch, path, size, CAST(last_modified AS BIGINT) AS lm, etag FROM ledger")
        .await
        .map_err(df_err)?
        .collect()
        .await
        .map_err(df_err)?;
    let mut out = BTreeMap::new();
    for b in batches {
        let col = |i: usize| b.column(i).clone();
        let (batch, path, size, lm, etag) = (col(0), col(1), col(2), col(3), col(4));
        let as_i64 = |a: &arrow::array::ArrayRef| a.as_any().downcast_ref::<Int64Array>().cloned();
        let as_str = |a: &arrow::array::ArrayRef| arrow::compute::cast(a, &arrow::datatypes::DataType::Utf8).ok();
        let (Some(batch), Some(size), Some(lm), Some(path), Some(etag)) =
            (as_i64(&batch), as_i64(&size), as_i64(&lm), as_str(&path), as_str(&etag))
        else {
            return Err(internal("the file ledger has unexpected column types"));
        };
        let path = path
            .as_any()
            .downcast_ref::<StringArray>()
            .cloned()
            .unwrap_or_else(|| StringArray::from(Vec::<String>::new()));
        let etag = etag
            .as_any()
            .downcast_ref::<StringArray>()
            .cloned()
            .unwrap_or_else(|| StringArray::from(Vec::<String>::new()));
        for i in 0..b.num_rows() {
            let entry = FileEntry {
                path: path.value(i).to_string(),
                size: size.value(i) as u64,
                last_modified: chrono::DateTime::from_timestamp_micros(lm.value(i)).unwrap_or_default(),
                etag: (!etag.is_null(i)).then(|| etag.value(i).to_string()),
            };
            out.insert(entry.path.clone(), Taken { batch: batch.value(i), entry });
        }
    }
    Ok(out)
}
