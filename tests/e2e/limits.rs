//! Bounded parsers (issue 10): records over the project's limits are quarantined with the reason, files over
//! them (decompression bombs) are not taken, a quote never closed does not swallow the rest of the file into one
//! field, and a parser that fails on one file stops neither the other files nor the other sources.

use std::io::Write;
use std::time::Duration;

use lakehouse_tests::*;

use crate::ingest::ingest_all;

const MANIFEST: &str = r#"version: 1
name: notes
description: t
owner: ddsp
agreement: C-1
schedule: "*/15 * * * *"
connector: { kind: files, location: drop/notes }
format: { kind: csv, delimiter: ";" }
columns:
  id: { type: string, key: true }
  who: { type: string, pii: direct, domain: police }
  notes: { type: string, pii: sensitive }
retention: 1 year
"#;

const NDJSON_MANIFEST: &str = r#"version: 1
name: events
description: t
owner: ddsp
agreement: C-1
schedule: "*/15 * * * *"
connector: { kind: files, location: drop/events }
format: { kind: ndjson }
columns:
  id: { type: string, key: true }
  notes: { type: string, pii: sensitive }
retention: 1 year
"#;

fn project(limits: &str) -> TestProject {
    let p = TestProject::empty();
    p.write_project(&format!(
        "version: 1\nname: t\ndrop_zones: [drop]\npartners:\n  - {{ id: ddsp, name: Police, kind: external }}\n\
         privacy:\n  domains: [police]\n  keys: {{ from: file, path: KEYFILE }}\n{limits}"
    ));
    p.write("sources/notes.yaml", MANIFEST);
    p.write("sources/events.yaml", NDJSON_MANIFEST);
    std::fs::create_dir_all(p.path().join("drop/notes")).unwrap();
    std::fs::create_dir_all(p.path().join("drop/events")).unwrap();
    p
}

