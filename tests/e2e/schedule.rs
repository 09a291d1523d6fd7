//! The scheduler: virtual-time runs of the real scheduling loop (days of ticks in milliseconds, with a runner
//! that records what it is asked to do), then the real binary: stop signals, two processes on one S3
//! warehouse, `status`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use lakehouse::manifest::{CronSchedule, Retry};
use lakehouse::schedule::{self, Clock, Config, ManualClock, ModelGraph, RunOutcome, Runner, SourceJob, Trigger};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn job(name: &str, cron: &str, attempts: u32) -> SourceJob {
    let mut retry = Retry { attempts, ..Retry::default() };
    retry.backoff = lakehouse::manifest::Duration(Duration::from_secs(60));
    SourceJob { name: name.into(), schedule: CronSchedule::try_from(cron.to_string()).unwrap(), retry }
}

#[derive(Debug, Clone, PartialEq)]
struct Call {
    at: DateTime<Utc>,
    what: String,
    trigger: Trigger,
    attempt: u32,
}

/// Records calls at the clock's time; fails a source's first `fail[name]` attempts; a run of `slow[name]`
/// moves the clock forward by that long.
struct FakeRunner {
    clock: Arc<ManualClock>,
    calls: Mutex<Vec<Call>>,
    fail: Mutex<BTreeMap<String, u32>>,
    slow: BTreeMap<String, chrono::Duration>,
    new_data: bool,
}

impl FakeRunner {
    fn new(clock: Arc<ManualClock>) -> Self {
        Self { clock, calls: Mutex::default(), fail: Mutex::default(), slow: BTreeMap::new(), new_data: false }
    }
    fn calls(&self, what: &str) -> Vec<Call> {
        self.calls.lock().unwrap().iter().filter(|c| c.what == what).cloned().collect()
    }
}

impl Runner for FakeRunner {
    fn ingest(&self, source: String, trigger: Trigger, attempt: u32) -> BoxFuture<'static, RunOutcome> {
        let now = self.clock.now();
        self.calls.lock().unwrap().push(Call { at: now, what: source.clone(), trigger, attempt });
        if let Some(d) = self.slow.get(&source) {
            // A manual clock moves when asked to sleep; the returned future is already complete.
            drop(self.clock.sleep_until(now + *d));
        }
        let mut fail = self.fail.lock().unwrap();
        let ok = match fail.get_mut(&source) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        };
        let outcome = RunOutcome { ok, new_data: ok && self.new_data, error: (!ok).then(|| "boom".to_string()) };
        Box::pin(std::future::ready(outcome))
    }
    fn transform(&self, targets: Vec<String>, trigger: Trigger) -> BoxFuture<'static, Vec<(String, RunOutcome)>> {
        let now = self.clock.now();
        self.calls.lock().unwrap().push(Call {
            at: now,
            what: format!("transform {}", targets.join(",")),
            trigger,
            attempt: 1,
        });
        let out = targets.into_iter().map(|t| (t, RunOutcome { ok: true, new_data: true, error: None })).collect();
        Box::pin(std::future::ready(out))
    }
}

fn config(sources: Vec<SourceJob>, last_success: DateTime<Utc>) -> Config {
    let last = sources.iter().map(|s| (format!("bronze.{}", s.name), last_success)).collect();
    Config {
        tz: chrono_tz::Europe::Paris,
        sources,
        models: ModelGraph::default(),
        last_success: last,
        parallel: 4,
        grace: Duration::from_secs(1),
    }
}

async fn drive(config: Config, start: &str, until: &str, setup: impl FnOnce(&mut FakeRunner)) -> Arc<FakeRunner> {
    let clock = Arc::new(ManualClock::new(utc(start)));
    let mut runner = FakeRunner::new(clock.clone());
    setup(&mut runner);
    let runner = Arc::new(runner);
    schedule::run(config, clock, runner.clone(), std::future::pending(), Some(utc(until))).await;
    runner
}

