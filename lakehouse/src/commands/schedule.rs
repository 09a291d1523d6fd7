//! `schedule` and `status`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lakehouse::Lakehouse;
use lakehouse::runlog::{self, RunRecord};
use lakehouse::schedule::{self, Config, ModelGraph, SourceJob, SystemClock, cron::next_fire, runner::LakehouseRunner};
use serde::{Deserialize, Serialize};

use super::output::{OutputFormat, print_rows};
use super::serve::Serving;
use super::{CmdResult, open_planned};

/// The start of the last successful run of each target.
fn last_success(records: &[RunRecord]) -> BTreeMap<String, DateTime<Utc>> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| r.status.is_success()) {
        let e = out.entry(r.target.clone()).or_insert(r.started_at);
        if r.started_at > *e {
            *e = r.started_at;
        }
    }
    out
}

pub async fn schedule(dir: &Path, vars: &[String], grace: u64, parallel: usize) -> CmdResult {
    let (lh, plan, options) = open_planned(dir, vars, lakehouse::KeyUse::Write).await?;
    let records = runlog::read(&lh.warehouse).await.map_err(|e| anyhow::anyhow!("reading system.runs: {e}"))?;
    let config = Config {
        tz: lh.project.file.timezone.0,
        sources: lh
            .project
            .sources
            .iter()
            .map(|s| SourceJob {
                name: s.manifest.name.to_string(),
                tables: s.manifest.tables().into_iter().map(|t| format!("bronze.{}", t.name)).collect(),
                schedule: s.manifest.schedule.clone(),
                retry: s.manifest.retry.clone(),
            })
            .collect(),
        models: ModelGraph::from_plan(&plan),
        last_success: last_success(&records),
        parallel,
        grace: Duration::from_secs(grace),
        model_check: Some(Duration::from_secs(60)),
        retention: lakehouse::manifest::CronSchedule::try_from("0 3 * * *".to_string()).ok(),
    };
    tracing::info!(sources = config.sources.len(), models = config.models.order.len(), "scheduler started");
    // The query server beside the scheduler (`serve.with_schedule`): started before the first run, so that a
    // policy that cannot be enforced stops the process at once.
    let serving = if lh.project.file.serve.with_schedule { Some(Serving::start(dir, None).await?) } else { None };
    let runner = Arc::new(LakehouseRunner { lh: Arc::new(lh), plan: Arc::new(plan), options });
    let shutdown = async {
        #[cfg(unix)]
        if super::serve::until_stopped(serving.as_ref()).await.is_err() {
            let _ = tokio::signal::ctrl_c().await;
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    };
    let summary = schedule::run(config, Arc::new(SystemClock), runner, shutdown, None).await;
    println!(
        "scheduler stopped: {} runs, {} failed, {} abandoned at shutdown",
        summary.runs, summary.failures, summary.abandoned
    );
    if let Some(serving) = serving {
        serving.stop().await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A line of `lakehouse status`.
#[derive(Serialize, Deserialize)]
struct StatusLine {
    table: String,
    /// The cron expression, or `on new data` for a model run when its inputs change.
    schedule: String,
    last_success: Option<String>,
    /// Sources: `on time`, `LATE (due …)` or `never run`; models: `up to date`, `STALE (… changed)` or
    /// `never run`.
    state: String,
    next_run: Option<String>,
    last_error: Option<String>,
}

pub async fn status(dir: &Path, vars: &[String], format: OutputFormat) -> CmdResult {
    let (lh, plan, _) = open_planned(dir, vars, lakehouse::KeyUse::ReadOnly).await?;
    let records = runlog::read(&lh.warehouse).await.map_err(|e| anyhow::anyhow!("reading system.runs: {e}"))?;
    let tz = lh.project.file.timezone.0;
    let now = Utc::now();
    let show = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string();
    let success = last_success(&records);
    let last_error = |target: &str| {
        let last = records.iter().rev().find(|r| r.target == target && !matches!(r.status, runlog::Status::Skipped))?;
        (!last.status.is_success()).then(|| last.error.clone().unwrap_or_else(|| last.status.as_str().to_string()))
    };
    let mut lines = Vec::new();
    for src in &lh.project.sources {
        let table = format!("bronze.{}", src.manifest.name);
        let schedule = &src.manifest.schedule;
        if src.manifest.is_stream() {
            lines.push(StatusLine {
                schedule: schedule.as_str().to_string(),
                last_success: success.get(&table).map(|t| show(*t)),
                state: stream_state(&src.manifest, &records, &table, now).await,
                next_run: schedule
                    .is_continuous()
                    .then(|| "continuous".to_string())
                    .or_else(|| next_fire(schedule, tz, now).map(show)),
                last_error: last_error(&table),
                table,
            });
            continue;
        }
        let state = match success.get(&table) {
            None => "never run".to_string(),
            Some(t) => {
                let due = next_fire(schedule, tz, *t);
                let period = due.and_then(|d| Some(next_fire(schedule, tz, d)? - d)).unwrap_or_default();
                let late = due.is_some_and(|d| now > d + period / 2);
                if late { format!("LATE (due {})", due.map(show).unwrap_or_default()) } else { "on time".into() }
            }
        };
        lines.push(StatusLine {
            schedule: schedule.as_str().to_string(),
            last_success: success.get(&table).map(|t| show(*t)),
            state,
            next_run: next_fire(schedule, tz, now).map(show),
            last_error: last_error(&table),
            table,
        });
    }
    for target in &plan.order {
        let model = &plan.models[target];
        let cron = model.loaded.sidecar.as_ref().and_then(|s| s.schedule.clone());
        lines.push(StatusLine {
            table: target.clone(),
            schedule: cron.as_ref().map_or("on new data", |c| c.as_str()).to_string(),
            last_success: success.get(target).map(|t| show(*t)),
            state: model_state(&lh, model).await?,
            next_run: match &cron {
                Some(c) => next_fire(c, tz, now).map(show),
                None => Some("on new data".to_string()),
            },
            last_error: last_error(target),
        });
    }
    print_rows(&lines, format)?;
    Ok(ExitCode::SUCCESS)
}

/// A stream source's state: what its broker holds for it (messages pending and the age of the oldest, when the
/// broker tells) and the rate it lands at (records of its batches over the last five minutes, from the run log).
async fn stream_state(
    m: &lakehouse::manifest::SourceManifest,
    records: &[RunRecord],
    table: &str,
    now: DateTime<Utc>,
) -> String {
    const WINDOW: i64 = 300;
    let since = now - chrono::Duration::seconds(WINDOW);
    let landed: u64 = records
        .iter()
        .filter(|r| r.target == table && r.status.is_success() && r.started_at >= since)
        .filter_map(|r| r.rows)
        .sum();
    let rate = format!("{:.1} records/s over 5 min", landed as f64 / WINDOW as f64);
    match lakehouse::connector::stream_lag(m).await {
        Ok(Some(lag)) => {
            let age =
                lag.oldest.map(|t| format!(", the oldest {}s old", (now - t).num_seconds().max(0))).unwrap_or_default();
            format!("streaming: {} pending{age}; {rate}", lag.pending)
        }
        Ok(None) => format!("streaming: {rate} (pending: not told by the broker)"),
        Err(e) => format!("streaming: {rate}; the broker cannot be asked: {e}"),
    }
}

/// `up to date`, `STALE (… changed)` (an input has a version its last run did not read) or `never run`.
async fn model_state(lh: &Lakehouse, model: &lakehouse::transform::plan::Model) -> Result<String, super::CliError> {
    let url = lh.warehouse.table_url(model.loaded.layer.as_str(), &model.loaded.name);
    let Some(table) = lh.warehouse.open(&url).await.map_err(super::CliError::of)? else {
        return Ok("never run".to_string());
    };
    let Some(run) = lakehouse::transform::run::last_run(&table).await else { return Ok("never run".to_string()) };
    let mut changed = Vec::new();
    for input in &model.rendered.inputs {
        let current = lh.warehouse.open_table(input).await.map_err(super::CliError::of)?.and_then(|t| t.version());
        let read = run.read.iter().find(|r| &r.table == input).map(|r| r.version);
        if current != read {
            changed.push(input.clone());
        }
    }
    Ok(if changed.is_empty() { "up to date".to_string() } else { format!("STALE ({} changed)", changed.join(", ")) })
}
