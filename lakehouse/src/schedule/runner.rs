//! The real [`Runner`]: ingest and transform with a cross-process lock per target, recorded in `system.runs`.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::{RunOutcome, Runner, Trigger, lock};
use crate::Lakehouse;
use crate::ingest::IngestReport;
use crate::runlog::{self, RunRecord, Status};
use crate::transform::{Outcome, Plan, RunOptions};

pub struct LakehouseRunner {
    pub lh: Arc<Lakehouse>,
    pub plan: Arc<Plan>,
    pub options: RunOptions,
}

fn skipped(target: &str, kind: &str, trigger: Trigger, started_at: DateTime<Utc>, why: &str) -> RunRecord {
    let mut r = RunRecord::new(target, kind, trigger.as_str(), started_at);
    r.status = Status::Skipped;
    r.error = Some(why.to_string());
    r
}

const LOCKED: &str = "another process is running it";

impl Runner for LakehouseRunner {
    fn ingest(&self, source: String, trigger: Trigger, attempt: u32) -> BoxFuture<'static, RunOutcome> {
        let lh = self.lh.clone();
        Box::pin(async move {
            let started_at = Utc::now();
            let target = format!("bronze.{source}");
            // A stream waits for the retention job (or a manual ingest) holding its lock: started again at once,
            // a skipped run would be retried without a pause.
            let continuous = lh
                .project
                .sources
                .iter()
                .any(|s| s.manifest.name.as_str() == source && s.manifest.schedule.is_continuous());
            let locked = if continuous {
                lock::wait_for_lock(&lh.warehouse, &target).await
            } else {
                lock::try_lock(&lh.warehouse, &target).await
            };
            let guard = match locked {
                Ok(Some(g)) => g,
                Ok(None) => {
                    tracing::info!(source = %source, "skipped: {LOCKED}");
                    runlog::record(&lh.warehouse, &[skipped(&target, "ingest", trigger, started_at, LOCKED)]).await;
                    return RunOutcome { ok: true, new_data: false, error: None, busy: false };
                }
                Err(e) => {
                    let error = e.to_string();
                    let mut r = RunRecord::new(&target, "ingest", trigger.as_str(), started_at);
                    (r.status, r.error, r.attempt) = (Status::Failed, Some(error.clone()), attempt);
                    runlog::record(&lh.warehouse, &[r]).await;
                    return RunOutcome { ok: false, new_data: false, error: Some(error), busy: false };
                }
            };
            let Some(src) = lh.project.sources.iter().find(|s| s.manifest.name.as_str() == source) else {
                return RunOutcome {
                    ok: false,
                    new_data: false,
                    error: Some(format!("no source `{source}`")),
                    busy: false,
                };
            };
            let fut: BoxFuture<'_, _> = Box::pin(crate::ingest::ingest_source(&lh, src));
            let result = fut.await;
            drop(guard);
            let mut record = IngestReport::run_record(&source, result.as_ref(), trigger.as_str(), started_at);
            record.attempt = attempt;
            let new_data = result.as_ref().is_ok_and(|r| r.batch.is_some());
            let outcome = RunOutcome {
                ok: record.status == Status::Succeeded,
                new_data,
                error: record.error.clone(),
                busy: false,
            };
            // A stream's runs that found no message are not recorded: one a second would bury the others.
            if new_data || !src.manifest.is_stream() || !outcome.ok {
                runlog::record(&lh.warehouse, &[record]).await;
            }
            outcome
        })
    }

    fn transform(&self, targets: Vec<String>, trigger: Trigger) -> BoxFuture<'static, Vec<(String, RunOutcome)>> {
        let (lh, plan, options) = (self.lh.clone(), self.plan.clone(), self.options.clone());
        Box::pin(async move {
            let mut failed: BTreeSet<String> = BTreeSet::new();
            let mut out = Vec::new();
            // One commit to `system.runs` per check, with the attempts that did something.
            let mut records: Vec<RunRecord> = Vec::new();
            for target in targets {
                let started_at = Utc::now();
                let inputs = &plan.models[&target].rendered.inputs;
                if let Some(bad) = inputs.iter().find(|i| failed.contains(*i)) {
                    failed.insert(target.clone());
                    let why = format!("input {bad} failed");
                    records.push(skipped(&target, "transform", trigger, started_at, &why));
                    out.push((target, RunOutcome { ok: false, new_data: false, error: Some(why), busy: false }));
                    continue;
                }
                let guard = match lock::try_lock(&lh.warehouse, &target).await {
                    Ok(Some(g)) => g,
                    Ok(None) => {
                        records.push(skipped(&target, "transform", trigger, started_at, LOCKED));
                        out.push((target, RunOutcome { ok: true, new_data: false, error: None, busy: true }));
                        continue;
                    }
                    Err(e) => {
                        failed.insert(target.clone());
                        out.push((
                            target,
                            RunOutcome { ok: false, new_data: false, error: Some(e.to_string()), busy: false },
                        ));
                        continue;
                    }
                };
                let fut: BoxFuture<'_, _> =
                    Box::pin(crate::transform::run::run(&lh, &plan, std::slice::from_ref(&target), &options));
                let reports = fut.await;
                drop(guard);
                for r in &reports {
                    records.push(r.run_record(trigger.as_str(), started_at));
                    let outcome = match &r.outcome {
                        Outcome::Built { .. } => RunOutcome { ok: true, new_data: true, error: None, busy: false },
                        Outcome::UpToDate { .. } => RunOutcome { ok: true, new_data: false, error: None, busy: false },
                        Outcome::Skipped { because } | Outcome::Failed { error: because, .. } => {
                            failed.insert(r.target.clone());
                            RunOutcome { ok: false, new_data: false, error: Some(because.clone()), busy: false }
                        }
                    };
                    out.push((r.target.clone(), outcome));
                }
            }
            runlog::record(&lh.warehouse, &records).await;
            crate::catalog_sync::sync_catalog_quietly(&lh, &plan).await;
            out
        })
    }

    fn retention(&self) -> BoxFuture<'static, ()> {
        let lh = self.lh.clone();
        Box::pin(async move {
            for src in &lh.project.sources {
                let target = format!("bronze.{}", src.manifest.name);
                let started_at = Utc::now();
                let Ok(Some(guard)) = lock::try_lock(&lh.warehouse, &target).await else {
                    // Busy (being ingested elsewhere) or unreachable: tomorrow's run catches up.
                    continue;
                };
                let fut: BoxFuture<'_, _> = Box::pin(crate::retention::apply(&lh, src, Utc::now(), false));
                let result = fut.await;
                drop(guard);
                let mut r = RunRecord::new(&target, "retention", "schedule", started_at);
                match result {
                    Ok(report) => {
                        r.rows = Some(report.bronze_rows + report.quarantine_rows);
                        r.version = report.bronze_version;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "retention failed");
                        r.status = Status::Failed;
                        r.error = Some(e.to_string());
                    }
                }
                runlog::record(&lh.warehouse, &[r]).await;
            }
            // The run log and the query log get many small commits; keep them in few files.
            for table in [&runlog::RUNS, &crate::serve::querylog::QUERIES] {
                if let Err(e) = table.compact(&lh.warehouse).await {
                    tracing::warn!(error = %e, table = table.name, "could not compact a system table");
                }
            }
        })
    }

    fn abandoned(&self, target: String, started_at: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let lh = self.lh.clone();
        Box::pin(async move {
            let kind = if target.starts_with("bronze.") { "ingest" } else { "transform" };
            let mut r = RunRecord::new(&target, kind, "schedule", started_at);
            r.status = Status::Abandoned;
            r.error = Some("stopped at shutdown before committing; nothing was published".into());
            runlog::record(&lh.warehouse, &[r]).await;
        })
    }
}
