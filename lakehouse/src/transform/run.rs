//! Run phase: execute models in DAG order on DataFusion and publish their results as Delta tables.
//!
//! For each model:
//! 1. Open its inputs and pin their current Delta versions; read what the last run of the model consumed from
//!    its last commit's metadata ([`RunCommit::read`]). Same versions and same SQL: up to date, nothing to do.
//! 2. An `incremental` model whose inputs only grew since then reads, for each input, just the files added
//!    after the pinned version (a Delta scan restricted to those files), and `is_incremental()` is true. If an
//!    input was rewritten (a `replace` or `upsert` source, a rebuilt model), the model is rebuilt in full.
//! 3. The result (after small-cell suppression for gold) is written as Parquet files that are not yet part of
//!    the table. The sidecar's audits run on the table as it would be after the commit (write, audit, publish).
//!    A failed `error` audit deletes the files: readers never see the data. `warn` audits are reported.
//! 4. One Delta commit publishes it: overwrite (`table`, or a full rebuild), append, or merge on `unique_key`,
//!    with the run's [`RunCommit`] (inputs and their versions, SQL hash) in the commit metadata.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use catalog::{RUN_COMMIT_KEY, RecordCounts, RunCommit, RunId, RunKind, TableVersion};
use datafusion::arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, cast, col, lit, when};
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{Add, StructType, Transaction};
use deltalake::{DeltaTable, DeltaTableError};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tracing::Instrument;
use url::Url;

use super::plan::{Model, Plan};
use super::template::{Materialized, Renderer};
use crate::Lakehouse;
use crate::manifest::{AuditTest, Diagnostic, Severity};
use crate::openlineage;
use crate::runlog::RunRecord;
use crate::session::{Functions, new_session};
use crate::storage::{StorageError, Write};

/// Options of a transform run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Rebuild every selected model in full, even incremental ones and up-to-date ones.
    pub full_refresh: bool,
    /// `--var name=value`.
    pub vars: BTreeMap<String, String>,
}

/// How a model was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Full,
    Incremental,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Incremental => "incremental",
        }
    }
}

/// The result of one audit.
#[derive(Debug, Clone)]
pub struct AuditOutcome {
    pub label: String,
    pub severity: Severity,
    /// Rows that fail it (for `row_count`: the row count, when out of bounds).
    pub failing: u64,
    pub passed: bool,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Built {
        mode: Mode,
        version: u64,
        rows: u64,
    },
    UpToDate {
        version: u64,
    },
    /// Not run because an input failed.
    Skipped {
        because: String,
    },
    Failed {
        error: String,
        user_error: bool,
    },
}

#[derive(Debug, Clone)]
pub struct TransformReport {
    pub target: String,
    pub outcome: Outcome,
    pub audits: Vec<AuditOutcome>,
    /// Why an incremental model was rebuilt in full, if it was.
    pub note: Option<String>,
    pub elapsed: Duration,
    pub run_id: RunId,
    /// Input tables at the versions read.
    pub read: Vec<TableVersion>,
    /// The published schema and the column lineage of the run's plan (when it got that far).
    pub schema: Option<SchemaRef>,
    pub lineage: Option<catalog::lineage::Lineage>,
}

impl TransformReport {
    fn new(target: &str) -> Self {
        Self {
            target: target.to_string(),
            outcome: Outcome::UpToDate { version: 0 },
            audits: Vec::new(),
            note: None,
            elapsed: Duration::ZERO,
            run_id: RunId::new(),
            read: Vec::new(),
            schema: None,
            lineage: None,
        }
    }
}

impl TransformReport {
    /// The record of a model's run.
    pub fn run_record(&self, trigger: &str, started_at: chrono::DateTime<chrono::Utc>) -> RunRecord {
        let report = self;
        let mut r = RunRecord::new(report.target.clone(), "transform", trigger, started_at);
        // The same id as the run in the commit metadata and in the OpenLineage events.
        r.run_id = report.run_id.0.clone();
        r.ended_at = started_at + chrono::Duration::from_std(report.elapsed).unwrap_or_default();
        match &report.outcome {
            Outcome::Built { version, rows, .. } => {
                r.rows = Some(*rows);
                r.version = Some(*version);
            }
            Outcome::UpToDate { version } => {
                r.status = crate::runlog::Status::UpToDate;
                r.version = Some(*version);
            }
            Outcome::Skipped { because } => {
                r.status = crate::runlog::Status::Skipped;
                r.error = Some(because.clone());
            }
            Outcome::Failed { error, .. } => {
                r.status = crate::runlog::Status::Failed;
                r.error = Some(error.clone());
            }
        }
        r
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("input `{table}` has no table yet: run `lakehouse ingest` (or the model that builds it) first")]
    MissingInput { table: String },
    #[error("{0}")]
    Render(Diagnostic),
    #[error("SQL: {0}")]
    Sql(String),
    #[error("audit failed, nothing committed: {0}")]
    Audit(String),
    #[error("privacy: {0}")]
    Privacy(String),
    #[error(
        "another run of {target} published at the same time; this run published nothing (run it again to catch up)"
    )]
    Concurrent { target: String },
    #[error("the model's columns changed ({0}); an incremental model cannot change columns in place")]
    SchemaChanged(String),
    #[error("table {table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: Box<DeltaTableError>,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Internal(String),
}

