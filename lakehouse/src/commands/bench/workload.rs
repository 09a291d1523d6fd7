//! Reproducible benchmarks on generated data (`lakehouse bench …`).
//!
//! `ingest`: N rows of police-incident CSV like the DDSP export (`;`, Windows-1252, French dates and decimal
//! commas, a reporter's name and phone number as direct identifiers), split in files, ingested end to end into a
//! fresh bronze table on `file://`: CSV → typed → pseudonymized → Delta.
//!
//! `transform`: the same rows land in bronze with the two identifiers kept in clear (not timed), then the silver
//! model [`SILVER_MODEL`] is timed: bronze Delta → two columns pseudonymized (HMAC-SHA-256) → silver Delta.

use std::fmt;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use lakehouse::Lakehouse;
use lakehouse::ingest::ingest_source;
use lakehouse::manifest::Project;

use super::usage::peak_rss;

/// The project of every benchmark: a `file://` warehouse, one drop zone, one pseudonymization domain.
pub(super) const PROJECT: &str = "version: 1
name: bench
warehouse: file://./warehouse
drop_zones: [drop]
partners:
  - { id: ddsp, name: Police, kind: external }
privacy:
  domains: [police]
  keys: { from: file, path: KEYS, create_if_missing: true }
";

const MANIFEST: &str = r#"version: 1
name: incidents
description: Generated police incidents
owner: ddsp
agreement: BENCH
schedule: "*/15 * * * *"
connector: { kind: files, location: drop, pattern: "*.csv" }
format: { kind: csv, delimiter: ";", encoding: windows-1252, decimal: "," }
columns:
  incident_id: { type: string, key: true, from: numero_intervention }
  reported_at: { type: timestamp, format: "%d/%m/%Y %H:%M", from: date_heure }
  category: { type: string, from: nature, values: [tapage, agression, vol, accident, stationnement, incendie, rixe, degradation] }
  lat: { type: double, range: [43.15, 43.40], pii: quasi, from: latitude }
  lon: { type: double, range: [5.25, 5.60], pii: quasi, from: longitude }
  arrondissement: { type: int, range: [1, 16] }
  reporter_name: { type: string, pii: direct, domain: police, normalize: casefold, from: nom_declarant }
  reporter_phone: { type: string, pii: direct, domain: police, normalize: digits, from: tel_declarant }
  notes: { type: string, pii: sensitive, from: observations }
retention: 3 years
"#;

/// The silver model of `bench transform`, valid under the privacy check: the two identifiers replaced by keyed
/// pseudonyms, the position generalized to a 1 km grid cell, the free text left out.
pub const SILVER_MODEL: &str = "SELECT incident_id, reported_at, category, geo_cell(lat, lon, 1000) AS cell_1km,
    arrondissement,
    pseudonymize(reporter_name, 'police', 'casefold') AS reporter_token,
    pseudonymize(reporter_phone, 'police', 'digits') AS reporter_phone_token,
    _ingested_at, _run_id, _source_file
FROM {{ source('incidents') }}
";

/// Figures of one benchmark run.
#[derive(Debug, Clone)]
pub struct IngestBench {
    pub rows: u64,
    pub files: u32,
    pub bytes: u64,
    pub generate_secs: f64,
    pub ingest_secs: f64,
    pub written: u64,
    pub quarantined: u64,
    pub peak_rss_bytes: Option<u64>,
}

impl fmt::Display for IngestBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "generated {} rows in {} files ({:.1} MB) in {:.1} s",
            self.rows,
            self.files,
            self.bytes as f64 / 1e6,
            self.generate_secs
        )?;
        writeln!(
            f,
            "ingested {} rows ({} written, {} quarantined) in {:.2} s: {:.0} rows/s (CSV → typed → 2 columns pseudonymized → bronze Delta on file://)",
            self.rows,
            self.written,
            self.quarantined,
            self.ingest_secs,
            self.rows as f64 / self.ingest_secs
        )?;
        match self.peak_rss_bytes {
            Some(b) => write!(f, "peak RSS: {} MiB", b >> 20),
            None => write!(f, "peak RSS: unknown (no /proc/self/status)"),
        }
    }
}

