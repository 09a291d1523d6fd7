//! Privacy by design: the canary keys and the clear direct identifiers of the sample data never reach the
//! lake (data files, Delta logs, commit metadata) or the logs.

use std::collections::BTreeSet;
use std::io::Read;

use lakehouse_tests::*;

/// The clear direct identifiers in the example deployment's sample files.
fn clear_identifiers() -> BTreeSet<String> {
    let data = repo().join("sources/data");
    let mut out = BTreeSet::new();
    for f in files_under(&data.join("ddsp")) {
        let mut bytes = std::fs::read(&f).unwrap();
        if f.extension().is_some_and(|e| e == "gz") {
            let mut d = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut d).unwrap();
            bytes = d;
        }
        let text = encoding_rs::WINDOWS_1252.decode(&bytes).0.into_owned();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split(';').collect();
            if fields.len() == 9 {
                out.insert(fields[6].to_string());
                out.insert(fields[7].to_string());
            }
        }
    }
    for f in files_under(&data.join("bmpm")) {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                && let Some(t) = v["appelant"]["telephone"].as_str()
            {
                out.insert(t.to_string());
            }
        }
    }
    for f in files_under(&data.join("signalements")) {
        for word in std::fs::read_to_string(f).unwrap().split(',') {
            if word.contains("@example.fr") {
                out.insert(word.to_string());
            }
        }
    }
    out.retain(|v| v.len() >= 6);
    assert!(out.len() > 1000, "only {} identifiers collected", out.len());
    out
}

fn needles() -> Vec<Vec<u8>> {
    let mut n: Vec<Vec<u8>> = Vec::new();
    for key in all_key_hex() {
        n.push(key.as_bytes().to_vec());
        n.push(key.to_uppercase().into_bytes());
        n.push(hex::decode(key).unwrap());
    }
    for v in clear_identifiers() {
        n.push(encoding_rs::WINDOWS_1252.encode(&v).0.into_owned());
        n.push(v.into_bytes());
    }
    n
}

/// Finds any of many needles in one pass: needles are indexed by their first four bytes.
struct Needles(std::collections::HashMap<[u8; 4], Vec<Vec<u8>>>);

impl Needles {
    fn new(needles: Vec<Vec<u8>>) -> Self {
        let mut map: std::collections::HashMap<[u8; 4], Vec<Vec<u8>>> = Default::default();
        for n in needles {
            assert!(n.len() >= 4);
            map.entry([n[0], n[1], n[2], n[3]]).or_default().push(n);
        }
        Self(map)
    }

    fn find<'a>(&'a self, hay: &[u8]) -> Option<&'a [u8]> {
        for i in 0..hay.len().saturating_sub(3) {
            if let Some(candidates) = self.0.get(&[hay[i], hay[i + 1], hay[i + 2], hay[i + 3]])
                && let Some(n) = candidates.iter().find(|n| hay[i..].starts_with(n))
            {
                return Some(n);
            }
        }
        None
    }
}

#[tokio::test]
async fn canary_keys_and_clear_identifiers_never_reach_storage_or_logs() {
    let p = TestProject::example(None);
    // A police export without its header line: its first record (a name, a phone number) must not reach the
    // error that says the file is not taken, wherever that error is kept (issue 9).
    let sample = std::fs::read(repo().join("sources/data/ddsp/incidents_2026-11-08.csv")).unwrap();
    let body = &sample[sample.iter().position(|b| *b == b'\n').unwrap() + 1..];
    p.write("sources/data/ddsp/incidents_noheader.csv", body);
    // The whole pipeline: bronze, silver and gold (data files and commit metadata), logs, rendered SQL.
    let out = p.command(&["-v", "run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "the header-less file is not taken: {}", stderr(&out));
    assert!(stderr(&out).contains("incidents_noheader.csv") && stderr(&out).contains("header lacks"));
    let compiled = p.run(&["-v", "compile", "--incremental"]);
    assert!(compiled.status.success(), "{}", stderr(&compiled));
    assert!(stdout(&compiled).contains("pseudonymize") || stdout(&compiled).contains("geo_cell"));
    let logs = [out.stdout.clone(), out.stderr.clone(), compiled.stdout.clone(), compiled.stderr.clone()].concat();
    assert!(logs.len() > 1000, "expected debug logs");
    let needles = Needles::new(needles());
    // The scanner finds what it should.
    assert!(needles.find(format!("xx{POLICE_KEY_HEX}yy").as_bytes()).is_some());
    let sample = std::fs::read(repo().join("sources/data/ddsp/incidents_2026-11-01.csv")).unwrap();
    assert!(needles.find(&sample).is_some(), "the scanner must find the identifiers of the input");
    let mut files = files_under(&p.path().join("warehouse"));
    // OpenLineage events and the catalog database too (`.lakehouse/`).
    let events = files_under(&p.path().join(".lakehouse"));
    assert!(events.len() >= 30, "expected the run's lineage events");
    files.extend(events);
    assert!(files.iter().any(|f| f.to_string_lossy().contains("_delta_log")));
    assert!(files.iter().filter(|f| f.extension().is_some_and(|e| e == "parquet")).count() >= 20);
    for layer in ["silver", "gold"] {
        assert!(files.iter().any(|f| f.to_string_lossy().contains(&format!("/warehouse/{layer}/"))), "{layer}");
    }
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        if let Some(n) = needles.find(&bytes) {
            panic!("{} contains {:?}", f.display(), String::from_utf8_lossy(n));
        }
    }
    if let Some(n) = needles.find(&logs) {
        panic!("the logs contain {:?}", String::from_utf8_lossy(n));
    }
    // Decoded, the direct-identifier columns hold 64-hex pseudonyms only.
    for (table, cols) in [
        ("ddsp_incidents", vec!["reporter_name", "reporter_phone"]),
        ("bmpm_interventions", vec!["caller_phone"]),
        ("ville_signalements", vec!["reporter_email"]),
    ] {
        let url = p.warehouse_url("bronze", table);
        for c in cols {
            let bad = query_i64(
                &url,
                &format!("SELECT count(*) FROM t WHERE {c} IS NOT NULL AND NOT ({c} ~ '^[0-9a-f]{{64}}$')"),
            )
            .await;
            assert_eq!(bad, 0, "{table}.{c}");
            let hashed = query_i64(&url, &format!("SELECT count(*) FROM t WHERE {c} IS NOT NULL")).await;
            assert!(hashed > 100, "{table}.{c}");
        }
    }
}

#[test]
fn keys_inside_the_project_are_refused() {
    let p = TestProject::empty();
    p.write(
        "lakehouse.yaml",
        "version: 1\nname: t\nprivacy:\n  keys: { from: file, path: PATH }\n"
            .replace("PATH", &p.path().join("k").display().to_string()),
    );
    let out = p.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("the key file is inside the project directory"), "{}", stderr(&out));
}

#[test]
fn a_missing_key_is_a_clear_error_without_key_material() {
    let p = TestProject::example(None);
    std::fs::write(p.key_file(), format!("police t1 {POLICE_KEY_HEX}\n")).unwrap();
    let out = p.run(&["ingest", "ddsp_incidents"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no key for domain `quarantine`"), "{}", stderr(&out));
    assert!(!stderr(&out).contains(POLICE_KEY_HEX));
}
