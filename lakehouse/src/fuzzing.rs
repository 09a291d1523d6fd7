//! Entry points for fuzzing (`lakehouse/fuzz`, run by `ci/fuzz.sh`) and for the regression test that replays
//! its corpus and every crash it found (`ci/test.sh`): each feeds untrusted bytes to one parser, which must
//! return — a record quarantined, a file not taken, a diagnostic — and never panic or grow without bound.

use std::io::Write;
use std::sync::Arc;

use crate::format::{self, BadRecord, ReadContext, ReadError, RecordSink, TablePlan};
use crate::manifest::{Format, OnBadRecord, ReadLimits, SourceManifest};
use crate::privacy::KeyRing;

/// What a fuzz input is fed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A `;`-delimited Windows-1252 CSV file with typed, pseudonymized and ranged columns (gzip when the bytes
    /// start with its magic number), read twice: with uniqueness constraints (record by record) and without
    /// (column by column, [`format::RowEmitter::rows`]).
    Csv,
    /// NDJSON lines with nested paths.
    Ndjson,
    /// A JSON document with records under `items`.
    Json,
    /// A Parquet file.
    Parquet,
    /// An Excel workbook (`.xlsx`: a ZIP archive of XML parts), its first sheet.
    Xlsx,
    /// A source manifest (`sources/fuzz.yaml`) loaded and validated with a fixed project file.
    Manifest,
}

impl Target {
    pub const ALL: [Target; 6] = [Self::Csv, Self::Ndjson, Self::Json, Self::Parquet, Self::Xlsx, Self::Manifest];

    /// The name of the fuzz target and of its corpus directory.
    pub fn name(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Ndjson => "ndjson",
            Self::Json => "json",
            Self::Parquet => "parquet",
            Self::Xlsx => "xlsx",
            Self::Manifest => "manifest",
        }
    }
}

const COLUMNS: &str = r#"columns:
  id: { type: string, key: true, unique: true }
  at: { type: timestamp, format: "%d/%m/%Y %H:%M" }
  day: { type: date }
  n: { type: int, range: [0, 1000] }
  x: { type: double, range: [-90, 90] }
  amount: { type: decimal, precision: 10, scale: 2 }
  ok: { type: bool }
  kind: { type: string, values: [a, b, c] }
  who: { type: string, pii: direct, domain: police, normalize: digits }
  notes: { type: string, pii: sensitive }
unique: [who, day]
"#;

fn manifest(format: &str, nested: bool, unique: bool) -> SourceManifest {
    let mut columns = if nested {
        COLUMNS
            .replace("normalize: digits }", "normalize: digits, from: person.phone }")
            .replace("range: [-90, 90] }", "range: [-90, 90], from: place.geo.x }")
    } else {
        COLUMNS.to_string()
    };
    if !unique {
        columns = columns.replace(", unique: true", "").replace("unique: [who, day]\n", "");
    }
    let text = format!(
        "version: 1\nname: fuzz\ndescription: fuzz\nowner: ddsp\nschedule: \"* * * * *\"\n\
         connector: {{ kind: files, location: drop }}\nformat: {format}\n{columns}retention: 1 year\n"
    );
    crate::manifest::parse_source(std::path::Path::new("fuzz.yaml"), &text).expect("the fuzz manifest is valid")
}

struct Discard;

impl RecordSink for Discard {
    fn batch(&mut self, _: arrow::array::RecordBatch) -> Result<(), ReadError> {
        Ok(())
    }
    fn child(&mut self, _: usize, _: arrow::array::RecordBatch) -> Result<(), ReadError> {
        Ok(())
    }
    fn bad(&mut self, _: BadRecord) -> Result<(), ReadError> {
        Ok(())
    }
}

/// Feeds `data` to `target`. Errors are expected outcomes; a panic is a bug.
pub fn run(target: Target, data: &[u8]) {
    if target == Target::Manifest {
        manifest_target(data);
        return;
    }
    let (format, nested) = match target {
        Target::Csv => ("{ kind: csv, delimiter: \";\", encoding: windows-1252, decimal: \",\" }", false),
        Target::Ndjson => ("{ kind: ndjson }", true),
        Target::Json => ("{ kind: json, records: items }", true),
        Target::Xlsx => ("{ kind: xlsx }", false),
        _ => ("{ kind: parquet }", false),
    };
    for unique in [true, false] {
        if unique || target == Target::Csv {
            read(&manifest(format, nested, unique), data);
        }
    }
}

