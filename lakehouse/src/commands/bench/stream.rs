//! `lakehouse bench stream`: a NATS JetStream source under `lakehouse schedule` (`schedule: continuous`,
//! batches closed after 1 second), fed by this process at fixed rates.
//!
//! - **Latency**: each message carries its publication time; this process polls bronze's Delta log every 20 ms
//!   and notes when the row count first covers each message (messages land in publication order: one publisher,
//!   one durable consumer). Latency = that moment − publication, i.e. publish → visible to any reader of the
//!   table (`lakehouse sql` included), the poll's 20 ms in it; p50 and p99 per rate.
//! - **Sustained rate**: the scheduler is stopped, a backlog published, the scheduler started again: the rate
//!   at which it drains the backlog is the most it lands (above it, lag grows).
//! - **Memory**: the scheduler's resident memory sampled every 20 ms during each phase, and its peak over the
//!   whole run (reported by the process at exit).
//!
//! The stream is the bench's own (`LAKEHOUSE_BENCH_<random>`), deleted at the end.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::round;
use super::usage::Usage;
use super::workload::PROJECT;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One phase's figures.
pub struct Phase {
    pub name: String,
    pub messages: u64,
    pub wall_secs: f64,
    /// Publish → visible, milliseconds (rate phases).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_rss_bytes: u64,
}

pub struct StreamBench {
    pub phases: Vec<Phase>,
    pub peak_rss_bytes: Option<u64>,
}

fn manifest(url: &str, stream: &str, subject: &str) -> String {
    format!(
        "version: 1
name: bench_stream
description: Generated alarms (lakehouse bench stream)
owner: ddsp
agreement: BENCH
schedule: continuous
connector:
  kind: nats
  url: {url}
  stream: {stream}
  subject: \"{subject}.>\"
  batch: {{ max_records: 65535, max_bytes: 268435456, max_wait: 1 second }}
columns:
  id: {{ type: int, required: true }}
  sent_us: {{ type: int }}
  kind: {{ type: string }}
  arrondissement: {{ type: int, range: [1, 16] }}
  officer: {{ type: string, pii: direct, domain: police }}
  description: {{ type: string }}
retention: 1 year
retry: {{ attempts: 3, backoff: 1 second, max_backoff: 5 seconds }}
"
    )
}

fn payload(i: u64, sent_us: i64) -> Vec<u8> {
    const KINDS: [&str; 4] = ["panic", "backup", "medical", "pursuit"];
    format!(
        r#"{{"id":{i},"sent_us":{sent_us},"kind":"{}","arrondissement":{},"officer":"Agent {}","description":"Demande de renfort, patrouille numéro {} sur le secteur nord"}}"#,
        KINDS[(i % 4) as usize],
        1 + i % 16,
        i % 5000,
        i % 1000
    )
    .into_bytes()
}

/// Publishes message after message, each numbered by `sent` (where its publication time is kept), with at most
/// 2000 waiting for JetStream's acknowledgement.
struct Publisher<'a> {
    js: &'a jetstream::Context,
    subject: &'a str,
    acks: std::collections::VecDeque<jetstream::context::PublishAckFuture>,
}

impl<'a> Publisher<'a> {
    fn new(js: &'a jetstream::Context, subject: &'a str) -> Self {
        Self { js, subject, acks: Default::default() }
    }

    async fn send(&mut self, sent: &mut Vec<i64>) -> Result<(), BoxError> {
        let (i, at) = (sent.len() as u64, now_us());
        sent.push(at);
        self.acks.push_back(self.js.publish(self.subject.to_string(), payload(i, at).into()).await?);
        if self.acks.len() > 2000
            && let Some(ack) = self.acks.pop_front()
        {
            ack.await?;
        }
        Ok(())
    }

    async fn finish(self) -> Result<(), BoxError> {
        for ack in self.acks {
            ack.await?;
        }
        Ok(())
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The scheduler process, reporting its usage at exit.
fn scheduler(exe: &Path, project: &Path, dir: &Path) -> Result<Child, BoxError> {
    Ok(Command::new(exe)
        .arg("--project")
        .arg(project)
        .args(["schedule", "--grace", "60"])
        .env(super::usage::ENV, dir.join("schedule.usage"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("schedule.err"))?)
        .spawn()?)
}

fn stop(child: &mut Child) -> Result<(), BoxError> {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
    child.wait()?;
    Ok(())
}

fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib << 10)
}

