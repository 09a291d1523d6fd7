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
use catalog::lineage::EdgeKind;

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

impl AuditError {
    /// Everything but a failure to read the lake is a question the lake cannot answer as asked.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, Self::Lake(_))
    }
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
    if table.starts_with("bronze.") {
        if let Some(src) = lh.project.source_of(table) {
            // A child table's rows come with its source's batches: the source's ledger lists them.
            let name = src.manifest.name.as_str();
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
    use datafusion::prelude::{ident, lit};
    let filter = if replace { ident("batch").eq(lit(batch)) } else { ident("batch").lt_eq(lit(batch)) };
    let rows: Vec<crate::ingest::LedgerRow> =
        crate::storage::rows::read_table(&ledger, Some(filter), &["batch", "path"]).await.map_err(lake)?;
    let out = rows
        .iter()
        .map(|r| {
            format!(
                "{}{} (batch {}: {} read, {} written, {} quarantined)",
                r.location, r.path, r.batch, r.records_read, r.records_written, r.records_quarantined
            )
        })
        .collect();
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
            run.kind.as_str(),
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
    let ctx = crate::session::new_session(crate::session::Functions::Keyed(lh.keys.clone()), &lh.project.file);
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
