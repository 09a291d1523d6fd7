//! `lakehouse bench pull`: the pull connectors end to end, each read by a `lakehouse ingest` process as a user
//! runs it:
//! - `http`: N generated incident records served by a paginated JSON API in this process (pages of
//!   `--page-size`, `?page=1…`), every page archived then landed;
//! - `postgres`: the same N records in a table of the PostgreSQL server the environment variable `--pg-url-env`
//!   names (created in schema `lakehouse_bench`, not timed), read in one snapshot; skipped when it is not set.
//!
//! Each run reports wall time, rows/s, CPU and peak RSS (the ingest process's own, [`super::usage`]), then one
//! JSON line; the bronze row count is checked after each.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::job::{Step, counts, step};
use super::round;
use super::workload::PROJECT;

const CATEGORIES: [&str; 8] =
    ["tapage", "agression", "vol", "accident", "stationnement", "incendie", "rixe", "degradation"];

/// The columns both sources declare (the API's field names are the table's).
const COLUMNS: &str = "  id: { type: int, key: true }
  updated_at: { type: timestamp }
  category: { type: string }
  arrondissement: { type: int, range: [1, 16] }
  lat: { type: double, pii: quasi }
  lon: { type: double, pii: quasi }
  reporter: { type: string, pii: direct, domain: police, normalize: casefold }
  severity: { type: int, range: [1, 5] }
  amount: { type: decimal, precision: 12, scale: 2 }
  description: { type: string }
";

fn manifest(name: &str, connector: &str, format: &str) -> String {
    format!(
        "version: 1
name: {name}
description: Generated incident records (lakehouse bench pull)
owner: ddsp
agreement: BENCH
schedule: \"0 * * * *\"
connector:
{connector}
{format}columns:
{COLUMNS}load: {{ mode: replace }}
retention: 3 years
"
    )
}

/// Record `i` as a JSON object (the API's records; the table holds the same values).
fn record(i: u64, out: &mut String) {
    let minute = i % (60 * 24 * 365);
    let _ = write!(
        out,
        r#"{{"id":{i},"updated_at":"2024-{:02}-{:02}T{:02}:{:02}:00Z","category":"{}","arrondissement":{},"lat":{:.5},"lon":{:.5},"reporter":"Reporter {}","severity":{},"amount":{}.{:02},"description":"Appel du voisinage pour musique forte, intervention d'une patrouille numéro {}"}}"#,
        1 + (minute / (60 * 24 * 31)) % 12,
        1 + (minute / (60 * 24)) % 28,
        (minute / 60) % 24,
        minute % 60,
        CATEGORIES[(i % 8) as usize],
        1 + i % 16,
        43.2 + (i % 1000) as f64 / 10_000.0,
        5.3 + (i % 997) as f64 / 10_000.0,
        i % 50_000,
        1 + i % 5,
        i % 100_000,
        i % 100,
        i % 1000
    );
}

/// The figures of one run.
pub struct PullBench {
    pub rows: u64,
    pub page_size: u64,
    pub runs: Vec<(&'static str, Step)>,
    pub skipped: Option<String>,
}

pub async fn run(
    exe: &Path,
    dir: &Path,
    rows: u64,
    page_size: u64,
    pg_url_env: &str,
) -> Result<PullBench, Box<dyn std::error::Error + Send + Sync>> {
    let project = dir.join("project");
    std::fs::create_dir_all(project.join("sources"))?;
    let keys = dir.join("keys");
    std::fs::write(project.join("lakehouse.yaml"), PROJECT.replace("KEYS", &keys.display().to_string()))?;
    std::fs::create_dir_all(project.join("drop"))?;
    let mut runs = Vec::new();

    // The API: pages served from this process while the ingest process reads them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(serve(listener, rows, page_size));
    let pages = rows.div_ceil(page_size) + 1;
    let http = format!(
        "  kind: http\n  url: http://127.0.0.1:{port}/records\n  pagination: {{ kind: page, size_param: per_page, size: \
         {page_size} }}\n  max_pages: {pages}"
    );
    std::fs::write(
        project.join("sources/bench_http.yaml"),
        manifest("bench_http", &http, "format: { kind: json, records: data }\n"),
    )?;
    let exe_owned = exe.to_path_buf();
    let (project_c, dir_c) = (project.clone(), dir.to_path_buf());
    let ingest = |source: &'static str| {
        let (exe, project, dir) = (exe_owned.clone(), project_c.clone(), dir_c.clone());
        move || step(&exe, &project, &dir, source, &["ingest".into(), source.into()])
    };
    let s = tokio::task::spawn_blocking(ingest("bench_http")).await??;
    server.abort();
    check(exe, &project, "bench_http", rows)?;
    runs.push(("http", s));