/// Generates the data under `dir` and ingests it.
pub async fn ingest(
    dir: &Path,
    rows: u64,
    files: u32,
) -> Result<IngestBench, Box<dyn std::error::Error + Send + Sync>> {
    let (lh, bytes, generate_secs, files) = setup(dir, rows, files, MANIFEST)?;
    let src = lh.project.sources[0].clone();
    let t1 = Instant::now();
    let report = ingest_source(&lh, &src).await?;
    let ingest_secs = t1.elapsed().as_secs_f64();
    Ok(IngestBench {
        rows,
        files,
        bytes,
        generate_secs,
        ingest_secs,
        written: report.records.written,
        quarantined: report.records.quarantined,
        peak_rss_bytes: peak_rss(),
    })
}

/// Writes the project and generates the drop-zone files.
fn setup(
    dir: &Path,
    rows: u64,
    files: u32,
    manifest: &str,
) -> Result<(Lakehouse, u64, f64, u32), Box<dyn std::error::Error + Send + Sync>> {
    let project_dir = dir.join("project");
    let drop = project_dir.join("drop");
    std::fs::create_dir_all(project_dir.join("sources"))?;
    std::fs::create_dir_all(&drop)?;
    let keys = dir.join("keys");
    std::fs::write(project_dir.join("lakehouse.yaml"), PROJECT.replace("KEYS", &keys.display().to_string()))?;
    std::fs::write(project_dir.join("sources/incidents.yaml"), manifest)?;
    if manifest != MANIFEST {
        std::fs::create_dir_all(project_dir.join("transforms/silver"))?;
        std::fs::write(project_dir.join("transforms/silver/incidents.sql"), SILVER_MODEL)?;
    }

    let t0 = Instant::now();
    let (bytes, files) = generate(&drop, rows, files, write_incidents)?;
    let generate_secs = t0.elapsed().as_secs_f64();
    let project = Project::load(&project_dir)?;
    Ok((Lakehouse::open(project, lakehouse::KeyUse::Write)?, bytes, generate_secs, files))
}

/// Generates `rows` rows in `files` files `incidents-NNN.csv` under `drop` with `write(path, rows, first id,
/// rng)`, each dated an hour ago (a run takes them without waiting for them to settle) and synced to disk (the
/// kernel writing gigabytes back during a timed step would be counted against it). Returns the bytes written
/// and the number of files.
pub(super) fn generate(
    drop: &Path,
    rows: u64,
    files: u32,
    write: impl Fn(&Path, u64, u64, &mut u64) -> std::io::Result<()>,
) -> std::io::Result<(u64, u32)> {
    std::fs::create_dir_all(drop)?;
    let files = files.max(1);
    let (mut bytes, mut first) = (0, 0);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for f in 0..files {
        let n = rows / u64::from(files) + u64::from(u64::from(f) < rows % u64::from(files));
        let path = drop.join(format!("incidents-{f:03}.csv"));
        write(&path, n, first, &mut rng)?;
        first += n;
        let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let file = std::fs::File::options().write(true).open(&path)?;
        file.set_modified(an_hour_ago)?;
        file.sync_all()?;
        bytes += file.metadata()?.len();
    }
    Ok((bytes, files))
}

/// One step of xorshift64*: fast, deterministic, good enough for test data.
pub(super) fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng >> 12;
    *rng ^= *rng << 25;
    *rng ^= *rng >> 27;
    rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

pub(super) const FIRST: [&str; 12] =
    ["Jean", "Marie", "Karim", "Sophie", "Lucas", "Inès", "Mehdi", "Léa", "Thomas", "Chloé", "Yanis", "Camille"];
pub(super) const LAST: [&str; 12] = [
    "Martin", "Bernard", "Dubois", "Benali", "Moreau", "Lefèvre", "Garcia", "Roux", "Fournier", "Mercier", "Haddad",
    "Girard",
];
pub(super) const NATURE: [&str; 8] =
    ["tapage", "agression", "vol", "accident", "stationnement", "incendie", "rixe", "degradation"];

/// Figures of one `bench transform` run.
#[derive(Debug, Clone)]
pub struct TransformBench {
    pub rows: u64,
    pub prepare_secs: f64,
    pub transform_secs: f64,
    pub peak_rss_bytes: Option<u64>,
}

