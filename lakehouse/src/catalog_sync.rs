//! The catalog database kept up to date from the lake: the tables and their columns, the runs recorded in the
//! commit metadata of every table, their inputs (table versions and files), the run attempts of `system.runs`
//! and the models' column lineage. The lake is the source of truth: the catalog can be deleted and rebuilt
//! ([`rebuild_catalog`]); after each command only what changed since its last update is read ([`sync_catalog`]).
//! [`catalog_batches`] gives its tables to `lakehouse sql` as `catalog.*`.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use catalog::{AttemptRow, ColumnLineageRow, ColumnRow, LineageRow, RunCommit, RunRow, Snapshot, TableRow};
use deltalake::DeltaTable;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Lakehouse;
use crate::session::{LazySchema, OpenTable};
use crate::storage::rows;
use crate::transform::Plan;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("catalog: {0}")]
    Catalog(#[from] catalog::CatalogError),
    /// Reading the lake failed (the message names the table).
    #[error("{0}")]
    Lake(String),
}

impl SyncError {
    /// A store that cannot be reached or a catalog URL to fix is the user's to repair.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Catalog(catalog::CatalogError::Url(_) | catalog::CatalogError::Connect { .. }) => true,
            Self::Catalog(_) => false,
            Self::Lake(_) => false,
        }
    }
}

fn lake(e: impl std::fmt::Display) -> SyncError {
    SyncError::Lake(e.to_string())
}

/// The project's catalog URL with a relative SQLite path made absolute (against the project directory).
pub fn catalog_url(lh: &Lakehouse) -> String {
    let url = &lh.project.file.catalog;
    match url.strip_prefix("sqlite://") {
        Some(path) if !std::path::Path::new(path).is_absolute() => {
            format!("sqlite://{}", lh.project.dir.join(path.trim_start_matches("./")).display())
        }
        _ => url.clone(),
    }
}

/// Rebuilds the catalog database from the lake alone.
pub async fn rebuild_catalog(lh: &Lakehouse, plan: &Plan) -> Result<Snapshot, SyncError> {
    let (snapshot, _) = snapshot(lh, plan, &Indexed::default(), None).await?;
    let catalog = catalog::Catalog::open(&catalog_url(lh)).await?;
    catalog.replace_all(&snapshot).await?;
    Ok(snapshot)
}

/// Brings the catalog up to date: only the table versions written since its last update are read, and a table
/// whose version did not move is not opened (a new catalog is built in full).
pub async fn sync_catalog(lh: &Lakehouse, plan: &Plan) -> Result<(), SyncError> {
    let catalog = catalog::Catalog::open(&catalog_url(lh)).await?;
    let (tables, columns) = catalog.indexed().await?;
    let indexed = Indexed::new(tables, columns);
    // Attempts are only appended: read those from the latest one indexed on (it included).
    let last = if indexed.versions.is_empty() { None } else { catalog.last_attempt().await? };
    let since = last.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.to_utc());
    let (delta, rewritten) = snapshot(lh, plan, &indexed, since).await?;
    if indexed.versions.is_empty() {
        catalog.replace_all(&delta).await?;
    } else {
        catalog.update(&delta, &rewritten, since.and(last.as_deref())).await?;
    }
    Ok(())
}

/// Updates the catalog after a command; a failure is a warning (the lake stays the source of truth).
pub async fn sync_catalog_quietly(lh: &Lakehouse, plan: &Plan) {
    if let Err(e) = sync_catalog(lh, plan).await {
        tracing::warn!(error = %e, "could not update the catalog (`lakehouse catalog rebuild` retries)");
    }
}

/// What the catalog holds of each table: the version it was indexed at and its stored columns (name, type).
#[derive(Debug, Default)]
struct Indexed {
    versions: BTreeMap<String, i64>,
    columns: BTreeMap<String, Vec<(String, String)>>,
}

impl Indexed {
    fn new(tables: Vec<TableRow>, mut columns: Vec<ColumnRow>) -> Self {
        columns.sort_by_key(|c| c.position);
        let mut by_table: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for c in columns {
            by_table.entry(c.table_name).or_default().push((c.name, c.data_type));
        }
        Self { versions: tables.into_iter().map(|t| (t.name, t.version)).collect(), columns: by_table }
    }
}

