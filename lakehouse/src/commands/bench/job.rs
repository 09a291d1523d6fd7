//! `lakehouse bench job`: the whole job a user runs, CSV → bronze → silver → gold → query, each step a run of
//! this same binary as its own process (`ingest`, `transform --select`, `sql`), so the figures include what a
//! user waits for: process start, project load, planning, commits, catalog update.
//!
//! The data is what the peers are measured on (README, Benchmarks): incident reports as UTF-8 CSV, 13 columns,
//! among them an ISO timestamp with offset, coordinates, a reporter's name and phone number, and an ~80-character
//! description quoted when it holds a comma or a quote (≈ 210 bytes a row).
//!
//! Each step reports its wall time (measured here, from spawn to exit), its CPU time and its peak RSS (which the
//! step's process reports itself at exit, see [`super::usage`]), and the job ends with one JSON line.

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::round;
use super::usage::Usage;
use super::workload::{FIRST, LAST, NATURE, PROJECT, generate, next};

/// The source: identifiers kept in bronze (`quasi`) for silver to pseudonymize, as the peers' job does; with
/// `--pseudonymize-at-landing` they are `direct` and land as pseudonyms.
const MANIFEST: &str = r#"version: 1
name: incidents
description: Generated incident reports (lakehouse bench job)
owner: ddsp
agreement: BENCH
schedule: "0 * * * *"
connector: { kind: files, location: drop, pattern: "*.csv" }
format: { kind: csv }
columns:
  incident_id: { type: string, key: true }
  reported_at: { type: timestamp, required: true }
  category: { type: string, values: [tapage, agression, vol, accident, stationnement, incendie, rixe, degradation] }
  arrondissement: { type: int, range: [1, 16] }
  quarter: { type: string }
  lat: { type: double, range: [43.15, 43.40], pii: quasi }
  lon: { type: double, range: [5.25, 5.60], pii: quasi }
  reporter_name: { type: string, NAME }
  reporter_phone: { type: string, PHONE }
  age: { type: int, range: [0, 120], pii: quasi }
  severity: { type: int, range: [1, 5] }
  description: { type: string }
  agency: { type: string }
load: { mode: append }
retention: 3 years
"#;

const SILVER: &str = "SELECT incident_id, reported_at, category, arrondissement, quarter,
    geo_cell(lat, lon, 1000) AS cell_1km,
    NAME AS reporter_token,
    PHONE AS reporter_phone_token,
    age_band(age, 10) AS age_band, severity, description, agency
FROM {{ source('incidents') }}
";

const SILVER_SIDECAR: &str = "version: 1
description: Incident reports with the reporter as pseudonyms, places as 1 km cells and ages as 10-year bands.
privacy: Reporters are keyed pseudonyms; places and ages are generalized.
";

const GOLD: &str = "{{ config(materialized='table') }}
SELECT category, arrondissement, agency, count(*) AS incidents, avg(severity) AS mean_severity
FROM {{ ref('silver.incidents') }}
GROUP BY category, arrondissement, agency
";

const GOLD_SIDECAR: &str = "version: 1
description: Incidents per category, arrondissement and agency; small cells suppressed.
small_cells: { count: incidents }
";

/// The query step: the ten largest cells.
pub const QUERY: &str =
    "SELECT category, arrondissement, agency, incidents FROM gold.incidents_by_area ORDER BY incidents DESC LIMIT 10";

/// One step of the job.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: &'static str,
    pub wall_secs: f64,
    pub usage: Usage,
}

/// Figures of one job run.
#[derive(Debug, Clone)]
pub struct JobBench {
    pub rows: u64,
    pub files: u32,
    pub bytes: u64,
    pub generate_secs: f64,
    pub pseudonymize_at_landing: bool,
    pub steps: Vec<Step>,
}

