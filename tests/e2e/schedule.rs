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
    SourceJob {
        name: name.into(),
        tables: vec![format!("bronze.{name}")],
        schedule: CronSchedule::try_from(cron.to_string()).unwrap(),
        retry,
    }
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
    /// Models reported busy (locked by another process) the first time they are asked for.
    busy_once: Mutex<std::collections::BTreeSet<String>>,
}

impl FakeRunner {
    fn new(clock: Arc<ManualClock>) -> Self {
        Self {
            clock,
            calls: Mutex::default(),
            fail: Mutex::default(),
            slow: BTreeMap::new(),
            new_data: false,
            busy_once: Mutex::default(),
        }
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
        let outcome =
            RunOutcome { ok, new_data: ok && self.new_data, error: (!ok).then(|| "boom".to_string()), busy: false };
        Box::pin(std::future::ready(outcome))
    }
    fn retention(&self) -> BoxFuture<'static, ()> {
        let now = self.clock.now();
        self.calls.lock().unwrap().push(Call {
            at: now,
            what: "retention".into(),
            trigger: Trigger::Schedule,
            attempt: 1,
        });
        Box::pin(std::future::ready(()))
    }
    fn transform(&self, targets: Vec<String>, trigger: Trigger) -> BoxFuture<'static, Vec<(String, RunOutcome)>> {
        let now = self.clock.now();
        self.calls.lock().unwrap().push(Call {
            at: now,
            what: format!("transform {}", targets.join(",")),
            trigger,
            attempt: 1,
        });
        let mut busy_once = self.busy_once.lock().unwrap();
        let out = targets
            .into_iter()
            .map(|t| {
                let busy = busy_once.remove(&t);
                (t, RunOutcome { ok: true, new_data: !busy, error: None, busy })
            })
            .collect();
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
        model_check: None,
        retention: None,
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

/// New data in a source runs the models downstream of it, after the catch-up runs of sources; every model is
/// also checked periodically.
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
        min_intervals: BTreeMap::new(),
    };
    let mut cfg = config(vec![job("src_a", "0 * * * *", 3), job("src_b", "0 6 * * *", 3)], utc("2026-11-28T08:30:00Z"));
    cfg.last_success.remove("bronze.src_a");
    cfg.models = models;
    cfg.model_check = Some(Duration::from_secs(3600));
    let r = drive(cfg, "2026-11-28T08:45:00Z", "2026-11-28T09:50:00Z", |r| r.new_data = true).await;
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
            // The hourly check of every model (new versions written by another process).
            "09:45 transform silver.a,silver.b,gold.ab",
        ]
    );
}

