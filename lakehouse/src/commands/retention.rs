use std::path::Path;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use lakehouse::retention::apply;
use lakehouse::runlog::{RunRecord, Status};

use super::USER_ERROR;

pub async fn run(dir: &Path, names: &[String], dry_run: bool, as_of: Option<&str>) -> anyhow::Result<ExitCode> {
    let now = match as_of.map(DateTime::parse_from_rfc3339) {
        None => Utc::now(),
        Some(Ok(t)) => t.with_timezone(&Utc),
        Some(Err(e)) => {
            eprintln!("error: --as-of: {e} (expected RFC 3339, e.g. 2027-01-31T00:00:00Z)");
            return Ok(ExitCode::from(USER_ERROR));
        }
    };
    let (lh, selected) = match super::open(dir, names, lakehouse::KeyUse::Write)? {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };
    println!(
        "{:<26} {:<12} {:<26} {:>12} {:>16} {:>8}",
        "source", "retention", "deletes rows before", "bronze rows", "quarantine rows", "vacuumed"
    );
    let mut worst = 0u8;
    let mut records = Vec::new();
    for src in &selected {
        let started_at = Utc::now();
        let mut record = RunRecord::new(format!("bronze.{}", src.manifest.name), "retention", "manual", started_at);
        match apply(&lh, src, now, dry_run).await {
            Ok(r) => {
                println!(
                    "{:<26} {:<12} {:<26} {:>12} {:>16} {:>8}",
                    r.source,
                    src.manifest.retention.to_string(),
                    r.cutoff.map_or("- (forever)".to_string(), |c| c.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
                    r.bronze_rows,
                    r.quarantine_rows,
                    if dry_run { "-".to_string() } else { r.files_vacuumed.to_string() }
                );
                record.rows = Some(r.bronze_rows + r.quarantine_rows);
                record.version = r.bronze_version;
            }
            Err(e) => {
                eprintln!("error: {e}");
                worst = 2;
                record.status = Status::Failed;
                record.error = Some(e.to_string());
            }
        }
        record.ended_at = Utc::now();
        if !dry_run {
            records.push(record);
        }
    }
    if dry_run {
        println!("(dry run: nothing deleted)");
    }
    lakehouse::runlog::record(&lh.warehouse, &records).await;
    if !dry_run && let Some(plan) = super::quiet_plan(&lh).await {
        lakehouse::audit::sync_catalog_quietly(&lh, &plan).await;
    }
    Ok(ExitCode::from(worst))
}
