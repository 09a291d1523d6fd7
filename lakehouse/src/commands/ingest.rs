use std::path::Path;
use std::process::ExitCode;

use lakehouse::Lakehouse;
use lakehouse::ingest::{IngestReport, ingest_source};
use lakehouse::manifest::LoadedSource;
use lakehouse::runlog::RunRecord;

use serde::{Deserialize, Serialize};

use super::output::{OutputFormat, print_rows};
use super::{CliError, CmdResult, USER_ERROR};

pub async fn run(dir: &Path, names: &[String]) -> CmdResult {
    let (lh, selected) = super::open(dir, names, lakehouse::KeyUse::Write)?;
    let (reports, worst) = ingest_all(&lh, &selected).await;
    if let Some(plan) = lakehouse::transform::Plan::quiet(&lh.project).await {
        lakehouse::catalog_sync::sync_catalog_quietly(&lh, &plan).await;
    }
    print_reports(&reports)?;
    println!("tables: {}bronze/", lh.warehouse.root());
    Ok(ExitCode::from(worst))
}

/// Ingests the sources one after the other; returns the reports and the worst exit code.
pub async fn ingest_all(lh: &Lakehouse, selected: &[LoadedSource]) -> (Vec<IngestReport>, u8) {
    let mut reports = Vec::new();
    let mut worst = 0u8;
    let mut records = Vec::new();
    for src in selected {
        let started_at = chrono::Utc::now();
        // One process at a time per source, as under the scheduler: a second one would take a batch still being
        // committed for an interrupted one.
        let target = format!("bronze.{}", src.manifest.name);
        let _guard = match lakehouse::schedule::lock::wait_for_lock(&lh.warehouse, &target).await {
            Ok(Some(guard)) => guard,
            Ok(None) => {
                let why = "another process is still running it (the scheduler, or another ingest) after 10 minutes \
                           of waiting for its lock; nothing was done";
                eprintln!("error: {}: {why}: run it again later", src.manifest.name);
                let mut r = RunRecord::new(&target, "ingest", "manual", started_at);
                (r.status, r.error) = (lakehouse::runlog::Status::Skipped, Some(why.to_string()));
                records.push(r);
                worst = worst.max(USER_ERROR);
                continue;
            }
            Err(e) => {
                eprintln!("error: {}: {e}", src.manifest.name);
                worst = worst.max(CliError::code_of(&e));
                continue;
            }
        };
        // A stream source takes batch after batch while they come full: what was pending when it started.
        let mut started_at = started_at;
        loop {
            let result = ingest_source(lh, src).await;
            let full = result.as_ref().is_ok_and(|r| batch_was_full(src, r));
            if result.as_ref().map_or(true, |r| r.batch.is_some() || !src.manifest.is_stream()) {
                records.push(IngestReport::run_record(
                    src.manifest.name.as_str(),
                    result.as_ref(),
                    "manual",
                    started_at,
                ));
            }
            match result {
                Ok(r) => {
                    if !r.failed.is_empty() {
                        worst = worst.max(USER_ERROR);
                    }
                    reports.push(r);
                }
                Err(e) => {
                    worst = worst.max(CliError::code_of(&e));
                    eprintln!("error: {}: {e}", src.manifest.name);
                }
            }
            if !full {
                break;
            }
            started_at = chrono::Utc::now();
        }
    }
    lakehouse::runlog::record(&lh.warehouse, &records).await;
    (reports, worst)
}

/// Whether a stream source may have more pending after this run: its batch closed because it was full, not on
/// its wait, or it completed a batch an interrupted run left (without asking the broker).
fn batch_was_full(src: &LoadedSource, r: &IngestReport) -> bool {
    let Some(limits) = src.manifest.stream_batch() else { return false };
    r.batch.is_some()
        && (r.replayed
            || r.records.read >= limits.max_records
            || r.files.iter().map(|f| f.size).sum::<u64>() >= limits.max_bytes)
}

/// A line of an ingest summary.
#[derive(Serialize, Deserialize)]
struct IngestLine {
    source: String,
    /// `*`: completed a batch left pending by an interrupted run.
    batch: String,
    files: usize,
    read: u64,
    written: u64,
    quarantined: u64,
    /// `upsert`: replaced by a later record of the same key in the batch.
    superseded: u64,
    version: Option<u64>,
    time: String,
}

pub fn print_reports(reports: &[IngestReport]) -> Result<(), CliError> {
    if reports.is_empty() {
        // Every source failed: its error is on stderr, and an empty table would say nothing.
        return Ok(());
    }
    let lines: Vec<IngestLine> = reports
        .iter()
        .map(|r| IngestLine {
            source: r.source.clone(),
            batch: r.batch.map_or("-".to_string(), |b| if r.replayed { format!("{b}*") } else { b.to_string() }),
            files: r.files.len(),
            read: r.records.read,
            written: r.records.written,
            quarantined: r.records.quarantined,
            superseded: r.records.superseded,
            version: r.bronze_version,
            time: format!("{:.2}s", r.elapsed.as_secs_f64()),
        })
        .collect();
    print_rows(&lines, OutputFormat::Table)?;
    if reports.iter().any(|r| r.replayed) {
        println!("* completed a batch left pending by an interrupted run");
    }
    for r in reports {
        for path in &r.waiting {
            println!(
                "{}: WAITING {path}: still being written (or empty); a later run takes it once it settles",
                r.source
            );
        }
        for f in &r.failed {
            println!(
                "{}: NOT TAKEN {}: {} (fix or replace the file; the next run tries it again)",
                r.source, f.path, f.reason
            );
        }
    }
    Ok(())
}
