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
    let known = plan.models.contains_key(table)
        || table
            .strip_prefix("bronze.")
            .is_some_and(|n| lh.project.sources.iter().any(|s| s.manifest.name.as_str() == n));
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
        declared.push((format!("bronze.{}", m.name), Some(m.owner.to_string()), m.description.clone()));
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
    r#type: String,
    /// Privacy class and documentation (sources), documentation and lineage (models).
    about: String,
}

pub async fn describe(dir: &Path, table: &str) -> CmdResult {
    let (lh, plan, _) = open_planned(dir, &[], KeyUse::ReadOnly).await?;
    let Some((layer, name)) = table.split_once('.') else {
        return Err(CliError::User(format!("`{table}` is not `layer.name`")));
    };
    let url = lh.warehouse.table_url(layer, name);
    let source =
        (layer == "bronze").then(|| lh.project.sources.iter().find(|s| s.manifest.name.as_str() == name)).flatten();
    let model = plan.models.get(table);
    if source.is_none() && model.is_none() {
        return Err(CliError::User(format!("no table `{table}`; `lakehouse tables` lists them")));
    }
    println!("{table}");
    println!("  location     {url}");
    if let Some(s) = source {
        println!("  defined by   {}", s.path.display());
        println!("  description  {}", s.manifest.description);
        println!(
            "  owner        {}{}",
            s.manifest.owner,
            s.manifest.agreement.as_ref().map_or(String::new(), |a| format!(" (agreement {a})"))
        );
        println!("  schedule     {}", s.manifest.schedule.as_str());
        println!("  retention    {}", s.manifest.retention);
    }
    if let Some(m) = model {
        println!("  defined by   {}", m.loaded.path.display());
        if let Some(d) = m.loaded.sidecar.as_ref().and_then(|s| s.description.as_ref()) {
            println!("  description  {d}");
        }
        println!("  reads        {}", m.rendered.inputs.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    let table_now = lh.warehouse.open(&url).await.map_err(CliError::of)?;
    match &table_now {
        Some(t) => println!("  version      {}", t.version().unwrap_or(0)),
        None => println!("  version      - (not built yet)"),
    }
    println!();
    let schema_cols: Vec<(String, String)> = match &table_now {
        Some(t) => t.snapshot()?.schema().fields().map(|f| (f.name().to_string(), f.data_type().to_string())).collect(),
        None => Vec::new(),
    };
    let mut lines = Vec::new();
    for (c, ty) in &schema_cols {
        let mut info = String::new();
        if let Some(s) = source {
            let base = c.strip_suffix("_key_id").filter(|b| s.manifest.columns.contains_key(*b));
            if let Some((_, col)) = s.manifest.columns.iter().find(|(n, _)| n.as_str() == c.as_str()) {
                let pii = format!("{:?}", col.pii).to_lowercase();
                let pseudo = col.pii == lakehouse::manifest::Pii::Direct && col.keep_clear.is_none();
                info = format!("pii: {pii}{}", if pseudo { " (keyed pseudonym)" } else { "" });
                if let Some(d) = &col.description {
                    info.push_str(&format!(" — {d}"));
                }
            } else if let Some(b) = base {
                info = format!("key id of the pseudonyms in {b}");
            } else {
                info = "ingestion metadata".into();
            }
        }
        if let Some(m) = model {
            let doc =
                m.loaded.sidecar.as_ref().and_then(|s| s.columns.get(c.as_str())).and_then(|d| d.description.clone());
            let from =
                plan.lineage.get(table).and_then(|l| l.columns.iter().find(|(n, _)| n == c)).map(|(_, sources)| {
                    sources
                        .iter()
                        .map(|s| format!("{}.{}{}", s.table, s.column, if s.masked { " (masked)" } else { "" }))
                        .collect::<Vec<_>>()
                        .join(", ")
                });
            info = match (doc, from) {
                (Some(d), Some(f)) => format!("{d} ← {f}"),
                (Some(d), None) => d,
                (None, Some(f)) => format!("← {f}"),
                (None, None) => String::new(),
            };
        }
        lines.push(ColumnLine { column: c.clone(), r#type: ty.clone(), about: info });
    }
    print_rows(&lines, OutputFormat::Table)?;
    Ok(ExitCode::SUCCESS)
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
