//! `compile`, `transform` and `run`.

use std::path::Path;
use std::process::ExitCode;

use lakehouse::Lakehouse;
use lakehouse::manifest::Severity;
use lakehouse::transform::{Outcome, Plan, RunOptions, TransformReport, select};

use super::USER_ERROR;

/// Loads and plans the project, selects models and opens the warehouse; prints problems and returns the code.
async fn prepare(
    dir: &Path,
    selectors: &[String],
    vars: &[String],
) -> anyhow::Result<Result<(Lakehouse, Plan, Vec<String>, RunOptions), ExitCode>> {
    let (project, plan, vars) = match super::load_with_plan(dir, vars).await? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(Err(code)),
    };
    let targets = match select(&plan, selectors) {
        Ok(t) => t,
        Err(d) => {
            eprintln!("{d}");
            return Ok(Err(ExitCode::from(USER_ERROR)));
        }
    };
    match Lakehouse::open(project, lakehouse::KeyUse::Write) {
        Ok(lh) => Ok(Ok((lh, plan, targets, RunOptions { full_refresh: false, vars }))),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(Err(ExitCode::from(USER_ERROR)))
        }
    }
}

pub async fn compile(dir: &Path, selectors: &[String], vars: &[String], incremental: bool) -> anyhow::Result<ExitCode> {
    let (project, plan, vars) = match super::load_with_plan(dir, vars).await? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let targets = match select(&plan, selectors) {
        Ok(t) => t,
        Err(d) => {
            eprintln!("{d}");
            return Ok(ExitCode::from(USER_ERROR));
        }
    };
    let renderer = lakehouse::transform::plan::renderer(&project, &vars);
    for target in &targets {
        let m = &plan.models[target];
        let sql = if incremental {
            match renderer.render(&m.loaded.template, target, true) {
                Ok(r) => r.sql,
                Err(d) => {
                    eprintln!("{d}");
                    return Ok(ExitCode::from(USER_ERROR));
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

pub async fn transform(
    dir: &Path,
    selectors: &[String],
    vars: &[String],
    full_refresh: bool,
) -> anyhow::Result<ExitCode> {
    let (lh, plan, targets, mut opts) = match prepare(dir, selectors, vars).await? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    opts.full_refresh = full_refresh;
    let reports = run_and_record(&lh, &plan, &targets, &opts).await;
    print_reports(&reports);
    Ok(ExitCode::from(worst(&reports)))
}

pub async fn run_all(dir: &Path, vars: &[String], full_refresh: bool) -> anyhow::Result<ExitCode> {
    let (lh, plan, targets, mut opts) = match prepare(dir, &[], vars).await? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    opts.full_refresh = full_refresh;
    let sources = lh.project.sources.clone();
    let (ingested, ingest_worst) = super::ingest::ingest_all(&lh, &sources).await;
    let reports = run_and_record(&lh, &plan, &targets, &opts).await;
    println!("\ningest");
    super::ingest::print_reports(&ingested);
    println!("\ntransform");
    print_reports(&reports);
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
        records.push(lakehouse::runlog::RunRecord::transform(r, "manual", at));
        at += chrono::Duration::from_std(r.elapsed).unwrap_or_default();
    }
    lakehouse::runlog::record(&lh.warehouse, &records).await;
    lakehouse::audit::sync_catalog_quietly(lh, plan).await;
    reports
}

fn worst(reports: &[TransformReport]) -> u8 {
    reports
        .iter()
        .map(|r| match &r.outcome {
            Outcome::Failed { user_error: true, .. } | Outcome::Skipped { .. } => USER_ERROR,
            Outcome::Failed { user_error: false, .. } => 2,
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

fn print_reports(reports: &[TransformReport]) {
    println!("{:<40} {:<12} {:>10} {:>7} {:>8}  audits", "model", "result", "rows", "version", "time");
    for r in reports {
        let (result, rows, version) = match &r.outcome {
            Outcome::Built { mode, version, rows } => {
                (mode.as_str().to_string(), rows.to_string(), version.to_string())
            }
            Outcome::UpToDate { version } => ("up to date".into(), "-".into(), version.to_string()),
            Outcome::Skipped { .. } => ("skipped".into(), "-".into(), "-".into()),
            Outcome::Failed { .. } => ("FAILED".into(), "-".into(), "-".into()),
        };
        let passed = r.audits.iter().filter(|a| a.passed).count();
        let audits = if r.audits.is_empty() { "-".to_string() } else { format!("{passed}/{} passed", r.audits.len()) };
        println!(
            "{:<40} {:<12} {:>10} {:>7} {:>7.2}s  {audits}",
            r.target,
            result,
            rows,
            version,
            r.elapsed.as_secs_f64()
        );
    }
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
}
