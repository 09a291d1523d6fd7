//! Auditor commands, answered from the lake itself (Delta commit metadata, file ledgers) and the models' column
//! lineage:
//!
//! - [`trace`]: where a table version (or one of its columns) comes from — down to the exact input Delta
//!   versions, the runs, the source manifests, the partners and the files they sent;
//! - [`reproduce`]: re-run a model on the input versions a table version was built from (time travel) and
//!   compare with that version.

use std::collections::{BTreeMap, BTreeSet};

use catalog::RunCommit;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use serde::Serialize;

use crate::Lakehouse;
use crate::transform::Plan;
use crate::transform::lineage::EdgeKind;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("no table `{0}`: name it `layer.name` (bronze.x, silver.y, gold.z)")]
    UnknownTable(String),
    #[error("{table} has no version {version} (latest: {latest})")]
    NoVersion { table: String, version: u64, latest: u64 },
    #[error("{0} is not built by a model: only silver and gold tables can be reproduced")]
    NotAModel(String),
    #[error("{table} version {version} was not written by a transform run (no run metadata in its commit)")]
    NoRun { table: String, version: u64 },
    #[error("{0}")]
    Lake(String),
}

fn lake(e: impl std::fmt::Display) -> AuditError {
    AuditError::Lake(e.to_string())
}

/// A table version in a lineage tree.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub table: String,
    pub version: u64,
    /// The run that wrote this version.
    pub run: Option<RunCommit>,
    /// The manifest or model file that defines the table.
    pub definition: Option<String>,
    pub partner: Option<String>,
    pub agreement: Option<String>,
    /// Column lineage of the traced columns: (column, sources as `table.column (kind[, masked])`).
    pub columns: Vec<(String, Vec<String>)>,
    /// Files whose records this version holds (bronze), as `path (batch b: read/written/quarantined)`.
    pub files: Vec<String>,
    pub notes: Vec<String>,
    pub inputs: Vec<Node>,
}

async fn open_at(lh: &Lakehouse, table: &str, version: Option<u64>) -> Result<DeltaTable, AuditError> {
    if !table.contains('.') {
        return Err(AuditError::UnknownTable(table.to_string()));
    }
    let mut t =
        lh.warehouse.open_table(table).await.map_err(lake)?.ok_or_else(|| AuditError::UnknownTable(table.into()))?;
    if let Some(v) = version {
        let latest = t.version().unwrap_or(0);
        if v > latest {
            return Err(AuditError::NoVersion { table: table.into(), version: v, latest });
        }
        t.load_version(v).await.map_err(lake)?;
    }
    Ok(t)
}

