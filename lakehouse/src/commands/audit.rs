//! `lineage` and `reproduce`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use lakehouse::Lakehouse;
use lakehouse::audit::{self, AuditError};

use super::USER_ERROR;
use crate::cli::LineageFormat;

async fn open(
    dir: &Path,
    keys: lakehouse::KeyUse,
) -> anyhow::Result<Result<(Lakehouse, lakehouse::transform::Plan), ExitCode>> {
    let (project, plan, _) = match super::load_with_plan(dir, &[]).await? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(Err(code)),
    };
    match Lakehouse::open(project, keys) {
        Ok(lh) => Ok(Ok((lh, plan))),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(Err(ExitCode::from(USER_ERROR)))
        }
    }
}

fn user_error(e: &AuditError) -> bool {
    !matches!(e, AuditError::Lake(_))
}

pub async fn lineage(
    dir: &Path,
    target: &str,
    version: Option<u64>,
    format: LineageFormat,
    downstream: bool,
) -> anyhow::Result<ExitCode> {
    let (lh, plan) = match open(dir, lakehouse::KeyUse::ReadOnly).await? {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };
    if downstream {
        return downstream_of(&lh, &plan, target).await;
    }
    // `layer.name` or `layer.name.column`.
    let parts: Vec<&str> = target.splitn(3, '.').collect();
    let (table, columns) = match parts.as_slice() {
        [layer, name] => (format!("{layer}.{name}"), None),
        [layer, name, column] => (format!("{layer}.{name}"), Some(BTreeSet::from([column.to_string()]))),
        _ => {
            eprintln!("error: `{target}` is not `layer.name` or `layer.name.column`");
            return Ok(ExitCode::from(USER_ERROR));
        }
    };
    match audit::trace(&lh, &plan, &table, version, columns).await {
        Ok(node) => {
            let out = match format {
                LineageFormat::Text => audit::render_text(&node),
                LineageFormat::Json => serde_json::to_string_pretty(&node)? + "\n",
                LineageFormat::Mermaid => audit::render_mermaid(&node),
                LineageFormat::Dot => audit::render_dot(&node),
            };
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(if user_error(&e) { USER_ERROR } else { 2 }))
        }
    }
}

pub async fn reproduce(dir: &Path, table: &str, version: u64) -> anyhow::Result<ExitCode> {
    let (lh, plan) = match open(dir, lakehouse::KeyUse::Write).await? {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };
    match audit::reproduce(&lh, &plan, table, version).await {
        Ok(r) => {
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
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(if user_error(&e) { USER_ERROR } else { 2 }))
        }
    }
}