impl TransformError {
    /// An internal error that is in fact an unreachable store, as such (a user error naming the URL).
    fn or_unreachable(self, location: &Url) -> Self {
        if self.is_user_error() {
            return self;
        }
        crate::storage::as_unreachable(&self, location).map_or(self, Self::Storage)
    }

    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Self::MissingInput { .. }
                | Self::Render(_)
                | Self::Sql(_)
                | Self::Audit(_)
                | Self::Privacy(_)
                | Self::SchemaChanged(_)
                | Self::Concurrent { .. }
        ) || matches!(self, Self::Storage(e) if e.is_user_error())
    }
}

fn delta_err(table: &str) -> impl Fn(DeltaTableError) -> TransformError + '_ {
    move |source| TransformError::Delta { table: table.to_string(), source: Box::new(source) }
}

fn sql_err(e: DataFusionError) -> TransformError {
    TransformError::Sql(crate::session::error_text(&e))
}

/// Runs `targets` (in plan order). A model whose input failed or was skipped is skipped.
pub async fn run(lh: &Lakehouse, plan: &Plan, targets: &[String], opts: &RunOptions) -> Vec<TransformReport> {
    let renderer = super::plan::renderer(&lh.project, &opts.vars);
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut reports = Vec::new();
    for target in targets {
        let model = &plan.models[target];
        let started = Instant::now();
        if let Some(bad) = model.rendered.inputs.iter().find(|i| failed.contains(*i)) {
            failed.insert(target.clone());
            let mut report = TransformReport::new(target);
            report.outcome = Outcome::Skipped { because: format!("input {bad} failed") };
            report.elapsed = started.elapsed();
            reports.push(report);
            continue;
        }
        let span = tracing::info_span!("transform", target = %target);
        let mut report = TransformReport::new(target);
        let ns = lh.warehouse.root().as_str();
        let job = (lh.events.namespace.as_str(), target.as_str());
        let named = |t: &String| openlineage::dataset(ns, t);
        lh.events
            .emit(&openlineage::run_event(
                "START",
                &report.run_id.0,
                job,
                model.rendered.inputs.iter().map(named).collect(),
                vec![named(target)],
                None,
            ))
            .await;
        let result = run_model(lh, &renderer, model, opts, &mut report)
            .instrument(span.clone())
            .await
            .map_err(|e| e.or_unreachable(lh.warehouse.root()));
        let inputs: Vec<serde_json::Value> =
            report.read.iter().map(|r| openlineage::table_dataset(ns, &r.table, Some(r.version), None, None)).collect();
        match result {
            Ok(outcome) => {
                let version = match &outcome {
                    Outcome::Built { version, .. } | Outcome::UpToDate { version } => Some(*version),
                    _ => None,
                };
                let output =
                    openlineage::table_dataset(ns, target, version, report.schema.as_deref(), report.lineage.as_ref());
                lh.events
                    .emit(&openlineage::run_event("COMPLETE", &report.run_id.0, job, inputs, vec![output], None))
                    .await;
                report.outcome = outcome;
            }
            Err(e) => {
                span.in_scope(|| tracing::error!(error = %e, "transform failed"));
                failed.insert(target.clone());
                let message = e.to_string();
                lh.events
                    .emit(&openlineage::run_event(
                        "FAIL",
                        &report.run_id.0,
                        job,
                        inputs,
                        vec![named(target)],
                        Some(&message),
                    ))
                    .await;
                report.outcome = Outcome::Failed { error: message, user_error: e.is_user_error() };
            }
        }
        report.elapsed = started.elapsed();
        reports.push(report);
    }
    reports
}