/// Traces `table` at `version` (latest when `None`); with `columns`, also the column lineage of those columns.
pub async fn trace(
    lh: &Lakehouse,
    plan: &Plan,
    table: &str,
    version: Option<u64>,
    columns: Option<BTreeSet<String>>,
) -> Result<Node, AuditError> {
    let t = open_at(lh, table, version).await?;
    let version = t.version().unwrap_or(0);
    let run = crate::storage::run_of(&t).await;
    let mut node = Node {
        table: table.to_string(),
        version,
        run: run.clone(),
        definition: None,
        partner: None,
        agreement: None,
        columns: Vec::new(),
        files: Vec::new(),
        notes: Vec::new(),
        inputs: Vec::new(),
    };
    if let Some(name) = table.strip_prefix("bronze.") {
        if let Some(src) = lh.project.sources.iter().find(|s| s.manifest.name.as_str() == name) {
            node.definition = Some(format!("{} (sha256 {})", src.path.display(), &src.content_hash[..12]));
            let owner = lh.project.file.partners.iter().find(|p| p.id == src.manifest.owner);
            node.partner = Some(owner.map_or(src.manifest.owner.to_string(), |p| format!("{} ({})", p.id, p.name)));
            node.agreement = src.manifest.agreement.clone();
            let replace = matches!(src.manifest.load.mode, crate::manifest::LoadMode::Replace);
            match &run {
                Some(r) if r.kind == catalog::RunKind::Retention => {
                    node.notes.push(format!("retention: {}", r.mode.as_deref().unwrap_or("rows deleted")));
                    node.notes.push("the files below are every batch taken; rows past retention are gone".into());
                    node.files = ledger_files(lh, name, i64::MAX, false).await?;
                }
                Some(r) => node.files = ledger_files(lh, name, r.batch, replace).await?,
                None => {}
            }
        }
        if let Some(cols) = &columns {
            node.columns =
                cols.iter().map(|c| (c.clone(), vec!["(landed from the partner's files)".to_string()])).collect();
        }
        return Ok(node);
    }
    let Some(model) = plan.models.get(table) else { return Err(AuditError::UnknownTable(table.to_string())) };
    node.definition = Some(model.loaded.path.display().to_string());
    let Some(run) = run else {
        node.notes.push("no transform run wrote this version (the table was only created)".into());
        return Ok(node);
    };
    if run.sql_hash.as_deref() != Some(crate::transform::run::sql_hash(&model.rendered.sql).as_str()) {
        node.notes.push("the model's SQL has changed since this version; column lineage is the current SQL's".into());
    }
    // Which input columns to follow.
    let mut next: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if let (Some(cols), Some(lineage)) = (&columns, plan.lineage.get(table)) {
        for c in cols {
            let Some((_, sources)) = lineage.columns.iter().find(|(n, _)| n == c) else {
                node.notes.push(format!("no column `{c}` in the current model"));
                continue;
            };
            let shown = sources
                .iter()
                .map(|s| {
                    let kind = match s.kind {
                        EdgeKind::Identity => "identity",
                        EdgeKind::Transformation => "transformation",
                        EdgeKind::Aggregation => "aggregation",
                    };
                    next.entry(s.table.clone()).or_default().insert(s.column.clone());
                    let what = if s.column == "*" {
                        format!("the rows of {}", s.table)
                    } else {
                        format!("{}.{}", s.table, s.column)
                    };
                    format!("{what} ({kind}{})", if s.masked { ", masked" } else { "" })
                })
                .collect();
            node.columns.push((c.clone(), shown));
        }
    }
    for input in &run.read {
        if columns.is_some() && !next.contains_key(&input.table) {
            continue;
        }
        // Following `*` (the rows) means following the whole input table.
        let cols =
            columns.as_ref().map(|_| next.get(&input.table).cloned().unwrap_or_default()).filter(|c| !c.contains("*"));
        // Boxed: the future is recursive.
        node.inputs.push(Box::pin(trace(lh, plan, &input.table, Some(input.version), cols)).await?);
    }
    Ok(node)
}

/// The ledger's files of batches up to `batch` (only `batch` itself for a `replace` source).
async fn ledger_files(lh: &Lakehouse, source: &str, batch: i64, replace: bool) -> Result<Vec<String>, AuditError> {
    let url = lh.warehouse.table_url("bronze", &format!("{source}__files"));
    let Some(ledger) = lh.warehouse.open(&url).await.map_err(lake)? else { return Ok(Vec::new()) };
    let ctx = SessionContext::new();
    ledger.update_datafusion_session(&ctx.state()).map_err(lake)?;
    ctx.register_table("ledger", ledger.table_provider().await.map_err(lake)?).map_err(lake)?;
    let cond = if replace { format!("batch = {batch}") } else { format!("batch <= {batch}") };
    let sql = format!(
        "SELECT CAST(location || path AS VARCHAR), batch, records_read, records_written, records_quarantined \
         FROM ledger WHERE {cond} ORDER BY batch, path"
    );
    let batches = crate::session::sql(&ctx, &sql).await.map_err(lake)?.collect().await.map_err(lake)?;
    let mut out = Vec::new();
    for b in &batches {
        use arrow::array::AsArray;
        let cast = |i| arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).map_err(lake);
        let cols = [cast(0)?, cast(1)?, cast(2)?, cast(3)?, cast(4)?];
        for r in 0..b.num_rows() {
            let v = |i: usize| cols[i].as_string::<i32>().value(r).to_string();
            out.push(format!("{} (batch {}: {} read, {} written, {} quarantined)", v(0), v(1), v(2), v(3), v(4)));
        }
    }
    Ok(out)
}