/// Writes the project, generates the data and runs the four steps with `exe` (this binary).
pub fn run(
    exe: &Path,
    dir: &Path,
    rows: u64,
    files: u32,
    pseudonymize_at_landing: bool,
) -> Result<JobBench, Box<dyn std::error::Error + Send + Sync>> {
    let project = dir.join("project");
    std::fs::create_dir_all(project.join("sources"))?;
    std::fs::create_dir_all(project.join("transforms/silver"))?;
    std::fs::create_dir_all(project.join("transforms/gold"))?;
    let keys = dir.join("keys");
    std::fs::write(project.join("lakehouse.yaml"), PROJECT.replace("KEYS", &keys.display().to_string()))?;
    let (name, phone, name_token, phone_token) = if pseudonymize_at_landing {
        (
            "pii: direct, domain: police, normalize: casefold",
            "pii: direct, domain: police, normalize: digits",
            "reporter_name",
            "reporter_phone",
        )
    } else {
        (
            "pii: quasi",
            "pii: quasi",
            "pseudonymize(reporter_name, 'police', 'casefold')",
            "pseudonymize(reporter_phone, 'police', 'digits')",
        )
    };
    std::fs::write(project.join("sources/incidents.yaml"), MANIFEST.replace("NAME", name).replace("PHONE", phone))?;
    let silver = SILVER.replace("NAME", name_token).replace("PHONE", phone_token);
    std::fs::write(project.join("transforms/silver/incidents.sql"), silver)?;
    std::fs::write(project.join("transforms/silver/incidents.yaml"), SILVER_SIDECAR)?;
    std::fs::write(project.join("transforms/gold/incidents_by_area.sql"), GOLD)?;
    std::fs::write(project.join("transforms/gold/incidents_by_area.yaml"), GOLD_SIDECAR)?;

    let t0 = Instant::now();
    let (bytes, files) = generate(&project.join("drop"), rows, files, write_reports)?;
    let generate_secs = t0.elapsed().as_secs_f64();

    let steps = [
        ("ingest", vec!["ingest".to_string()]),
        ("silver", vec!["transform".into(), "--select".into(), "silver.incidents".into()]),
        ("gold", vec!["transform".into(), "--select".into(), "gold.incidents_by_area".into()]),
        ("query", vec!["sql".into(), QUERY.into()]),
    ];
    let mut done = Vec::new();
    for (name, args) in steps {
        done.push(step(exe, &project, dir, name, &args)?);
    }
    check(exe, &project, dir, rows)?;
    Ok(JobBench { rows, files, bytes, generate_secs, pseudonymize_at_landing, steps: done })
}

/// Runs `lakehouse --project P ARGS` as a user would, its output kept in `dir/<name>.out` and `.err`.
pub(super) fn step(
    exe: &Path,
    project: &Path,
    dir: &Path,
    name: &'static str,
    args: &[String],
) -> Result<Step, Box<dyn std::error::Error + Send + Sync>> {
    let usage_file = dir.join(format!("{name}.usage"));
    let _ = std::fs::remove_file(&usage_file);
    let (out, err) = (dir.join(format!("{name}.out")), dir.join(format!("{name}.err")));
    let t = Instant::now();
    let status = Command::new(exe)
        .arg("--project")
        .arg(project)
        .args(args)
        .env(super::usage::ENV, &usage_file)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(&err)?)
        .status()?;
    let wall_secs = t.elapsed().as_secs_f64();
    if !status.success() {
        let stderr = std::fs::read_to_string(&err).unwrap_or_default();
        return Err(format!("step {name} (`lakehouse {}`) failed ({status}):\n{stderr}", args.join(" ")).into());
    }
    let usage = Usage::read(&usage_file)
        .ok_or_else(|| format!("step {name} did not report its CPU time and memory in {}", usage_file.display()))?;
    Ok(Step { name, wall_secs, usage })
}

/// After the timed steps: silver holds every generated row, gold counts them all (suppressed cells included).
fn check(exe: &Path, project: &Path, dir: &Path, rows: u64) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let query = "SELECT (SELECT count(*) FROM silver.incidents) AS silver, \
                 (SELECT count(*) FROM gold.incidents_by_area) AS cells";
    let (counts, text) = counts(exe, project, query)?;
    match counts[..] {
        [silver, cells] if silver == rows && cells > 0 => Ok(()),
        _ => Err(format!(
            "the job's result is not what was generated ({rows} rows): `lakehouse sql` printed {text:?}; \
             see the steps' output in {}",
            dir.display()
        )
        .into()),
    }
}

/// The numbers of the one row `query` gives, as `lakehouse sql --format csv` prints them, with the whole output
/// (for messages).
pub(super) fn counts(
    exe: &Path,
    project: &Path,
    query: &str,
) -> Result<(Vec<u64>, String), Box<dyn std::error::Error + Send + Sync>> {
    let output = Command::new(exe)
        .arg("--project")
        .arg(project)
        .args(["sql", "--format", "csv", query])
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let counts = text.lines().nth(1).unwrap_or_default().split(',').filter_map(|v| v.trim().parse().ok()).collect();
    Ok((counts, text))
}

impl JobBench {
    /// The figures as one JSON object on one line.
    pub fn json(&self) -> String {
        let steps: Vec<serde_json::Value> = self
            .steps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "step": s.name,
                    "wall_secs": round(s.wall_secs, 3),
                    "rows_per_sec": (s.name != "query").then(|| (self.rows as f64 / s.wall_secs).round()),
                    "cpu_secs": round(s.usage.cpu_secs(), 3),
                    "cpu_percent": round(100.0 * s.usage.cpu_secs() / s.wall_secs, 0),
                    "peak_rss_mib": s.usage.peak_rss_bytes >> 20,
                })
            })
            .collect();
        serde_json::json!({
            "bench": "job",
            "version": env!("CARGO_PKG_VERSION"),
            "rows": self.rows,
            "files": self.files,
            "csv_bytes": self.bytes,
            "pseudonymize_at_landing": self.pseudonymize_at_landing,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "steps": steps,
        })
        .to_string()
    }
}

