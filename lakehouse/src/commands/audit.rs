//! `lineage` and `reproduce`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use lakehouse::Lakehouse;
use lakehouse::audit::{self, AuditError};

use super::USER_ERROR;
use crate::cli::LineageFormat;

async fn open(dir: &Path) -> anyhow::Result<Result<(Lakehouse, lakehouse::transform::Plan), ExitCode>> {
    let (project, plan, _) = match super::load_with_plan(dir, &[]).await? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(Err(code)),
    };
    match Lakehouse::open(project) {
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
) -> anyhow::Result<ExitCode> {
    let (lh, plan) = match open(dir).await? {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };
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
    let (lh, plan) = match open(dir).await? {
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