/// The tree as indented text.
pub fn render_text(node: &Node) -> String {
    let mut out = String::new();
    text(node, "", true, true, &mut out);
    out
}

fn text(node: &Node, prefix: &str, last: bool, root: bool, out: &mut String) {
    let (branch, child_prefix) = if root {
        (String::new(), String::new())
    } else if last {
        (format!("{prefix}└─ "), format!("{prefix}   "))
    } else {
        (format!("{prefix}├─ "), format!("{prefix}│  "))
    };
    let mut head = format!("{branch}{} @ v{}", node.table, node.version);
    if let Some(run) = &node.run {
        head.push_str(&format!(
            "  run {} ({}, {}",
            run.run_id,
            serde_json::to_value(run.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            run.started_at.format("%Y-%m-%d %H:%M:%S UTC")
        ));
        if let Some(mode) = &run.mode {
            head.push_str(&format!(", {mode}"));
        }
        if run.kind == catalog::RunKind::Ingest {
            head.push_str(&format!(", batch {}", run.batch));
        }
        head.push(')');
    }
    out.push_str(&head);
    out.push('\n');
    let detail = format!("{child_prefix}{}", if node.inputs.is_empty() { "   " } else { "│  " });
    let detail =
        if root { if node.inputs.is_empty() { "   ".to_string() } else { "│  ".to_string() } } else { detail };
    if let Some(d) = &node.definition {
        out.push_str(&format!("{detail}defined by {d}\n"));
    }
    if let Some(p) = &node.partner {
        out.push_str(&format!("{detail}partner {p}"));
        if let Some(a) = &node.agreement {
            out.push_str(&format!(", agreement {a}"));
        }
        out.push('\n');
    }
    for (c, sources) in &node.columns {
        out.push_str(&format!("{detail}column {c} ← {}\n", sources.join(", ")));
    }
    const SHOWN: usize = 20;
    for f in node.files.iter().take(SHOWN) {
        out.push_str(&format!("{detail}file {f}\n"));
    }
    if node.files.len() > SHOWN {
        out.push_str(&format!(
            "{detail}… and {} more files (--format json lists them all)\n",
            node.files.len() - SHOWN
        ));
    }
    for n in &node.notes {
        out.push_str(&format!("{detail}note: {n}\n"));
    }
    for (i, input) in node.inputs.iter().enumerate() {
        text(input, &child_prefix, i + 1 == node.inputs.len(), false, out);
    }
}

fn id(node: &Node) -> String {
    format!("{}_v{}", node.table.replace('.', "_"), node.version)
}

fn edges(node: &Node, out: &mut BTreeSet<(String, String, String, String)>) {
    for input in &node.inputs {
        out.insert((
            id(input),
            format!("{} v{}", input.table, input.version),
            id(node),
            format!("{} v{}", node.table, node.version),
        ));
        edges(input, out);
    }
}

/// The tree as a Mermaid flowchart (inputs → outputs).
pub fn render_mermaid(node: &Node) -> String {
    let mut e = BTreeSet::new();
    edges(node, &mut e);
    let mut out = String::from("flowchart LR\n");
    if e.is_empty() {
        out.push_str(&format!("  {}[\"{} v{}\"]\n", id(node), node.table, node.version));
    }
    for (a, al, b, bl) in e {
        out.push_str(&format!("  {a}[\"{al}\"] --> {b}[\"{bl}\"]\n"));
    }
    out
}

/// The tree as a Graphviz digraph (inputs → outputs).
pub fn render_dot(node: &Node) -> String {
    let mut e = BTreeSet::new();
    edges(node, &mut e);
    let mut out = String::from("digraph lineage {\n  rankdir=LR;\n");
    out.push_str(&format!("  {} [label=\"{} v{}\"];\n", id(node), node.table, node.version));
    for (a, al, b, _) in e {
        out.push_str(&format!("  {a} [label=\"{al}\"];\n  {a} -> {b};\n"));
    }
    out.push_str("}\n");
    out
}

/// The outcome of [`reproduce`].
#[derive(Debug, Clone)]
pub struct Reproduction {
    pub table: String,
    pub version: u64,
    pub inputs: Vec<catalog::TableVersion>,
    pub rows: usize,
    pub only_in_table: usize,
    pub only_in_reproduction: usize,
    pub sql_changed: bool,
}

impl Reproduction {
    pub fn identical(&self) -> bool {
        self.only_in_table == 0 && self.only_in_reproduction == 0
    }
}

/// Re-runs the model of `table` on the input versions its `version` read, and compares the rows (as a
/// multiset) with that version.
pub async fn reproduce(lh: &Lakehouse, plan: &Plan, table: &str, version: u64) -> Result<Reproduction, AuditError> {
    let model = plan.models.get(table).ok_or_else(|| AuditError::NotAModel(table.to_string()))?;
    let t = open_at(lh, table, Some(version)).await?;
    let run = crate::storage::run_of(&t).await.ok_or(AuditError::NoRun { table: table.into(), version })?;
    let domains: Vec<String> = lh.project.file.privacy.domains.iter().map(|d| d.to_string()).collect();
    let ctx = crate::session::new_session(
        crate::session::Functions::Keyed(lh.keys.clone()),
        &domains,
        lh.project.file.timezone.0,
    );
    for input in &run.read {
        let it = open_at(lh, &input.table, Some(input.version)).await?;
        it.update_datafusion_session(&ctx.state()).map_err(lake)?;
        ctx.register_table(input.table.as_str(), it.table_provider().await.map_err(lake)?).map_err(lake)?;
    }
    let df = crate::transform::run::build_frame(lh, &ctx, model, &model.rendered.sql).await.map_err(lake)?;
    let reproduced = crate::transform::run::row_strings(df.collect().await.map_err(lake)?);
    let published = {
        let ctx = SessionContext::new();
        t.update_datafusion_session(&ctx.state()).map_err(lake)?;
        let df = ctx.read_table(t.table_provider().await.map_err(lake)?).map_err(lake)?;
        crate::transform::run::row_strings(df.collect().await.map_err(lake)?)
    };
    let mut counts: BTreeMap<&String, i64> = BTreeMap::new();
    for r in &published {
        *counts.entry(r).or_default() += 1;
    }
    for r in &reproduced {
        *counts.entry(r).or_default() -= 1;
    }
    let only_in_table = counts.values().filter(|c| **c > 0).map(|c| *c as usize).sum();
    let only_in_reproduction = counts.values().filter(|c| **c < 0).map(|c| (-*c) as usize).sum();
    Ok(Reproduction {
        table: table.to_string(),
        version,
        inputs: run.read.clone(),
        rows: published.len(),
        only_in_table,
        only_in_reproduction,
        sql_changed: run.sql_hash.as_deref() != Some(crate::transform::run::sql_hash(&model.rendered.sql).as_str()),
    })
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

/// The catalog's content, built from the lake: tables, the runs recorded in their commits (after the versions in
/// `indexed`, all when it is empty), the inputs of each run, and the models' column lineage. Also returns the
/// tables whose versions went back (recreated), whose runs must be indexed again from the start.
pub async fn snapshot(
    lh: &Lakehouse,
    plan: &Plan,
    indexed: &BTreeMap<String, i64>,
    attempts_since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(catalog::Snapshot, Vec<String>), AuditError> {
    let mut s = catalog::Snapshot::default();
    let mut rewritten = Vec::new();
    let mut names: Vec<(String, Option<String>, Option<String>)> = lh
        .project
        .sources
        .iter()
        .map(|src| {
            (
                format!("bronze.{}", src.manifest.name),
                Some(src.manifest.owner.to_string()),
                Some(src.manifest.description.clone()),
            )
        })
        .collect();
    for (t, m) in &plan.models {
        names.push((t.clone(), None, m.loaded.sidecar.as_ref().and_then(|s| s.description.clone())));
    }
    for (name, owner, description) in names {
        let Some((layer, short)) = name.split_once('.') else { continue };
        let url = lh.warehouse.table_url(layer, short);
        let Some(table) = lh.warehouse.open(&url).await.map_err(lake)? else { continue };
        let schema = table.snapshot().map_err(lake)?.schema();
        let source = lh.project.sources.iter().find(|src| format!("bronze.{}", src.manifest.name) == name);
        let model = plan.models.get(&name);
        for (i, f) in schema.fields().enumerate() {
            let declared = source.and_then(|src| src.manifest.columns.iter().find(|(n, _)| n.as_str() == f.name()));
            let privacy_class = declared.map(|(_, c)| format!("{:?}", c.pii).to_lowercase());
            let description = declared
                .and_then(|(_, c)| c.description.clone())
                .or_else(|| model?.loaded.sidecar.as_ref()?.columns.get(f.name().as_str())?.description.clone());
            s.columns.push(catalog::ColumnRow {
                table_name: name.clone(),
                position: i as i64 + 1,
                name: f.name().to_string(),
                data_type: f.data_type().to_string(),
                privacy_class,
                description,
            });
        }
        s.tables.push(catalog::TableRow {
            name: name.clone(),
            layer: layer.to_string(),
            location: url.to_string(),
            owner,
            description,
            version: table.version().unwrap_or(0) as i64,
        });
        let latest = table.version().unwrap_or(0) as i64;
        let from = match indexed.get(&name) {
            Some(v) if *v > latest => {
                rewritten.push(name.clone());
                0
            }
            Some(v) => (*v + 1) as u64,
            None => 0,
        };
        for (version, run) in runs_of_table(&table, from).await {
            let v = version as i64;
            s.runs.push(catalog::RunRow {
                target: name.clone(),
                output_version: v,
                run_id: run.run_id.0.clone(),
                kind: serde_json::to_value(run.kind)
                    .ok()
                    .and_then(|k| k.as_str().map(String::from))
                    .unwrap_or_default(),
                started_at: run.started_at.to_rfc3339(),
                batch: run.batch,
                manifest_hash: run.manifest_hash.clone(),
                sql_hash: run.sql_hash.clone(),
                mode: run.mode.clone(),
                sql: run.sql.clone(),
                records_read: run.records.read as i64,
                records_written: run.records.written as i64,
                records_quarantined: run.records.quarantined as i64,
            });
            for r in &run.read {
                s.lineage.push(catalog::LineageRow {
                    target: name.clone(),
                    output_version: v,
                    input: r.table.clone(),
                    input_version: Some(r.version as i64),
                });
            }
            for f in &run.inputs {
                s.lineage.push(catalog::LineageRow {
                    target: name.clone(),
                    output_version: v,
                    input: format!("{}{}", f.location, f.path),
                    input_version: None,
                });
            }
        }
    }
    for r in crate::runlog::read_since(&lh.warehouse, attempts_since).await.map_err(lake)? {
        s.attempts.push(catalog::AttemptRow {
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
        });
    }
    for (table, l) in &plan.lineage {
        for (column, sources) in &l.columns {
            for src in sources {
                s.column_lineage.push(catalog::ColumnLineageRow {
                    output_table: table.clone(),
                    output_column: Some(column.clone()),
                    input_table: src.table.clone(),
                    input_column: src.column.clone(),
                    kind: serde_json::to_value(src.kind)
                        .ok()
                        .and_then(|k| k.as_str().map(String::from))
                        .unwrap_or_default(),
                    masked: src.masked,
                });
            }
        }
        for (kind, t, c) in &l.indirect {
            s.column_lineage.push(catalog::ColumnLineageRow {
                output_table: table.clone(),
                output_column: None,
                input_table: t.clone(),
                input_column: c.clone(),
                kind: serde_json::to_value(kind).ok().and_then(|k| k.as_str().map(String::from)).unwrap_or_default(),
                masked: false,
            });
        }
    }
    s.sort();
    Ok((s, rewritten))
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
pub async fn rebuild_catalog(lh: &Lakehouse, plan: &Plan) -> Result<catalog::Snapshot, AuditError> {
    let (snapshot, _) = snapshot(lh, plan, &BTreeMap::new(), None).await?;
    let catalog = catalog::Catalog::open(&catalog_url(lh)).await.map_err(lake)?;
    catalog.replace_all(&snapshot).await.map_err(lake)?;
    Ok(snapshot)
}

/// Brings the catalog up to date: only the table versions written since its last update are read (a new
/// catalog is built in full).
pub async fn sync_catalog(lh: &Lakehouse, plan: &Plan) -> Result<(), AuditError> {
    let catalog = catalog::Catalog::open(&catalog_url(lh)).await.map_err(lake)?;
    let indexed = catalog.indexed_versions().await.map_err(lake)?;
    // Attempts are only appended: read those from the latest one indexed on (it included).
    let last = if indexed.is_empty() { None } else { catalog.last_attempt().await.map_err(lake)? };
    let since = last.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.to_utc());
    let (delta, rewritten) = snapshot(lh, plan, &indexed, since).await?;
    if indexed.is_empty() {
        catalog.replace_all(&delta).await.map_err(lake)?;
    } else {
        catalog.update(&delta, &rewritten, since.and(last.as_deref())).await.map_err(lake)?;
    }
    Ok(())
}

/// Updates the catalog after a command; a failure is a warning (the lake stays the source of truth).
pub async fn sync_catalog_quietly(lh: &Lakehouse, plan: &Plan) {
    if let Err(e) = sync_catalog(lh, plan).await {
        tracing::warn!(error = %e, "could not update the catalog (`lakehouse catalog rebuild` retries)");
    }
}

/// The catalog database's tables as Arrow batches, for `lakehouse sql` (`catalog.tables`, `catalog.columns`,
/// `catalog.runs`, `catalog.attempts`, `catalog.lineage`, `catalog.column_lineage`).
pub fn catalog_batches(s: &catalog::Snapshot) -> Result<Vec<(&'static str, arrow::array::RecordBatch)>, AuditError> {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    enum V {
        S(Option<String>),
        I(Option<i64>),
        B(bool),
    }
    fn batch(names: &[&str], rows: Vec<Vec<V>>) -> Result<RecordBatch, AuditError> {
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let kind = rows.first().map(|r| match r[i] {
                V::S(_) => 0,
                V::I(_) => 1,
                V::B(_) => 2,
            });
            let (dt, array): (DataType, ArrayRef) = match kind.unwrap_or(0) {
                1 => (
                    DataType::Int64,
                    Arc::new(Int64Array::from(
                        rows.iter().map(|r| if let V::I(v) = &r[i] { *v } else { None }).collect::<Vec<_>>(),
                    )),
                ),
                2 => (
                    DataType::Boolean,
                    Arc::new(BooleanArray::from(rows.iter().map(|r| matches!(r[i], V::B(true))).collect::<Vec<_>>())),
                ),
                _ => (
                    DataType::Utf8,
                    Arc::new(StringArray::from(
                        rows.iter().map(|r| if let V::S(v) = &r[i] { v.clone() } else { None }).collect::<Vec<_>>(),
                    )),
                ),
            };
            fields.push(Field::new(*name, dt, true));
            columns.push(array);
        }
        if rows.is_empty() {
            let schema =
                Arc::new(Schema::new(names.iter().map(|n| Field::new(*n, DataType::Utf8, true)).collect::<Vec<_>>()));
            return Ok(RecordBatch::new_empty(schema));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(lake)
    }
    let st = |v: &String| V::S(Some(v.clone()));
    let so = |v: &Option<String>| V::S(v.clone());
    Ok(vec![
        (
            "catalog.tables",
            batch(
                &["name", "layer", "location", "owner", "description", "version"],
                s.tables
                    .iter()
                    .map(|t| {
                        vec![
                            st(&t.name),
                            st(&t.layer),
                            st(&t.location),
                            so(&t.owner),
                            so(&t.description),
                            V::I(Some(t.version)),
                        ]
                    })
                    .collect(),
            )?,
        ),
        (
            "catalog.columns",
            batch(
                &["table_name", "position", "name", "data_type", "privacy_class", "description"],
                s.columns
                    .iter()
                    .map(|c| {
                        vec![
                            st(&c.table_name),
                            V::I(Some(c.position)),
                            st(&c.name),
                            st(&c.data_type),
                            so(&c.privacy_class),
                            so(&c.description),
                        ]
                    })
                    .collect(),
            )?,
        ),
        (
            "catalog.runs",
            batch(
                &[
                    "target",
                    "output_version",
                    "run_id",
                    "kind",
                    "started_at",
                    "batch",
                    "manifest_hash",
                    "sql_hash",
                    "mode",
                    "rendered_sql",
                    "records_read",
                    "records_written",
                    "records_quarantined",
                ],
                s.runs
                    .iter()
                    .map(|r| {
                        vec![
                            st(&r.target),
                            V::I(Some(r.output_version)),
                            st(&r.run_id),
                            st(&r.kind),
                            st(&r.started_at),
                            V::I(Some(r.batch)),
                            st(&r.manifest_hash),
                            so(&r.sql_hash),
                            so(&r.mode),
                            so(&r.sql),
                            V::I(Some(r.records_read)),
                            V::I(Some(r.records_written)),
                            V::I(Some(r.records_quarantined)),
                        ]
                    })
                    .collect(),
            )?,
        ),
        (
            "catalog.attempts",
            batch(
                &[
                    "started_at",
                    "run_id",
                    "target",
                    "kind",
                    "trigger",
                    "attempt",
                    "ended_at",
                    "status",
                    "error",
                    "rows",
                    "version",
                ],
                s.attempts
                    .iter()
                    .map(|a| {
                        vec![
                            st(&a.started_at),
                            st(&a.run_id),
                            st(&a.target),
                            st(&a.kind),
                            st(&a.trigger),
                            V::I(Some(a.attempt)),
                            st(&a.ended_at),
                            st(&a.status),
                            so(&a.error),
                            V::I(a.rows),
                            V::I(a.version),
                        ]
                    })
                    .collect(),
            )?,
        ),
        (
            "catalog.lineage",
            batch(
                &["target", "output_version", "input", "input_version"],
                s.lineage
                    .iter()
                    .map(|l| vec![st(&l.target), V::I(Some(l.output_version)), st(&l.input), V::I(l.input_version)])
                    .collect(),
            )?,
        ),
        (
            "catalog.column_lineage",
            batch(
                &["output_table", "output_column", "input_table", "input_column", "kind", "masked"],
                s.column_lineage
                    .iter()
                    .map(|c| {
                        vec![
                            st(&c.output_table),
                            so(&c.output_column),
                            st(&c.input_table),
                            st(&c.input_column),
                            st(&c.kind),
                            V::B(c.masked),
                        ]
                    })
                    .collect(),
            )?,
        ),
    ])
}
