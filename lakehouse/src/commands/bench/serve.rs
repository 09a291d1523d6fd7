//! `lakehouse bench serve`: the query server as a client sees it. The job of `bench job` builds a gold table,
//! `lakehouse serve` runs as its own process (its CPU time and peak memory reported at exit, see
//! [`super::usage`]), and PostgreSQL clients (tokio-postgres, over TCP on loopback, SCRAM login) measure:
//! - the latency of a small gold query, prepared once and run with a parameter, one client after the other;
//! - the throughput of that query with many clients at once;
//! - a long result streamed to one client (generated rows), and the server's memory when it starts and at its
//!   peak until the end (the peak resident size started over before the statement, read after).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::round;
use super::usage::Usage;

/// The small gold query: the largest cells of one arrondissement.
const QUERY: &str = "SELECT category, agency, incidents FROM gold.incidents_by_area \
                     WHERE arrondissement = $1 ORDER BY incidents DESC LIMIT 10";

const POLICY: &str = "version: 1
roles:
  analyst:
    description: Reads every gold table (lakehouse bench serve).
    grants:
      - table: gold.*
";

/// Figures of one run.
#[derive(Debug, Clone)]
pub struct ServeBench {
    pub rows: u64,
    pub latency_runs: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub clients: usize,
    pub queries_per_sec: f64,
    pub stream_rows: u64,
    pub stream_secs: f64,
    /// The server's resident memory when the stream started and its peak until the end (Linux), in bytes: the
    /// peak reads at least the first, the memory the server already held.
    pub stream_rss_bytes: Option<(u64, u64)>,
    pub server: Usage,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub async fn run(exe: &Path, dir: &Path, rows: u64, clients: usize, stream_rows: u64) -> Result<ServeBench, BoxError> {
    let exe_owned = exe.to_path_buf();
    let dir_owned = dir.to_path_buf();
    tokio::task::spawn_blocking(move || super::job::run(&exe_owned, &dir_owned, rows, 1, false)).await??;
    let project = dir.join("project");
    std::fs::create_dir_all(project.join("access"))?;
    std::fs::write(project.join("access/roles.yaml"), POLICY)?;
    let mut yaml = std::fs::read_to_string(project.join("lakehouse.yaml"))?;
    yaml.push_str(&format!("serve: {{ max_rows: {}, max_connections: {} }}\n", stream_rows.max(1), clients + 8));
    std::fs::write(project.join("lakehouse.yaml"), yaml)?;
    let password = lakehouse::access::scram::generate_password();
    let mut add = Command::new(exe)
        .arg("--project")
        .arg(&project)
        .args(["user", "add", "bench", "--role", "analyst", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    add.stdin.take().ok_or("stdin")?.write_all(format!("{password}\n").as_bytes())?;
    let added = add.wait_with_output()?;
    if !added.status.success() {
        return Err(format!("user add failed: {}", String::from_utf8_lossy(&added.stderr)).into());
    }

    let usage_file = dir.join("serve.usage");
    let _ = std::fs::remove_file(&usage_file);
    let mut server = Command::new(exe)
        .arg("--project")
        .arg(&project)
        .args(["-q", "serve", "--listen", "127.0.0.1:0"])
        .env(super::usage::ENV, &usage_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(server.stderr.take().ok_or("stderr")?).lines();
    let mut port: Option<u16> = None;
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("serving on ") {
            port = rest.split_whitespace().next().and_then(|a| a.rsplit(':').next()).and_then(|p| p.parse().ok());
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let Some(port) = port else {
        let _ = server.kill();
        return Err("lakehouse serve did not start".into());
    };
    let conninfo = format!("host=127.0.0.1 port={port} user=bench dbname=lake password={password}");
    let measured = measure(&conninfo, clients, stream_rows, &server.id().to_string()).await;
    // SIGTERM: the server stops by itself and reports its usage.
    let _ = Command::new("kill").args(["-TERM", &server.id().to_string()]).status();
    server.wait()?;
    let (latencies, queries_per_sec, (stream_secs, stream_rss_bytes)) = measured?;
    let server_usage = Usage::read(&usage_file).ok_or("the server did not report its CPU time and memory")?;
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    Ok(ServeBench {
        rows,
        latency_runs: latencies.len(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        clients,
        queries_per_sec,
        stream_rows,
        stream_secs,
        stream_rss_bytes,
        server: server_usage,
    })
}

async fn connect(conninfo: &str) -> Result<tokio_postgres::Client, BoxError> {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Latencies (ms, sorted), queries per second with `clients` clients, seconds to stream `stream_rows` rows and
/// the memory of the server (process `server`) at the start of the stream and at its peak until the end.
async fn measure(
    conninfo: &str,
    clients: usize,
    stream_rows: u64,
    server: &str,
) -> Result<(Vec<f64>, f64, (f64, Option<(u64, u64)>)), BoxError> {
    let client = connect(conninfo).await?;
    let statement = client.prepare(QUERY).await?;
    for i in 0..50 {
        client.query(&statement, &[&(1 + i % 16i64)]).await?;
    }
    let mut latencies = Vec::with_capacity(1000);
    for i in 0..1000 {
        let t = Instant::now();
        let rows = client.query(&statement, &[&(1 + i % 16i64)]).await?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        if rows.is_empty() {
            return Err("the gold query returned no row".into());
        }
    }
    latencies.sort_by(f64::total_cmp);

    let window = Duration::from_secs(10);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let conninfo = conninfo.to_string();
        tasks.push(tokio::spawn(async move {
            let client = connect(&conninfo).await?;
            let statement = client.prepare(QUERY).await?;
            let end = Instant::now() + window;
            let mut n = 0u64;
            while Instant::now() < end {
                client.query(&statement, &[&(1 + ((c as i64 + n as i64) % 16))]).await?;
                n += 1;
            }
            Ok::<u64, BoxError>(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let queries_per_sec = total as f64 / window.as_secs_f64();

    let start_rss = super::usage::reset_peak_rss(server).then(|| super::usage::rss_of(server)).flatten();
    let t = Instant::now();
    let sql = format!("SELECT x, x * 2 AS y FROM generate_series(1, {stream_rows}) t(x)");
    let stream = client.query_raw(sql.as_str(), std::iter::empty::<i64>()).await?;
    futures::pin_mut!(stream);
    let mut n = 0u64;
    while let Some(row) = stream.next().await {
        row?;
        n += 1;
    }
    if n != stream_rows {
        return Err(format!("streamed {n} rows of {stream_rows}").into());
    }
    let secs = t.elapsed().as_secs_f64();
    let rss = start_rss.zip(super::usage::peak_rss_of(server));
    Ok((latencies, queries_per_sec, (secs, rss)))
}

impl ServeBench {
    pub fn json(&self) -> String {
        serde_json::json!({
            "bench": "serve",
            "version": env!("CARGO_PKG_VERSION"),
            "gold_source_rows": self.rows,
            "latency_runs": self.latency_runs,
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "clients": self.clients,
            "queries_per_sec": self.queries_per_sec.round(),
            "stream_rows": self.stream_rows,
            "stream_secs": round(self.stream_secs, 3),
            "stream_rows_per_sec": (self.stream_rows as f64 / self.stream_secs).round(),
            "stream_server_start_rss_mib": self.stream_rss_bytes.map(|(start, _)| start >> 20),
            "stream_server_peak_rss_mib": self.stream_rss_bytes.map(|(_, peak)| peak >> 20),
            "server_cpu_secs": round(self.server.cpu_secs(), 2),
            "server_peak_rss_mib": self.server.peak_rss_bytes >> 20,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        })
        .to_string()
    }
}

impl std::fmt::Display for ServeBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "small gold query, prepared, one client: p50 {:.2} ms, p99 {:.2} ms ({} runs)",
            self.p50_ms, self.p99_ms, self.latency_runs
        )?;
        writeln!(f, "{} clients at once: {:.0} queries/s", self.clients, self.queries_per_sec)?;
        writeln!(
            f,
            "{} rows streamed to one client in {:.2} s ({:.0} rows/s){}",
            self.stream_rows,
            self.stream_secs,
            self.stream_rows as f64 / self.stream_secs,
            self.stream_rss_bytes.map_or(String::new(), |(start, peak)| format!(
                ", server RSS {} MiB at the start, peak {} MiB",
                start >> 20,
                peak >> 20
            ))
        )?;
        writeln!(f, "server: {:.2} s CPU, peak RSS {} MiB", self.server.cpu_secs(), self.server.peak_rss_bytes >> 20)?;
        write!(f, "{}", self.json())
    }
}