/// Three days across the October change in virtual time: an interval job keeps every real quarter hour, a
/// daily job runs daily, and the job at 02:30 runs once on the day 02:30 happens twice.
#[tokio::test]
async fn three_days_of_ticks_across_the_october_change() {
    let sources =
        vec![job("quarter", "*/15 * * * *", 3), job("morning", "0 6 * * *", 3), job("night", "30 2 * * *", 3)];
    let r = drive(config(sources, utc("2026-10-23T23:55:00Z")), "2026-10-23T23:59:30Z", "2026-10-26T23:59:59Z", |_| {})
        .await;
    assert_eq!(r.calls("quarter").len(), 72 * 4);
    let morning: Vec<String> = r.calls("morning").iter().map(|c| c.at.to_rfc3339()).collect();
    assert_eq!(morning, ["2026-10-24T04:00:00+00:00", "2026-10-25T05:00:00+00:00", "2026-10-26T05:00:00+00:00"]);
    let night: Vec<String> = r.calls("night").iter().map(|c| c.at.to_rfc3339()).collect();
    assert_eq!(night, ["2026-10-24T00:30:00+00:00", "2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]);
    assert!(r.calls("quarter").iter().all(|c| c.trigger == Trigger::Schedule && c.attempt == 1));
}

/// March: the job at 02:30 runs at 03:00 (the change) on the short day.
#[tokio::test]
async fn the_march_change_runs_a_skipped_time_once() {
    let sources = vec![job("night", "30 2 * * *", 3), job("hourly", "0 * * * *", 3)];
    let r = drive(config(sources, utc("2026-03-28T00:00:00Z")), "2026-03-28T00:00:00Z", "2026-03-29T22:59:59Z", |_| {})
        .await;
    let night: Vec<String> = r.calls("night").iter().map(|c| c.at.to_rfc3339()).collect();
    assert_eq!(night, ["2026-03-28T01:30:00+00:00", "2026-03-29T01:00:00+00:00"]);
    // 2026-03-29 has 23 local hours (23:00 UTC on the 28th to 22:00 UTC on the 29th).
    let on_29 = r
        .calls("hourly")
        .iter()
        .filter(|c| c.at >= utc("2026-03-28T23:00:00Z") && c.at < utc("2026-03-29T22:00:00Z"))
        .count();
    assert_eq!(on_29, 23);
}

/// A failing run is retried with growing, jittered delays up to `retry.attempts`, then waits for its next
/// scheduled time; the other sources keep their rhythm.
#[tokio::test]
async fn failures_retry_with_backoff_then_give_up_until_the_next_time() {
    let sources = vec![job("flaky", "0 * * * *", 3), job("broken", "0 * * * *", 2), job("steady", "*/30 * * * *", 3)];
    let r = drive(config(sources, utc("2026-11-28T08:00:00Z")), "2026-11-28T08:00:30Z", "2026-11-28T10:59:00Z", |r| {
        r.fail.lock().unwrap().extend([("flaky".to_string(), 2), ("broken".to_string(), 100)]);
    })
    .await;
    let flaky = r.calls("flaky");
    let attempts: Vec<(u32, Trigger)> = flaky.iter().map(|c| (c.attempt, c.trigger)).collect();
    assert_eq!(&attempts[..3], &[(1, Trigger::Schedule), (2, Trigger::Retry), (3, Trigger::Retry)]);
    let first_wait = (flaky[1].at - flaky[0].at).num_seconds();
    let second_wait = (flaky[2].at - flaky[1].at).num_seconds();
    assert!((30..90).contains(&first_wait), "first retry after {first_wait} s (60 s ± 50%)");
    assert!((60..180).contains(&second_wait), "second retry after {second_wait} s (120 s ± 50%)");
    // It succeeded on the third attempt: the next run is the next hour's, a first attempt.
    assert_eq!((flaky[3].at.to_rfc3339(), flaky[3].attempt), ("2026-11-28T10:00:00+00:00".to_string(), 1));
    // Two attempts per hour for the broken one, then it waits for the next hour.
    let broken: Vec<u32> = r.calls("broken").iter().map(|c| c.attempt).collect();
    assert_eq!(broken, [1, 2, 1, 2]);
    assert_eq!(r.calls("steady").len(), 5);
}

/// After three days down, an hourly source runs once at start (trigger `missed`), not 72 times.
#[tokio::test]
async fn a_missed_schedule_runs_once() {
    let sources = vec![job("hourly", "0 * * * *", 3), job("fresh", "0 * * * *", 3)];
    let mut cfg = config(sources, utc("2026-11-25T09:00:00Z"));
    cfg.last_success.insert("bronze.fresh".into(), utc("2026-11-28T09:00:00Z"));
    let r = drive(cfg, "2026-11-28T09:30:00Z", "2026-11-28T10:30:00Z", |_| {}).await;
    let hourly: Vec<(String, Trigger)> = r.calls("hourly").iter().map(|c| (c.at.to_rfc3339(), c.trigger)).collect();
    assert_eq!(
        hourly,
        [
            ("2026-11-28T09:30:00+00:00".into(), Trigger::Missed),
            ("2026-11-28T10:00:00+00:00".into(), Trigger::Schedule)
        ]
    );
    let fresh: Vec<Trigger> = r.calls("fresh").iter().map(|c| c.trigger).collect();
    assert_eq!(fresh, [Trigger::Schedule]);
    // Never run at all: runs at start.
    let mut cfg = config(vec![job("new", "0 6 * * *", 3)], utc("2026-11-28T09:00:00Z"));
    cfg.last_success.clear();
    let r = drive(cfg, "2026-11-28T09:30:00Z", "2026-11-28T09:31:00Z", |_| {}).await;
    assert_eq!(r.calls("new").iter().map(|c| c.trigger).collect::<Vec<_>>(), [Trigger::Startup]);
}

/// A run that outlasts its interval is not doubled: the next run is planned from its end.
#[tokio::test]
async fn a_long_run_is_not_doubled() {
    let r = drive(
        config(vec![job("slow", "*/15 * * * *", 3)], utc("2026-11-28T08:59:00Z")),
        "2026-11-28T09:00:00Z",
        "2026-11-28T10:00:00Z",
        |r| {
            r.slow.insert("slow".into(), chrono::Duration::minutes(40));
        },
    )
    .await;
    let at: Vec<String> = r.calls("slow").iter().map(|c| c.at.format("%H:%M").to_string()).collect();
    assert_eq!(at, ["09:00", "09:45"]);
}

/// New data in a source runs the models downstream of it, after the catch-up runs of sources; a run without
/// new data runs none.
#[tokio::test]
async fn models_run_when_their_inputs_change() {
    let inputs: BTreeMap<String, std::collections::BTreeSet<String>> = [
        ("silver.a", vec!["bronze.src_a"]),
        ("silver.b", vec!["bronze.src_b"]),
        ("gold.ab", vec!["silver.a", "silver.b"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    let models = ModelGraph {
        order: vec!["silver.a".into(), "silver.b".into(), "gold.ab".into()],
        inputs,
        schedules: BTreeMap::new(),
    };
    let mut cfg = config(vec![job("src_a", "0 * * * *", 3), job("src_b", "0 6 * * *", 3)], utc("2026-11-28T08:30:00Z"));
    cfg.last_success.remove("bronze.src_a");
    cfg.models = models;
    let r = drive(cfg, "2026-11-28T08:45:00Z", "2026-11-28T09:30:00Z", |r| r.new_data = true).await;
    let calls: Vec<String> =
        r.calls.lock().unwrap().iter().map(|c| format!("{} {}", c.at.format("%H:%M"), c.what)).collect();
    assert_eq!(
        calls,
        [
            "08:45 src_a",
            // At start every model is checked once, after the catch-up ingest.
            "08:45 transform silver.a,silver.b,gold.ab",
            "09:00 src_a",
            "09:00 transform silver.a,gold.ab",
        ]
    );
}