/// The catalog's content, built from the lake: tables, the runs recorded in their commits (after the versions
/// `indexed`, all when it is empty), the inputs of each run, the run attempts since `attempts_since`, and the
/// models' column lineage. A table still at its indexed version is not opened: its columns are those indexed
/// (their privacy class and description are read again from the project). Also returns the tables whose
/// versions went back (recreated), whose runs must be indexed again from the start.
async fn snapshot(
    lh: &Lakehouse,
    plan: &Plan,
    indexed: &Indexed,
    attempts_since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(Snapshot, Vec<String>), SyncError> {
    let mut s = Snapshot::default();
    let mut rewritten = Vec::new();
    for (name, owner, description) in documented_tables(lh, plan) {
        let Some((layer, short)) = name.split_once('.') else { continue };
        let url = lh.warehouse.table_url(layer, short);
        let Some(listed) = lh.warehouse.latest_version(&url).await.map_err(lake)? else { continue };
        let was = indexed.versions.get(&name).copied();
        let (latest, stored) = match indexed.columns.get(&name) {
            Some(columns) if was == Some(listed as i64) => (listed as i64, columns.clone()),
            _ => {
                let Some(table) = lh.warehouse.open(&url).await.map_err(lake)? else { continue };
                let latest = table.version().unwrap_or(0) as i64;
                let from = match was {
                    Some(v) if v > latest => {
                        rewritten.push(name.clone());
                        0
                    }
                    Some(v) => (v + 1) as u64,
                    None => 0,
                };
                for (version, run) in runs_of_table(&table, from).await {
                    add_run(&mut s, &name, version as i64, &run);
                }
                let schema = table.snapshot().map_err(lake)?.schema();
                (latest, schema.fields().map(|f| (f.name().to_string(), f.data_type().to_string())).collect())
            }
        };
        s.columns.extend(column_rows(lh, plan, &name, stored));
        s.tables.push(TableRow {
            name: name.clone(),
            layer: layer.to_string(),
            location: url.to_string(),
            owner,
            description,
            version: latest,
        });
    }
    s.attempts = attempt_rows(lh, attempts_since).await?;
    s.column_lineage = column_lineage_rows(plan);
    s.sort();
    Ok((s, rewritten))
}

/// Every table the project declares (bronze tables of sources, silver and gold of models): name, owner,
/// description.
fn documented_tables(lh: &Lakehouse, plan: &Plan) -> Vec<(String, Option<String>, Option<String>)> {
    let sources = lh.project.sources.iter().flat_map(|src| {
        let m = &src.manifest;
        m.tables()
            .into_iter()
            .map(move |t| (format!("bronze.{}", t.name), Some(m.owner.to_string()), t.description.map(str::to_string)))
    });
    let models = plan
        .models
        .iter()
        .map(|(t, m)| (t.clone(), None, m.loaded.sidecar.as_ref().and_then(|s| s.description.clone())));
    sources.chain(models).collect()
}

/// A table's columns as stored (name, type), with the privacy class and description its manifest or sidecar
/// declares.
fn column_rows(lh: &Lakehouse, plan: &Plan, name: &str, stored: Vec<(String, String)>) -> Vec<ColumnRow> {
    let declared = lh.project.source_of(name).and_then(|src| src.manifest.table(name.strip_prefix("bronze.")?));
    let model = plan.models.get(name);
    stored
        .into_iter()
        .enumerate()
        .map(|(i, (column_name, data_type))| {
            let column = declared.as_ref().and_then(|t| t.column(&column_name));
            let privacy_class = column.map(|c| format!("{:?}", c.pii).to_lowercase());
            let description = column
                .and_then(|c| c.description.clone())
                .or_else(|| model?.loaded.sidecar.as_ref()?.columns.get(column_name.as_str())?.description.clone());
            ColumnRow {
                table_name: name.to_string(),
                position: i as i64 + 1,
                name: column_name,
                data_type,
                privacy_class,
                description,
            }
        })
        .collect()
}

/// Every run recorded in the commit metadata of a table from version `from` on: (version, run).
pub async fn runs_of_table(table: &DeltaTable, from: u64) -> Vec<(u64, RunCommit)> {
    let mut out = Vec::new();
    for v in from..=table.version().unwrap_or(0) {
        if let Some(run) = crate::storage::run_at(table, v).await {
            out.push((v, run));
        }
    }
    out
}

/// A run that wrote `target` at `version`, and its inputs: the table versions it read, the files it took.
fn add_run(s: &mut Snapshot, target: &str, version: i64, run: &RunCommit) {
    s.runs.push(RunRow {
        target: target.to_string(),
        output_version: version,
        run_id: run.run_id.0.clone(),
        kind: run.kind.as_str().to_string(),
        started_at: run.started_at.to_rfc3339(),
        batch: run.batch,
        manifest_hash: run.manifest_hash.clone(),
        sql_hash: run.sql_hash.clone(),
        mode: run.mode.clone(),
        sql: run.sql.clone(),
        records_read: run.records.read as i64,
        records_written: run.records.written as i64,
        records_quarantined: run.records.quarantined as i64,
        records_superseded: run.records.superseded as i64,
    });
    let line = |input: String, input_version| LineageRow {
        target: target.to_string(),
        output_version: version,
        input,
        input_version,
    };
    s.lineage.extend(run.read.iter().map(|r| line(r.table.clone(), Some(r.version as i64))));
    s.lineage.extend(run.inputs.iter().map(|f| line(format!("{}{}", f.location, f.path), None)));
}

/// The run attempts of `system.runs` that started at or after `since` (all when `None`).
async fn attempt_rows(
    lh: &Lakehouse,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Vec<AttemptRow>, SyncError> {
    let records = crate::runlog::read_since(&lh.warehouse, since).await.map_err(lake)?;
    Ok(records
        .into_iter()
        .map(|r| AttemptRow {
            started_at: r.started_at.to_rfc3339(),
            run_id: r.run_id,
            target: r.target,
            kind: r.kind,
            trigger: r.trigger,
            attempt: i64::from(r.attempt),
            ended_at: r.ended_at.to_rfc3339(),
            status: r.status.as_str().to_string(),
            error: r.error,
            rows: r.rows.map(|v| v as i64),
            version: r.version.map(|v| v as i64),
        })
        .collect())
}

/// The models' column lineage: each output column and the input columns it depends on (`output_column`
/// `None`: columns read by filters, joins and groupings).
fn column_lineage_rows(plan: &Plan) -> Vec<ColumnLineageRow> {
    let mut out = Vec::new();
    for (table, l) in &plan.lineage {
        for (column, sources) in &l.columns {
            out.extend(sources.iter().map(|src| ColumnLineageRow {
                output_table: table.clone(),
                output_column: Some(column.clone()),
                input_table: src.table.clone(),
                input_column: src.column.clone(),
                kind: src.kind.as_str().to_string(),
                masked: src.masked,
            }));
        }
        out.extend(l.indirect.iter().map(|(kind, t, c)| ColumnLineageRow {
            output_table: table.clone(),
            output_column: None,
            input_table: t.clone(),
            input_column: c.clone(),
            kind: kind.as_str().to_string(),
            masked: false,
        }));
    }
    out
}

/// The catalog's tables as `catalog.tables`, `columns`, `runs`, `attempts`, `lineage`, `column_lineage`: the
/// catalog database is read once, when a statement first names one of them (and filled from the lake when it is
/// still empty).
pub fn serve_catalog(ctx: &SessionContext, lh: Arc<Lakehouse>, visible: &(dyn Fn(&str) -> bool + Sync)) {
    type Views = Vec<(&'static str, RecordBatch)>;
    let views: Arc<tokio::sync::OnceCell<Views>> = Default::default();
    let open: OpenTable = Arc::new(move |name: String| {
        let (lh, views) = (lh.clone(), views.clone());
        Box::pin(async move {
            let external = |e: anyhow::Error| DataFusionError::External(e.into());
            let views = views.get_or_try_init(|| read_catalog(&lh)).await.map_err(external)?;
            let Some((_, batch)) = views.iter().find(|(n, _)| *n == name) else {
                return Ok(None);
            };
            let mem = datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch.clone()]])?;
            Ok(Some(Arc::new(mem) as Arc<dyn datafusion::catalog::TableProvider>))
        })
    });
    let names = CATALOG_VIEWS.iter().filter(|v| visible(&format!("catalog.{v}")));
    LazySchema::new(names.map(|v| v.to_string()).collect(), open).register_in(ctx, "catalog");
}

