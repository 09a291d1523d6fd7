//! `lineage` and `reproduce`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use lakehouse::audit;
use lakehouse::{KeyUse, Lakehouse, catalog_sync};
use serde::{Deserialize, Serialize};

use super::output::{OutputFormat, print_rows};
use super::{CliError, CmdResult, USER_ERROR, open_planned};
use crate::cli::LineageFormat;

pub async fn lineage(
    dir: &Path,
    target: &str,
    version: Option<u64>,
    format: LineageFormat,
    downstream: bool,
) -> CmdResult {
    let (lh, plan, _) = open_planned(dir, &[], KeyUse::ReadOnly).await?;
    if downstream {
        return downstream_of(&lh, &plan, target).await;
    }
    // `layer.name` or `layer.name.column`.
    let parts: Vec<&str> = target.splitn(3, '.').collect();
    let (table, columns) = match parts.as_slice() {
        [layer, name] => (format!("{layer}.{name}"), None),
        [layer, name, column] => (format!("{layer}.{name}"), Some(BTreeSet::from([column.to_string()]))),
        _ => return Err(CliError::User(format!("`{target}` is not `layer.name` or `layer.name.column`"))),
    };
    let node = audit::trace(&lh, &plan, &table, version, columns).await.map_err(CliError::of)?;
    let out = match format {
        LineageFormat::Text => audit::render_text(&node),
        LineageFormat::Json => serde_json::to_string_pretty(&node)? + "\n",
        LineageFormat::Mermaid => audit::render_mermaid(&node),
        LineageFormat::Dot => audit::render_dot(&node),
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

pub async fn reproduce(dir: &Path, table: &str, version: u64) -> CmdResult {
    let (lh, plan, _) = open_planned(dir, &[], KeyUse::Write).await?;
    let r = audit::reproduce(&lh, &plan, table, version).await.map_err(CliError::of)?;
    let inputs: Vec<String> = r.inputs.iter().map(|i| format!("{} v{}", i.table, i.version)).collect();
    println!("{} v{} rebuilt from {}", r.table, r.version, inputs.join(", "));
    if r.sql_changed {
        println!("note: the model's SQL has changed since this version; the current SQL was used");
    }
    if r.identical() {
        println!("IDENTICAL: {} rows", r.rows);
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "DIFFERENT: {} of {} rows only in the table, {} only in the reproduction",
            r.only_in_table, r.rows, r.only_in_reproduction
        );
        Ok(ExitCode::from(USER_ERROR))
    }
}

/// The models reading `table`, directly or not, as a tree with their versions and freshness.
async fn downstream_of(lh: &Lakehouse, plan: &lakehouse::transform::Plan, table: &str) -> CmdResult {
    let known = plan.models.contains_key(table) || lh.project.source_of(table).is_some();
    if !known {
        return Err(CliError::User(format!("no table `{table}`: name it `layer.name` (bronze.x, silver.y, gold.z)")));
    }
    let mut out = String::new();
    out.push_str(&format!("{table}{}\n", version_text(lh, table).await));
    fn readers<'a>(plan: &'a lakehouse::transform::Plan, t: &str) -> Vec<&'a String> {
        plan.order.iter().filter(|m| plan.models[*m].rendered.inputs.contains(t)).collect()
    }
    let mut stack: Vec<(String, String, bool)> = Vec::new();
    let first = readers(plan, table);
    for (i, m) in first.iter().enumerate().rev() {
        stack.push(((*m).clone(), String::new(), i + 1 == first.len()));
    }
    while let Some((m, prefix, last)) = stack.pop() {
        let branch = if last { "└─ " } else { "├─ " };
        out.push_str(&format!("{prefix}{branch}{m}{}\n", version_text(lh, &m).await));
        let child_prefix = format!("{prefix}{}", if last { "   " } else { "│  " });
        let next = readers(plan, &m);
        for (i, n) in next.iter().enumerate().rev() {
            stack.push(((*n).clone(), child_prefix.clone(), i + 1 == next.len()));
        }
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

async fn version_text(lh: &Lakehouse, table: &str) -> String {
    match lh.warehouse.open_table(table).await {
        Ok(Some(t)) => format!(" @ v{}", t.version().unwrap_or(0)),
        _ => " (not built yet)".to_string(),
    }
}

/// A line of `lakehouse tables`.
#[derive(Serialize, Deserialize)]
struct TableLine {
    table: String,
    version: Option<u64>,
    owner: Option<String>,
    description: String,
    location: String,
}

pub async fn tables(dir: &Path, format: OutputFormat) -> CmdResult {
    let (lh, plan, _) = open_planned(dir, &[], KeyUse::ReadOnly).await?;
    let mut declared: Vec<(String, Option<String>, String)> = Vec::new();
    for s in &lh.project.sources {
        let m = &s.manifest;
        for t in m.tables() {
            let description = t.description.unwrap_or_default().to_string();
            declared.push((format!("bronze.{}", t.name), Some(m.owner.to_string()), description));
        }
    }
    for t in &plan.order {
        let m = &plan.models[t];
        let d = m.loaded.sidecar.as_ref().and_then(|s| s.description.clone()).unwrap_or_default();
        declared.push((t.clone(), None, d));
    }
    declared.push(("system.runs".into(), None, "Run attempts of sources and models".into()));
    let mut lines = Vec::new();
    for (table, owner, description) in declared {
        let Some((layer, name)) = table.split_once('.') else { continue };
        let url = lh.warehouse.table_url(layer, name);
        let version = lh.warehouse.open(&url).await.map_err(CliError::of)?.map(|t| t.version().unwrap_or(0));
        lines.push(TableLine { table, version, owner, description, location: url.to_string() });
    }
    print_rows(&lines, format)?;
    Ok(ExitCode::SUCCESS)
}

/// A column in `lakehouse describe`.
#[derive(Serialize, Deserialize)]
struct ColumnLine {
    column: String,
    /// The manifest's type for a declared bronze column (`int`, `decimal(12,2)`), else the Delta type.
    r#type: String,
    /// Privacy class and documentation (sources), documentation and lineage (models).
    about: String,
}

/// What `lakehouse describe` says of a table.
#[derive(Serialize)]
struct Description {
    table: String,
    location: String,
    defined_by: String,
    description: Option<String>,
    owner: Option<String>,
    agreement: Option<String>,
    schedule: Option<String>,
    retention: Option<String>,
    /// The tables a model reads.
    reads: Vec<String>,
    /// `None`: not built yet.
    version: Option<u64>,
    columns: Vec<ColumnLine>,
}

pub async fn describe(dir: &Path, table: &str, format: OutputFormat) -> CmdResult {
    let (lh, plan, _) = open_planned(dir, &[], KeyUse::ReadOnly).await?;
    let Some((layer, name)) = table.split_once('.') else {
        return Err(CliError::User(format!("`{table}` is not `layer.name`")));
    };
    let url = lh.warehouse.table_url(layer, name);
    let source = lh.project.source_of(table);
    // The declared columns of the table (a child table of `explode`: the record's keys and the element's).
    let declared = source.and_then(|s| s.manifest.table(name));
    let model = plan.models.get(table);
    let mut d = match (source, model) {
        (Some(s), _) => Description {
            defined_by: s.path.display().to_string(),
            description: declared.as_ref().and_then(|t| t.description).map(str::to_string),
            owner: Some(s.manifest.owner.to_string()),
            agreement: s.manifest.agreement.clone(),
            schedule: Some(s.manifest.schedule.as_str().to_string()),
            retention: Some(s.manifest.retention.to_string()),
            ..Description::new(table, &url)
        },
        (None, Some(m)) => Description {
            defined_by: m.loaded.path.display().to_string(),
            description: m.loaded.sidecar.as_ref().and_then(|s| s.description.clone()),
            schedule: m.loaded.sidecar.as_ref().and_then(|s| s.schedule.as_ref()).map(|c| c.as_str().to_string()),
            reads: m.rendered.inputs.iter().cloned().collect(),
            ..Description::new(table, &url)
        },
        (None, None) => return Err(CliError::User(format!("no table `{table}`; `lakehouse tables` lists them"))),
    };
    let table_now = lh.warehouse.open(&url).await.map_err(CliError::of)?;
    d.version = table_now.as_ref().map(|t| t.version().unwrap_or(0));
    let schema_cols: Vec<(String, String)> = match &table_now {
        Some(t) => t.snapshot()?.schema().fields().map(|f| (f.name().to_string(), f.data_type().to_string())).collect(),
        None => Vec::new(),
    };
    for (c, ty) in schema_cols {
        let (ty, about) = match (&declared, model) {
            (Some(table), _) => source_column(table, &c, ty),
            (None, Some(m)) => (ty, model_column(&plan, m, table, &c)),
            (None, None) => (ty, String::new()),
        };
        d.columns.push(ColumnLine { column: c, r#type: ty, about });
    }
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&d)?),
        OutputFormat::Csv => print_rows(&d.columns, format)?,
        OutputFormat::Table => {
            println!("{}", d.table);
            let field = |k: &str, v: Option<&str>| {
                if let Some(v) = v {
                    println!("  {k:<12} {v}");
                }
            };
            field("location", Some(&d.location));
            field("defined by", Some(&d.defined_by));
            field("description", d.description.as_deref());
            let owner = d.owner.as_ref().map(|o| match &d.agreement {
                Some(a) => format!("{o} (agreement {a})"),
                None => o.clone(),
            });
            field("owner", owner.as_deref());
            field("schedule", d.schedule.as_deref());
            field("retention", d.retention.as_deref());
            field("reads", (!d.reads.is_empty()).then(|| d.reads.join(", ")).as_deref());
            let version = d.version.map_or("- (not built yet)".to_string(), |v| v.to_string());
            field("version", Some(&version));
            println!();
            print_rows(&d.columns, format)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

impl Description {
    fn new(table: &str, url: &url::Url) -> Self {
        Self {
            table: table.to_string(),
            location: url.to_string(),
            defined_by: String::new(),
            description: None,
            owner: None,
            agreement: None,
            schedule: None,
            retention: None,
            reads: Vec::new(),
            version: None,
            columns: Vec::new(),
        }
    }
}

/// A bronze column: its declared type and privacy class, the key ids of a pseudonymized one, or metadata.
fn source_column(table: &lakehouse::manifest::BronzeTable<'_>, c: &str, delta_type: String) -> (String, String) {
    if let Some(col) = table.column(c) {
        let pii = format!("{:?}", col.pii).to_lowercase();
        let pseudo = col.pii == lakehouse::manifest::Pii::Direct && col.keep_clear.is_none();
        let mut about = format!("pii: {pii}{}", if pseudo { " (keyed pseudonym)" } else { "" });
        if let Some(d) = &col.description {
            about.push_str(&format!(" — {d}"));
        }
        let ty = match col.ty {
            lakehouse::manifest::ColumnType::Decimal => {
                format!("decimal({},{})", col.precision.unwrap_or(38), col.scale.unwrap_or(0))
            }
            lakehouse::manifest::ColumnType::List => {
                format!(
                    "list<{}>",
                    format!("{:?}", col.items.unwrap_or(lakehouse::manifest::ColumnType::String)).to_lowercase()
                )
            }
            other => format!("{other:?}").to_lowercase(),
        };
        return (ty, about);
    }
    match c.strip_suffix("_key_id").filter(|b| table.column(b).is_some()) {
        Some(b) => (delta_type, format!("key id of the pseudonyms in {b}")),
        None if c == lakehouse::format::INDEX_COLUMN => ("int".into(), "position of the element in its array".into()),
        None => (delta_type, "ingestion metadata".into()),
    }
}

/// A model column: its documentation and the input columns it comes from (masked or not).
fn model_column(plan: &lakehouse::transform::Plan, m: &lakehouse::transform::Model, table: &str, c: &str) -> String {
    let doc = m.loaded.sidecar.as_ref().and_then(|s| s.columns.get(c)).and_then(|d| d.description.clone());
    let from = plan.lineage.get(table).and_then(|l| l.columns.iter().find(|(n, _)| n == c)).map(|(_, sources)| {
        sources
            .iter()
            .map(|s| format!("{}.{}{}", s.table, s.column, if s.masked { " (masked)" } else { "" }))
            .collect::<Vec<_>>()
            .join(", ")
    });
    match (doc, from) {
        (Some(d), Some(f)) => format!("{d} ← {f}"),
        (Some(d), None) => d,
        (None, Some(f)) => format!("← {f}"),
        (None, None) => String::new(),
    }
}

/// A line of `lakehouse runs`.
#[derive(Serialize, Deserialize)]
struct RunLine {
    started: String,
    target: String,
    kind: String,
    trigger: String,
    attempt: u32,
    status: String,
    rows: Option<u64>,
    version: Option<u64>,
    /// The error of a failed attempt, else the run id.
    run_or_error: String,
}

pub async fn runs(dir: &Path, target: Option<&str>, failed: bool, limit: usize, format: OutputFormat) -> CmdResult {
    let (lh, _) = super::open(dir, &[], KeyUse::ReadOnly)?;
    let tz = lh.project.file.timezone.0;
    let records =
        lakehouse::runlog::read(&lh.warehouse).await.map_err(|e| anyhow::anyhow!("reading system.runs: {e}"))?;
    let lines: Vec<RunLine> = records
        .into_iter()
        .rev()
        .filter(|r| target.is_none_or(|t| r.target == t))
        .filter(|r| {
            !failed || matches!(r.status, lakehouse::runlog::Status::Failed | lakehouse::runlog::Status::Abandoned)
        })
        .take(limit)
        .map(|r| RunLine {
            started: r.started_at.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string(),
            status: r.status.as_str().to_string(),
            run_or_error: r.error.unwrap_or(r.run_id),
            target: r.target,
            kind: r.kind,
            trigger: r.trigger,
            attempt: r.attempt,
            rows: r.rows,
            version: r.version,
        })
        .collect();
    print_rows(&lines, format)?;
    Ok(ExitCode::SUCCESS)
}

/// A line of `lakehouse queries`.
#[derive(Serialize, Deserialize)]
struct QueryLine {
    started: String,
    user: String,
    roles: String,
    client: String,
    application: Option<String>,
    outcome: String,
    rows: i64,
    ms: i64,
    tables: String,
    statement: String,
    error: Option<String>,
}

pub async fn queries(dir: &Path, user: Option<&str>, refused: bool, limit: usize, format: OutputFormat) -> CmdResult {
    let (lh, _) = super::open(dir, &[], KeyUse::ReadOnly)?;
    let tz = lh.project.file.timezone.0;
    let records = lakehouse::serve::querylog::read(&lh.warehouse, user)
        .await
        .map_err(|e| anyhow::anyhow!("reading system.queries: {e}"))?;
    let lines: Vec<QueryLine> = records
        .into_iter()
        .rev()
        .filter(|r| !refused || r.outcome == "refused")
        .take(limit)
        .map(|r| QueryLine {
            started: r.started_at.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string(),
            user: r.user,
            roles: r.roles,
            client: r.client,
            application: r.application,
            outcome: r.outcome,
            rows: r.rows,
            ms: r.duration_ms,
            tables: r.tables,
            statement: r.statement,
            error: r.error,
        })
        .collect();
    print_rows(&lines, format)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn rebuild(dir: &Path) -> CmdResult {
    let (lh, plan, _) = open_planned(dir, &[], KeyUse::ReadOnly).await?;
    let s = catalog_sync::rebuild_catalog(&lh, &plan).await.map_err(CliError::of)?;
    println!(
        "catalog rebuilt from the lake: {} tables, {} runs, {} lineage edges, {} column lineage edges ({})",
        s.tables.len(),
        s.runs.len(),
        s.lineage.len(),
        s.column_lineage.len(),
        catalog_sync::catalog_url(&lh).split('@').next_back().unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}
