use std::path::Path;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use lakehouse::retention::apply;
use lakehouse::runlog::{RunRecord, Status};

use serde::{Deserialize, Serialize};

use super::output::{OutputFormat, print_rows};
use super::{CliError, CmdResult, INTERNAL_ERROR};

/// A line of the retention summary.
#[derive(Serialize, Deserialize)]
struct RetentionLine {
    source: String,
    retention: String,
    deletes_rows_before: String,
    bronze_rows: u64,
    quarantine_rows: u64,
    /// Data files removed by VACUUM (none in a dry run).
    vacuumed: Option<usize>,
    /// Stream sources: small data files rewritten into few (none in a dry run).
    compacted: Option<usize>,
    /// Responses of an `http` source archived before the cutoff: deleted (counted in a dry run).
    archived_pages: u64,
}

pub async fn run(dir: &Path, names: &[String], dry_run: bool, as_of: Option<&str>) -> CmdResult {
    let now = match as_of.map(DateTime::parse_from_rfc3339) {
        None => Utc::now(),
        Some(Ok(t)) => t.with_timezone(&Utc),
        Some(Err(e)) => {
            return Err(CliError::User(format!("--as-of: {e} (expected RFC 3339, e.g. 2027-01-31T00:00:00Z)")));
        }
    };
    let (lh, selected) = super::open(dir, names, lakehouse::KeyUse::Write)?;
    let mut lines = Vec::new();
    let mut worst = 0u8;
    let mut records = Vec::new();
    for src in &selected {
        let started_at = Utc::now();
        let mut record = RunRecord::new(format!("bronze.{}", src.manifest.name), "retention", "manual", started_at);
        match apply(&lh, src, now, dry_run).await {
            Ok(r) => {
                lines.push(RetentionLine {
                    source: r.source.clone(),
                    retention: src.manifest.retention.to_string(),
                    deletes_rows_before: r
                        .cutoff
                        .map_or("- (forever)".to_string(), |c| c.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
                    bronze_rows: r.bronze_rows,
                    quarantine_rows: r.quarantine_rows,
                    vacuumed: (!dry_run).then_some(r.files_vacuumed),
                    compacted: (!dry_run).then_some(r.files_compacted),
                    archived_pages: r.archived_pages,
                });
                record.rows = Some(r.bronze_rows + r.quarantine_rows);
                record.version = r.bronze_version;
            }
            Err(e) => {
                eprintln!("error: {e}");
                worst = INTERNAL_ERROR;
                record.status = Status::Failed;
                record.error = Some(e.to_string());
            }
        }
        record.ended_at = Utc::now();
        if !dry_run {
            records.push(record);
        }
    }
    print_rows(&lines, OutputFormat::Table)?;
    if dry_run {
        println!("(dry run: nothing deleted)");
    }
    lakehouse::runlog::record(&lh.warehouse, &records).await;
    if !dry_run && let Some(plan) = lakehouse::transform::Plan::quiet(&lh.project).await {
        lakehouse::catalog_sync::sync_catalog_quietly(&lh, &plan).await;
    }
    Ok(ExitCode::from(worst))
}