/// Opens `layer.name`.
async fn open_input(lh: &Lakehouse, table: &str) -> Result<DeltaTable, TransformError> {
    lh.warehouse.open_table(table).await?.ok_or_else(|| TransformError::MissingInput { table: table.to_string() })
}

/// The run metadata of the table's last commit, when it was made by a transform run.
pub async fn last_run(table: &DeltaTable) -> Option<RunCommit> {
    crate::storage::run_of(table).await.filter(|r| r.kind == RunKind::Transform)
}

/// Paths of the data files of `table` at `version`.
async fn files_at(table: &DeltaTable, version: u64, name: &str) -> Result<BTreeSet<String>, TransformError> {
    let mut t = table.clone();
    t.load_version(version).await.map_err(delta_err(name))?;
    let snapshot = t.snapshot().map_err(delta_err(name))?;
    Ok(snapshot.log_data().iter().map(|f| f.path().to_string()).collect())
}

fn hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The inputs of a run, each opened once at its current version (the versions the run pins and records).
struct Pinned {
    tables: BTreeMap<String, DeltaTable>,
    read: Vec<TableVersion>,
}

/// What makes a model's result: the hash of its rendered SQL, and of its definition beyond it (template,
/// sidecar with audits and small cells, the deployment's minimum group size when cells are suppressed).
pub(crate) struct Definition {
    pub(crate) sql_hash: String,
    pub(crate) manifest_hash: String,
}

/// What a run wrote before it publishes: files no commit references yet.
struct Written {
    adds: Vec<Add>,
    rows: u64,
}

/// One run of a model, by phase: pin the inputs; stop when nothing changed; choose full or incremental; plan
/// the SQL (and check its privacy); check the target's columns; write files; audit them; publish one commit.
async fn run_model(
    lh: &Lakehouse,
    renderer: &Renderer,
    model: &Model,
    opts: &RunOptions,
    report: &mut TransformReport,
) -> Result<Outcome, TransformError> {
    let target = &model.target;
    let url = lh.warehouse.table_url(model.loaded.layer.as_str(), &model.loaded.name);
    let existing = lh.warehouse.open(&url).await?;
    let pinned = pin_inputs(lh, model).await?;
    report.read = pinned.read.clone();
    let definition = definition(lh, model);
    let previous = match &existing {
        Some(t) => last_run(t).await,
        None => None,
    };
    if let (Some(prev), Some(t), false) = (&previous, &existing, opts.full_refresh)
        && prev.read == pinned.read
        && prev.sql_hash.as_deref() == Some(definition.sql_hash.as_str())
        && prev.manifest_hash == definition.manifest_hash
    {
        return Ok(Outcome::UpToDate { version: t.version().unwrap_or(0) });
    }
    let new_files = match (&existing, &previous) {
        (Some(_), Some(prev))
            if model.rendered.config.materialized == Materialized::Incremental && !opts.full_refresh =>
        {
            match new_files(prev, &pinned, model, &definition).await? {
                Ok(files) => Some(files),
                Err(why) => {
                    report.note = Some(format!("full rebuild: {why}"));
                    None
                }
            }
        }
        (Some(_), None) if model.rendered.config.materialized == Materialized::Incremental && !opts.full_refresh => {
            report.note = Some("full rebuild: no previous run recorded on the table".into());
            None
        }
        _ => None,
    };
    let mode = if new_files.is_some() { Mode::Incremental } else { Mode::Full };
    let ctx = session(lh, &pinned, new_files.as_ref(), existing.as_ref(), target).await?;
    let rendered =
        renderer.render(&model.loaded.template, target, mode == Mode::Incremental).map_err(TransformError::Render)?;
    let df = planned_frame(lh, &ctx, model, &rendered.sql, report).await?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    report.schema = Some(schema.clone());
    let schema_changed = match &existing {
        Some(t) => check_target(t, &schema, model, mode)?,
        None => false,
    };
    // A first run creates the table only when it publishes: a failed first run leaves nothing behind.
    let started_at = chrono::Utc::now();
    let written = write_files(lh, &url, &schema, model, df).await?;
    tracing::debug!(rows = written.rows, files = written.adds.len(), mode = mode.as_str(), "written, not committed");
    let merge = mode == Mode::Incremental && !model.rendered.config.unique_key.is_empty();
    let published = async {
        report.audits = audit_written(&ctx, &url, &written.adds, &schema, model, mode, merge).await?;
        let failed: Vec<String> = report
            .audits
            .iter()
            .filter(|a| !a.passed && a.severity == Severity::Error)
            .map(|a| format!("{} ({} rows)", a.label, a.failing))
            .collect();
        if !failed.is_empty() {
            return Err(TransformError::Audit(failed.join(", ")));
        }
        let run = RunCommit {
            run_id: report.run_id.clone(),
            kind: RunKind::Transform,
            target: target.clone(),
            manifest_hash: definition.manifest_hash.clone(),
            batch: previous.as_ref().map_or(1, |p| p.batch + 1),
            started_at,
            records: RecordCounts { read: written.rows, written: written.rows, ..Default::default() },
            inputs: Vec::new(),
            read: pinned.read.clone(),
            sql_hash: Some(definition.sql_hash.clone()),
            sql: Some(rendered.sql.clone()),
            mode: Some(mode.as_str().to_string()),
        };
        let table = match existing {
            Some(t) => lh.warehouse.keep_log(t).await?,
            None => {
                let description = model.loaded.sidecar.as_ref().and_then(|s| s.description.clone()).unwrap_or_default();
                let partition_by = &model.rendered.config.partition_by;
                lh.warehouse.open_or_create(&url, &documented(&schema, model), &description, partition_by, &[]).await?
            }
        };
        let write = match mode {
            _ if merge => None,
            Mode::Full => Some(Write::Overwrite {
                adds: written.adds.clone(),
                schema: schema_changed.then(|| documented(&schema, model)),
            }),
            Mode::Incremental => Some(Write::Append(written.adds.clone())),
        };
        publish(&ctx, &table, &url, model, &schema, &written.adds, write, &run).await
    }
    .await;
    // Merged files were copied by the merge's own commit; files of a failed run are referenced by nothing.
    if merge || published.is_err() {
        lh.warehouse.discard(&url, &written.adds).await;
    }
    let version = published?;
    tracing::info!(version, rows = written.rows, mode = mode.as_str(), "committed");
    Ok(Outcome::Built { mode, version, rows: written.rows })
}