/// The models reading `table`, directly or not, as a tree with their versions and freshness.
async fn downstream_of(lh: &Lakehouse, plan: &lakehouse::transform::Plan, table: &str) -> anyhow::Result<ExitCode> {
    let known = plan.models.contains_key(table)
        || table
            .strip_prefix("bronze.")
            .is_some_and(|n| lh.project.sources.iter().any(|s| s.manifest.name.as_str() == n));
    if !known {
        eprintln!("error: no table `{table}`: name it `layer.name` (bronze.x, silver.y, gold.z)");
        return Ok(ExitCode::from(USER_ERROR));
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

pub async fn tables(dir: &Path) -> anyhow::Result<ExitCode> {
    let (lh, plan) = match open(dir, lakehouse::KeyUse::ReadOnly).await? {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };
    println!("{:<42} {:>7}  {:<8} description", "table", "version", "owner");
    let mut rows: Vec<(String, String, String)> = Vec::new();
    for s in &lh.project.sources {
        rows.push((
            format!("bronze.{}", s.manifest.name),
            s.manifest.owner.to_string(),
            s.manifest.description.clone(),
        ));
    }
    for t in &plan.order {
        let m = &plan.models[t];
        let d = m.loaded.sidecar.as_ref().and_then(|s| s.description.clone()).unwrap_or_default();
        rows.push((t.clone(), "-".into(), d));
    }
    rows.push(("system.runs".into(), "-".into(), "Run attempts of sources and models".into()));
    for (t, owner, d) in rows {
        let v = match lh.warehouse.open_table(&t).await? {
            Some(table) => table.version().unwrap_or(0).to_string(),
            None => "-".to_string(),
        };
        println!("{t:<42} {v:>7}  {owner:<8} {d}");
    }
    println!("location: {}<layer>/<name>/", lh.warehouse.root());
    Ok(ExitCode::SUCCESS)
}

pub async fn describe(dir: &Path, table: &str) -> anyhow::Result<ExitCode> {
    let (lh, plan) = match open(dir, lakehouse::KeyUse::ReadOnly).await? {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };
    let Some((layer, name)) = table.split_once('.') else {
        eprintln!("error: `{table}` is not `layer.name`");
        return Ok(ExitCode::from(USER_ERROR));
    };
    let url = lh.warehouse.table_url(layer, name);
    let source =
        (layer == "bronze").then(|| lh.project.sources.iter().find(|s| s.manifest.name.as_str() == name)).flatten();
    let model = plan.models.get(table);
    if source.is_none() && model.is_none() {
        eprintln!("error: no table `{table}`; `lakehouse tables` lists them");
        return Ok(ExitCode::from(USER_ERROR));
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
    let table_now = lh.warehouse.open(&url).await?;
    match &table_now {
        Some(t) => println!("  version      {}", t.version().unwrap_or(0)),
        None => println!("  version      - (not built yet)"),
    }
    println!("  columns:");
    let schema_cols: Vec<(String, String)> = match &table_now {
        Some(t) => t.snapshot()?.schema().fields().map(|f| (f.name().to_string(), f.data_type().to_string())).collect(),
        None => Vec::new(),
    };
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
        println!("    {c:<28} {ty:<24} {info}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn runs(dir: &Path, target: Option<&str>, failed: bool, limit: usize) -> anyhow::Result<ExitCode> {
    let (lh, _) = match super::open(dir, &[], lakehouse::KeyUse::ReadOnly)? {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };
    let tz = lh.project.file.timezone.0;
    let records =
        lakehouse::runlog::read(&lh.warehouse).await.map_err(|e| anyhow::anyhow!("reading system.runs: {e}"))?;
    println!(
        "{:<20} {:<40} {:<9} {:<8} {:>3} {:<11} {:>9} {:>7}  run / error",
        "started", "target", "kind", "trigger", "#", "status", "rows", "version"
    );
    let shown = records
        .iter()
        .rev()
        .filter(|r| target.is_none_or(|t| r.target == t))
        .filter(|r| {
            !failed || matches!(r.status, lakehouse::runlog::Status::Failed | lakehouse::runlog::Status::Abandoned)
        })
        .take(limit);
    for r in shown {
        println!(
            "{:<20} {:<40} {:<9} {:<8} {:>3} {:<11} {:>9} {:>7}  {}",
            r.started_at.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S"),
            r.target,
            r.kind,
            r.trigger,
            r.attempt,
            r.status.as_str(),
            r.rows.map_or("-".into(), |n| n.to_string()),
            r.version.map_or("-".into(), |v| v.to_string()),
            r.error.as_deref().unwrap_or(&r.run_id)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn rebuild(dir: &Path) -> anyhow::Result<ExitCode> {
    let (lh, plan) = match open(dir, lakehouse::KeyUse::ReadOnly).await? {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };
    match audit::rebuild_catalog(&lh, &plan).await {
        Ok(s) => {
            println!(
                "catalog rebuilt from the lake: {} tables, {} runs, {} lineage edges, {} column lineage edges ({})",
                s.tables.len(),
                s.runs.len(),
                s.lineage.len(),
                s.column_lineage.len(),
                audit::catalog_url(&lh).split('@').next_back().unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(if user_error(&e) { USER_ERROR } else { 2 }))
        }
    }
}
