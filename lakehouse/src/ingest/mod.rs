//! Ingestion into bronze: exactly once, nothing lost, direct identifiers pseudonymized before landing.
//!
//! # Semantics
//!
//! A run of a source takes the drop-zone files not yet taken, parses them (streaming, in a blocking thread,
//! while the async side writes Parquet files to the table location), and commits one **batch**:
//!
//! 1. the file ledger `bronze.<name>__files` gets one row per file taken, with its counts;
//! 2. the quarantine `bronze.<name>__quarantine` gets the bad records, if any;
//! 3. each child table `bronze.<name>__<child>` of `explode` gets the elements of its array;
//! 4. the bronze table `bronze.<name>` gets the rows (append, replace or upsert).
//!
//! Each of these commits carries the Delta application transaction (`txn`) `lakehouse/ingest/<name>` with
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

use arrow::array::Int64Array;
use arrow::record_batch::RecordBatch;
use catalog::{InputFile, RUN_COMMIT_KEY, RecordCounts, RunCommit, RunId, RunKind};
use datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{Add, Transaction};
use deltalake::{DeltaTable, DeltaTableError};
use futures::StreamExt;
use tracing::Instrument;

pub use tables::{LedgerRow, QuarantineRow, ledger_schema, quarantine_schema};

use crate::Lakehouse;
use crate::connector::{self, Connector, ConnectorError, FileEntry, Polled};
use crate::format::{self, BadRecord, ReadContext, ReadError, RecordSink, TablePlan};
use crate::manifest::{LoadMode, LoadedSource};
use crate::privacy::{Encryptor, KeyError, QUARANTINE_DOMAIN};
use crate::runlog::RunRecord;
use crate::storage::{DataFiles, StorageError, Write};

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
    #[error(
        "`{source_name}`: an interrupted run left batch {batch} pending, and it cannot be completed: {detail}. Restore the file in the drop zone and run again"
    )]
    PendingBatch { source_name: String, batch: i64, detail: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl IngestError {
    /// Errors the user can fix (configuration, keys, data, concurrency) as opposed to internal failures.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Keys(_)
            | Self::Connector(_)
            | Self::BadRecord(_)
            | Self::Concurrent { .. }
            | Self::PendingBatch { .. } => true,
            Self::Storage(e) => e.is_user_error(),
            Self::Delta { .. } | Self::Internal(_) => false,
        }
    }

    /// An internal error that is in fact an unreachable store, as such (a user error naming the URL).
    fn or_unreachable(self, location: &url::Url) -> Self {
        if self.is_user_error() {
            return self;
        }
        crate::storage::as_unreachable(&self, location).map_or(self, Self::Storage)
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
    /// New files not taken yet because they are still being written (modified within the settle time and
    /// changed since the first listing, or empty).
    pub waiting: Vec<String>,
    pub records: RecordCounts,
    pub bronze_version: Option<u64>,
    pub quarantine_version: Option<u64>,
    pub elapsed: Duration,
}

pub use crate::connector::FailedFile;

/// The application-transaction id of a source's batches.
pub fn app_id(source: &str) -> String {
    format!("lakehouse/ingest/{source}")
}

/// Why a file is not taken after a panic of its reader or writer (`who`): the panic's message without data
/// values ([`crate::session::without_values`]).
fn panic_reason(who: &str, payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("no message");
    format!(
        "{who} stopped on an internal error ({}); the file is not taken and will be tried again — please report it",
        crate::session::without_values(text.lines().next().unwrap_or_default())
    )
}

impl IngestReport {
    /// The record of an ingest run that started at `started_at`.
    pub fn run_record(
        source: &str,
        result: Result<&IngestReport, &IngestError>,
        trigger: &str,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> RunRecord {
        let mut r = RunRecord::new(format!("bronze.{source}"), "ingest", trigger, started_at);
        match result {
            Ok(report) => {
                r.run_id = report.run_id.0.clone();
                r.rows = Some(report.records.written);
                r.version = report.bronze_version;
                if !report.failed.is_empty() {
                    r.status = crate::runlog::Status::Failed;
                    let files: Vec<String> =
                        report.failed.iter().map(|f| format!("{}: {}", f.path, f.reason)).collect();
                    r.error = Some(format!("files not taken: {}", files.join("; ")));
                }
            }
            Err(e) => {
                r.status = crate::runlog::Status::Failed;
                r.error = Some(e.to_string());
            }
        }
        r
    }
}

/// Runs one source once.
pub async fn ingest_source(lh: &Lakehouse, src: &LoadedSource) -> Result<IngestReport, IngestError> {
    use crate::openlineage::{dataset, run_event, table_dataset};
    let run_id = RunId::new();
    let span = tracing::info_span!("ingest", source = src.manifest.name.as_str(), run_id = %run_id);
    let target = format!("bronze.{}", src.manifest.name);
    let (ns, job) = (lh.warehouse.root().as_str(), (lh.events.namespace.as_str(), target.as_str()));
    let start = run_event("START", &run_id.0, job, Vec::new(), vec![dataset(ns, &target)], None);
    // A stream runs every second or so, most runs finding nothing: its events are those of the runs that
    // committed a batch or failed (START then emitted with the outcome).
    let stream = src.manifest.is_stream();
    if !stream {
        lh.events.emit(&start).await;
    }
    let result =
        ingest_run(lh, src, run_id.clone()).instrument(span).await.map_err(|e| e.or_unreachable(lh.warehouse.root()));
    if stream && result.as_ref().map_or(true, |r| r.batch.is_some()) {
        lh.events.emit(&start).await;
    } else if stream {
        return result;
    }
    match &result {
        Ok(report) => {
            let inputs = report.files.iter().map(|f| dataset(&f.location, &f.path)).collect();
            let plan = TablePlan::new(&src.manifest, &lh.project.file);
            let mut outputs = vec![table_dataset(ns, &target, report.bronze_version, Some(&plan.schema), None)];
            for child in &plan.children {
                let name = format!("{target}__{}", child.name);
                outputs.push(table_dataset(ns, &name, None, Some(&child.plan.schema), None));
            }
            lh.events.emit(&run_event("COMPLETE", &run_id.0, job, inputs, outputs, None)).await;
        }
        Err(e) => {
            let message = e.to_string();
            lh.events
                .emit(&run_event("FAIL", &run_id.0, job, Vec::new(), vec![dataset(ns, &target)], Some(&message)))
                .await;
        }
    }
    result
}

/// The tables of a source — bronze, its file ledger and its quarantine — with the batch number each last
/// committed (Delta application transaction). A table that does not exist yet is created when a batch is
/// committed to it (bronze and the ledger also by a run that finds nothing new, so that models reading a source
/// without files see an empty table): a first run that fails leaves none behind.
struct SourceTables {
    bronze: Option<DeltaTable>,
    ledger: Option<DeltaTable>,
    quarantine: Option<DeltaTable>,
    /// Where bronze, the ledger and the quarantine are (or will be).
    urls: [url::Url; 3],
    /// The key ids bronze's pseudonyms are written with, as table properties.
    bronze_keys: Vec<(String, String)>,
    /// The key id the quarantine's raw records are encrypted with.
    quarantine_key: String,
    /// Last batch committed to bronze, the ledger and the quarantine.
    committed: [i64; 3],
    /// The child tables of `explode`, in plan order.
    children: Vec<ChildTable>,
    /// Where they are, in the same order.
    child_urls: Vec<url::Url>,
}

/// A child table of `explode`.
struct ChildTable {
    table: Option<DeltaTable>,
    /// The key ids its pseudonyms are written with.
    keys: Vec<(String, String)>,
    /// Last batch committed to it.
    committed: i64,
}

impl SourceTables {
    /// Bronze, created if it does not exist.
    async fn bronze(
        &mut self,
        lh: &Lakehouse,
        m: &crate::manifest::SourceManifest,
        plan: &TablePlan,
    ) -> Result<&DeltaTable, IngestError> {
        if self.bronze.is_none() {
            let t = create_keyed(lh, &self.urls[0], &plan.schema, &m.description, &self.bronze_keys).await?;
            self.bronze = Some(t);
        }
        self.bronze.as_ref().ok_or_else(|| internal("bronze was not opened"))
    }