fn read(m: &SourceManifest, data: &[u8]) {
    let plan = Arc::new(TablePlan::new(m, &crate::manifest::ProjectFile::with_domains(&["police"])));
    let key = "police fuzz 0000000000000000000000000000000000000000000000000000000000000001";
    let Ok(keys) = KeyRing::parse(key, "fuzz") else { return };
    let ctx = ReadContext {
        plan: plan.clone(),
        keys: Arc::new(keys),
        run_id: "fuzz".into(),
        ingested_at_micros: 0,
        source_file: "fuzz".into(),
        on_bad_record: OnBadRecord::Quarantine,
        on_new_field: crate::manifest::OnNewField::Warn,
        limits: ReadLimits { max_record_bytes: 1 << 16, max_decompressed_bytes: 1 << 24, ..ReadLimits::default() },
        unique: plan.unique_index().map(|u| Arc::new(std::sync::Mutex::new(u))),
    };
    let Ok(mut file) = tempfile::tempfile() else { return };
    if file.write_all(data).is_err() || std::io::Seek::rewind(&mut file).is_err() {
        return;
    }
    let name = if data.starts_with(&[0x1f, 0x8b]) { "fuzz.gz" } else { "fuzz" };
    let format: &Format = m.format();
    let _ = format::read_file(format, name, file, &ctx, &mut Discard);
}

fn manifest_target(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let project = "version: 1\nname: fuzz\ndrop_zones: [drop]\npartners:\n  - { id: ddsp, name: Police, kind: external }\n\
                   privacy:\n  domains: [police]\n  keys: { from: env, variable: LAKEHOUSE_FUZZ_KEYS }\n";
    let written = std::fs::write(dir.path().join("lakehouse.yaml"), project)
        .and_then(|()| std::fs::create_dir_all(dir.path().join("sources")))
        .and_then(|()| std::fs::write(dir.path().join("sources/fuzz.yaml"), data));
    if written.is_ok() {
        let _ = crate::manifest::Project::load_partial(dir.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input of the fuzz corpus and every crash the fuzzers found (`lakehouse/fuzz/corpus/<target>/`,
    /// `lakehouse/fuzz/regressions/<target>/`) runs through its parser without panicking.
    #[test]
    fn the_fuzz_corpus_and_every_crash_found_parse_without_panicking() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut seen = 0;
        for target in Target::ALL {
            for dir in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(target.name())) else { continue };
                for entry in entries.flatten() {
                    let data = std::fs::read(entry.path()).unwrap();
                    run(target, &data);
                    seen += 1;
                }
            }
        }
        assert!(seen >= 10, "the corpus is in lakehouse/fuzz: {seen} inputs found");
    }

    /// The workbook reader (a ZIP directory, offsets, inflated XML) on thousands of damaged copies of a corpus
    /// workbook: bytes overwritten, runs deleted, the file cut — each read ends with an error or records, never a
    /// panic.
    #[test]
    fn damaged_workbooks_are_refused_without_panicking() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/xlsx");
        let mut seeds: Vec<Vec<u8>> =
            std::fs::read_dir(dir).unwrap().flatten().map(|e| std::fs::read(e.path()).unwrap()).collect();
        seeds.sort();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n.max(1) as u64) as usize
        };
        for seed in &seeds {
            for round in 0..700 {
                let mut data = seed.clone();
                match round % 3 {
                    0 => {
                        for _ in 0..1 + next(8) {
                            let at = next(data.len());
                            data[at] = next(256) as u8;
                        }
                    }
                    1 => {
                        let at = next(data.len());
                        let len = next(64).min(data.len() - at);
                        data.drain(at..at + len);
                    }
                    _ => data.truncate(next(data.len())),
                }
                run(Target::Xlsx, &data);
            }
        }
    }
}