/// Bronze's row count from its Delta log (each file's record count), 0 before it exists.
async fn landed(lh: &lakehouse::Lakehouse, table: &mut Option<deltalake::DeltaTable>) -> u64 {
    if table.is_none() {
        let url = lh.warehouse.table_url("bronze", "bench_stream");
        *table = lh.warehouse.open(&url).await.ok().flatten();
    }
    let Some(t) = table else { return 0 };
    if t.update_incremental(None).await.is_err() {
        return 0;
    }
    t.snapshot().map_or(0, |s| s.log_data().iter().filter_map(|f| f.num_records()).sum::<usize>() as u64)
}

/// Polls bronze until it holds `until` rows (at most `timeout`): the moments the count grew, and the peak RSS
/// of `pid` meanwhile.
async fn watch(
    lh: &lakehouse::Lakehouse,
    table: &mut Option<deltalake::DeltaTable>,
    until: u64,
    timeout: Duration,
    pid: u32,
    seen: &mut Vec<(i64, u64)>,
) -> u64 {
    let deadline = Instant::now() + timeout;
    let mut max_rss = 0;
    loop {
        let n = landed(lh, table).await;
        max_rss = max_rss.max(rss(pid));
        if seen.last().is_none_or(|(_, last)| n > *last) {
            seen.push((now_us(), n));
        }
        if n >= until || Instant::now() > deadline {
            return max_rss;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn run(
    exe: &Path,
    dir: &Path,
    nats_url: &str,
    rates: &[u64],
    seconds: u64,
    backlog: u64,
) -> Result<StreamBench, BoxError> {
    let project = dir.join("project");
    std::fs::create_dir_all(project.join("sources"))?;
    let keys = dir.join("keys");
    std::fs::write(project.join("lakehouse.yaml"), PROJECT.replace("KEYS", &keys.display().to_string()))?;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_uppercase();
    let (stream_name, subject) = (format!("LAKEHOUSE_BENCH_{tag}"), format!("bench.{}", tag.to_lowercase()));
    std::fs::write(project.join("sources/bench_stream.yaml"), manifest(nats_url, &stream_name, &subject))?;
    let client = async_nats::connect(nats_url).await.map_err(|e| format!("{nats_url}: {e}"))?;
    let js = jetstream::new(client.clone());
    js.create_stream(jetstream::stream::Config {
        name: stream_name.clone(),
        subjects: vec![format!("{subject}.>")],
        ..Default::default()
    })
    .await
    .map_err(|e| format!("creating stream {stream_name}: {e}"))?;
    let loaded = lakehouse::manifest::Project::load(&project).map_err(|e| e.to_string())?;
    let lh = lakehouse::Lakehouse::open(loaded, lakehouse::KeyUse::Write).map_err(|e| e.to_string())?;
    let result = phases(exe, dir, &project, &lh, &js, &subject, rates, seconds, backlog).await;
    let _ = js.delete_stream(&stream_name).await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn phases(
    exe: &Path,
    dir: &Path,
    project: &Path,
    lh: &lakehouse::Lakehouse,
    js: &jetstream::Context,
    subject: &str,
    rates: &[u64],
    seconds: u64,
    backlog: u64,
) -> Result<StreamBench, BoxError> {
    let publish_subject = format!("{subject}.alarms");
    let mut table = None;
    let mut sent: Vec<i64> = Vec::new();
    let mut phases = Vec::new();
    let mut child = scheduler(exe, project, dir)?;
    // The first run creates the consumer and the tables.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for &rate in rates {
        let first = sent.len() as u64;
        let total = rate * seconds;
        let started = Instant::now();
        let mut seen = Vec::new();
        let mut max_rss = 0u64;
        let tick = Duration::from_millis(10);
        let per_tick = (rate as f64 / 100.0).max(1.0);
        let mut due = 0.0f64;
        let mut publisher = Publisher::new(js, &publish_subject);
        while (sent.len() as u64) < first + total {
            due += per_tick;
            while (sent.len() as f64) < first as f64 + due && (sent.len() as u64) < first + total {
                publisher.send(&mut sent).await?;
            }
            let n = landed(lh, &mut table).await;
            if seen.last().is_none_or(|(_, last): &(i64, u64)| n > *last) {
                seen.push((now_us(), n));
            }
            max_rss = max_rss.max(rss(child.id()));
            let next = started + tick.mul_f64((sent.len() as u64 - first) as f64 / per_tick);
            tokio::time::sleep_until(next.into()).await;
        }
        publisher.finish().await?;
        max_rss = max_rss
            .max(watch(lh, &mut table, sent.len() as u64, Duration::from_secs(120), child.id(), &mut seen).await);
        let mut latencies: Vec<f64> = (first..sent.len() as u64)
            .filter_map(|i| {
                let (at, _) = seen.iter().find(|(_, n)| *n > i)?;
                Some((at - sent[i as usize]) as f64 / 1000.0)
            })
            .collect();
        if (latencies.len() as u64) < total {
            return Err(format!("{rate}/s: {} of {total} messages visible after 2 minutes", latencies.len()).into());
        }
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        phases.push(Phase {
            name: format!("{rate}/s for {seconds} s"),
            messages: total,
            wall_secs: started.elapsed().as_secs_f64(),
            p50_ms: Some(pct(0.5)),
            p99_ms: Some(pct(0.99)),
            max_rss_bytes: max_rss,
        });
        eprintln!("bench stream: {rate}/s done: p50 {:.0} ms, p99 {:.0} ms", pct(0.5), pct(0.99));
    }
    // The sustained rate: a backlog published while the scheduler is stopped, then drained.
    stop(&mut child)?;
    let mut publisher = Publisher::new(js, &publish_subject);
    for _ in 0..backlog {
        publisher.send(&mut sent).await?;
    }
    publisher.finish().await?;
    let started = Instant::now();
    let mut child = scheduler(exe, project, dir)?;
    let mut seen = Vec::new();
    let max_rss = watch(lh, &mut table, sent.len() as u64, Duration::from_secs(600), child.id(), &mut seen).await;
    let drained = started.elapsed().as_secs_f64();
    stop(&mut child)?;
    let n = landed(lh, &mut table).await;
    if n != sent.len() as u64 {
        return Err(format!("bronze holds {n} rows, {} were published", sent.len()).into());
    }
    phases.push(Phase {
        name: format!("backlog of {backlog}"),
        messages: backlog,
        wall_secs: drained,
        p50_ms: None,
        p99_ms: None,
        max_rss_bytes: max_rss,
    });
    Ok(StreamBench { phases, peak_rss_bytes: Usage::read(&dir.join("schedule.usage")).map(|u| u.peak_rss_bytes) })
}

impl std::fmt::Display for StreamBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "NATS JetStream → bronze under `lakehouse schedule` (batches closed after 1 s)")?;
        writeln!(
            f,
            "{:<22} {:>9} {:>9} {:>12} {:>9} {:>9} {:>9}",
            "phase", "messages", "wall", "landed/s", "p50", "p99", "max RSS"
        )?;
        for p in &self.phases {
            let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
            writeln!(
                f,
                "{:<22} {:>9} {:>7.1} s {:>12.0} {:>9} {:>9} {:>5} MiB",
                p.name,
                p.messages,
                p.wall_secs,
                p.messages as f64 / p.wall_secs,
                ms(p.p50_ms),
                ms(p.p99_ms),
                p.max_rss_bytes >> 20
            )?;
        }
        if let Some(peak) = self.peak_rss_bytes {
            writeln!(f, "scheduler peak RSS (last process): {} MiB", peak >> 20)?;
        }
        let phases: Vec<serde_json::Value> = self
            .phases
            .iter()
            .map(|p| {
                serde_json::json!({
                    "phase": p.name, "messages": p.messages, "wall_secs": round(p.wall_secs, 2),
                    "landed_per_sec": round(p.messages as f64 / p.wall_secs, 0),
                    "p50_ms": p.p50_ms.map(|v| round(v, 1)), "p99_ms": p.p99_ms.map(|v| round(v, 1)),
                    "max_rss_bytes": p.max_rss_bytes,
                })
            })
            .collect();
        write!(f, "{}", serde_json::json!({"bench": "stream", "phases": phases, "peak_rss_bytes": self.peak_rss_bytes}))
    }
}
