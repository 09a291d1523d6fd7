//! The scheduler (`lakehouse schedule`): sources on their cron, models when their inputs change.
//!
//! - Each source runs on its manifest's `schedule` in the project's time zone ([`cron::next_fire`]). A run
//!   still going when its next time comes is not started again: the next run is planned from its end.
//! - A stream source with `schedule: continuous` starts its next run (micro-batch) as soon as the last one ends,
//!   beside the other sources (it takes none of the `parallel` slots); a failed run is retried with the backoff,
//!   growing up to `retry.max_backoff`, and never given up. Back-pressure is the broker's: a run takes a batch
//!   only when the last one is committed, and the messages wait in the broker meanwhile.
//! - At start, a source that never ran, or whose last successful run is older than a scheduled time that has
//!   passed (the scheduler was down), runs once at once — not once per missed time.
//! - A failed run is retried with exponential backoff and jitter, up to the manifest's `retry.attempts`; each
//!   attempt is recorded in `system.runs`. Other sources keep their own rhythm.
//! - Models are data-aware: when an ingest commits new data, the models that read the source, directly or
//!   not, run in DAG order (up-to-date ones cost a version check). A model whose sidecar sets `min_interval`
//!   runs at most once per that interval (the models reading it wait with it): downstream of a stream, which
//!   commits every second or so, it takes what landed meanwhile in one run. A model whose sidecar has a `schedule` also
//!   runs on it. At start, and every [`Config::model_check`], every model is checked (inputs written by
//!   another process).
//! - Across processes, a lock per target ([`lock`]) keeps two schedulers on one warehouse from running the same
//!   source or model at once.
//! - Retention runs daily (03:00 local by default): rows past each manifest's retention leave bronze, then
//!   every model is checked so they leave silver and gold.
//! - On SIGTERM or SIGINT the scheduler starts nothing new, lets running work finish within the grace period,
//!   then abandons what is left (nothing partial is ever committed: commits are atomic) and returns.
//!
//! Time comes from a [`Clock`], and the work is done by a [`Runner`], so tests drive days of schedule in
//! seconds with [`ManualClock`].

pub mod cron;
pub mod lock;
pub mod runner;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::task::JoinSet;

use crate::manifest::{CronSchedule, Retry};

/// Where the scheduler's time comes from.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    /// Resolves at `t` (at once when `t` has passed).
    fn sleep_until(&self, t: DateTime<Utc>) -> BoxFuture<'static, ()>;
    /// A manual clock jumps to the next planned time instead of waiting; runs then take no time.
    fn is_manual(&self) -> bool {
        false
    }
}

/// Real time.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn sleep_until(&self, t: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let wait = (t - Utc::now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }
}

/// Virtual time for tests: sleeping moves the clock to the wake-up time at once.
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self { now: Mutex::new(start) }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn sleep_until(&self, t: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        if t > *now {
            *now = t;
        }
        Box::pin(std::future::ready(()))
    }
    fn is_manual(&self) -> bool {
        true
    }
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Its scheduled time came.
    Schedule,
    /// The scheduler started and the source never ran.
    Startup,
    /// A scheduled time passed while no scheduler ran.
    Missed,
    /// A retry of a failed attempt.
    Retry,
    /// An input of the model has new data (or the scheduler started).
    Data,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Startup => "startup",
            Self::Missed => "missed",
            Self::Retry => "retry",
            Self::Data => "data",
        }
    }
}

/// How a run went, as far as scheduling is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub ok: bool,
    /// A commit with new rows (models reading it must run).
    pub new_data: bool,
    pub error: Option<String>,
    /// Not run: another process held the target's lock. A model is tried again shortly (the other process
    /// may have read its inputs before the newest data).
    pub busy: bool,
}

/// How long a model found busy waits before it is tried again.
pub const BUSY_RETRY: Duration = Duration::from_secs(5);