    // The table: filled by PostgreSQL itself (not timed), then read in one snapshot.
    let skipped = match std::env::var(pg_url_env) {
        Ok(url) if !url.is_empty() => {
            fill_table(&url, rows).await?;
            let pg = format!("  kind: postgres\n  url_env: {pg_url_env}\n  table: lakehouse_bench.pull_rows");
            std::fs::write(project.join("sources/bench_pg.yaml"), manifest("bench_pg", &pg, ""))?;
            let s = tokio::task::spawn_blocking(ingest("bench_pg")).await??;
            check(exe, &project, "bench_pg", rows)?;
            runs.push(("postgres", s));
            None
        }
        _ => Some(format!("postgres: skipped, `{pg_url_env}` is not set (a connection string to a test server)")),
    };
    Ok(PullBench { rows, page_size, runs, skipped })
}

/// Serves `/records?page=N&per_page=S` (pages from 1) over HTTP/1.1 with keep-alive.
async fn serve(listener: tokio::net::TcpListener, rows: u64, page_size: u64) {
    while let Ok((mut socket, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(4096);
            loop {
                let Some(end) = read_head(&mut socket, &mut buf).await else { return };
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                buf.drain(..end);
                let page: u64 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|target| target.split_once('?'))
                    .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("page=")))
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(1);
                let first = (page.max(1) - 1) * page_size;
                let mut body = String::from("{\"data\":[");
                for i in first..(first + page_size).min(rows) {
                    if i > first {
                        body.push(',');
                    }
                    record(i, &mut body);
                }
                body.push_str("]}");
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                if socket.write_all(response.as_bytes()).await.is_err()
                    || socket.write_all(body.as_bytes()).await.is_err()
                {
                    return;
                }
            }
        });
    }
}

/// Reads until the end of a request's head (`\r\n\r\n`); its length, or `None` at the end of the connection.
async fn read_head(socket: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        if buf.len() > 64 << 10 {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Creates `lakehouse_bench.pull_rows` with the API's records, generated by PostgreSQL.
async fn fill_table(url: &str, rows: u64) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let t = Instant::now();
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS lakehouse_bench;
             DROP TABLE IF EXISTS lakehouse_bench.pull_rows;
             CREATE TABLE lakehouse_bench.pull_rows AS
             SELECT i::bigint AS id,
                    timestamptz '2024-01-01 00:00:00+00' + (i % 525600) * interval '1 minute' AS updated_at,
                    (ARRAY['tapage','agression','vol','accident','stationnement','incendie','rixe','degradation'])[1 + i % 8]
                      AS category,
                    (1 + i % 16)::int AS arrondissement,
                    43.2 + (i % 1000) / 10000.0 AS lat, 5.3 + (i % 997) / 10000.0 AS lon,
                    'Reporter ' || (i % 50000) AS reporter, (1 + i % 5)::int AS severity,
                    ((i % 100000) + (i % 100) / 100.0)::numeric(12, 2) AS amount,
                    'Appel du voisinage pour musique forte, intervention d''une patrouille numéro ' || (i % 1000)
                      AS description
             FROM generate_series(0, {}) AS i;",
            rows.saturating_sub(1)
        ))
        .await?;
    eprintln!(
        "bench pull: {rows} rows written to lakehouse_bench.pull_rows in {:.1} s (not timed)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Bronze holds every generated row.
fn check(exe: &Path, project: &Path, source: &str, rows: u64) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (counts, text) = counts(exe, project, &format!("SELECT count(*) AS n FROM bronze.{source}"))?;
    if counts == [rows] {
        Ok(())
    } else {
        Err(format!("bronze.{source} does not hold the {rows} generated rows: `lakehouse sql` printed {text:?}").into())
    }
}

impl std::fmt::Display for PullBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} generated records; http: pages of {} from a local API; each run is one `lakehouse ingest` process",
            self.rows, self.page_size
        )?;
        writeln!(f, "{:<9} {:>10} {:>12} {:>9} {:>8} {:>10}", "source", "wall", "rows/s", "CPU", "CPU %", "peak RSS")?;
        for (name, s) in &self.runs {
            writeln!(
                f,
                "{:<9} {:>8.3} s {:>12.0} {:>7.2} s {:>7.0}% {:>6} MiB",
                name,
                s.wall_secs,
                self.rows as f64 / s.wall_secs,
                s.usage.cpu_secs(),
                100.0 * s.usage.cpu_secs() / s.wall_secs,
                s.usage.peak_rss_bytes >> 20
            )?;
        }
        if let Some(skipped) = &self.skipped {
            writeln!(f, "{skipped}")?;
        }
        let runs: Vec<serde_json::Value> = self
            .runs
            .iter()
            .map(|(name, s)| {
                serde_json::json!({
                    "source": name,
                    "wall_secs": round(s.wall_secs, 3),
                    "rows_per_sec": round(self.rows as f64 / s.wall_secs, 0),
                    "cpu_secs": round(s.usage.cpu_secs(), 2),
                    "peak_rss_bytes": s.usage.peak_rss_bytes,
                })
            })
            .collect();
        write!(
            f,
            "{}",
            serde_json::json!({"bench": "pull", "rows": self.rows, "page_size": self.page_size, "runs": runs})
        )
    }
}