/// A continuous (stream) source runs again as soon as its run ends, beside a cron source it takes no slot from;
/// the model downstream of it runs at most once per its `min_interval` (and the model reading that one waits
/// with it); a failing stream reconnects after a growing pause and is never given up.
#[tokio::test]
async fn a_stream_runs_continuously_and_its_models_at_most_once_per_min_interval() {
    let inputs: BTreeMap<String, std::collections::BTreeSet<String>> =
        [("silver.s", vec!["bronze.stream"]), ("gold.g", vec!["silver.s"])]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
            .collect();
    let models = ModelGraph {
        order: vec!["silver.s".into(), "gold.g".into()],
        inputs,
        schedules: BTreeMap::new(),
        min_intervals: [("silver.s".to_string(), Duration::from_secs(60))].into_iter().collect(),
    };
    let mut stream = job("stream", "continuous", 3);
    stream.retry.backoff = lakehouse::manifest::Duration(Duration::from_secs(2));
    stream.retry.max_backoff = lakehouse::manifest::Duration(Duration::from_secs(10));
    let mut cfg = config(vec![stream, job("files", "*/1 * * * *", 3)], utc("2026-11-28T08:00:00Z"));
    cfg.models = models;
    cfg.parallel = 1;
    let r = drive(cfg, "2026-11-28T09:00:00Z", "2026-11-28T09:03:30Z", |r| {
        r.new_data = true;
        r.slow.insert("stream".into(), chrono::Duration::seconds(1));
        r.fail.lock().unwrap().insert("stream".into(), 6);
    })
    .await;
    let stream_runs = r.calls("stream");
    // Six failures: retried after a pause that grows (2 s doubling, ±50 %, at most 10 s), never given up.
    let failures: Vec<i64> = stream_runs.windows(2).take(6).map(|w| (w[1].at - w[0].at).num_milliseconds()).collect();
    assert!(failures.iter().all(|ms| (1_000..=16_000).contains(ms)), "{failures:?}");
    assert!(stream_runs[..7].iter().skip(1).all(|c| c.trigger == Trigger::Retry));
    // Then batch after batch, each starting when the last ended (1 s each).
    let after: Vec<i64> = stream_runs[7..].windows(2).map(|w| (w[1].at - w[0].at).num_seconds()).collect();
    assert!(after.len() > 100 && after.iter().all(|s| *s == 1), "{after:?}");
    // The cron source keeps its minutes although `parallel` is 1.
    assert_eq!(r.calls("files").len(), 4);
    // The models: at most once a minute for silver.s, and gold.g with it.
    let transforms: Vec<Call> =
        r.calls.lock().unwrap().iter().filter(|c| c.what.starts_with("transform")).cloned().collect();
    let silver: Vec<DateTime<Utc>> = transforms.iter().filter(|c| c.what.contains("silver.s")).map(|c| c.at).collect();
    assert!(silver.len() >= 3, "{transforms:?}");
    assert!(silver.windows(2).all(|w| w[1] - w[0] >= chrono::Duration::seconds(60)), "{transforms:?}");
    assert!(transforms.iter().all(|c| !c.what.contains("gold.g") || c.what.contains("silver.s")), "{transforms:?}");
}

// ---- the real binary ----

use lakehouse_tests::{POLICE_HEADER, TestProject, query_lake, rows, stdout};
use std::io::BufRead;
use std::process::{Child, Stdio};

/// Starts `lakehouse schedule` with stderr read line by line on a thread.
fn start_scheduler(p: &TestProject, args: &[&str], fault: Option<&str>) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut cmd = p.command(&[&["schedule"], args].concat());
    if let Some(f) = fault {
        cmd.env("LAKEHOUSE_FAULT", f);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Waits for a log line containing `needle` (at most 60 s); returns the lines seen.
fn wait_for(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let hit = line.contains(needle);
            seen.push(line);
            if hit {
                return seen;
            }
        }
    }
    panic!("no log line with {needle:?} in:\n{}", seen.join("\n"));
}

fn sigterm(child: &Child) {
    let status = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
}

fn count(p: &TestProject, sql: &str) -> Vec<Vec<String>> {
    let lh = p.load();
    tokio::runtime::Runtime::new().unwrap().block_on(query_lake(&lh, sql))
}

/// SIGTERM during an ingest with no grace period: the run is abandoned without a partial commit, the process
/// exits 0, and the next run takes the files exactly once.
#[test]
fn sigterm_during_an_ingest_abandons_it_cleanly() {
    let p = TestProject::example(None);
    let (child, rx) = start_scheduler(&p, &["--grace", "0", "--parallel", "1"], Some("slow-ingest"));
    // The first source has parsed its files and waits before committing.
    wait_for(&rx, "file parsed");
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit {:?}", out.status);
    let text = stdout(&out);
    assert!(text.contains("1 abandoned at shutdown"), "{text}");
    // Nothing of it was committed.
    let dir = p.path().join("warehouse/bronze");
    let committed: Vec<_> = ["bmpm_interventions", "ddsp_incidents"]
        .iter()
        .filter(|t| dir.join(t).join("_delta_log/00000000000000000001.json").exists())
        .collect();
    assert!(committed.is_empty(), "{committed:?} committed a batch");
    let abandoned = count(&p, "SELECT target, status FROM system.runs WHERE status = 'abandoned'");
    assert_eq!(abandoned, rows(&[&["bronze.bmpm_interventions", "abandoned"]]));
    // The next run takes the files, once.
    let out = p.run(&["ingest", "bmpm_interventions"]);
    assert!(out.status.success());
    assert_eq!(
        count(&p, "SELECT count(*), count(DISTINCT intervention_id) FROM bronze.bmpm_interventions"),
        rows(&[&["794", "794"]])
    );
}