/// Opens the model's inputs at their current versions.
async fn pin_inputs(lh: &Lakehouse, model: &Model) -> Result<Pinned, TransformError> {
    let mut tables: BTreeMap<String, DeltaTable> = BTreeMap::new();
    for table in &model.rendered.inputs {
        tables.insert(table.clone(), open_input(lh, table).await?);
    }
    let read =
        tables.iter().map(|(t, d)| TableVersion { table: t.clone(), version: d.version().unwrap_or(0) }).collect();
    Ok(Pinned { tables, read })
}

pub(crate) fn definition(lh: &Lakehouse, model: &Model) -> Definition {
    let suppressed =
        model.loaded.sidecar.as_ref().and_then(|s| s.small_cells.as_ref()).is_some_and(|c| c.count.is_some());
    let threshold =
        if suppressed { format!("min_group_size={}", lh.project.file.privacy.min_group_size) } else { String::new() };
    Definition {
        sql_hash: hash(&model.rendered.sql),
        manifest_hash: hash(&format!(
            "{}\n{}\n{threshold}",
            model.loaded.sql,
            model.loaded.sidecar_text.as_deref().unwrap_or_default()
        )),
    }
}

/// For an incremental run after `prev`: the data files each input gained since the version `prev` read (empty
/// for an input unchanged, absent for one read whole), or why the run must rebuild in full instead.
async fn new_files(
    prev: &RunCommit,
    pinned: &Pinned,
    model: &Model,
    definition: &Definition,
) -> Result<Result<BTreeMap<String, BTreeSet<String>>, String>, TransformError> {
    // New SQL applies to every row, not only to the new ones.
    if prev.sql_hash.as_deref() != Some(definition.sql_hash.as_str()) {
        return Ok(Err("the model's SQL changed since the last run".to_string()));
    }
    let mut per_input = BTreeMap::new();
    for tv in pinned.read.iter().filter(|tv| !model.rendered.whole_inputs.contains(&tv.table)) {
        let Some(before) = prev.read.iter().find(|p| p.table == tv.table) else {
            return Ok(Err(format!("{} is a new input", tv.table)));
        };
        if before.version == tv.version {
            per_input.insert(tv.table.clone(), BTreeSet::new());
            continue;
        }
        if before.version > tv.version {
            return Ok(Err(format!("{} is older than the version last read", tv.table)));
        }
        let table = &pinned.tables[&tv.table];
        let old = match files_at(table, before.version, &tv.table).await {
            Ok(old) => old,
            // A store that cannot be reached is not a reason to rebuild.
            Err(e) if crate::storage::unreachable(&e).is_some() => return Err(e),
            Err(_) => {
                return Ok(Err(format!(
                    "version {} of {} that the last run read can no longer be read (its log entry expired?)",
                    before.version, tv.table
                )));
            }
        };
        let now = files_at(table, tv.version, &tv.table).await?;
        if !old.is_subset(&now) {
            return Ok(Err(format!(
                "{} was rewritten since version {} (replace, upsert or rebuild)",
                tv.table, before.version
            )));
        }
        per_input.insert(tv.table.clone(), now.difference(&old).cloned().collect());
    }
    Ok(Ok(per_input))
}