/// Does the work. The real one ingests and transforms, with locks and the run log; tests use their own.
pub trait Runner: Send + Sync {
    fn ingest(&self, source: String, trigger: Trigger, attempt: u32) -> BoxFuture<'static, RunOutcome>;
    /// Runs `targets` in order (a model whose input failed is skipped).
    fn transform(&self, targets: Vec<String>, trigger: Trigger) -> BoxFuture<'static, Vec<(String, RunOutcome)>>;
    /// Deletes rows past each source's retention (the daily maintenance job).
    fn retention(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
    /// Work abandoned at shutdown.
    fn abandoned(&self, _target: String, _started_at: DateTime<Utc>) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// A scheduled source.
#[derive(Debug, Clone)]
pub struct SourceJob {
    pub name: String,
    /// The bronze tables its runs write (`bronze.<name>`, and its child tables): their readers follow it.
    pub tables: Vec<String>,
    pub schedule: CronSchedule,
    pub retry: Retry,
}

/// The models and what they read.
#[derive(Debug, Clone, Default)]
pub struct ModelGraph {
    /// Targets in dependency order.
    pub order: Vec<String>,
    /// Target → the tables it reads (`bronze.x`, `silver.y`).
    pub inputs: BTreeMap<String, BTreeSet<String>>,
    /// Models with their own schedule.
    pub schedules: BTreeMap<String, CronSchedule>,
    /// Models run at most once per this interval when data triggers them (sidecar `min_interval`).
    pub min_intervals: BTreeMap<String, Duration>,
}

impl ModelGraph {
    pub fn from_plan(plan: &crate::transform::Plan) -> Self {
        Self {
            order: plan.order.clone(),
            inputs: plan.models.iter().map(|(t, m)| (t.clone(), m.rendered.inputs.clone())).collect(),
            schedules: plan
                .models
                .iter()
                .filter_map(|(t, m)| Some((t.clone(), m.loaded.sidecar.as_ref()?.schedule.clone()?)))
                .collect(),
            min_intervals: plan
                .models
                .iter()
                .filter_map(|(t, m)| Some((t.clone(), m.loaded.sidecar.as_ref()?.min_interval?.0)))
                .collect(),
        }
    }

    /// The models reading `table`, directly or not.
    pub fn downstream(&self, table: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut stack = vec![table.to_string()];
        while let Some(t) = stack.pop() {
            for (m, inputs) in &self.inputs {
                if inputs.contains(&t) && out.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
        out
    }
}

/// Settings of a scheduler.
#[derive(Clone)]
pub struct Config {
    pub tz: chrono_tz::Tz,
    pub sources: Vec<SourceJob>,
    pub models: ModelGraph,
    /// Last successful run start per target (from `system.runs`), for missed schedules.
    pub last_success: BTreeMap<String, DateTime<Utc>>,
    /// Sources run at the same time at most.
    pub parallel: usize,
    /// How long running work may take to finish after a stop signal.
    pub grace: Duration,
    /// Every this long, all models are checked (new input versions written by another process, a manual
    /// ingest, …); `None`: only after this scheduler's own ingests.
    pub model_check: Option<Duration>,
    /// When retention runs (deleting rows past each manifest's retention); `None`: never.
    pub retention: Option<CronSchedule>,
}

/// What a scheduler did, for the caller and tests.
#[derive(Debug, Default)]
pub struct Summary {
    pub runs: usize,
    pub failures: usize,
    pub abandoned: usize,
}

struct SourceState {
    job: SourceJob,
    next_due: DateTime<Utc>,
    trigger: Trigger,
    attempt: u32,
    running: Option<DateTime<Utc>>,
}

enum Done {
    Ingest(String, RunOutcome),
    Transform(Vec<(String, RunOutcome)>),
    Retention,
}

/// The wait before retry number `attempt` (1 = first retry): `backoff · 2^(attempt-1)`, at most `max_backoff`,
/// times a random factor in [0.5, 1.5).
pub fn retry_delay(retry: &Retry, attempt: u32) -> Duration {
    let base = retry.backoff.0.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(retry.max_backoff.0);
    let jitter = 0.5 + (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0;
    base.mul_f64(jitter)
}

/// Runs until `shutdown` resolves (then finishes or abandons running work), or until the clock passes `until`.
pub async fn run(
    config: Config,
    clock: Arc<dyn Clock>,
    runner: Arc<dyn Runner>,
    shutdown: impl Future<Output = ()>,
    until: Option<DateTime<Utc>>,
) -> Summary {
    let mut s = Scheduler::new(config, clock.now());
    let mut work: JoinSet<Done> = JoinSet::new();
    let mut stopping = false;
    tokio::pin!(shutdown);
    loop {
        // Nothing starts once the clock has passed `until` (a continuous source would otherwise go on forever).
        if !stopping && until.is_none_or(|u| clock.now() <= u) {
            s.start_due(clock.now(), runner.as_ref(), &mut work);
        }
        if stopping && work.is_empty() {
            break;
        }
        let wake = s.next_wake();
        if let Some(u) = until
            && work.is_empty()
            && wake.is_none_or(|w| w > u)
        {
            break;
        }
        // A manual clock does not move while work runs, so runs take no virtual time.
        let sleep: BoxFuture<'static, ()> = match wake {
            Some(w) if (!clock.is_manual() || work.is_empty()) && !stopping => clock.sleep_until(w),
            _ => Box::pin(std::future::pending()),
        };
        tokio::select! {
            biased;
            Some(done) = work.join_next(), if !work.is_empty() => s.finished(done, clock.now()),
            _ = sleep => {}
            _ = &mut shutdown, if !stopping => {
                stopping = true;
                s.stop(&mut work, runner.as_ref()).await;
            }
        }
    }
    s.summary
}

/// The scheduler's state between two wake-ups.
struct Scheduler {
    config: Config,
    sources: BTreeMap<String, SourceState>,
    /// Next run of the models on their own cron.
    model_due: BTreeMap<String, DateTime<Utc>>,
    /// Models to check at the next transform run.
    pending: BTreeSet<String>,
    /// The running transform: when it started and its models.
    transforming: Option<(DateTime<Utc>, Vec<String>)>,
    /// Models busy in another process are tried again after this.
    pending_after: Option<DateTime<Utc>>,
    check_every: Option<chrono::Duration>,
    next_check: Option<DateTime<Utc>>,
    retention_due: Option<DateTime<Utc>>,
    retaining: bool,
    /// When each model was last started by the scheduler (for `min_interval`).
    model_started: BTreeMap<String, DateTime<Utc>>,
    /// Models triggered within their `min_interval` (and the models reading them): run again at this time.
    deferred: BTreeMap<String, DateTime<Utc>>,
    summary: Summary,
}

impl Scheduler {
    /// Each source is due at its next cron time, or at once when it never ran or missed a time while no
    /// scheduler ran; every model is checked once at start (data that landed meanwhile).
    fn new(config: Config, start: DateTime<Utc>) -> Self {
        let mut sources: BTreeMap<String, SourceState> = BTreeMap::new();
        for job in &config.sources {
            let target = format!("bronze.{}", job.name);
            let (next_due, trigger) = match config.last_success.get(&target) {
                None => (start, Trigger::Startup),
                Some(last) if next_time(&config, &job.schedule, *last) <= start => (start, Trigger::Missed),
                Some(_) => (next_time(&config, &job.schedule, start), Trigger::Schedule),
            };
            tracing::info!(source = %job.name, next = %next_due, trigger = trigger.as_str(), "scheduled");
            let state = SourceState { job: job.clone(), next_due, trigger, attempt: 1, running: None };
            sources.insert(job.name.clone(), state);
        }
        let model_due =
            config.models.schedules.iter().map(|(t, s)| (t.clone(), next_time(&config, s, start))).collect();
        let check_every = config.model_check.and_then(|d| chrono::Duration::from_std(d).ok());
        Self {
            sources,
            model_due,
            pending: config.models.order.iter().cloned().collect(),
            transforming: None,
            pending_after: None,
            check_every,
            next_check: check_every.map(|d| start + d),
            retention_due: config.retention.as_ref().map(|c| next_time(&config, c, start)),
            retaining: false,
            model_started: BTreeMap::new(),
            deferred: BTreeMap::new(),
            summary: Summary::default(),
            config,
        }
    }

    /// Starts what is due at `now`: sources (at most `parallel` at a time), the retention job, and one transform
    /// run of the pending models once no source is catching up.
    fn start_due(&mut self, now: DateTime<Utc>, runner: &dyn Runner, work: &mut JoinSet<Done>) {
        // Continuous sources (streams) run beside the others: they take no slot.
        let running = self.sources.values().filter(|s| s.running.is_some() && !s.job.schedule.is_continuous()).count();
        let mut slots = self.config.parallel.max(1).saturating_sub(running);
        for s in self.sources.values_mut().filter(|s| s.next_due <= now) {
            if s.running.is_some() {
                // Still running at its next time: not doubled; planned again from its end.
                continue;
            }
            if !s.job.schedule.is_continuous() {
                if slots == 0 {
                    continue;
                }
                slots -= 1;
            }
            s.running = Some(now);
            let (name, trigger, attempt) = (s.job.name.clone(), s.trigger, s.attempt);
            tracing::info!(source = %name, trigger = trigger.as_str(), attempt, "starting");
            let fut = runner.ingest(name.clone(), trigger, attempt);
            work.spawn(async move { Done::Ingest(name, fut.await) });
        }
        // Periodic check of every model (inputs changed by another writer).
        if let (Some(at), Some(every)) = (self.next_check, self.check_every)
            && at <= now
        {
            self.pending.extend(self.config.models.order.iter().cloned());
            self.next_check = Some(now + every);
        }
        // The daily retention job (not while the previous one runs).
        if let (Some(due), Some(cron)) = (self.retention_due, &self.config.retention)
            && due <= now
            && !self.retaining
        {
            self.retaining = true;
            self.retention_due = Some(next_time(&self.config, cron, now));
            tracing::info!("starting retention");
            let fut = runner.retention();
            work.spawn(async move {
                fut.await;
                Done::Retention
            });
        }
        // Models on their own schedule.
        for (target, due) in self.model_due.iter_mut().filter(|(_, d)| **d <= now) {
            self.pending.insert(target.clone());
            self.pending.extend(self.config.models.downstream(target));
            *due = next_time(&self.config, &self.config.models.schedules[target], now);
        }
        self.defer_within_min_interval(now);
        // Models wait for the catch-up runs of sources (never run, or missed while down) to finish first.
        let catching_up = self.sources.values().any(|s| matches!(s.trigger, Trigger::Startup | Trigger::Missed));
        if self.transforming.is_none()
            && !self.pending.is_empty()
            && !catching_up
            && self.pending_after.is_none_or(|t| t <= now)
        {
            self.pending_after = None;
            let targets: Vec<String> =
                self.config.models.order.iter().filter(|t| self.pending.contains(*t)).cloned().collect();
            self.pending.clear();
            for t in &targets {
                self.model_started.insert(t.clone(), now);
            }
            self.transforming = Some((now, targets.clone()));
            let fut = runner.transform(targets, Trigger::Data);
            work.spawn(async move { Done::Transform(fut.await) });
        }
    }

    /// Pending models started less than their `min_interval` ago wait until it has passed, with the models that
    /// read them (they would read the same data again); those whose wait is over are pending again.
    fn defer_within_min_interval(&mut self, now: DateTime<Utc>) {
        let over: Vec<String> = self.deferred.iter().filter(|(_, at)| **at <= now).map(|(t, _)| t.clone()).collect();
        for t in over {
            self.deferred.remove(&t);
            self.pending.insert(t);
        }
        let waiting: Vec<(String, DateTime<Utc>)> = self
            .pending
            .iter()
            .filter_map(|t| {
                let interval = chrono::Duration::from_std(*self.config.models.min_intervals.get(t)?).ok()?;
                let due = *self.model_started.get(t)? + interval;
                (due > now).then(|| (t.clone(), due))
            })
            .collect();
        for (t, due) in waiting {
            for m in std::iter::once(t.clone()).chain(self.config.models.downstream(&t)) {
                if self.pending.remove(&m) || m == t {
                    let at = self.deferred.entry(m).or_insert(due);
                    *at = (*at).max(due);
                }
            }
        }
    }

    /// When something is next due.
    fn next_wake(&self) -> Option<DateTime<Utc>> {
        self.sources
            .values()
            .filter(|s| s.running.is_none())
            .map(|s| s.next_due)
            .chain(self.model_due.values().copied())
            .chain(self.pending_after.filter(|_| !self.pending.is_empty()))
            .chain(self.next_check)
            .chain(self.retention_due.filter(|_| !self.retaining))
            .chain(self.deferred.values().copied())
            .min()
    }

    /// A task ended: plan the source's next run (or its retry), queue the models its new data feeds.
    fn finished(&mut self, done: Result<Done, tokio::task::JoinError>, now: DateTime<Utc>) {
        self.summary.runs += 1;
        match done {
            Ok(Done::Ingest(name, outcome)) => self.ingested(&name, outcome, now),
            Ok(Done::Retention) => {
                self.retaining = false;
                // Rows deleted: the models rebuild without them.
                self.pending.extend(self.config.models.order.iter().cloned());
            }
            Ok(Done::Transform(results)) => {
                self.transforming = None;
                self.summary.failures += results.iter().filter(|(_, o)| !o.ok).count();
                let busy: Vec<&String> = results.iter().filter(|(_, o)| o.busy).map(|(t, _)| t).collect();
                tracing::info!(models = results.len(), busy = busy.len(), "models checked");
                if !busy.is_empty() {
                    self.pending.extend(busy.into_iter().cloned());
                    self.pending_after = Some(now + chrono::Duration::from_std(BUSY_RETRY).unwrap_or_default());
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "a scheduled task panicked");
                self.summary.failures += 1;
                self.transforming = None;
                for s in self.sources.values_mut() {
                    s.running = None;
                }
            }
        }
    }

    fn ingested(&mut self, name: &str, outcome: RunOutcome, now: DateTime<Utc>) {
        let Some(s) = self.sources.get_mut(name) else { return };
        s.running = None;
        if outcome.ok {
            if outcome.new_data {
                for table in &s.job.tables {
                    self.pending.extend(self.config.models.downstream(table));
                }
            }
            s.attempt = 1;
            s.trigger = Trigger::Schedule;
            s.next_due = next_time(&self.config, &s.job.schedule, now);
            return;
        }
        self.summary.failures += 1;
        let error = outcome.error.as_deref().unwrap_or("");
        if s.job.schedule.is_continuous() {
            // A stream is never given up: it reconnects with the backoff, which grows up to `max_backoff`.
            let delay = retry_delay(&s.job.retry, s.attempt);
            s.attempt = (s.attempt + 1).min(30);
            s.trigger = Trigger::Retry;
            s.next_due = now + chrono::Duration::from_std(delay).unwrap_or_default();
            tracing::warn!(source = %name, attempt = s.attempt, retry_at = %s.next_due, error, "stream run failed; reconnecting after a pause");
            return;
        }
        if s.attempt < s.job.retry.attempts {
            let delay = retry_delay(&s.job.retry, s.attempt);
            s.attempt += 1;
            s.trigger = Trigger::Retry;
            s.next_due = now + chrono::Duration::from_std(delay).unwrap_or_default();
            tracing::warn!(source = %name, attempt = s.attempt, retry_at = %s.next_due, error, "run failed; retrying");
        } else {
            tracing::error!(source = %name, attempts = s.attempt, error, "run failed; giving up until the next scheduled time");
            s.attempt = 1;
            s.trigger = Trigger::Schedule;
            s.next_due = next_time(&self.config, &s.job.schedule, now);
        }
    }

    /// A stop was requested: running work may finish within the grace period; then it is abandoned (nothing
    /// partial is committed) and recorded as such.
    async fn stop(&mut self, work: &mut JoinSet<Done>, runner: &dyn Runner) {
        let grace = self.config.grace;
        tracing::info!(running = work.len(), ?grace, "stop requested: finishing running work");
        let grace = tokio::time::sleep(grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                done = work.join_next() => match done {
                    None => break,
                    Some(Ok(Done::Ingest(name, _))) => {
                        self.summary.runs += 1;
                        if let Some(s) = self.sources.get_mut(&name) { s.running = None; }
                    }
                    Some(_) => { self.summary.runs += 1; self.transforming = None; }
                },
                _ = &mut grace => {
                    let left: Vec<(String, DateTime<Utc>)> = self
                        .sources
                        .values()
                        .filter_map(|s| Some((format!("bronze.{}", s.job.name), s.running?)))
                        .chain(self.transforming.iter().flat_map(|(at, ts)| ts.iter().map(move |t| (t.clone(), *at))))
                        .collect();
                    tracing::warn!(abandoned = left.len(), "grace period over: abandoning running work (nothing partial is committed)");
                    work.abort_all();
                    while work.join_next().await.is_some() {}
                    for (target, at) in left {
                        self.summary.abandoned += 1;
                        runner.abandoned(target, at).await;
                    }
                    break;
                }
            }
        }
    }
}

/// The next time of a cron after `after` (in ten years when it never fires again).
fn next_time(config: &Config, schedule: &CronSchedule, after: DateTime<Utc>) -> DateTime<Utc> {
    cron::next_fire(schedule, config.tz, after).unwrap_or(after + chrono::Duration::days(3650))
}