/// SIGTERM with a grace period: the running ingest finishes and commits, nothing new starts, exit 0.
#[test]
fn sigterm_lets_running_work_finish_within_the_grace_period() {
    let p = TestProject::example(None);
    let (child, rx) = start_scheduler(&p, &["--grace", "30", "--parallel", "1"], Some("slow-ingest"));
    wait_for(&rx, "file parsed");
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(stdout(&out).contains("0 abandoned at shutdown"), "{}", stdout(&out));
    assert_eq!(count(&p, "SELECT count(*) FROM bronze.bmpm_interventions"), rows(&[&["794"]]));
    // The sources not started yet were not started after the signal.
    assert!(!p.path().join("warehouse/bronze/ville_signalements/_delta_log/00000000000000000001.json").exists());
    let runs = count(&p, "SELECT target, status FROM system.runs ORDER BY started_at");
    assert_eq!(runs, rows(&[&["bronze.bmpm_interventions", "succeeded"]]));
}

/// A scheduler left running builds and keeps fresh every layer: a new drop-zone file is ingested on the
/// source's schedule and the models downstream follow.
#[test]
fn a_running_scheduler_keeps_every_layer_fresh() {
    let p = TestProject::example(None);
    // The police feed every 2 seconds (6 fields: seconds first).
    let m = std::fs::read_to_string(p.path().join("sources/ddsp_incidents.yaml")).unwrap();
    p.write("sources/ddsp_incidents.yaml", m.replace("schedule: \"*/15 * * * *\"", "schedule: \"*/2 * * * * *\""));
    let (child, rx) = start_scheduler(&p, &[], None);
    wait_for(&rx, "target=gold.night_noise_near_events");
    let header = POLICE_HEADER;
    p.write(
        "sources/data/ddsp/incidents_2026-11-22.csv",
        format!("{header}DDSP-2026-990001;22/11/2026 23:10;tapage;43,29;5,38;1;A B;06;\n"),
    );
    wait_for(&rx, "target=silver.ddsp_incidents}: committed version=2");
    wait_for(&rx, "target=gold.incidents_by_arrondissement_period}: committed version=2");
    sigterm(&child);
    assert!(child.wait_with_output().unwrap().status.success());
    assert_eq!(count(&p, "SELECT count(*) FROM silver.ddsp_incidents"), rows(&[&["1486"]]));
    let triggers = count(&p, "SELECT DISTINCT trigger FROM system.runs ORDER BY 1");
    assert_eq!(triggers, rows(&[&["data"], &["schedule"], &["startup"]]));
}