    /// The file ledger, created if it does not exist.
    async fn ledger(&mut self, lh: &Lakehouse, name: &str) -> Result<&DeltaTable, IngestError> {
        if self.ledger.is_none() {
            let desc = format!("Files taken by bronze.{name}");
            self.ledger = Some(lh.warehouse.open_or_create(&self.urls[1], &ledger_schema(), &desc, &[], &[]).await?);
        }
        self.ledger.as_ref().ok_or_else(|| internal("the ledger was not opened"))
    }

    /// Child table `c`, created if it does not exist.
    async fn child(&mut self, lh: &Lakehouse, plan: &TablePlan, c: usize) -> Result<&DeltaTable, IngestError> {
        let child = &mut self.children[c];
        if child.table.is_none() {
            let p = &plan.children[c];
            let desc = format!("Elements of `{}`, one row per element", p.path);
            child.table = Some(create_keyed(lh, &self.child_urls[c], &p.plan.schema, &desc, &child.keys).await?);
        }
        child.table.as_ref().ok_or_else(|| internal("a child table was not opened"))
    }

    /// The quarantine, created if it does not exist.
    async fn quarantine(&mut self, lh: &Lakehouse) -> Result<&DeltaTable, IngestError> {
        if self.quarantine.is_none() {
            let desc = "Records that could not be parsed or checked; raw text encrypted";
            let stats = "_ingested_at,_run_id,source_file,line,record,column,reason";
            let key = crate::storage::key_property(QUARANTINE_DOMAIN);
            let properties = [("delta.dataSkippingStatsColumns", stats), (key.as_str(), self.quarantine_key.as_str())];
            let url = &self.urls[2];
            self.quarantine =
                Some(lh.warehouse.open_or_create(url, &quarantine_schema(), desc, &[], &properties).await?);
        }
        self.quarantine.as_ref().ok_or_else(|| internal("the quarantine was not opened"))
    }
}

/// The files a run takes, and in which batch.
struct Selection {
    batch: i64,
    /// The batch is one an interrupted run left pending in the ledger (its units, not new ones).
    replayed: bool,
    /// The units, what was not taken, and the position committed with them.
    polled: Polled,
    /// A replayed batch: the content hash the ledger holds for each unit.
    hashes: BTreeMap<String, String>,
}

/// What the files of a batch gave: data files written but not committed, and each file taken.
#[derive(Default)]
struct Parsed {
    bronze_adds: Vec<Add>,
    quarantine_adds: Vec<Add>,
    /// Per child table (`explode`).
    child_adds: Vec<Vec<Add>>,
    files: Vec<TakenFile>,
}

/// A file read completely: what it held and what became of its records.
struct TakenFile {
    entry: FileEntry,
    counts: RecordCounts,
    /// Its columns read under another accepted name than their first (`accident_id ← Accident_Id`).
    read_as: Vec<String>,
    /// Fields no column declares (`on_new_field: warn`).
    new_fields: Vec<String>,
    /// The hash of the bytes read ([`connector::content_hash`]).
    content_hash: String,
    /// `upsert`: its rows, merged at commit.
    upsert_rows: Vec<RecordBatch>,
    /// `upsert`: the rows of its child tables (`explode`), per child.
    upsert_children: Vec<Vec<RecordBatch>>,
}

/// One run of a source, by phase: open its tables; choose the files (new and settled, or those of a batch left
/// pending); parse them into uncommitted data files; commit ledger, quarantine and bronze with the same batch
/// number, so a rerun after a crash at any point completes the batch without duplicates.
async fn ingest_run(lh: &Lakehouse, src: &LoadedSource, run_id: RunId) -> Result<IngestReport, IngestError> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let m = &src.manifest;
    let plan = Arc::new(TablePlan::new(m, &lh.project.file));
    let encryptor = Encryptor::new(lh.keys.get(QUARANTINE_DOMAIN)?);
    let conn = connector::open(m, &lh.project.dir, lh)?;
    let mut tables = open_tables(lh, m, &plan).await?;
    let mut selection = select_files(conn.as_ref(), &tables).await?;
    let mut report = IngestReport {
        source: m.name.to_string(),
        run_id: run_id.clone(),
        batch: None,
        replayed: selection.replayed,
        files: Vec::new(),
        failed: std::mem::take(&mut selection.polled.rejected),
        waiting: std::mem::take(&mut selection.polled.waiting),
        records: RecordCounts::default(),
        bronze_version: tables.bronze.as_ref().and_then(DeltaTable::version),
        quarantine_version: tables.quarantine.as_ref().and_then(DeltaTable::version),
        elapsed: Duration::ZERO,
    };
    for path in &report.waiting {
        tracing::info!(file = %path, "still being written (or empty): a later run takes it");
    }
    if selection.polled.units.is_empty() {
        tracing::info!("up to date: nothing new");
        // Models reading a source without files yet see an empty table.
        report.bronze_version = tables.bronze(lh, m, &plan).await?.version();
        tables.ledger(lh, m.name.as_str()).await?;
        report.elapsed = started.elapsed();
        return Ok(report);
    }
    let unique = match plan.unique_index() {
        Some(mut index) => {
            if let (LoadMode::Append, Some(bronze)) = (m.load.mode, &tables.bronze) {
                existing_keys(bronze, &mut index).await?;
            }
            Some(Arc::new(std::sync::Mutex::new(index)))
        }
        None => None,
    };
    let job = FileJob {
        lh,
        plan: &plan,
        manifest: m,
        run_id: &run_id,
        ingested_at: started_at,
        encryptor: &encryptor,
        conn: conn.as_ref(),
        bronze: &tables.urls[0],
        quarantine: &tables.urls[2],
        children: &tables.child_urls,
        unique,
    };
    let parsed = job.take_all(&selection.polled.units, &mut report).await.map_err(|e| match e {
        IngestError::BadRecord(msg) => {
            IngestError::BadRecord(format!("{}: {msg}; nothing was committed", src.path.display()))
        }
        other => other,
    });
    let mut parsed = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            if !selection.replayed {
                conn.discard(&selection.polled.units).await;
            }
            return Err(e);
        }
    };
    if m.load.mode == LoadMode::Upsert {
        supersede(&mut parsed, &plan, m, &mut report)?;
    }
    if !selection.replayed && conn.all_or_nothing() && !report.failed.is_empty() {
        // The position would move past the records of the units not taken.
        job.discard(&parsed).await;
        conn.discard(&selection.polled.units).await;
        let f = &report.failed[0];
        return Err(IngestError::Connector(ConnectorError::Archive {
            location: format!("{}{}", conn.location(), f.path),
            detail: format!("{}; nothing was committed (the batch is taken whole or not at all)", f.reason),
        }));
    }
    if selection.replayed && !report.failed.is_empty() {
        // The ledger already holds this batch: committing part of it would lose the missing files' records.
        job.discard(&parsed).await;
        let f = &report.failed[0];
        return Err(IngestError::PendingBatch {
            source_name: m.name.to_string(),
            batch: selection.batch,
            detail: format!("file {} cannot be read: {}", f.path, f.reason),
        });
    }
    // Nor may it commit other bytes than the ones the ledger recorded.
    let replaced =
        parsed.files.iter().find(|f| selection.hashes.get(&f.entry.path).is_some_and(|h| *h != f.content_hash));
    if let Some(f) = replaced {
        let detail =
            format!("file {} changed since the interrupted run read it (its content hash differs)", f.entry.path);
        job.discard(&parsed).await;
        return Err(IngestError::PendingBatch { source_name: m.name.to_string(), batch: selection.batch, detail });
    }
    report.files = parsed
        .files
        .iter()
        .map(|f| InputFile {
            location: conn.location().to_string(),
            path: f.entry.path.clone(),
            size: f.entry.size,
            records: f.counts,
        })
        .collect();
    if parsed.files.is_empty() {
        report.elapsed = started.elapsed();
        return Ok(report);
    }
    debug_assert!(report.records.balanced());
    let run = RunCommit {
        run_id: run_id.clone(),
        kind: RunKind::Ingest,
        target: format!("bronze.{}", m.name),
        manifest_hash: src.content_hash.clone(),
        batch: selection.batch,
        started_at,
        records: report.records,
        inputs: report.files.clone(),
        read: Vec::new(),
        sql_hash: None,
        sql: None,
        mode: None,
    };
    let position = selection.polled.position.as_deref();
    commit_batch(lh, m, &plan, &mut tables, conn.location().as_str(), position, &run, parsed, &mut report).await?;
    crate::fault::abort_at("after-commit-before-ack");
    if let Err(e) = conn.acknowledge(selection.batch).await {
        // Committed: the source offers the batch again, and the ledger recognizes it.
        tracing::warn!(batch = selection.batch, error = %e, "the batch is committed but the source was not told");
    }
    report.batch = Some(selection.batch);
    report.elapsed = started.elapsed();
    tracing::info!(
        batch = selection.batch,
        version = report.bronze_version,
        read = report.records.read,
        written = report.records.written,
        quarantined = report.records.quarantined,
        "committed"
    );
    Ok(report)
}