impl fmt::Display for TransformBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "prepared {} bronze rows (generate + ingest, not timed) in {:.1} s", self.rows, self.prepare_secs)?;
        writeln!(
            f,
            "transformed {} rows in {:.2} s: {:.0} rows/s (bronze Delta → 2 columns pseudonymized → silver Delta on file://)",
            self.rows,
            self.transform_secs,
            self.rows as f64 / self.transform_secs
        )?;
        match self.peak_rss_bytes {
            Some(b) => write!(f, "peak RSS during the transform: {} MiB", b >> 20),
            None => write!(f, "peak RSS: unknown (no /proc/self/status)"),
        }
    }
}

/// Lands `rows` rows in bronze with the identifiers in clear, then times the silver model.
pub async fn transform(
    dir: &Path,
    rows: u64,
    files: u32,
) -> Result<TransformBench, Box<dyn std::error::Error + Send + Sync>> {
    let t0 = Instant::now();
    // Bronze keeps the two identifiers (as `quasi`) so that silver pseudonymizes them.
    let manifest = MANIFEST
        .replace("pii: direct, domain: police, normalize: casefold,", "pii: quasi,")
        .replace("pii: direct, domain: police, normalize: digits,", "pii: quasi,");
    let (lh, _, _, _) = setup(dir, rows, files, &manifest)?;
    let src = lh.project.sources[0].clone();
    let report = ingest_source(&lh, &src).await?;
    let mut diags = lakehouse::manifest::Diagnostics::default();
    let plan = lakehouse::transform::Plan::build(&lh.project, &Default::default(), &mut diags);
    if !diags.is_empty() {
        return Err(diags.to_string().into());
    }
    let prepare_secs = t0.elapsed().as_secs_f64();
    // Measure the transform's own peak: reset the high-water mark (Linux 4.0+; ignored elsewhere).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let t1 = Instant::now();
    let reports = lakehouse::transform::run::run(&lh, &plan, &plan.order, &Default::default()).await;
    let transform_secs = t1.elapsed().as_secs_f64();
    match reports.first().map(|r| &r.outcome) {
        Some(lakehouse::transform::Outcome::Built { rows: built, .. }) if *built == report.records.written => {}
        other => return Err(format!("unexpected transform result: {other:?}").into()),
    }
    Ok(TransformBench { rows: report.records.written, prepare_secs, transform_secs, peak_rss_bytes: peak_rss() })
}

const NOTES: [&str; 6] = [
    "Appel du voisinage, musique forte",
    "Véhicule mal garé devant l'école",
    "Témoin signale une altercation près du métro",
    "Vol à l'arraché, suspect en fuite vers le Vieux-Port",
    "Collision légère, pas de blessé",
    "Départ de feu de poubelle, éteint à l'arrivée",
];

fn write_incidents(path: &Path, n: u64, first_id: u64, rng: &mut u64) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    w.write_all(b"numero_intervention;date_heure;nature;latitude;longitude;arrondissement;nom_declarant;tel_declarant;observations\r\n")?;
    let mut line = String::with_capacity(256);
    for i in 0..n {
        let r = next(rng);
        let day = 1 + r % 28;
        let month = 1 + (r >> 5) % 12;
        let hour = (r >> 9) % 24;
        let minute = (r >> 14) % 60;
        let lat = 43.20 + ((r >> 20) % 20_000) as f64 / 100_000.0;
        let lon = 5.30 + ((r >> 35) % 25_000) as f64 / 100_000.0;
        let r2 = next(rng);
        line.clear();
        use std::fmt::Write as _;
        let _ = write!(
            line,
            "DDSP-{:08};{day:02}/{month:02}/2026 {hour:02}:{minute:02};{};{};{};{};{} {};06 {:02} {:02} {:02} {:02};{}\r\n",
            first_id + i,
            NATURE[(r2 % 8) as usize],
            format!("{lat:.5}").replace('.', ","),
            format!("{lon:.5}").replace('.', ","),
            1 + (r2 >> 3) % 16,
            FIRST[((r2 >> 7) % 12) as usize],
            LAST[((r2 >> 11) % 12) as usize],
            (r2 >> 15) % 100,
            (r2 >> 22) % 100,
            (r2 >> 29) % 100,
            (r2 >> 36) % 100,
            NOTES[((r2 >> 43) % 6) as usize],
        );
        let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(&line);
        w.write_all(&bytes)?;
    }
    w.flush()
}