/// `status`: per table, last success, freshness, next run and last error.
#[test]
fn status_reports_freshness_errors_and_next_runs() {
    let p = TestProject::example(None);
    let out = p.run(&["status"]);
    assert!(out.status.success());
    let text = stdout(&out);
    let line = |t: &str, text: &str| {
        text.lines().find(|l| l.starts_with(&format!("{t} "))).unwrap_or_else(|| panic!("{t} in\n{text}")).to_string()
    };
    assert!(line("bronze.ddsp_incidents", &text).contains("never run"), "{text}");
    assert!(line("gold.fire_response_times", &text).contains("never run"), "{text}");

    assert!(p.run(&["run"]).status.success());
    // A source whose drop zone disappeared fails; another gets new data that its models have not seen.
    std::fs::rename(p.path().join("sources/data/meteo"), p.path().join("sources/data/meteo_gone")).unwrap();
    std::fs::copy(
        p.path().join("sources/data/ddsp/incidents_2026-11-08.csv"),
        p.path().join("sources/data/ddsp/incidents_2026-11-22.csv"),
    )
    .unwrap();
    lakehouse_tests::settled(&p.path().join("sources/data/ddsp/incidents_2026-11-22.csv"));
    assert!(!p.run(&["ingest"]).status.success());
    let text = stdout(&p.run(&["status"]));
    let ddsp = line("bronze.ddsp_incidents", &text);
    assert!(ddsp.contains("*/15 * * * *") && ddsp.contains("on time"), "{text}");
    let meteo = line("bronze.meteo_observations", &text);
    assert!(meteo.contains("on time") && meteo.contains("drop zone"), "the last error is shown:\n{text}");
    assert!(line("silver.ddsp_incidents", &text).contains("STALE (bronze.ddsp_incidents changed)"), "{text}");
    assert!(line("silver.bmpm_interventions", &text).contains("up to date"), "{text}");
    assert!(line("gold.fire_response_times", &text).contains("on new data"), "{text}");
    // `runs` lists the attempts; `--failed` only the failures, with their error.
    let runs = stdout(&p.run(&["runs", "--target", "bronze.ddsp_incidents"]));
    let rows: Vec<&str> = runs.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{runs}");
    assert!(
        rows.iter().all(|r| r.contains("bronze.ddsp_incidents") && r.contains("ingest") && r.contains("succeeded")),
        "{runs}"
    );
    let failed = stdout(&p.run(&["runs", "--failed"]));
    let rows: Vec<&str> = failed.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{failed}");
    assert!(
        rows[0].contains("bronze.meteo_observations") && rows[0].contains("failed") && rows[0].contains("drop zone"),
        "{failed}"
    );

    // A source whose last success is two days old is late.
    let lh = p.load();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let old = Utc::now() - chrono::Duration::days(2);
    let p2 = TestProject::example(None);
    let lh2 = p2.load();
    rt.block_on(lakehouse::runlog::record(
        &lh2.warehouse,
        &[lakehouse::runlog::RunRecord::new("bronze.ville_events", "ingest", "manual", old)],
    ));
    let text = stdout(&p2.run(&["status"]));
    assert!(line("bronze.ville_events", &text).contains("LATE (due"), "{text}");
    drop(lh);
}