/// `upsert`: the last record of a key in a batch wins (files in the order taken, records in file order). The
/// records a later one replaces are counted, per file, as superseded instead of written, so that read = written
/// + quarantined + superseded holds in the summary, the ledger and the catalog.
fn supersede(
    parsed: &mut Parsed,
    plan: &TablePlan,
    m: &crate::manifest::SourceManifest,
    report: &mut IngestReport,
) -> Result<(), IngestError> {
    use arrow::row::{RowConverter, SortField};
    let keys = m.key_columns();
    let fields = keys
        .iter()
        .map(|k| plan.schema.field_with_name(k).map(|f| SortField::new(f.data_type().clone())))
        .collect::<Result<Vec<_>, _>>()
        .map_err(internal)?;
    let converter = RowConverter::new(fields).map_err(internal)?;
    // Each key → the file of its last record.
    let mut last: std::collections::HashMap<Vec<u8>, usize> = std::collections::HashMap::new();
    for (file, taken) in parsed.files.iter().enumerate() {
        for b in &taken.upsert_rows {
            let columns = keys
                .iter()
                .map(|k| b.column_by_name(k).cloned().ok_or_else(|| internal(format!("upsert: no key column {k}"))))
                .collect::<Result<Vec<_>, _>>()?;
            for row in converter.convert_columns(&columns).map_err(internal)?.iter() {
                last.insert(row.as_ref().to_vec(), file);
            }
        }
    }
    let mut kept = vec![0u64; parsed.files.len()];
    for file in last.into_values() {
        kept[file] += 1;
    }
    report.records = RecordCounts::default();
    for (taken, kept) in parsed.files.iter_mut().zip(kept) {
        let counts = &mut taken.counts;
        counts.superseded = counts.written - kept;
        counts.written = kept;
        report.records.add(*counts);
    }
    if report.records.superseded > 0 {
        tracing::info!(superseded = report.records.superseded, "records replaced by a later record of their key");
    }
    Ok(())
}