async fn quarantined(p: &TestProject, source: &str) -> Vec<Vec<String>> {
    let q = p.warehouse_url("bronze", &format!("{source}__quarantine"));
    query_rows(&q, "SELECT line, reason FROM t ORDER BY source_file, line").await
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A record larger than `max_record_bytes` and a quoted field spanning more than `max_record_lines` lines are
/// quarantined by line; the records around them land; line numbers after them stay right.
#[tokio::test]
async fn records_over_the_limits_are_quarantined() {
    let p = project("limits: { max_record_bytes: 65536, max_record_lines: 20 }\n");
    let long_lines: String = (0..30).map(|i| format!("l{i}\n")).collect();
    let text =
        format!("id;who;notes\nA;Ana;ok\nB;Bob;{}\nC;Cyd;ok\nD;Dan;\"{long_lines}\"\nE;Eve;ok\n", "x".repeat(300_000));
    p.write("drop/notes/a.csv", text);
    let reports = ingest_all(&p).await;
    let r = reports.iter().find(|r| r.source == "notes").unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert_eq!((r.records.read, r.records.written, r.records.quarantined), (5, 3, 2));
    let q = quarantined(&p, "notes").await;
    assert_eq!(q.len(), 2, "{q:?}");
    assert_eq!(q[0][0], "3");
    assert!(q[0][1].contains("larger than 65536 bytes (limits.max_record_bytes)"), "{q:?}");
    assert_eq!(q[1][0], "5");
    assert!(q[1][1].contains("spans more than 20 lines (limits.max_record_lines)"), "{q:?}");
    let ids = query_rows(&p.warehouse_url("bronze", "notes"), "SELECT id FROM t ORDER BY id").await;
    assert_eq!(ids, rows(&[&["A"], &["C"], &["E"]]));
}

/// `"oops` in record 2 of 1,002: the file ends inside that quoted field. The record is quarantined with the lines
/// it swallowed (encrypted, nothing lost), and no name or phone number of the other records lands in a
/// `sensitive` column in clear.
#[tokio::test]
async fn a_quote_never_closed_does_not_swallow_the_file_into_one_field() {
    let p = project("");
    let mut text = String::from("id;who;notes\nR1;Ana;fine\nR2;Bob;\"oops\n");
    for i in 3..=1002 {
        text.push_str(&format!("R{i};Person Number{i};tel 06{i:08}\n"));
    }
    p.write("drop/notes/a.csv", text);
    let reports = ingest_all(&p).await;
    let r = reports.iter().find(|r| r.source == "notes").unwrap();
    assert_eq!((r.records.read, r.records.written, r.records.quarantined), (2, 1, 1), "{:?}", r.failed);
    let q = quarantined(&p, "notes").await;
    assert_eq!(q[0][0], "3");
    assert!(q[0][1].contains("never closed") && q[0][1].contains("lines 3–1003"), "{q:?}");
    let bronze = p.warehouse_url("bronze", "notes");
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t WHERE notes LIKE '%Person%'").await, 0);
    // The swallowed lines are in the quarantine's raw text, encrypted: `lakehouse quarantine --raw` shows them.
    let out = p.run(&["quarantine", "notes", "--raw"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("R1002;Person Number1002"), "nothing lost");
}

/// A gzip bomb and a file over `max_decompressed_bytes` are not taken, with the reason; the other file of the
/// drop zone is taken.
#[tokio::test]
async fn decompression_bombs_are_not_taken() {
    let p = project("limits: { max_decompressed_bytes: 4000000 }\n");
    let mut bomb = b"id;who;notes\n".to_vec();
    bomb.extend(std::iter::repeat_n(b'0', 64 << 20));
    p.write("drop/notes/bomb.csv.gz", gzip(&bomb));
    let big: String = (0..200_000).map(|i| format!("B{i};Someone {i};note {}\n", i * 7919 % 104_729)).collect();
    p.write("drop/notes/big.csv.gz", gzip(format!("id;who;notes\n{big}").as_bytes()));
    p.write("drop/notes/ok.csv.gz", gzip(b"id;who;notes\nA;Ana;fine\n"));
    let reports = ingest_all(&p).await;
    let r = reports.iter().find(|r| r.source == "notes").unwrap();
    let mut failed: Vec<(String, String)> = r.failed.iter().map(|f| (f.path.clone(), f.reason.clone())).collect();
    failed.sort();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[0].0, "big.csv.gz");
    assert!(failed[0].1.contains("more than 4000000 bytes (limits.max_decompressed_bytes)"), "{failed:?}");
    assert_eq!(failed[1].0, "bomb.csv.gz");
    assert!(failed[1].1.contains("limits.max_ratio") && failed[1].1.contains("bomb"), "{failed:?}");
    assert_eq!(r.records.written, 1);
}

/// An NDJSON line over `max_record_bytes` is quarantined; the next lines land.
#[tokio::test]
async fn long_ndjson_lines_are_quarantined() {
    let p = project("limits: { max_record_bytes: 1000 }\n");
    let text = format!(
        "{{\"id\": \"a\", \"notes\": \"ok\"}}\n{{\"id\": \"b\", \"notes\": \"{}\"}}\n{{\"id\": \"c\", \"notes\": \"ok\"}}\n",
        "y".repeat(5000)
    );
    p.write("drop/events/e.ndjson", text);
    let reports = ingest_all(&p).await;
    let r = reports.iter().find(|r| r.source == "events").unwrap();
    assert_eq!((r.records.read, r.records.written, r.records.quarantined), (3, 2, 1));
    let q = quarantined(&p, "events").await;
    assert_eq!(q[0][0], "2");
    assert!(q[0][1].contains("longer than 1000 bytes"), "{q:?}");
}

/// A reader that stops on an internal error (a panic, injected here) marks its file not taken with the reason;
/// the run goes on, records it, and exits 1 instead of crashing; the next run takes the files.
#[test]
fn a_parser_panic_marks_the_file_not_taken_and_the_run_goes_on() {
    let p = TestProject::example(None);
    let out = p.command(&["ingest"]).env("LAKEHOUSE_FAULT", "reader-panic").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    for source in ["bmpm_interventions", "ddsp_incidents", "meteo_observations", "ville_events", "ville_signalements"] {
        assert!(err.contains(source), "{source} was not tried: {err}");
    }
    assert!(err.contains("the reader stopped on an internal error"), "{err}");
    let runs = p.run(&["runs", "--failed"]);
    assert!(stdout(&runs).contains("not taken"), "{}", stdout(&runs));
    let out = p.run(&["ingest"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A file still being written is not taken: modified within the settle time and changed when listed again, it
/// waits for a later run, which takes it whole. An empty file is never taken.
#[tokio::test]
async fn files_in_flight_wait_until_they_settle() {
    let p = project("");
    p.write(
        "sources/notes.yaml",
        MANIFEST.replace("location: drop/notes }", "location: drop/notes, settle: 2 seconds }"),
    );
    let half: String = (0..400).map(|i| format!("H{i};Person {i};n\n")).collect();
    let rest: String = (400..785).map(|i| format!("H{i};Person {i};n\n")).collect();
    p.write_fresh("drop/notes/upload.csv", format!("id;who;notes\n{half}"));
    p.write_fresh("drop/notes/empty.csv", "");
    let lh = p.load();
    let src = lh.project.select_sources(&["notes".into()]).unwrap()[0].clone();
    let path = p.path().join("drop/notes/upload.csv");
    // The upload goes on in four parts over two seconds, so the run lists it while it is still growing.
    let writer = tokio::spawn(async move {
        let lines: Vec<&str> = rest.split_inclusive('\n').collect();
        for part in lines.chunks(lines.len().div_ceil(4)) {
            tokio::time::sleep(Duration::from_millis(450)).await;
            let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(part.concat().as_bytes()).unwrap();
        }
    });
    let first = lakehouse::ingest::ingest_source(&lh, &src).await.unwrap();
    writer.await.unwrap();
    assert!(first.files.is_empty(), "a file being written is not taken");
    let mut waiting = first.waiting.clone();
    waiting.sort();
    assert_eq!(waiting, ["empty.csv", "upload.csv"]);
    let second = lakehouse::ingest::ingest_source(&lh, &src).await.unwrap();
    assert_eq!(second.files.len(), 1, "{:?}", second.waiting);
    assert_eq!((second.records.read, second.records.written), (785, 785), "every record of the finished upload");
    assert_eq!(second.waiting, ["empty.csv"], "an empty file is never taken");
}

/// A file that changes after it was taken is an error naming it, every run until it is resolved; never a silent
/// skip.
#[test]
fn a_file_changed_after_it_was_taken_is_an_error() {
    let p = project("");
    p.write("drop/notes/a.csv", "id;who;notes\nA;Ana;x\n");
    let out = p.run(&["ingest", "notes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    p.write("drop/notes/a.csv", "id;who;notes\nA;Ana;x\nB;Bob;y\n");
    for _ in 0..2 {
        let out = p.run(&["ingest", "notes"]);
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        let text = stdout(&out);
        assert!(text.contains("a.csv") && text.contains("changed after it was taken in batch 1"), "{text}");
    }
    let runs = stdout(&p.run(&["runs", "--failed"]));
    assert!(runs.contains("changed after it was taken"), "{runs}");
}

/// A file replaced by other bytes of the same size, its modification time set back to the old one, is noticed
/// (its inode and status-change time moved, and its content hash differs); a file only touched is not.
#[test]
fn a_file_replaced_by_the_same_size_is_noticed_and_a_touched_one_is_not() {
    let p = project("");
    let path = p.path().join("drop/notes/a.csv");
    p.write("drop/notes/a.csv", "id;who;notes\nA;Ana;x\n");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    assert!(p.run(&["ingest", "notes"]).status.success());
    // Touched (modification time moved, same bytes), then copied over with the same bytes: unchanged.
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(mtime - Duration::from_secs(600)).unwrap();
    let out = p.run(&["ingest", "notes"]);
    assert!(out.status.success(), "{}", stdout(&out));
    std::fs::write(&path, "id;who;notes\nA;Ana;x\n").unwrap();
    settled(&path);
    let out = p.run(&["ingest", "notes"]);
    assert!(out.status.success(), "{}", stdout(&out));
    // Other bytes, same size, same modification time: refused, with what changed.
    std::fs::write(&path, "id;who;notes\nB;Bob;y\n").unwrap();
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
    let out = p.run(&["ingest", "notes"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("a.csv")
            && text.contains("changed after it was taken in batch 1 (same size, different content)")
            && text.contains("changed_files: new_version"),
        "{text}"
    );
}

/// `changed_files: new_version`: a changed file is taken again by the next run, as a new ledger row of its path;
/// a file that did not change is not.
#[tokio::test]
async fn a_changed_file_is_taken_again_as_a_new_version_when_the_manifest_says_so() {
    let p = project("");
    p.write(
        "sources/notes.yaml",
        MANIFEST.replace("location: drop/notes }", "location: drop/notes, changed_files: new_version }"),
    );
    p.write("drop/notes/a.csv", "id;who;notes\nA;Ana;x\n");
    p.write("drop/notes/b.csv", "id;who;notes\nC;Cy;z\n");
    assert!(p.run(&["ingest", "notes"]).status.success());
    p.write("drop/notes/a.csv", "id;who;notes\nA;Ana;x\nB;Bob;y\n");
    let out = p.run(&["ingest", "notes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ledger = p.warehouse_url("bronze", "notes__files");
    assert_eq!(
        query_rows(
            &ledger,
            "SELECT path, CAST(batch AS VARCHAR) AS b, CAST(records_written AS VARCHAR) FROM t ORDER BY b, path"
        )
        .await,
        rows(&[&["a.csv", "1", "1"], &["b.csv", "1", "1"], &["a.csv", "2", "2"]])
    );
    let hashes = query_rows(&ledger, "SELECT content_hash FROM t WHERE path = 'a.csv' ORDER BY batch").await;
    assert!(hashes.iter().all(|h| h[0].starts_with("xxh3-128:") && h[0].len() == 41), "{hashes:?}");
    assert_ne!(hashes[0], hashes[1]);
    let bronze = p.warehouse_url("bronze", "notes");
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 4);
    // Nothing changed since: nothing is taken.
    let out = p.run(&["ingest", "notes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 4);
}