async fn read_catalog(lh: &Lakehouse) -> anyhow::Result<Vec<(&'static str, RecordBatch)>> {
    let db = catalog::Catalog::open(&catalog_url(lh)).await?;
    let mut snapshot = db.dump().await?;
    if snapshot.tables.is_empty() {
        let plan = Plan::quiet(&lh.project).await.ok_or_else(|| {
            anyhow::anyhow!("the catalog is empty and the models do not plan: run `lakehouse validate`")
        })?;
        sync_catalog(lh, &plan).await?;
        snapshot = db.dump().await?;
    }
    Ok(catalog_batches(&snapshot)?)
}

/// The catalog database's tables as SQL sees them, in the `catalog` schema ([`catalog_batches`]).
pub const CATALOG_VIEWS: [&str; 6] = ["tables", "columns", "runs", "attempts", "lineage", "column_lineage"];

/// The catalog database's tables as Arrow batches named as in [`CATALOG_VIEWS`], for `lakehouse sql`
/// (`catalog.tables`, …); each keeps its column types when it has no row.
pub fn catalog_batches(s: &Snapshot) -> Result<Vec<(&'static str, RecordBatch)>, rows::RowsError> {
    fn table<T: Serialize + DeserializeOwned>(
        name: &'static str,
        rows: &[T],
    ) -> Result<(&'static str, RecordBatch), rows::RowsError> {
        Ok((name, rows::to_batch(&rows::schema_of::<T>()?, rows)?))
    }
    let [tables, columns, runs, attempts, lineage, column_lineage] = CATALOG_VIEWS;
    Ok(vec![
        table(tables, &s.tables)?,
        table(columns, &s.columns)?,
        table(runs, &s.runs)?,
        table(attempts, &s.attempts)?,
        table(lineage, &s.lineage)?,
        table(column_lineage, &s.column_lineage)?,
    ])
}