/// Opens the tables of a source that exist; checks that their pseudonyms and encrypted records were written with
/// the keys loaded now.
async fn open_tables(
    lh: &Lakehouse,
    m: &crate::manifest::SourceManifest,
    plan: &TablePlan,
) -> Result<SourceTables, IngestError> {
    let (wh, name) = (&lh.warehouse, m.name.as_str());
    let bronze_keys = key_ids(lh, plan)?;
    let quarantine_key = lh.keys.get(QUARANTINE_DOMAIN)?.id.clone();
    let urls = [
        wh.table_url("bronze", name),
        wh.table_url("bronze", &format!("{name}__files")),
        wh.table_url("bronze", &format!("{name}__quarantine")),
    ];
    let bronze = match wh.open_existing(&urls[0], &plan.schema).await? {
        Some(t) => Some(crate::storage::check_keys(t, &bronze_keys).await?),
        None => None,
    };
    let ledger = wh.open_existing(&urls[1], &ledger_schema()).await?;
    let quarantine = match wh.open_existing(&urls[2], &quarantine_schema()).await? {
        Some(q) => {
            let keys = [(QUARANTINE_DOMAIN.to_string(), quarantine_key.clone())];
            Some(crate::storage::check_keys(q, &keys).await?)
        }
        None => None,
    };
    let app = app_id(name);
    let mut committed = [0; 3];
    for (i, t) in [&bronze, &ledger, &quarantine].into_iter().enumerate() {
        if let Some(t) = t {
            committed[i] = txn_version(t, &app).await?;
        }
    }
    let mut children = Vec::new();
    let mut child_urls = Vec::new();
    for child in &plan.children {
        let url = wh.table_url("bronze", &format!("{name}__{}", child.name));
        let keys = key_ids(lh, &child.plan)?;
        let table = match wh.open_existing(&url, &child.plan.schema).await? {
            Some(t) => Some(crate::storage::check_keys(t, &keys).await?),
            None => None,
        };
        let committed = match &table {
            Some(t) => txn_version(t, &app).await?,
            None => 0,
        };
        children.push(ChildTable { table, keys, committed });
        child_urls.push(url);
    }
    Ok(SourceTables { bronze, ledger, quarantine, urls, bronze_keys, quarantine_key, committed, children, child_urls })
}

