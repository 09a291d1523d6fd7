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

/// `normalize: phone` and `normalize: email`: the usual notations of one phone number or address give one
/// pseudonym at landing and in SQL; what is not a phone number or an address is quarantined with a reason that
/// does not repeat the value.
#[tokio::test]
async fn phone_and_email_notations_of_one_person_give_one_pseudonym() {
    let p = TestProject::empty();
    p.write_project(
        &crate::ingest::POLICE_PROJECT.replace("  domains: [police]", "  domains: [police]\n  phone_country: FR"),
    );
    p.write(
        "sources/contacts.yaml",
        r#"version: 1
name: contacts
description: t
owner: ddsp
agreement: C-1
schedule: "0 * * * *"
connector: { kind: files, location: drop }
format: { kind: csv, delimiter: ";" }
columns:
  id: { type: string, key: true }
  phone: { type: string, pii: direct, domain: police, normalize: phone }
  email: { type: string, pii: direct, domain: police, normalize: email }
  phone_clear: { type: string, pii: direct, keep_clear: DPO-2026-01, from: phone }
retention: 1 year
"#,
    );
    p.write(
        "drop/contacts.csv",
        "id;phone;email\n\
         1;06 12 34 56 78;jean.dupont@mairie.fr\n\
         2;+33 6 12 34 56 78; Jean.Dupont@Mairie.FR \n\
         3;+33 (0)6 12 34 56 78;JEAN.DUPONT@MAIRIE.FR\n\
         4;0033612345678;jean.dupont@mairie.fr\n\
         5;06.12.34.56.78;jean.dupont@mairie.fr\n\
         6;07 98 76 54 32;marie@ville.fr\n\
         7;appeler le standard;x@y.fr\n\
         8;06 12 34;x@y.fr\n\
         9;06 12 34 56 78;jean.dupont\n",
    );
    let r = &crate::ingest::ingest_all(&p).await[0];
    assert_eq!((r.records.read, r.records.written, r.records.quarantined), (9, 6, 3));
    let bronze = p.warehouse_url("bronze", "contacts");
    let counts =
        query_rows(&bronze, "SELECT count(DISTINCT phone), count(DISTINCT email) FROM t WHERE id <= '5'").await;
    assert_eq!(counts, rows(&[&["1", "1"]]));
    let all = query_rows(&bronze, "SELECT count(DISTINCT phone), count(DISTINCT email) FROM t").await;
    assert_eq!(all, rows(&[&["2", "2"]]));
    let q = p.warehouse_url("bronze", "contacts__quarantine");
    let reasons = query_rows(&q, "SELECT line, \"column\", reason FROM t ORDER BY line").await;
    assert_eq!(
        reasons,
        rows(&[
            &["8", "phone", "not a phone number: it holds a letter"],
            &["9", "phone", "not a phone number: 7 digits in international form (8 to 15 expected)"],
            &["10", "email", "not an e-mail address: one `@` between a name and a domain expected"],
        ])
    );
    // In a model, `pseudonymize(…, 'phone')` of the number kept in clear gives the pseudonym written at landing.
    p.write(
        "transforms/silver/contacts.sql",
        "SELECT id, phone, pseudonymize(phone_clear, 'police', 'phone') AS recomputed FROM {{ source('contacts') }}",
    );
    run_ok(&p, &["transform"]);
    let same = sql_csv(&p, "SELECT count(*) AS n FROM silver.contacts WHERE recomputed = phone");
    assert_eq!(same.lines().nth(1), Some("6"), "{same}");
}

/// `normalize: phone` needs the country national numbers are read with.
#[test]
fn phone_normalization_needs_a_phone_country() {
    let p = TestProject::empty();
    p.write_project(crate::ingest::POLICE_PROJECT);
    p.write(
        "sources/contacts.yaml",
        "version: 1\nname: contacts\ndescription: t\nowner: ddsp\nagreement: C-1\nschedule: \"0 * * * *\"\n\
         connector: { kind: files, location: drop }\nformat: { kind: csv }\ncolumns:\n  id: { type: string }\n  \
         phone: { type: string, pii: direct, domain: police, normalize: phone }\nretention: 1 year\n",
    );
    let out = p.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("sources/contacts.yaml:11:") && err.contains("privacy.phone_country"), "{err}");
}