/// The model's session: each input registered whole, or only its new files (`new_files`, incremental), and the
/// target itself (for `{{ this }}`).
async fn session(
    lh: &Lakehouse,
    pinned: &Pinned,
    new_files: Option<&BTreeMap<String, BTreeSet<String>>>,
    existing: Option<&DeltaTable>,
    target: &str,
) -> Result<SessionContext, TransformError> {
    let ctx = new_session(Functions::Keyed(lh.keys.clone()), &lh.project.file);
    for (name, table) in &pinned.tables {
        table.update_datafusion_session(&ctx.state()).map_err(delta_err(name))?;
        let full = table.table_provider().await.map_err(sql_err)?;
        let provider = match new_files.and_then(|n| n.get(name)) {
            None => full,
            Some(files) if files.is_empty() => {
                Arc::new(MemTable::try_new(full.schema(), vec![vec![]]).map_err(sql_err)?)
                    as Arc<dyn datafusion::catalog::TableProvider>
            }
            Some(files) => table.table_provider().with_file_paths(files.iter().cloned()).await.map_err(sql_err)?,
        };
        ctx.register_table(name.as_str(), provider).map_err(sql_err)?;
    }
    if let Some(t) = existing {
        t.update_datafusion_session(&ctx.state()).map_err(delta_err(target))?;
        ctx.register_table(target, t.table_provider().await.map_err(sql_err)?).map_err(sql_err)?;
    }
    Ok(ctx)
}

/// Plans the SQL that runs, checks its column lineage against the privacy rules (an incremental branch could
/// expose what the full rendering that `validate` planned masks), and returns the result as published.
async fn planned_frame(
    lh: &Lakehouse,
    ctx: &SessionContext,
    model: &Model,
    sql: &str,
    report: &mut TransformReport,
) -> Result<DataFrame, TransformError> {
    let planned = crate::session::sql(ctx, sql).await.map_err(sql_err)?;
    let minimums = &lh.project.file.privacy.min_generalization;
    let lineage = super::lineage::lineage(planned.logical_plan(), minimums);
    let mut privacy = super::lineage::PrivacyCheck::new(super::plan::sensitive_columns(&lh.project));
    if let Some(leak) = privacy.add(&model.target, &lineage).0.first() {
        return Err(TransformError::Privacy(format!("{leak}; {}", super::lineage::Leak::hint(minimums))));
    }
    report.lineage = Some(lineage);
    publishable(lh, model, planned)
}

/// Checks an existing target against the new result: an incremental run cannot change its columns, no run its
/// partitioning. Returns whether the columns changed (a full run then publishes the new schema).
fn check_target(table: &DeltaTable, schema: &SchemaRef, model: &Model, mode: Mode) -> Result<bool, TransformError> {
    let target = &model.target;
    let change = schema_change(table, schema, target)?;
    if change.is_some() && mode == Mode::Incremental {
        return Err(TransformError::SchemaChanged(change.unwrap_or_default()));
    }
    let partition_by = &model.rendered.config.partition_by;
    let current = table.snapshot().map_err(delta_err(target))?.metadata().partition_columns().to_vec();
    if current != *partition_by {
        return Err(TransformError::SchemaChanged(format!(
            "partition_by was [{}] and is now [{}]",
            current.join(", "),
            partition_by.join(", ")
        )));
    }
    Ok(change.is_some())
}