/// The key ids (with fingerprints) a table's pseudonyms are written with, by domain: the table records them, and
/// pseudonyms are never written into it with another key under the same id.
fn key_ids(lh: &Lakehouse, plan: &TablePlan) -> Result<Vec<(String, String)>, IngestError> {
    let mut keys = Vec::new();
    for domain in plan.domains() {
        keys.push((domain.to_string(), lh.keys.get(domain)?.id.clone()));
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Opens or creates a table recording the key ids of its pseudonyms (`lakehouse.key.<domain>` properties),
/// refusing one that records another key under the same id.
async fn create_keyed(
    lh: &Lakehouse,
    url: &url::Url,
    schema: &arrow::datatypes::SchemaRef,
    description: &str,
    keys: &[(String, String)],
) -> Result<DeltaTable, IngestError> {
    let properties: Vec<(String, String)> =
        keys.iter().map(|(d, id)| (crate::storage::key_property(d), id.clone())).collect();
    let properties: Vec<(&str, &str)> = properties.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let table = lh.warehouse.open_or_create(url, schema, description, &[], &properties).await?;
    Ok(crate::storage::check_keys(table, keys).await?)
}

/// The batch to take: the one an interrupted run left pending in the ledger (its units again, without asking
/// the connector), or the next one with what the connector offers from the position committed last.
async fn select_files(conn: &dyn Connector, tables: &SourceTables) -> Result<Selection, IngestError> {
    let [b, l, _] = tables.committed;
    let since = conn.last_batch_only(b + 1).then_some(l);
    let taken = match &tables.ledger {
        Some(ledger) => {
            tables::read_ledger(ledger, since).await.map_err(|e| internal(format!("reading the file ledger: {e}")))?
        }
        None => BTreeMap::new(),
    };
    if l > b {
        let rows: Vec<&LedgerRow> = taken.values().filter(|r| r.batch == l).collect();
        tracing::warn!(batch = l, files = rows.len(), "completing a batch left pending by an interrupted run");
        let hashes =
            rows.iter().filter_map(|r| Some((r.path.clone(), r.content_hash.clone()?))).collect::<BTreeMap<_, _>>();
        let position = rows.iter().find_map(|r| r.position.clone());
        let entries = rows.into_iter().map(LedgerRow::entry).collect();
        let polled = Polled { units: entries, position, ..Polled::default() };
        return Ok(Selection { batch: l, replayed: true, polled, hashes });
    }
    let position = tables::last_position(&taken);
    let polled = conn.poll(&taken, position, b + 1).await?;
    Ok(Selection { batch: b + 1, replayed: false, polled, hashes: BTreeMap::new() })
}

/// Commits a parsed batch: the ledger first (the files and their batch number), then the quarantine, then
/// bronze, each with the batch number as its application transaction and the run in its metadata. A table that
/// already holds the batch (an interrupted run got that far) is skipped.
#[allow(clippy::too_many_arguments)]
async fn commit_batch(
    lh: &Lakehouse,
    m: &crate::manifest::SourceManifest,
    plan: &TablePlan,
    tables: &mut SourceTables,
    location: &str,
    position: Option<&str>,
    run: &RunCommit,
    parsed: Parsed,
    report: &mut IngestReport,
) -> Result<(), IngestError> {
    let (name, batch) = (m.name.as_str(), run.batch);
    let [_, l, q] = tables.committed;
    let app = app_id(name);
    let props = || {
        CommitProperties::default()
            .with_application_transaction(Transaction::new(&app, batch))
            .with_metadata([(RUN_COMMIT_KEY.to_string(), serde_json::to_value(run).unwrap_or_default())])
    };
    let conflict = |table: &DeltaTable| {
        let table = table.table_url().to_string();
        move |e: IngestError| match e {
            IngestError::Delta { source, .. } if crate::storage::is_conflict(&source) => {
                IngestError::Concurrent { source_name: name.to_string(), table, batch }
            }
            other => other,
        }
    };
    // Test hook: `LAKEHOUSE_FAULT=slow-ingest` waits two seconds before committing (stop-signal tests).
    if crate::fault::armed("slow-ingest") {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if l < batch {
        let rows: Vec<LedgerRow> = parsed
            .files
            .iter()
            .map(|f| LedgerRow {
                read_as: (!f.read_as.is_empty()).then(|| f.read_as.join("; ")),
                new_fields: (!f.new_fields.is_empty()).then(|| f.new_fields.join(", ")),
                content_hash: Some(f.content_hash.clone()),
                position: position.map(str::to_string),
                ..LedgerRow::new(batch, location, &run.run_id.0, run.started_at, &f.entry, f.counts)
            })
            .collect();
        let lb = tables::ledger_batch(&rows).map_err(internal)?;
        let ledger = tables.ledger(lh, name).await?;
        crate::storage::append_batch(ledger, lb, props())
            .await
            .map_err(|e| delta_err(ledger, e))
            .map_err(conflict(ledger))?;
        crate::fault::abort_at("after-ledger-commit");
    }
    if q < batch && !parsed.quarantine_adds.is_empty() {
        let write = Write::Append(parsed.quarantine_adds);
        let quarantine = tables.quarantine(lh).await?;
        report.quarantine_version = Some(commit(quarantine, write, props()).await.map_err(conflict(quarantine))?);
        crate::fault::abort_at("after-quarantine-commit");
    } else {
        // Nothing quarantined, or committed by the interrupted run whose batch this is (duplicates).
        lh.warehouse.discard(&tables.urls[2], &parsed.quarantine_adds).await;
    }
    let mut child_adds = parsed.child_adds;
    child_adds.resize_with(plan.children.len(), Vec::new);
    for (c, adds) in child_adds.into_iter().enumerate() {
        if tables.children[c].committed >= batch {
            // Committed by the interrupted run whose batch this is.
            lh.warehouse.discard(&tables.child_urls[c], &adds).await;
            continue;
        }
        let url = tables.child_urls[c].clone();
        let table = tables.child(lh, plan, c).await?;
        let version = match m.load.mode {
            LoadMode::Append => commit(table, Write::Append(adds), props()).await,
            LoadMode::Replace => commit(table, Write::Overwrite { adds, schema: None }, props()).await,
            LoadMode::Upsert => {
                let parents = parsed.files.iter().flat_map(|f| f.upsert_rows.iter().cloned()).collect();
                let rows = parsed.files.iter().flat_map(|f| f.upsert_children[c].iter().cloned()).collect();
                upsert_child(lh, table, &url, &plan.children[c].plan.schema, m, parents, rows, props()).await
            }
        }
        .map_err(conflict(table))?;
        tracing::debug!(table = %url, version, "child table committed");
        crate::fault::abort_at("after-child-commit");
    }
    let bronze = tables.bronze(lh, m, plan).await?;
    let version = match m.load.mode {
        LoadMode::Append => commit(bronze, Write::Append(parsed.bronze_adds), props()).await,
        LoadMode::Replace => commit(bronze, Write::Overwrite { adds: parsed.bronze_adds, schema: None }, props()).await,
        LoadMode::Upsert => {
            let rows = parsed.files.into_iter().flat_map(|f| f.upsert_rows).collect();
            upsert(bronze, m, rows, props()).await
        }
    }
    .map_err(conflict(bronze))?;
    report.bronze_version = Some(version);
    Ok(())
}

/// Files read at the same time by one run.
const PARALLEL_FILES: usize = 2;

/// What one run needs to take one file.
struct FileJob<'a> {
    lh: &'a Lakehouse,
    plan: &'a Arc<TablePlan>,
    manifest: &'a crate::manifest::SourceManifest,
    run_id: &'a RunId,
    ingested_at: chrono::DateTime<chrono::Utc>,
    encryptor: &'a Encryptor,
    conn: &'a dyn Connector,
    /// Where the data files of bronze and of the quarantine are written (the tables may not exist yet).
    bronze: &'a url::Url,
    quarantine: &'a url::Url,
    /// Where the data files of the child tables (`explode`) are written.
    children: &'a [url::Url],
    /// The keys seen, when the source declares `unique`.
    unique: Option<Arc<std::sync::Mutex<format::unique::UniqueIndex>>>,
}

/// A file read completely, and the uncommitted data files written for it.
struct FileDone {
    file: TakenFile,
    bronze_adds: Vec<Add>,
    quarantine_adds: Vec<Add>,
    /// Per child table (`explode`).
    child_adds: Vec<Vec<Add>>,
}

enum FileError {
    /// The file cannot be read; nothing of it is kept and it is tried again by the next run.
    NotTaken(FailedFile),
    /// The run must stop (`on_bad_record: fail`, a storage error).
    Fatal(IngestError),
}

impl FileJob<'_> {
    /// Parses the files, PARALLEL_FILES at a time (a reader thread each, while the writers encode Parquet), into
    /// data files that no commit references yet. A file that fails is "not taken" in `report`; a fatal error
    /// removes what was written and fails the run.
    async fn take_all(&self, entries: &[FileEntry], report: &mut IngestReport) -> Result<Parsed, IngestError> {
        let mut parsed = Parsed::default();
        // By index: a closure taking `&FileEntry` would make the future not provably `Send` (higher-ranked
        // lifetime).
        // With `unique`, one file at a time: the first occurrence of a key is the one in the earlier file.
        let parallel = if self.unique.is_some() { 1 } else { PARALLEL_FILES };
        let mut outcomes =
            futures::stream::iter(0..entries.len()).map(|i| self.take_guarded(&entries[i])).buffered(parallel);
        while let Some(outcome) = outcomes.next().await {
            match outcome {
                Ok(done) => {
                    parsed.bronze_adds.extend(done.bronze_adds);
                    parsed.quarantine_adds.extend(done.quarantine_adds);
                    parsed.child_adds.resize_with(done.child_adds.len(), Vec::new);
                    for (all, adds) in parsed.child_adds.iter_mut().zip(done.child_adds) {
                        all.extend(adds);
                    }
                    report.records.add(done.file.counts);
                    parsed.files.push(done.file);
                }
                Err(FileError::NotTaken(failed)) => report.failed.push(failed),
                Err(FileError::Fatal(e)) => {
                    drop(outcomes);
                    self.discard(&parsed).await;
                    return Err(e);
                }
            }
        }
        Ok(parsed)
    }

    /// Removes the data files of a batch that will not be committed.
    async fn discard(&self, parsed: &Parsed) {
        self.lh.warehouse.discard(self.bronze, &parsed.bronze_adds).await;
        self.lh.warehouse.discard(self.quarantine, &parsed.quarantine_adds).await;
        for (url, adds) in self.children.iter().zip(&parsed.child_adds) {
            self.lh.warehouse.discard(url, adds).await;
        }
    }

    /// [`Self::take`], with a panic while writing the file (a bug, or a limit of a library) turned into the file
    /// not taken: the other files, sources and models go on.
    async fn take_guarded(&self, entry: &FileEntry) -> Result<FileDone, FileError> {
        use futures::FutureExt;
        match std::panic::AssertUnwindSafe(self.take(entry)).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(panic) => {
                let reason = panic_reason("its processing", panic.as_ref());
                tracing::error!(file = %entry.path, error = %reason, "the file is not taken");
                Err(FileError::NotTaken(FailedFile { path: entry.path.clone(), reason }))
            }
        }
    }

    async fn take(&self, entry: &FileEntry) -> Result<FileDone, FileError> {
        let m = self.manifest;
        let source_file = format!("{}{}", self.conn.location(), entry.path);
        let not_taken = |reason: String| {
            tracing::error!(file = %entry.path, error = %reason, "the file is not taken; it will be tried again");
            FileError::NotTaken(FailedFile { path: entry.path.clone(), reason })
        };
        let input = self.conn.open(entry).await.map_err(|e| not_taken(e.to_string()))?;
        let ctx = ReadContext {
            plan: self.plan.clone(),
            keys: self.lh.keys.clone(),
            run_id: self.run_id.0.clone(),
            ingested_at_micros: self.ingested_at.timestamp_micros(),
            source_file: source_file.clone(),
            on_bad_record: m.on_bad_record,
            on_new_field: m.on_new_field,
            limits: self.lh.project.file.limits,
            unique: self.unique.clone(),
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(4);
        let format = m.format().clone();
        let file_name = entry.path.clone();
        let reader = tokio::task::spawn_blocking(move || {
            if crate::fault::armed("reader-panic") {
                panic!("LAKEHOUSE_FAULT: reader-panic");
            }
            let started = Instant::now();
            let mut sink = ChannelSink { tx, waited: Duration::ZERO };
            let result = format::read_file(&format, &file_name, input, &ctx, &mut sink).map(|(c, hash)| (hash, c));
            let busy = started.elapsed().saturating_sub(sink.waited);
            tracing::debug!(file = %file_name, parse_secs = busy.as_secs_f64(),
                waited_for_writer_secs = sink.waited.as_secs_f64(), "reader done");
            result
        });
        let fatal = |e: IngestError| FileError::Fatal(e);
        let mut bronze_w = self.writer(self.bronze, self.plan.schema.clone()).map_err(fatal)?;
        let mut quarantine_w = self.writer(self.quarantine, quarantine_schema()).map_err(fatal)?;
        let mut child_w = Vec::new();
        for (url, child) in self.children.iter().zip(&self.plan.children) {
            child_w.push(self.writer(url, child.plan.schema.clone()).map_err(fatal)?);
        }
        let mut upsert_rows = Vec::new();
        let mut upsert_children: Vec<Vec<RecordBatch>> = vec![Vec::new(); self.children.len()];
        let mut bad: Vec<BadRecord> = Vec::new();
        let mut write_time = Duration::ZERO;
        let mut write_result: Result<(), IngestError> = Ok(());
        while let Some(msg) = rx.recv().await {
            let step = async {
                match msg {
                    Msg::Batch(batch) if m.load.mode == LoadMode::Upsert => upsert_rows.push(batch),
                    Msg::Child(c, batch) if m.load.mode == LoadMode::Upsert => upsert_children[c].push(batch),
                    Msg::Child(c, batch) => {
                        let started = Instant::now();
                        child_w[c].write(batch).await.map_err(|e| url_err(&self.children[c], e))?;
                        write_time += started.elapsed();
                    }
                    Msg::Batch(batch) => {
                        let started = Instant::now();
                        bronze_w.write(batch).await.map_err(|e| url_err(self.bronze, e))?;
                        write_time += started.elapsed();
                    }
                    Msg::Bad(record) => {
                        bad.push(record);
                        if bad.len() >= QUARANTINE_CHUNK {
                            self.write_bad(&mut quarantine_w, &mut bad, &source_file).await?;
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
        let read_result = match reader.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(ReadError::Malformed(panic_reason("the reader", e.into_panic().as_ref()))),
            Err(e) => return Err(fatal(internal(e))),
        };
        if write_result.is_ok() && !bad.is_empty() {
            write_result = self.write_bad(&mut quarantine_w, &mut bad, &source_file).await;
        }
        let flush_started = Instant::now();
        let bronze_adds = bronze_w.flush().await.map_err(|e| fatal(url_err(self.bronze, e)))?;
        let quarantine_adds = quarantine_w.flush().await.map_err(|e| fatal(url_err(self.quarantine, e)))?;
        let mut child_adds = Vec::new();
        for (w, url) in child_w.iter_mut().zip(self.children) {
            child_adds.push(w.flush().await.map_err(|e| fatal(url_err(url, e)))?);
        }
        tracing::debug!(file = %entry.path, waited_for_encoders_secs = write_time.as_secs_f64(),
            flush_secs = flush_started.elapsed().as_secs_f64(), "writer done");
        let taken = write_result.is_ok() && read_result.is_ok();
        if let Some(index) = &self.unique {
            index.lock().unwrap_or_else(std::sync::PoisonError::into_inner).end_file(taken);
        }
        let outcome = match (write_result, read_result) {
            (Ok(()), Ok((content_hash, c))) => {
                let counts =
                    RecordCounts { read: c.read, written: c.written, quarantined: c.quarantined, superseded: 0 };
                tracing::info!(file = %entry.path, read = counts.read, written = counts.written,
                    quarantined = counts.quarantined, "file parsed");
                let file = TakenFile {
                    entry: entry.clone(),
                    counts,
                    read_as: c.read_as,
                    new_fields: c.new_fields,
                    content_hash,
                    upsert_rows,
                    upsert_children,
                };
                return Ok(FileDone { file, bronze_adds, quarantine_adds, child_adds });
            }
            (Ok(()), Err(e @ (ReadError::Io(_) | ReadError::Malformed(_) | ReadError::Limit(_)))) => {
                not_taken(e.to_string())
            }
            (Err(e), _) => fatal(e),
            (Ok(()), Err(e @ ReadError::BadRecordFail { .. })) => fatal(IngestError::BadRecord(e.to_string())),
            (Ok(()), Err(e)) => fatal(internal(e)),
        };
        self.lh.warehouse.discard(self.bronze, &bronze_adds).await;
        self.lh.warehouse.discard(self.quarantine, &quarantine_adds).await;
        for (url, adds) in self.children.iter().zip(&child_adds) {
            self.lh.warehouse.discard(url, adds).await;
        }
        Err(outcome)
    }

    /// A writer of data files for a table that may not exist yet.
    fn writer(&self, url: &url::Url, schema: arrow::datatypes::SchemaRef) -> Result<DataFiles, IngestError> {
        crate::storage::file_writer(url, schema, &[], self.lh.warehouse.storage_options(url))
            .map_err(|e| url_err(url, e))
    }

    async fn write_bad(
        &self,
        w: &mut DataFiles,
        bad: &mut Vec<BadRecord>,
        source_file: &str,
    ) -> Result<(), IngestError> {
        let batch = tables::quarantine_batch(bad, &self.run_id.0, self.ingested_at, source_file, self.encryptor)
            .map_err(internal)?;
        bad.clear();
        w.write(batch).await.map_err(|e| url_err(self.quarantine, e))
    }
}

enum Msg {
    Batch(RecordBatch),
    Child(usize, RecordBatch),
    Bad(BadRecord),
}

/// Sends the reader's output to the writer; measures how long the reader waited for the writer.
struct ChannelSink {
    tx: tokio::sync::mpsc::Sender<Msg>,
    waited: Duration,
}

impl RecordSink for ChannelSink {
    fn batch(&mut self, batch: RecordBatch) -> Result<(), ReadError> {
        let t = Instant::now();
        let sent = self.tx.blocking_send(Msg::Batch(batch)).map_err(|_| ReadError::Stopped);
        self.waited += t.elapsed();
        sent
    }
    fn bad(&mut self, bad: BadRecord) -> Result<(), ReadError> {
        self.tx.blocking_send(Msg::Bad(bad)).map_err(|_| ReadError::Stopped)
    }
    fn child(&mut self, child: usize, batch: RecordBatch) -> Result<(), ReadError> {
        let t = Instant::now();
        let sent = self.tx.blocking_send(Msg::Child(child, batch)).map_err(|_| ReadError::Stopped);
        self.waited += t.elapsed();
        sent
    }
}

fn delta_err(table: &DeltaTable, source: DeltaTableError) -> IngestError {
    url_err(table.table_url(), source)
}

fn url_err(table: &url::Url, source: DeltaTableError) -> IngestError {
    IngestError::Delta { table: table.to_string(), source }
}

async fn txn_version(table: &DeltaTable, app: &str) -> Result<i64, IngestError> {
    let snapshot = table.snapshot().map_err(|e| delta_err(table, e))?;
    let v = snapshot.transaction_version(table.log_store().as_ref(), app).await.map_err(|e| delta_err(table, e))?;
    Ok(v.unwrap_or(0))
}

async fn commit(table: &DeltaTable, write: Write, props: CommitProperties) -> Result<u64, IngestError> {
    crate::storage::commit_write(table, write, props).await.map_err(|e| delta_err(table, e))
}

async fn upsert(
    table: &DeltaTable,
    m: &crate::manifest::SourceManifest,
    rows: Vec<RecordBatch>,
    props: CommitProperties,
) -> Result<u64, IngestError> {
    let n: usize = rows.iter().map(RecordBatch::num_rows).sum();
    if n == 0 {
        return crate::storage::commit_write(table, Write::Append(Vec::new()), props)
            .await
            .map_err(|e| delta_err(table, e));
    }
    let df_err = |e: datafusion::error::DataFusionError| internal(format!("upsert: {e}"));
    let ctx = SessionContext::new();
    ctx.register_table("incoming", Arc::new(in_arrival_order(rows)?)).map_err(df_err)?;
    let keys: Vec<String> = m.key_columns().into_iter().map(String::from).collect();
    let sql = format!(
        "SELECT * EXCLUDE (__ord, __rn) FROM (SELECT *, row_number() OVER (PARTITION BY {} ORDER BY __ord DESC) AS __rn FROM incoming) WHERE __rn = 1",
        keys.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(", ")
    );
    let source = crate::session::sql(&ctx, &sql).await.map_err(df_err)?;
    crate::storage::merge_on_keys(table, source, &keys, props).await.map_err(|e| delta_err(table, e))
}

/// Adds the keys already in bronze to `index` (`append` mode: a new record may not repeat them), with the file
/// and line each came from.
async fn existing_keys(bronze: &DeltaTable, index: &mut format::unique::UniqueIndex) -> Result<(), IngestError> {
    let started = Instant::now();
    let df_err = |e: datafusion::error::DataFusionError| internal(format!("reading the keys of bronze: {e}"));
    let ctx = SessionContext::new();
    ctx.register_table("bronze", bronze.table_provider().await.map_err(df_err)?).map_err(df_err)?;
    let mut columns: Vec<&str> = index.constraints().iter().flat_map(|c| c.names.iter().map(String::as_str)).collect();
    columns.sort_unstable();
    columns.dedup();
    columns.extend(["_source_file", "_record"]);
    let mut stream = ctx
        .table("bronze")
        .await
        .map_err(df_err)?
        .select_columns(&columns)
        .map_err(df_err)?
        .execute_stream()
        .await
        .map_err(df_err)?;
    while let Some(batch) = stream.next().await {
        index.add_existing(&batch.map_err(df_err)?).map_err(internal)?;
    }
    tracing::info!(keys = index.len(), secs = started.elapsed().as_secs_f64(), "keys of bronze loaded (unique)");
    Ok(())
}

/// Rows tagged with their arrival order (`__ord`), so that the last record of a key wins; `rows` is not empty.
fn in_arrival_order(rows: Vec<RecordBatch>) -> Result<datafusion::datasource::MemTable, IngestError> {
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
    let schema = ordered.first().map(RecordBatch::schema).ok_or_else(|| internal("no rows to order"))?;
    datafusion::datasource::MemTable::try_new(schema, vec![ordered]).map_err(internal)
}

/// `upsert` with `explode`: for each key of the batch, a child table's rows become the elements of the record
/// that won (the last of its key; its rows are those with its `_source_file` and `_record`). One commit rewrites
/// the table: the rows of the other keys are kept, those of the batch's keys replaced.
#[allow(clippy::too_many_arguments)]
async fn upsert_child(
    lh: &Lakehouse,
    table: &DeltaTable,
    url: &url::Url,
    schema: &arrow::datatypes::SchemaRef,
    m: &crate::manifest::SourceManifest,
    parents: Vec<RecordBatch>,
    rows: Vec<RecordBatch>,
    props: CommitProperties,
) -> Result<u64, IngestError> {
    if parents.iter().all(|b| b.num_rows() == 0) {
        return commit(table, Write::Append(Vec::new()), props).await;
    }
    let df_err = |e: datafusion::error::DataFusionError| internal(format!("upsert of {url}: {e}"));
    let ctx = SessionContext::new();
    ctx.register_table("incoming", Arc::new(in_arrival_order(parents)?)).map_err(df_err)?;
    let children = datafusion::datasource::MemTable::try_new(schema.clone(), vec![rows]).map_err(df_err)?;
    ctx.register_table("children", Arc::new(children)).map_err(df_err)?;
    ctx.register_table("old", table.table_provider().await.map_err(df_err)?).map_err(df_err)?;
    let keys: Vec<String> = m.key_columns().iter().map(|k| format!("\"{k}\"")).collect();
    let k = keys.join(", ");
    let same_key = keys.iter().map(|k| format!("w.{k} = o.{k}")).collect::<Vec<_>>().join(" AND ");
    let sql = format!(
        "WITH winners AS (SELECT {k}, _source_file, _record FROM (SELECT {k}, _source_file, _record, \
         row_number() OVER (PARTITION BY {k} ORDER BY __ord DESC) AS __rn FROM incoming) WHERE __rn = 1) \
         SELECT o.* FROM old o WHERE NOT EXISTS (SELECT 1 FROM winners w WHERE {same_key}) \
         UNION ALL \
         SELECT c.* FROM children c WHERE EXISTS \
         (SELECT 1 FROM winners w WHERE w._source_file = c._source_file AND w._record = c._record)"
    );
    let mut stream = crate::session::sql(&ctx, &sql).await.map_err(df_err)?.execute_stream().await.map_err(df_err)?;
    let mut writer = crate::storage::file_writer(url, schema.clone(), &[], lh.warehouse.storage_options(url))
        .map_err(|e| url_err(url, e))?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(df_err)?;
        // The scan of the table may give other string types (views): back to the table's own.
        let columns = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(internal)?;
        writer.write(batch).await.map_err(|e| url_err(url, e))?;
    }
    let adds = writer.flush().await.map_err(|e| url_err(url, e))?;
    commit(table, Write::Overwrite { adds, schema: None }, props).await
}

/// A quarantined record as shown to the people who repair ingestion: its row, and its raw text decrypted when
/// asked for (or why it cannot be).
#[derive(Debug, Clone)]
pub struct QuarantinedRecord {
    pub row: QuarantineRow,
    pub decrypted: Option<Result<Vec<u8>, String>>,
}

/// Reads a source's quarantine, oldest first; with `decrypt`, the raw records are decrypted with the
/// `quarantine` key.
pub async fn read_quarantine(
    lh: &Lakehouse,
    source: &str,
    decrypt: bool,
) -> Result<Vec<QuarantinedRecord>, IngestError> {
    let url = lh.warehouse.table_url("bronze", &format!("{source}__quarantine"));
    let Some(table) = lh.warehouse.open(&url).await? else {
        return Ok(Vec::new());
    };
    // The current key, so that a missing key source is said once; each record by its own key id.
    let current = if decrypt { Some(lh.keys.get(QUARANTINE_DOMAIN)?) } else { None };
    let rows: Vec<QuarantineRow> =
        crate::storage::rows::read_table(&table, None, &["_ingested_at", "source_file", "record"])
            .await
            .map_err(|e| internal(format!("reading the quarantine: {e}")))?;
    Ok(rows
        .into_iter()
        .map(|q| {
            let raw = current.map(|current| {
                let Some(k) = lh.keys.with_id(QUARANTINE_DOMAIN, &q.raw_key_id) else {
                    return Err(format!(
                        "encrypted with key `{}`, which is not in the key source any more (the current quarantine key \
                         is `{}`)",
                        q.raw_key_id, current.id
                    ));
                };
                crate::privacy::decrypt(k, &q.raw)
                    .ok_or_else(|| "cannot decrypt (wrong key or altered data)".to_string())
            });
            QuarantinedRecord { row: q, decrypted: raw }
        })
        .collect())
}
