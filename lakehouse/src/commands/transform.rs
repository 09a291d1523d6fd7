//! `compile`, `transform` and `run`.

use std::path::Path;
use std::process::ExitCode;

use lakehouse::Lakehouse;
use lakehouse::manifest::Severity;
use lakehouse::transform::{Outcome, Plan, RunOptions, TransformReport, select};

use serde::{Deserialize, Serialize};

use super::output::{OutputFormat, print_rows};
use super::{CliError, CmdResult, INTERNAL_ERROR, USER_ERROR};

/// Loads and plans the project, selects models and opens the warehouse.
async fn prepare(
    dir: &Path,
    selectors: &[String],
    vars: &[String],
) -> Result<(Lakehouse, Plan, Vec<String>, RunOptions), CliError> {
    let (lh, plan, options) = super::open_planned(dir, vars, lakehouse::KeyUse::Write).await?;
    let targets = selected(&plan, selectors)?;
    Ok((lh, plan, targets, options))
}

/// The models `selectors` name, in plan order.
fn selected(plan: &Plan, selectors: &[String]) -> Result<Vec<String>, CliError> {
    select(plan, selectors).map_err(|d| {
        eprintln!("{d}");
        CliError::Reported
    })
}

pub async fn compile(dir: &Path, selectors: &[String], vars: &[String], incremental: bool) -> CmdResult {
    let (project, plan, vars) = super::load_with_plan(dir, vars).await?;
    let targets = selected(&plan, selectors)?;
    let renderer = lakehouse::transform::plan::renderer(&project, &vars);
    for target in &targets {
        let m = &plan.models[target];
        let sql = if incremental {
            match renderer.render(&m.loaded.template, target, true) {
                Ok(r) => r.sql,
                Err(d) => {
                    eprintln!("{d}");
                    return Err(CliError::Reported);
                }
            }
        } else {
            m.rendered.sql.clone()
        };
        let c = &m.rendered.config;
        let mut config = format!("materialized={:?}", c.materialized).to_lowercase();
        if !c.unique_key.is_empty() {
            config.push_str(&format!(" unique_key={}", c.unique_key.join(",")));
        }
        if !c.partition_by.is_empty() {
            config.push_str(&format!(" partition_by={}", c.partition_by.join(",")));
        }
        println!("-- {target} ({}) {config}\n{sql};\n", m.loaded.path.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn transform(dir: &Path, selectors: &[String], vars: &[String], full_refresh: bool) -> CmdResult {
    let (lh, plan, targets, mut opts) = prepare(dir, selectors, vars).await?;
    opts.full_refresh = full_refresh;
    let reports = run_and_record(&lh, &plan, &targets, &opts).await;
    print_reports(&reports)?;
    Ok(ExitCode::from(worst(&reports)))
}

pub async fn run_all(dir: &Path, vars: &[String], full_refresh: bool) -> CmdResult {
    let (lh, plan, targets, mut opts) = prepare(dir, &[], vars).await?;
    opts.full_refresh = full_refresh;
    let sources = lh.project.sources.clone();
    let (ingested, ingest_worst) = super::ingest::ingest_all(&lh, &sources).await;
    let reports = run_and_record(&lh, &plan, &targets, &opts).await;
    println!("\ningest");
    super::ingest::print_reports(&ingested)?;
    println!("\ntransform");
    print_reports(&reports)?;
    println!("tables: {}{{bronze,silver,gold}}/", lh.warehouse.root());
    Ok(ExitCode::from(ingest_worst.max(worst(&reports))))
}

/// Runs the models and records each in `system.runs`.
async fn run_and_record(lh: &Lakehouse, plan: &Plan, targets: &[String], opts: &RunOptions) -> Vec<TransformReport> {
    let started_at = chrono::Utc::now();
    let reports = lakehouse::transform::run::run(lh, plan, targets, opts).await;
    let mut at = started_at;
    let mut records = Vec::new();
    for r in &reports {
        records.push(r.run_record("manual", at));
        at += chrono::Duration::from_std(r.elapsed).unwrap_or_default();
    }
    lakehouse::runlog::record(&lh.warehouse, &records).await;
    lakehouse::catalog_sync::sync_catalog_quietly(lh, plan).await;
    reports
}

fn worst(reports: &[TransformReport]) -> u8 {
    reports
        .iter()
        .map(|r| match &r.outcome {
            Outcome::Failed { user_error: true, .. } | Outcome::Skipped { .. } => USER_ERROR,
            Outcome::Failed { user_error: false, .. } => INTERNAL_ERROR,
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

/// A line of a transform summary.
#[derive(Serialize, Deserialize)]
struct ModelLine {
    model: String,
    /// `full`, `incremental`, `up to date`, `skipped` or `FAILED`.
    result: String,
    rows: Option<u64>,
    version: Option<u64>,
    time: String,
    audits: Option<String>,
}

fn print_reports(reports: &[TransformReport]) -> Result<(), CliError> {
    let lines: Vec<ModelLine> = reports
        .iter()
        .map(|r| {
            let (result, rows, version) = match &r.outcome {
                Outcome::Built { mode, version, rows } => (mode.as_str().to_string(), Some(*rows), Some(*version)),
                Outcome::UpToDate { version } => ("up to date".into(), None, Some(*version)),
                Outcome::Skipped { .. } => ("skipped".into(), None, None),
                Outcome::Failed { .. } => ("FAILED".into(), None, None),
            };
            let passed = r.audits.iter().filter(|a| a.passed).count();
            ModelLine {
                model: r.target.clone(),
                result,
                rows,
                version,
                time: format!("{:.2}s", r.elapsed.as_secs_f64()),
                audits: (!r.audits.is_empty()).then(|| format!("{passed}/{} passed", r.audits.len())),
            }
        })
        .collect();
    print_rows(&lines, OutputFormat::Table)?;
    for r in reports {
        if let Some(note) = &r.note {
            println!("{}: {note}", r.target);
        }
        for a in r.audits.iter().filter(|a| !a.passed) {
            let what = if a.severity == Severity::Warn { "warning" } else { "error" };
            println!("{}: audit {what}: {} ({} rows)", r.target, a.label, a.failing);
        }
        match &r.outcome {
            Outcome::Failed { error, .. } => println!("{}: FAILED: {error}", r.target),
            Outcome::Skipped { because } => println!("{}: skipped: {because}", r.target),
            _ => {}
        }
    }
    Ok(())
}