/// Writes the result into data files of the target (not committed); on failure, removes those written.
async fn write_files(
    lh: &Lakehouse,
    url: &Url,
    schema: &SchemaRef,
    model: &Model,
    df: DataFrame,
) -> Result<Written, TransformError> {
    let target = &model.target;
    let partition_by = &model.rendered.config.partition_by;
    let mut writer = crate::storage::file_writer(url, schema.clone(), partition_by, lh.warehouse.storage_options(url))
        .map_err(delta_err(target))?;
    let mut rows = 0u64;
    let written: Result<(), TransformError> = async {
        let mut stream = df.execute_stream().await.map_err(sql_err)?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(sql_err)?;
            rows += batch.num_rows() as u64;
            writer.write(batch).await.map_err(delta_err(target))?;
        }
        Ok(())
    }
    .await;
    let adds = writer.flush().await.map_err(delta_err(target));
    match (written, adds) {
        (Ok(()), Ok(adds)) => Ok(Written { adds, rows }),
        (Ok(()), Err(e)) => Err(e),
        (Err(e), adds) => {
            // Files the writer completed before the failure.
            if let Ok(adds) = adds {
                lh.warehouse.discard(url, &adds).await;
            }
            Err(e)
        }
    }
}

/// Runs the sidecar's audits on the table as it would be after publishing (the written files; with the
/// current rows too for an appending incremental run).
async fn audit_written(
    ctx: &SessionContext,
    url: &Url,
    adds: &[Add],
    schema: &SchemaRef,
    model: &Model,
    mode: Mode,
    merge: bool,
) -> Result<Vec<AuditOutcome>, TransformError> {
    let Some(sidecar) = model.loaded.sidecar.as_ref().filter(|s| !s.tests.is_empty()) else { return Ok(Vec::new()) };
    let after = if mode == Mode::Incremental && !merge { Some(model.target.as_str()) } else { None };
    audit(ctx, url, adds, schema, after, &sidecar.tests).await
}

/// Publishes the written files in one commit carrying the run (`write`, or a merge on the unique key when
/// `None`). The run number is the commit's Delta application transaction: two runs of the model racing from
/// the same previous run commit the same number, and Delta's conflict check lets only one of them publish.
#[allow(clippy::too_many_arguments)]
async fn publish(
    ctx: &SessionContext,
    table: &DeltaTable,
    url: &Url,
    model: &Model,
    schema: &SchemaRef,
    adds: &[Add],
    write: Option<Write>,
    run: &RunCommit,
) -> Result<u64, TransformError> {
    let target = &model.target;
    let props = CommitProperties::default()
        .with_application_transaction(Transaction::new(app_id(target), run.batch))
        .with_metadata([(RUN_COMMIT_KEY.to_string(), serde_json::to_value(run).unwrap_or_default())]);
    // Test hooks: `LAKEHOUSE_FAULT=before-publish` aborts between writing and committing; `slow-publish` waits
    // a second there so that concurrent runs of the model race for the commit.
    crate::fault::abort_at("before-publish");
    if crate::fault::armed("slow-publish") {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let published = match write {
        None => merge_files(ctx, table, url, adds, &model.rendered.config.unique_key, schema, props).await,
        Some(write) => crate::storage::commit_write(table, write, props).await.map_err(delta_err(target)),
    };
    published.map_err(|e| match e {
        TransformError::Delta { source, .. } if crate::storage::is_conflict(&source) => {
            TransformError::Concurrent { target: target.clone() }
        }
        other => other,
    })
}

/// The output schema with the sidecar's column descriptions as Delta column comments (field metadata
/// `comment`, shown by Spark, Trino and Databricks).
fn documented(schema: &SchemaRef, model: &Model) -> SchemaRef {
    let Some(side) = &model.loaded.sidecar else { return schema.clone() };
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| match side.columns.get(f.name().as_str()).and_then(|d| d.description.as_ref()) {
            Some(desc) => {
                let mut metadata = f.metadata().clone();
                metadata.insert("comment".to_string(), desc.clone());
                Arc::new(f.as_ref().clone().with_metadata(metadata))
            }
            None => f.clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The model's result as published: its SQL, small-cell suppression for gold, types Delta stores.
pub async fn build_frame(
    lh: &Lakehouse,
    ctx: &SessionContext,
    model: &Model,
    sql: &str,
) -> Result<DataFrame, TransformError> {
    publishable(lh, model, crate::session::sql(ctx, sql).await.map_err(sql_err)?)
}

/// A planned model as published: small-cell suppression for gold, types Delta stores.
fn publishable(lh: &Lakehouse, model: &Model, mut df: DataFrame) -> Result<DataFrame, TransformError> {
    if let Some(sc) = model.loaded.sidecar.as_ref().and_then(|s| s.small_cells.as_ref())
        && let Some(count) = &sc.count
    {
        df = suppress(df, count, &sc.measures, lh.project.file.privacy.min_group_size)?;
    }
    delta_compatible(df)
}

/// The SHA-256 of rendered SQL, as recorded in each run's commit metadata.
pub fn sql_hash(sql: &str) -> String {
    hash(sql)
}

/// Rows as display strings (columns joined by a unit separator), for order-independent comparisons.
pub fn row_strings(batches: Vec<arrow::array::RecordBatch>) -> Vec<String> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let opts = FormatOptions::default().with_null("∅");
    let mut out = Vec::new();
    for b in &batches {
        let fmts: Vec<_> = b.columns().iter().filter_map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).ok()).collect();
        for r in 0..b.num_rows() {
            out.push(fmts.iter().map(|f| f.value(r).to_string()).collect::<Vec<_>>().join("\u{1f}"));
        }
    }
    out
}