/// Two schedulers on one S3 warehouse, both starting every source at once (each ingest waits two seconds
/// before committing): a target never runs in both at the same time, the loser of each race skips, and every
/// record lands once.
#[tokio::test]
async fn two_schedulers_on_one_s3_warehouse_never_overlap() {
    let (p, _) = crate::s3::example_on_s3().await;
    let (a, rx_a) = start_scheduler(&p, &["--parallel", "5"], Some("slow-ingest"));
    let (b, rx_b) = start_scheduler(&p, &["--parallel", "5"], Some("slow-ingest"));
    tokio::task::spawn_blocking(move || {
        wait_for(&rx_a, "models checked");
        wait_for(&rx_b, "models checked");
    })
    .await
    .unwrap();
    // Models found busy in one process are retried after a few seconds: wait until gold is built.
    let lh = p.load();
    for _ in 0..120 {
        if lh.warehouse.open(&lh.warehouse.table_url("gold", "night_noise_near_events")).await.unwrap().is_some()
            && query_lake(&lh, "SELECT count(*) FROM silver.ddsp_incidents").await == rows(&[&["1485"]])
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    sigterm(&a);
    sigterm(&b);
    assert!(a.wait_with_output().unwrap().status.success());
    assert!(b.wait_with_output().unwrap().status.success());
    let runs = query_lake(
        &lh,
        "SELECT target, status, error, CAST(started_at AS BIGINT) AS s, CAST(ended_at AS BIGINT) AS e, process FROM system.runs ORDER BY target, started_at",
    )
    .await;
    let skipped = runs.iter().filter(|r| r[1] == "skipped" && r[2].contains("another process")).count();
    assert!(skipped >= 1, "the second scheduler must have found targets locked:\n{runs:?}");
    // Runs of one target that did work never overlap in time.
    let worked: Vec<&Vec<String>> = runs.iter().filter(|r| r[1] != "skipped").collect();
    for w in worked.windows(2) {
        if w[0][0] == w[1][0] {
            let (end0, start1): (i64, i64) = (w[0][4].parse().unwrap(), w[1][3].parse().unwrap());
            assert!(end0 <= start1, "{} ran twice at once:\n{:?}\n{:?}", w[0][0], w[0], w[1]);
        }
    }
    let n = query_lake(&lh, "SELECT count(*), count(DISTINCT incident_id) FROM bronze.ddsp_incidents").await;
    assert_eq!(n, rows(&[&["1485", "1485"]]));
    let n = query_lake(&lh, "SELECT count(*) FROM silver.ddsp_incidents").await;
    assert_eq!(n, rows(&[&["1485"]]));
}

/// Locks exclude each other: an OS file lock on `file://`, a conditional-PUT lease on S3 that a dead
/// process's expired lease does not block.
#[tokio::test]
async fn target_locks_exclude_each_other_on_disk_and_on_s3() {
    use lakehouse::schedule::lock::try_lock;
    use object_store::ObjectStoreExt;
    let local = TestProject::example(None);
    let (s3, prefix) = crate::s3::example_on_s3().await;
    for p in [&local, &s3] {
        let lh = p.load();
        let first = try_lock(&lh.warehouse, "bronze.x").await.unwrap();
        assert!(first.is_some());
        assert!(try_lock(&lh.warehouse, "bronze.x").await.unwrap().is_none(), "held");
        assert!(try_lock(&lh.warehouse, "bronze.y").await.unwrap().is_some(), "another target is free");
        drop(first);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(try_lock(&lh.warehouse, "bronze.x").await.unwrap().is_some(), "released");
    }
    // A lease left by a process that died (expired) is taken over.
    let url = url::Url::parse(&format!("{prefix}/lake/_locks/bronze.z.lock")).unwrap();
    let (store, path) =
        object_store::parse_url_opts(&url, lakehouse::storage::storage_options(&url, &Default::default())).unwrap();
    let stale = serde_json::json!({ "owner": "dead:1/x", "expires_at": Utc::now().timestamp_millis() - 1000 });
    store.put(&path, serde_json::to_vec(&stale).unwrap().into()).await.unwrap();
    let lh = s3.load();
    assert!(try_lock(&lh.warehouse, "bronze.z").await.unwrap().is_some());
    let live = serde_json::json!({ "owner": "alive:1/x", "expires_at": Utc::now().timestamp_millis() + 60_000 });
    let path2 =
        object_store::path::Path::from(format!("{}/../bronze.w.lock", path.as_ref()).replace("/bronze.z.lock/..", ""));
    store.put(&path2, serde_json::to_vec(&live).unwrap().into()).await.unwrap();
    assert!(try_lock(&lh.warehouse, "bronze.w").await.unwrap().is_none(), "a live lease blocks");
}

/// A model another process was running (locked) is tried again a few seconds later.
#[tokio::test]
async fn a_busy_model_is_tried_again_shortly() {
    let models = ModelGraph {
        order: vec!["silver.a".into()],
        inputs: [("silver.a".to_string(), ["bronze.src_a".to_string()].into_iter().collect())].into_iter().collect(),
        schedules: BTreeMap::new(),
        min_intervals: BTreeMap::new(),
    };
    let mut cfg = config(vec![job("src_a", "0 * * * *", 3)], utc("2026-11-28T08:30:00Z"));
    cfg.models = models;
    let r = drive(cfg, "2026-11-28T08:45:00Z", "2026-11-28T08:50:00Z", |r| {
        r.busy_once.lock().unwrap().insert("silver.a".into());
    })
    .await;
    let calls: Vec<String> =
        r.calls.lock().unwrap().iter().map(|c| format!("{} {}", c.at.format("%H:%M:%S"), c.what)).collect();
    assert_eq!(calls, ["08:45:00 transform silver.a", "08:45:05 transform silver.a"]);
}