impl std::fmt::Display for JobBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "generated {} rows in {} files ({:.1} MB of CSV) in {:.1} s (not timed)",
            self.rows,
            self.files,
            self.bytes as f64 / 1e6,
            self.generate_secs
        )?;
        let landing = if self.pseudonymize_at_landing { "pseudonymized at landing" } else { "in clear in bronze" };
        writeln!(f, "identifiers {landing}; each step is one `lakehouse` process (wall time from spawn to exit)")?;
        writeln!(f, "{:<8} {:>10} {:>12} {:>9} {:>8} {:>10}", "step", "wall", "rows/s", "CPU", "CPU %", "peak RSS")?;
        for s in &self.steps {
            let rate =
                if s.name == "query" { "-".to_string() } else { format!("{:.0}", self.rows as f64 / s.wall_secs) };
            writeln!(
                f,
                "{:<8} {:>8.3} s {:>12} {:>7.2} s {:>7.0}% {:>6} MiB",
                s.name,
                s.wall_secs,
                rate,
                s.usage.cpu_secs(),
                100.0 * s.usage.cpu_secs() / s.wall_secs,
                s.usage.peak_rss_bytes >> 20
            )?;
        }
        write!(f, "{}", self.json())
    }
}

const AGENCY: [&str; 5] = ["DDSP 13", "BMPM", "Police municipale", "RTM sûreté", "SNCF sûreté"];
/// Two halves of a description (≈ 80 characters together): joined by a comma, so the field is quoted; some
/// halves hold quotes, doubled inside the quoted field.
const OPENING: [&str; 8] = [
    "Appel du voisinage pour musique forte",
    "Véhicule stationné devant la sortie d'école",
    "Altercation signalée près de la station de métro",
    "Vol à l'arraché sur la voie publique",
    "Collision légère entre deux véhicules",
    "Départ de feu de poubelle dans la cour",
    "Rassemblement bruyant au pied de l'immeuble",
    "Tags sur la façade de la mairie annexe",
];
const CLOSING: [&str; 8] = [
    "les occupants refusent de baisser le volume",
    "le conducteur est introuvable sur place",
    "un témoin parle d'un \"individu agité\"",
    "le suspect a pris la fuite vers le port",
    "pas de blessé, constat amiable en cours",
    "éteint par les riverains avant l'arrivée",
    "les équipes sont reparties après dispersion",
    "photos transmises au service de nettoyage",
];

fn write_reports(path: &Path, n: u64, first_id: u64, rng: &mut u64) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    w.write_all(
        b"incident_id,reported_at,category,arrondissement,quarter,lat,lon,reporter_name,reporter_phone,age,severity,description,agency\n",
    )?;
    let mut line = String::with_capacity(256);
    for i in 0..n {
        let (r, r2) = (next(rng), next(rng));
        let arrondissement = 1 + r2 % 16;
        let description = format!("{}, {}", OPENING[((r2 >> 4) % 8) as usize], CLOSING[((r2 >> 7) % 8) as usize]);
        line.clear();
        let _ = writeln!(
            line,
            "INC-{:010},2026-{:02}-{:02}T{:02}:{:02}:{:02}+01:00,{},{arrondissement},132{arrondissement:02}{:04},{:.5},{:.5},\
             {} {},06 {:02} {:02} {:02} {:02},{},{},\"{}\",{}",
            first_id + i,
            1 + r % 12,
            1 + (r >> 4) % 28,
            (r >> 9) % 24,
            (r >> 14) % 60,
            (r >> 20) % 60,
            NATURE[((r >> 26) % 8) as usize],
            (r >> 29) % 10_000,
            43.20 + ((r >> 43) % 20_000) as f64 / 100_000.0,
            5.30 + ((r2 >> 10) % 25_000) as f64 / 100_000.0,
            FIRST[((r2 >> 25) % 12) as usize],
            LAST[((r2 >> 29) % 12) as usize],
            (r2 >> 33) % 100,
            (r2 >> 40) % 100,
            (r2 >> 47) % 100,
            (r2 >> 54) % 100,
            18 + (r >> 57) % 70,
            1 + (r2 >> 61) % 5,
            description.replace('"', "\"\""),
            AGENCY[((r >> 36) % 5) as usize],
        );
        w.write_all(line.as_bytes())?;
    }
    w.flush()
}