/// Small-cell suppression: the count and measures of cells below `k` become null, and `suppressed` says so.
fn suppress(df: DataFrame, count: &str, measures: &[String], k: u32) -> Result<DataFrame, TransformError> {
    let small = col(count).lt(lit(i64::from(k))).or(col(count).is_null());
    let mut exprs: Vec<Expr> = Vec::new();
    for f in df.schema().fields() {
        let name = f.name();
        if name == count || measures.iter().any(|m| m == name) {
            let e = when(small.clone(), lit(datafusion::scalar::ScalarValue::Null))
                .otherwise(col(name))
                .map_err(sql_err)?;
            exprs.push(cast(e, f.data_type().clone()).alias(name));
        } else {
            exprs.push(col(name));
        }
    }
    exprs.push(small.alias("suppressed"));
    df.select(exprs).map_err(sql_err)
}

/// Casts the types Delta does not store (string and binary views, unsigned integers, nanosecond timestamps)
/// to the ones it does.
fn delta_compatible(df: DataFrame) -> Result<DataFrame, TransformError> {
    let mut changed = false;
    let exprs: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let to = match f.data_type() {
                DataType::Utf8View | DataType::LargeUtf8 => Some(DataType::Utf8),
                DataType::BinaryView | DataType::LargeBinary => Some(DataType::Binary),
                DataType::UInt8 | DataType::UInt16 => Some(DataType::Int32),
                DataType::UInt32 | DataType::UInt64 => Some(DataType::Int64),
                DataType::Timestamp(TimeUnit::Nanosecond | TimeUnit::Millisecond | TimeUnit::Second, tz) => {
                    Some(DataType::Timestamp(TimeUnit::Microsecond, tz.clone()))
                }
                _ => None,
            };
            match to {
                Some(t) => {
                    changed = true;
                    cast(col(f.name()), t).alias(f.name())
                }
                None => col(f.name()),
            }
        })
        .collect();
    if !changed {
        return Ok(df);
    }
    df.select(exprs).map_err(sql_err)
}

/// `None` when the table has the same columns as `schema`, else a description of the change.
fn schema_change(table: &DeltaTable, schema: &SchemaRef, target: &str) -> Result<Option<String>, TransformError> {
    let found = table.snapshot().map_err(delta_err(target))?.schema();
    let declared: StructType = schema.as_ref().try_into_kernel().map_err(|e| delta_err(target)(e.into()))?;
    let show = |s: &StructType| s.fields().map(|f| format!("{} {}", f.name(), f.data_type())).collect::<Vec<_>>();
    let (a, b) = (show(&found), show(&declared));
    Ok((a != b).then(|| format!("table has ({}), the model now returns ({})", a.join(", "), b.join(", "))))
}

fn file_urls(url: &Url, adds: &[Add]) -> Vec<String> {
    adds.iter().filter_map(|a| url.join(&a.path).ok()).map(|u| u.to_string()).collect()
}

/// Registers the written, uncommitted files as `name`.
async fn register_files(
    ctx: &SessionContext,
    name: &str,
    url: &Url,
    adds: &[Add],
    schema: &SchemaRef,
) -> Result<(), TransformError> {
    let files = file_urls(url, adds);
    let df = if files.is_empty() {
        ctx.read_table(Arc::new(MemTable::try_new(schema.clone(), vec![vec![]]).map_err(sql_err)?)).map_err(sql_err)?
    } else {
        let options = ParquetReadOptions::default().schema(schema.as_ref());
        ctx.read_parquet(files, options).await.map_err(sql_err)?
    };
    ctx.register_table(name, df.into_view()).map_err(sql_err)?;
    Ok(())
}

/// Runs the audits on the table as it will be after the commit: the new files, plus the current table `this`
/// when appending.
async fn audit(
    ctx: &SessionContext,
    url: &Url,
    adds: &[Add],
    schema: &SchemaRef,
    append_to: Option<&str>,
    tests: &[AuditTest],
) -> Result<Vec<AuditOutcome>, TransformError> {
    register_files(ctx, "__new", url, adds, schema).await?;
    let subject = match append_to {
        Some(this) => format!("(SELECT * FROM __new UNION ALL SELECT * FROM {this}) AS t"),
        None => "__new AS t".to_string(),
    };
    let mut out = Vec::new();
    for test in tests {
        let sql = audit_sql(test, &subject);
        let value = scalar_u64(ctx, &sql).await.map_err(|e| match e {
            TransformError::Sql(msg) => TransformError::Sql(format!("audit {}: {msg}", test.label())),
            other => other,
        })?;
        let (failing, passed) = match test {
            AuditTest::RowCount { min, max, .. } => {
                let ok = min.is_none_or(|m| value >= m) && max.is_none_or(|m| value <= m);
                (if ok { 0 } else { value }, ok)
            }
            _ => (value, value == 0),
        };
        if !passed {
            tracing::warn!(audit = %test.label(), failing, severity = ?test.severity(), "audit failed");
        }
        out.push(AuditOutcome { label: test.label(), severity: test.severity(), failing, passed });
    }
    ctx.deregister_table("__new").map_err(sql_err)?;
    Ok(out)
}

/// The query counting the rows of `subject` that fail `test` (for `row_count`: all rows).
pub(crate) fn audit_sql(test: &AuditTest, subject: &str) -> String {
    let q = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
    let s = |v: &str| format!("'{}'", v.replace('\'', "''"));
    match test {
        AuditTest::NotNull { columns, .. } => format!(
            "SELECT count(*) AS n FROM {subject} WHERE {}",
            columns.iter().map(|c| format!("{} IS NULL", q(c))).collect::<Vec<_>>().join(" OR ")
        ),
        AuditTest::Unique { columns, .. } => {
            let cols = columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
            format!(
                "SELECT coalesce(sum(n), 0) AS n FROM (SELECT count(*) AS n FROM {subject} GROUP BY {cols} HAVING count(*) > 1)"
            )
        }
        AuditTest::AcceptedValues { column, values, .. } => format!(
            "SELECT count(*) AS n FROM {subject} WHERE {c} IS NOT NULL AND CAST({c} AS VARCHAR) NOT IN ({})",
            values.iter().map(|v| s(v)).collect::<Vec<_>>().join(", "),
            c = q(column)
        ),
        AuditTest::Relationships { column, to, field, .. } => format!(
            "SELECT count(*) AS n FROM {subject} WHERE {c} IS NOT NULL AND {c} NOT IN (SELECT {f} FROM {to} WHERE {f} IS NOT NULL)",
            c = q(column),
            f = q(field)
        ),
        AuditTest::Expression { sql, .. } => {
            format!("SELECT count(*) AS n FROM {subject} WHERE NOT coalesce(({sql}), false)")
        }
        AuditTest::RowCount { .. } => format!("SELECT count(*) AS n FROM {subject}"),
    }
}

async fn scalar_u64(ctx: &SessionContext, sql: &str) -> Result<u64, TransformError> {
    let df = crate::session::sql(ctx, sql).await.map_err(sql_err)?;
    crate::storage::rows::count(df).await.map_err(|e| match e {
        crate::storage::rows::RowsError::Query(e) => sql_err(e),
        other => TransformError::Internal(other.to_string()),
    })
}

/// Merges the written files into the table on `keys`: matching rows are replaced, others inserted.
async fn merge_files(
    ctx: &SessionContext,
    table: &DeltaTable,
    url: &Url,
    adds: &[Add],
    keys: &[String],
    schema: &SchemaRef,
    props: CommitProperties,
) -> Result<u64, TransformError> {
    let target = table.table_url().to_string();
    if adds.is_empty() {
        // Nothing new: still record the input versions read.
        return crate::storage::commit_write(table, Write::Append(Vec::new()), props).await.map_err(delta_err(&target));
    }
    register_files(ctx, "__incoming", url, adds, schema).await?;
    let source = ctx.table("__incoming").await.map_err(sql_err)?;
    crate::storage::merge_on_keys(table, source, keys, props).await.map_err(delta_err(&target))
}

/// The Delta application-transaction id of a model's runs.
pub fn app_id(target: &str) -> String {
    format!("lakehouse/transform/{target}")
}
